"""``taskology bench receivers``: a quick factorial run evaluates on validation only and decides from it."""
from __future__ import annotations

import math

import pytest

from taskology.bench import receivers
from taskology.config import load_config


def test_every_variant_switches_each_factor_explicitly_whatever_the_preset_says() -> None:
    # the CPU preset feeds segmentation nothing: the "all" variant must switch it back on.
    preset = load_config(receivers.PRESET.parent / "consistency-cpu.yaml")
    assert preset.relations["segmentation_geometry"].weight_for("segmentation") == 0
    on = load_config(receivers.PRESET.parent / "consistency-cpu.yaml", list(receivers.variants()["all"]))
    assert on.relations["segmentation_geometry"].weight_for("segmentation") > 0
    assert on.relations["segmentation_motion"].weight_for("segmentation") > 0
    assert on.train.relation_factor(0.1, on.tasks["segmentation"]) == 1.0
    only = receivers.variants(["segmentation <- logic"])
    assert set(only) == {"all", "no segmentation <- logic"}
    assert not any("depth_normals" in o for v in only.values() for o in v)


def test_a_feed_is_kept_at_a_fraction_only_where_it_helped_on_every_seed() -> None:
    def runs(miou_with: dict[str, float]) -> dict:
        return {fr: {v: {"segmentation": {"miou": 0.5 if "no segmentation" in v else m}}
                     for v in receivers.variants(["segmentation <- logic"])} for fr, m in miou_with.items()}

    decisions = receivers.choose({"0": runs({"0.02": 0.55, "0.1": 0.6}), "1": runs({"0.02": 0.51, "0.1": 0.45})},
                                 ["segmentation <- logic"])["segmentation <- logic"]
    assert decisions["0.02"]["keep"] and not decisions["0.1"]["keep"]
    assert decisions["0.1"]["gain"] == {"0": pytest.approx(0.2), "1": pytest.approx(-0.1)}


@pytest.mark.timeout(300)
def test_quick_receivers_run_evaluates_every_variant_on_val_and_decides_from_those_numbers() -> None:
    result = receivers.run(quick=True)
    figures = result.figures
    (seed,) = figures["results"]
    by_fraction = figures["results"][seed]
    assert set(by_fraction) == {f"{f}" for f in receivers.FRACTIONS}
    for by_variant in by_fraction.values():
        assert set(by_variant) == {"alone", *receivers.variants()}
        for tasks in by_variant.values():
            assert all(math.isfinite(v) for metrics in tasks.values() for v in metrics.values())
    collective = {seed: {fr: {v: r[v] for v in receivers.variants()} for fr, r in by_fraction.items()}}
    assert figures["decisions"] == receivers.choose(collective)
    # a variant that switches a feed off really changes what that task learns
    fr = next(iter(by_fraction))
    assert by_fraction[fr]["all"]["normals"] != by_fraction[fr]["no normals <- depth_normals"]["normals"]
    assert by_fraction[fr]["all"]["segmentation"] != by_fraction[fr]["no segmentation <- logic"]["segmentation"]
    assert "validation sequence" in result.notes
