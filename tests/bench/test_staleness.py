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
    assert f["arms"] == ["1", staleness.FLOOR, "5", "10", staleness.ALONE]
    assert f["lr_schedule"] == "cosine"
    runs = f["runs"]
    # the staleness each arm reports is what its refresh interval allows: fresh arms see none
    for arm in ("1", staleness.FLOOR):
        assert runs[arm]["0"]["staleness"]["max_steps"] == 0
    for arm, every in (("5", 5), ("10", 10)):
        st = runs[arm]["0"]["staleness"]
        assert 0 < st["max_steps"] <= every - 1 and st["rows"] > 0
        # each peer is retaken once per interval from the relations' start (step 10 of 40), normals half an
        # interval out of phase (the tasks take turns): one more retake when its turn falls inside the run
        refreshes = runs[arm]["0"]["snapshot_refreshes"]
        assert refreshes["depth"] == len(range(10, 40, every)) and refreshes["normals"] - refreshes["depth"] in (0, 1)
    # every collective arm trained the relations (a stale arm still feeds them), the alone arm none
    assert all(runs[a]["0"]["relation_terms"] > 0 for a in f["arms"] if a != staleness.ALONE)
    assert runs[staleness.ALONE]["0"]["relation_terms"] == 0 and runs[staleness.ALONE]["0"]["staleness"]["rows"] == 0
    # the share of the relations' gain each arm loses follows from the arm, fresh and alone runs
    for task, metric in staleness.HEADLINE.items():
        fresh, alone = runs["1"]["0"]["metrics"][task][metric], runs[staleness.ALONE]["0"]["metrics"][task][metric]
        got = runs["10"]["0"]["metrics"][task][metric]
        expected = (got - fresh) / (alone - fresh) if alone > fresh else None
        assert f["share_of_gain_lost"]["10"][task] == (pytest.approx(expected) if expected is not None else None)
    assert runs["10"]["0"]["metrics"] != runs["1"]["0"]["metrics"]
    # the reported change is the one the runs give
    for arm in f["arms"]:
        for task, metric in staleness.HEADLINE.items():
            got, ref = runs[arm]["0"]["metrics"][task][metric], runs["1"]["0"]["metrics"][task][metric]
            assert f["relative_change_vs_fresh"][arm][task] == pytest.approx((got - ref) / ref)
    worst = max(abs(f["relative_change_vs_fresh"][a][t]) for a in ("1", "5", "10") for t in staleness.HEADLINE)
    assert result.targets["max_relative_change_up_to_25pct"]["value"] == pytest.approx(worst)
    assert f["noise_floor_max_relative_change"] == pytest.approx(
        max(abs(v) for v in f["relative_change_vs_fresh"][staleness.FLOOR].values()))
    assert np.isfinite(f["noise_floor_max_relative_change"]) and "noise floor" in result.table


def test_arm_keys_are_checked() -> None:
    with pytest.raises(Exception, match="expected an interval in steps"):
        staleness.arm_settings("200, anchor 0.1")
