"""``taskology bench label-weights``: a quick run evaluates every factor on validation and chooses from it."""
from __future__ import annotations

import math

import pytest

from taskology.bench import label_weights


@pytest.mark.timeout(300)
def test_quick_label_weights_run_evaluates_every_factor_on_val_and_chooses_from_those_numbers() -> None:
    result = label_weights.run(quick=True)
    figures = result.figures
    names = {"alone", *(label_weights.variant(f) for f in label_weights.FACTORS)}
    assert set(figures["results"]) == {f"{f}" for f in label_weights.FRACTIONS}
    for runs in figures["results"].values():
        assert set(runs) == names
        assert all(math.isfinite(v) for tasks in runs.values() for m in tasks.values() for v in m.values())
    # segmentation is fed nothing by the default preset (receivers: {segmentation: 0}), the others are
    assert figures["setup"]["fed"] == ["depth", "normals", "motion"]
    assert figures["decisions"] == {fr: {"factor": d["factor"], "gains": {float(k): v for k, v in d["gains"].items()}}
                                    for fr, d in label_weights.choose(figures["results"], ("depth", "normals", "motion")).items()}
    assert figures["chosen_points"] == [[f, figures["decisions"][f"{f}"]["factor"]] for f in label_weights.FRACTIONS]
    assert figures["per_task"] == label_weights.choose_per_task([figures["results"]], ("depth", "normals", "motion"))
    # the factor really changes what a fed task learns, and not what an unfed one learns
    runs = figures["results"]["0.1"]
    assert runs["relations x1"]["depth"] != runs["relations x0.1"]["depth"]
    assert runs["relations x1"]["segmentation"] == runs["relations x0.1"]["segmentation"] == runs["alone"]["segmentation"]
    # the variant's factor replaces the preset's own per-task points (there motion has 0 at 10 %: alone)
    assert runs["relations x1"]["motion"] != runs["alone"]["motion"]
    assert "validation sequence" in result.notes and "relation_weight_by_labels" in result.notes


def _record(seed: int, depth_by_variant: dict[str, float], preset: str = "configs/consistency-cpu.yaml") -> dict:
    runs = {name: {"depth": {"abs_rel": v}, "normals": {"mean_angle_deg": 20.0}} for name, v in depth_by_variant.items()}
    return {"name": "label-weights", "commit": "abc1234", "date": "2026-11-26",
            "figures": {"setup": {"preset": preset, "seed": seed, "fractions": [1.0], "factors": list(label_weights.FACTORS),
                                  "fed": ["depth", "normals"], "steps": 10, "val_sequences": 2},
                        "results": {"1.0": runs}}}


