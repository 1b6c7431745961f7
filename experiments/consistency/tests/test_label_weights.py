"""experiments/consistency/label_weights.py: each variant sets every task's relation factor, the per-task choice
follows the worst-seed rule, results of several seeds pool (and mixed ones are refused), the command line offers
both rules."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from taskology.experiment import arm_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import label_weights


def test_every_collective_variant_sets_every_tasks_factor_whatever_the_preset_says() -> None:
    jobs = label_weights.jobs_for("consistency", label_weights.FRACTIONS)
    assert len(jobs) == len(label_weights.FRACTIONS) * (1 + len(label_weights.FACTORS))
    for fraction, arm, name, overrides in jobs:
        config = arm_config("consistency", fraction, arm, overrides=overrides)
        factors = {config.train.relation_factor(fraction, config.tasks[t]) for t in config.enabled_tasks()}
        if arm == "alone":
            assert name == "alone" and not overrides
        else:  # the preset's own points differ by task (e.g. segmentation 0 at 2 %): all replaced
            assert factors == {float(name.split(" x")[1])}, (fraction, name, factors)


def test_the_fed_tasks_are_those_some_relation_feeds_at_factor_one() -> None:
    assert label_weights.fed_tasks("consistency") == ("depth", "normals", "segmentation", "motion")
    off = ["relations.segmentation_temporal.receivers.segmentation=0"]  # the logic relations already feed it nothing
    assert label_weights.fed_tasks("consistency", off) == ("depth", "normals", "motion")


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


def test_worst_seed_rule_adopts_a_relation_only_where_it_helped_every_seed_and_the_cli_offers_both(tmp_path, capsys) -> None:
    import json

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
    assert label_weights.main(["--combine", *map(str, paths)]) == 0
    out = capsys.readouterr().out
    assert "Rule `worst-seed`" in out and "- depth: `[[1.0, 0.0]]`" in out
    assert "by the mean rule" in out  # the table shows where the rules disagree
    assert label_weights.main(["--combine", *map(str, paths), "--rule", "mean"]) == 0
    assert "- depth: `[[1.0, 1.0]]`" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        label_weights.main(["--combine", *map(str, paths), "--rule", "best"])
    assert exit_.value.code == 2 and "invalid choice: 'best'" in capsys.readouterr().err
    assert label_weights.main(["--combine", str(paths[0]), str(paths[0])]) == 2
    assert "label_weights: seeds repeat" in capsys.readouterr().err


def test_the_two_seeds_of_the_first_world_give_the_per_task_points_the_readme_quotes() -> None:
    results = Path(__file__).resolve().parents[1] / "results"
    text = label_weights.combine([results / "label-weights-consistency-cpu.json",
                                  results / "label-weights-consistency-cpu-train-seeds-1.json"])
    assert "- depth: `[[0.02, 1.0], [0.1, 0.1], [1.0, 0.0]]`" in text
    assert "- normals: `[[0.02, 1.0], [0.1, 0.3], [1.0, 0.0]]`" in text
    assert "- motion: `[[0.02, 0.0], [0.1, 0.0], [1.0, 0.3]]`" in text
    # depth at 10 % with x1: -10 % on one seed, +12 % on the other (the README's "one seed moves a gain by 22 points")
    assert "| depth | 10% | +1.5% (-10%, +12%) |" in text
