"""``taskology bench receivers``: a quick factorial run evaluates on validation only and decides from it."""
from __future__ import annotations

import math

import pytest

from taskology.bench import receivers


@pytest.mark.timeout(300)
def test_quick_receivers_run_evaluates_every_variant_on_val_and_decides_from_those_numbers() -> None:
    result = receivers.run(quick=True)
    figures = result.figures
    assert set(figures["results"]) == {f"{f}" for f in receivers.FRACTIONS}
    for by_variant in figures["results"].values():
        assert set(by_variant) == {"alone", *receivers.variants()}
        for tasks in by_variant.values():
            assert all(math.isfinite(v) for metrics in tasks.values() for v in metrics.values())
    collective = {fr: {v: r[v] for v in receivers.variants()} for fr, r in figures["results"].items()}
    assert figures["decisions"] == receivers.choose(collective)
    dropped = [o for f, d in figures["decisions"].items() if not d["keep"] for o in receivers.FACTORS[f][1]]
    assert figures["chosen_overrides"] == dropped
    # a variant that switches a feed off really changes what that task learns
    fr = next(iter(collective))
    assert (collective[fr]["all"]["normals"] != collective[fr]["no normals <- depth_normals"]["normals"])
    assert "validation sequence" in result.notes
