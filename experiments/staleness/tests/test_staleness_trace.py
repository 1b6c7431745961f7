"""experiments/staleness/staleness_trace.py and staleness_oscillation.py: drift matrices and swings have known
answers, tracing leaves a run unchanged, and the report says what the matrices say."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import staleness_oscillation
import staleness_trace
from staleness_seeds import run_one


def test_drifts_are_angles_and_log_ratios() -> None:
    up = np.zeros((1, 3, 2, 2)); up[:, 2] = 1
    tilted = np.zeros((1, 3, 2, 2)); tilted[:, 0] = 1; tilted[:, 2] = 1
    tilted /= np.sqrt(2)
    assert staleness_trace.normals_drift(up, tilted) == pytest.approx(45.0)
    assert staleness_trace.normals_drift(up, up) == 0.0
    assert staleness_trace.depth_drift(np.full((1, 1, 2, 2), 3.0), np.full((1, 1, 2, 2), 3.0 * np.e)) == pytest.approx(1.0)
    assert staleness_trace.depth_drift(np.zeros((1, 1, 1, 1)), np.full((1, 1, 1, 1), 1e-3)) == 0.0  # clipped at 1 mm


def test_a_period_two_swap_and_smooth_training_are_told_apart() -> None:
    # swap every 10 steps: one refresh apart 9, two apart 1
    swap = {s: np.full((1, 1, 1, 1), np.exp(9.0 if s % 20 else 0.0)) for s in (0, 10, 20, 30, 40)}
    steps, matrix = staleness_trace.drift_matrix(swap, "depth")
    assert staleness_trace.refresh_swing(steps, matrix, 10, 0) == {"one": 9.0, "two": 0.0}
    smooth = {s: np.full((1, 1, 1, 1), np.exp(s / 10)) for s in (0, 10, 20, 30, 40)}
    steps, matrix = staleness_trace.drift_matrix(smooth, "depth")
    assert staleness_trace.refresh_swing(steps, matrix, 10, 10) == {"one": 1.0, "two": 2.0}   # from step 10 on
    assert np.isnan(staleness_trace.refresh_swing(steps, matrix, 100, 0)["one"])            # nothing that far apart


def test_tracing_predictions_leaves_the_run_unchanged_and_sees_the_refreshes(tiny_world, tmp_path) -> None:
    """The trace records predictions without touching training (the same test metrics as the staleness bench's
    own run of that arm and seed, on the product's schedule), and its drift matrices follow from the steps."""
    from taskology.bench.staleness import LABEL_FRACTION

    root = tiny_world.root
    plain = run_one(root, 8, 4, 2, 1, tmp_path / "plain", 0, 4, LABEL_FRACTION)
    traced = staleness_trace.trace_run(root, 8, 4, 0, 4, tmp_path / "traced", probe_samples=8, width=4, batch=2,
                                       test_sequences=1)
    assert traced["metrics"] == plain["metrics"]
    assert 0 < traced["staleness"]["max_steps"] <= 3   # peers refreshed every 4 steps
    for task in ("depth", "normals"):
        steps, matrix = traced["drift"][task]["steps"], traced["drift"][task]["matrix"]
        assert steps == [0, 4, 8]
        m = np.asarray(matrix)
        assert np.allclose(m, m.T) and np.all(np.diag(m) == 0) and np.all(m[~np.eye(3, dtype=bool)] > 0)


def test_the_report_quotes_metrics_and_swings_and_shows_every_second_recorded_step() -> None:
    steps = [0, 100, 200, 300, 400]
    matrix = [[abs(a - b) / 100 for b in steps] for a in steps]
    run = {"metrics": {"depth": {"abs_rel": 0.25}, "normals": {"mean_angle_deg": 28.5}},
           "drift": {"depth": {"steps": steps, "matrix": matrix}, "normals": {"steps": steps, "matrix": matrix}}}
    runs = {"1": run, "100": run}
    record = {"command": "python experiments/staleness/staleness_oscillation.py --steps 400 --every 50",
              "date": "d", "cores": 2, "commit": "c", "seed": 3, "every": 50, "interval": 100,
              "relations_start": 100, "runs": runs, "swing": staleness_oscillation.swings(runs, 100, 100)}
    text = "\n".join(staleness_oscillation.report_lines(record))
    assert "| 100 | 0.2500 | 28.5000 | 1.0 / 2.0 | 1.000 / 2.000 |" in text
    assert "![drift matrices](staleness-oscillation-in-turn-seed3.png)" in text
    assert "| step | 0 | 100 | 200 | 300 | 400 |" in text and "| 400 | 4.000 | 3.000 | 2.000 | 1.000 | 0.000 |" in text


def test_bad_arguments_get_one_line_and_exit_2(tmp_path, capsys) -> None:
    assert staleness_oscillation.main(["--steps", "1000", "--every", "100", "--out", str(tmp_path)]) == 2
    assert staleness_oscillation.main(["--out", str(tmp_path / "nope")]) == 2
    assert staleness_oscillation.main(["--replot", str(tmp_path / "nope.json")]) == 2
    assert [line.split(":")[0] for line in capsys.readouterr().err.splitlines()] == ["staleness_oscillation"] * 3
