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
    weighted, averaged, anchored = staleness.weighted_arm(10, 5), staleness.averaged_arm(10), staleness.anchored_arm(10)
    staggered = staleness.staggered_arm(10)
    assert f["arms"] == ["1", staleness.FLOOR, "5", "10", staleness.weighted_arm(5, 5), weighted,
                         staleness.averaged_arm(5), averaged, staleness.anchored_arm(5), anchored,
                         staleness.staggered_arm(5), staggered, staleness.ALONE]
    assert f["lr_schedule"] == "cosine" and f["halflife_steps"] == 5 and f["averaged_publications"] == 2
    runs = f["runs"]
    # the staleness each arm reports is what its refresh interval allows: fresh arms see none
    for arm in ("1", staleness.FLOOR):
        assert runs[arm]["0"]["staleness"]["max_steps"] == 0
    for arm, every in (("5", 5), ("10", 10), (staleness.weighted_arm(5, 5), 5), (weighted, 10),
                       (staleness.averaged_arm(5), 5), (averaged, 10), (anchored, 10), (staggered, 10)):
        st = runs[arm]["0"]["staleness"]
        assert 0 < st["max_steps"] <= every - 1 and st["rows"] > 0
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
    assert runs[weighted]["0"]["metrics"] != runs["10"]["0"]["metrics"]  # the age weight changes what is learnt
    assert runs[averaged]["0"]["metrics"] != runs["10"]["0"]["metrics"]  # ... and so does the older snapshot
    assert runs[anchored]["0"]["metrics"] != runs["10"]["0"]["metrics"]  # ... and the pull toward the own one
    assert runs[staggered]["0"]["metrics"] != runs["10"]["0"]["metrics"]  # ... and the peers taking turns
    # taking turns: the same number of snapshots as the plain arm (once per interval), but not the same steps
    assert runs[staggered]["0"]["snapshot_refreshes"]["depth"] == runs["10"]["0"]["snapshot_refreshes"]["depth"]
    # the snapshots are those of the plain arm: same refreshes, same ages
    assert runs[averaged]["0"]["snapshot_refreshes"] == runs["10"]["0"]["snapshot_refreshes"]
    assert runs[averaged]["0"]["staleness"]["p95_steps"] == runs["10"]["0"]["staleness"]["p95_steps"]
    # the reported change is the one the runs give
    for arm in f["arms"]:
        for task, metric in staleness.HEADLINE.items():
            got, ref = runs[arm]["0"]["metrics"][task][metric], runs["1"]["0"]["metrics"][task][metric]
            assert f["relative_change_vs_fresh"][arm][task] == pytest.approx((got - ref) / ref)
    # the mitigation is judged on harm only: its largest worsening (a gain is not a loss)
    assert f["max_worsening_with_halflife"] == pytest.approx(max(
        f["relative_change_vs_fresh"][a][t] for a in ("5, half-life 5", weighted) for t in staleness.HEADLINE))
    assert f["max_worsening_with_averaging"] == pytest.approx(max(
        f["relative_change_vs_fresh"][a][t] for a in (staleness.averaged_arm(5), averaged) for t in staleness.HEADLINE))
    assert f["max_worsening_with_anchor"] == pytest.approx(max(
        f["relative_change_vs_fresh"][a][t] for a in (staleness.anchored_arm(5), anchored) for t in staleness.HEADLINE))
    assert "max_worsening_with_averaging_up_to_25pct" in result.targets
    assert "max_worsening_with_anchor_up_to_25pct" in result.targets
    assert f["max_worsening_staggered"] == pytest.approx(max(
        f["relative_change_vs_fresh"][a][t] for a in (staleness.staggered_arm(5), staggered) for t in staleness.HEADLINE))
    assert "max_worsening_staggered_up_to_25pct" in result.targets
    assert f["noise_floor_max_relative_change"] == pytest.approx(
        max(abs(v) for v in f["relative_change_vs_fresh"][staleness.FLOOR].values()))
    assert np.isfinite(f["noise_floor_max_relative_change"]) and "noise floor" in result.table


def test_tracing_predictions_leaves_the_run_unchanged_and_sees_the_refreshes(tmp_path) -> None:
    """The oscillation trace records predictions without touching training (the same test metrics as the
    benchmark's own run of that arm and seed), and its drift matrices follow from the recorded steps."""
    from taskology.bench import sim_world
    from taskology.bench.staleness_trace import trace_run

    root = sim_world(tmp_path / "sim", (32, 96), 4, 6)
    arm = staleness.averaged_arm(10)
    plain = staleness._one_run(root, 40, 4, 2, 1, tmp_path / "plain", 0, arm, staleness.LABEL_FRACTION)
    traced = trace_run(root, 40, arm, 0, 10, tmp_path / "traced", probe_samples=8, width=4, batch=2, test_sequences=1)
    assert traced["metrics"] == plain["metrics"]
    for task in ("depth", "normals"):
        steps, matrix = traced["drift"][task]["steps"], traced["drift"][task]["matrix"]
        assert steps == [0, 10, 20, 30, 40]
        m = np.asarray(matrix)
        assert np.allclose(m, m.T) and np.all(np.diag(m) == 0) and np.all(m[~np.eye(5, dtype=bool)] > 0)
