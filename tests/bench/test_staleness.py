"""``taskology bench staleness``: a quick run has the fresh reference, the noise floor and stale arms,
and its figures follow from its own runs."""
from __future__ import annotations

import numpy as np
import pytest

from taskology.bench import staleness


@pytest.mark.timeout(300)
def test_quick_staleness_run_measures_stale_arms_against_fresh_and_a_noise_floor() -> None:
    result = staleness.run(quick=True)
    f = result.figures
    assert f["arms"] == ["1", staleness.FLOOR, "5", "10"] and f["lr_schedule"] == "cosine"
    runs = f["runs"]
    # the staleness each arm reports is what its refresh interval allows: fresh arms see none
    for arm in ("1", staleness.FLOOR):
        assert runs[arm]["0"]["staleness"]["max_steps"] == 0
    for arm, every in (("5", 5), ("10", 10)):
        st = runs[arm]["0"]["staleness"]
        assert 0 < st["max_steps"] <= every - 1 and st["rows"] > 0
    # every arm trained the relations (a stale arm still feeds them) and is a different trajectory
    assert all(runs[a]["0"]["relation_terms"] > 0 for a in f["arms"])
    assert runs["10"]["0"]["metrics"] != runs["1"]["0"]["metrics"]
    # the reported change is the one the runs give
    for arm in f["arms"]:
        for task, metric in staleness.HEADLINE.items():
            got, ref = runs[arm]["0"]["metrics"][task][metric], runs["1"]["0"]["metrics"][task][metric]
            assert f["relative_change_vs_fresh"][arm][task] == pytest.approx((got - ref) / ref)
    assert f["noise_floor_max_relative_change"] == pytest.approx(
        max(abs(v) for v in f["relative_change_vs_fresh"][staleness.FLOOR].values()))
    assert np.isfinite(f["noise_floor_max_relative_change"]) and "noise floor" in result.table
