"""experiments/consistency/receivers.py: every variant switches its feeds explicitly, a feed is kept only where
it helped on every seed, and a tiny factorial run evaluates on validation and decides from those numbers."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from taskology.config import load_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import receivers


def in_process(fn, jobs, workers):
    """A mapper for :func:`receivers.validation_runs` that runs the jobs one after another in this process."""
    for key, args in jobs.items():
        yield key, fn(*args)


def test_every_variant_switches_each_factor_explicitly_whatever_the_preset_says() -> None:
    # the preset feeds segmentation nothing from the logic relations: the "all" variant must switch it back on.
    preset = load_config(receivers.PRESET)
    assert preset.relations["segmentation_geometry"].weight_for("segmentation") == 0
    on = load_config(receivers.PRESET, list(receivers.variants()["all"]))
    assert on.relations["segmentation_geometry"].weight_for("segmentation") > 0
    assert on.relations["segmentation_motion"].weight_for("segmentation") > 0
    assert on.relations["segmentation_temporal"].weight_for("segmentation") > 0
    assert on.train.relation_factor(0.02, on.tasks["segmentation"]) == 1.0  # the preset has 0 at 2 %
    off = load_config(receivers.PRESET, list(receivers.variants()["no segmentation <- temporal"]))
    assert off.relations["segmentation_temporal"].weight_for("segmentation") == 0
    only = receivers.variants(["segmentation <- logic"])
    assert set(only) == {"all", "no segmentation <- logic"}
    assert not any("depth_normals" in o for v in only.values() for o in v)
    assert "segmentation <- ground" not in receivers.FACTORS  # the relation is gone from the package


def test_a_feed_is_kept_at_a_fraction_only_where_it_helped_on_every_seed() -> None:
    def runs(miou_with: dict[str, float]) -> dict:
        return {fr: {v: {"segmentation": {"miou": 0.5 if "no segmentation" in v else m}}
                     for v in receivers.variants(["segmentation <- logic"])} for fr, m in miou_with.items()}

    decisions = receivers.choose({"0": runs({"0.02": 0.55, "0.1": 0.6}), "1": runs({"0.02": 0.51, "0.1": 0.45})},
                                 ["segmentation <- logic"])["segmentation <- logic"]
    assert decisions["0.02"]["keep"] and not decisions["0.1"]["keep"]
    assert decisions["0.1"]["gain"] == {"0": pytest.approx(0.2), "1": pytest.approx(-0.1)}


def test_result_names_keep_each_choice_apart() -> None:
    assert receivers.result_stem("receivers", False, "consistency") == "receivers-consistency"
    assert (receivers.result_stem("receivers", False, "consistency", ["relations.x.receivers.segmentation=0"],
                                  ["segmentation <- temporal"], [0.02])
            == "receivers-consistency-relations-x-receivers-segmentation-0-factor-segmentation-temporal-labels-2pct")


def test_a_tiny_run_evaluates_every_variant_on_val_and_decides_from_those_numbers(tiny_world, tmp_path) -> None:
    factor = "normals <- depth_normals"
    result = receivers.run(False, "consistency", tuple(tiny_world.overrides), (factor,), (0.1,), mapper=in_process)
    figures = result.figures
    (seed,) = figures["results"]
    by_fraction = figures["results"][seed]
    assert set(by_fraction) == {"0.1"} and figures["setup"]["val_sequences"] == 1
    for by_variant in by_fraction.values():
        assert set(by_variant) == {"alone", *receivers.variants([factor])}
        for tasks in by_variant.values():
            assert all(math.isfinite(v) for metrics in tasks.values() for v in metrics.values())
    collective = {seed: {fr: {v: r[v] for v in receivers.variants([factor])} for fr, r in by_fraction.items()}}
    assert figures["decisions"] == receivers.choose(collective, [factor])
    # switching the feed off really changes what normals learn
    assert by_fraction["0.1"]["all"]["normals"] != by_fraction["0.1"][f"no {factor}"]["normals"]
    assert figures["setup"]["world"] is not None and "validation sequence" in result.notes
    prov = receivers.run_provenance("receivers", "python receivers.py --x", False, "consistency", tiny_world.overrides)
    record = receivers.write_result("receivers", result, tmp_path, "receivers-tiny", prov, False)
    assert json.loads((tmp_path / "receivers-tiny.json").read_text())["command"] == "python receivers.py --x"
    assert record["name"] == "receivers" and "| normals <- depth_normals | 10% |" in (tmp_path / "receivers-tiny.md").read_text()


def test_the_command_line_refuses_a_factor_it_does_not_have(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        receivers.main(["--factor", "segmentation <- ground"])
    assert exit_.value.code == 2 and "invalid choice: 'segmentation <- ground'" in capsys.readouterr().err