def test_per_task_choice_averages_seeds_keeps_alone_when_nothing_helps_and_refuses_mixed_files(tmp_path) -> None:
    import json

    from taskology.errors import ConfigError

    # depth: x1 helps seed 0 by 10 % and hurts seed 1 by 30 % (mean -10 %), x0.3 helps both by 5 %
    a = _record(0, {"alone": 0.10, "relations x1": 0.09, "relations x0.3": 0.095, "relations x0.1": 0.10})
    b = _record(1, {"alone": 0.10, "relations x1": 0.13, "relations x0.3": 0.095, "relations x0.1": 0.10})
    decisions = label_weights.choose_per_task([a["figures"]["results"], b["figures"]["results"]], ("depth", "normals"))
    assert decisions["depth"]["1.0"]["factor"] == 0.3
    assert decisions["depth"]["1.0"]["gains"][1.0] == pytest.approx(-0.10)
    assert decisions["depth"]["1.0"]["per_seed"][1.0] == pytest.approx([0.10, -0.30])
    assert decisions["normals"]["1.0"]["factor"] == 0.0  # no factor changes normals: keep its own labels
    paths = []
    for record in (a, b):
        paths.append(tmp_path / f"seed{record['figures']['setup']['seed']}.json")
        paths[-1].write_text(json.dumps(record))
    text = label_weights.combine(paths)
    assert "seeds [0, 1]" in text and "- depth: `[[1.0, 0.3]]`" in text and "- normals: `[[1.0, 0.0]]`" in text
    with pytest.raises(ConfigError, match="seeds repeat"):
        label_weights.combine([paths[0], paths[0]])
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_record(2, {"alone": 0.1, **{label_weights.variant(f): 0.1 for f in label_weights.FACTORS}},
                                        preset="configs/other.yaml")))
    with pytest.raises(ConfigError, match="preset differ"):
        label_weights.combine([paths[0], other])
    elsewhere = _record(2, {"alone": 0.1, **{label_weights.variant(f): 0.1 for f in label_weights.FACTORS}})
    elsewhere["figures"]["setup"]["world"] = "0123456789abcdef"
    paths[0].write_text(json.dumps({**a, "figures": {**a["figures"], "setup": {**a["figures"]["setup"],
                                                                               "world": "fedcba9876543210"}}}))
    (tmp_path / "elsewhere.json").write_text(json.dumps(elsewhere))
    with pytest.raises(ConfigError, match="elsewhere.json: world differ"):  # trained on another simulated world
        label_weights.combine([paths[0], tmp_path / "elsewhere.json"])
    assert "seeds [0, 1]" in label_weights.combine(paths)  # a file from before world records is not refused
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"name": "label-we')
    with pytest.raises(ConfigError, match="corrupt.json: not a readable label-weights result"):
        label_weights.combine([paths[0], corrupt])


def test_worst_seed_rule_adopts_a_relation_only_where_it_helped_every_seed_and_the_cli_offers_both(tmp_path) -> None:
    import json
    import subprocess
    import sys

    # x1: +30 % on seed 0, -2 % on seed 1 (mean +14 %); x0.3: +5 % on both; x0.1: +1 %, -1 %
    a = _record(0, {"alone": 0.10, "relations x1": 0.07, "relations x0.3": 0.095, "relations x0.1": 0.099})
    b = _record(1, {"alone": 0.10, "relations x1": 0.102, "relations x0.3": 0.095, "relations x0.1": 0.101})
    seeds = [a["figures"]["results"], b["figures"]["results"]]
    worst = label_weights.choose_per_task(seeds, ("depth",))["depth"]["1.0"]
    mean = label_weights.choose_per_task(seeds, ("depth",), rule="mean")["depth"]["1.0"]
    assert (worst["factor"], mean["factor"]) == (0.3, 1.0)
    assert worst["worst"][1.0] == pytest.approx(-0.02) and worst["worst"][0.3] == pytest.approx(0.05)
    # without x0.3, no factor helps on every seed: the worst-seed rule keeps the task alone
    for record in (a, b):
        record["figures"]["results"]["1.0"]["relations x0.3"]["depth"]["abs_rel"] = 0.11
    assert label_weights.choose_per_task(seeds, ("depth",))["depth"]["1.0"]["factor"] == 0.0
    assert label_weights.choose_per_task(seeds, ("depth",), rule="mean")["depth"]["1.0"]["factor"] == 1.0
    with pytest.raises(ValueError, match="rule must be one of"):
        label_weights.choose_per_task(seeds, ("depth",), rule="best")
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, record in zip(paths, (a, b)):
        path.write_text(json.dumps(record))
    cli = [sys.executable, "-m", "taskology.bench.label_weights", *map(str, paths)]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Rule `worst-seed`" in out.stdout and "- depth: `[[1.0, 0.0]]`" in out.stdout
    assert "by the mean rule" in out.stdout  # the table shows where the rules disagree
    out = subprocess.run([*cli, "--rule", "mean"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "- depth: `[[1.0, 1.0]]`" in out.stdout
    bad = subprocess.run([*cli, "--rule", "best"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "invalid choice: 'best'" in bad.stderr
