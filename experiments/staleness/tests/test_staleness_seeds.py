"""experiments/staleness/staleness_seeds.py combine: runs pooled arm by arm, pairs with the fresh arm, repeated runs checked."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import staleness_seeds


def _run(depth: float, normals: float) -> dict:
    return {"metrics": {"depth": {"abs_rel": depth}, "normals": {"mean_angle_deg": normals}}}


def _write(path: Path, runs: dict) -> Path:
    path.write_text(json.dumps({"runs": runs}))
    return path


def test_a_file_adding_arms_on_seeds_already_run_pairs_with_the_earlier_fresh_runs(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.json", {"1": {"0": _run(0.20, 20.0), "1": _run(0.25, 25.0)},
                                         "50": {"0": _run(0.22, 20.0), "1": _run(0.25, 25.0)}})
    # new arm "200" on the same seeds, plus a repeat of fresh seed 0 (identical) and of seed 1 (not)
    second = _write(tmp_path / "b.json", {"1": {"0": _run(0.20, 20.0), "1": _run(0.30, 25.0)},
                                          "200": {"0": _run(0.24, 22.0), "1": _run(0.30, 25.0)}})
    text = staleness_seeds.combine([first, second])
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    # arm 200 paired with a.json's fresh runs: depth +20 % and +20 % (0.24 vs 0.20, 0.30 vs 0.25), s.e. 0
    assert rows["200"].startswith("| 200 | 2 | +20.0 ± 0.0% | +5.0 ± 5.0% | +20.0% | +4.4% |")
    assert rows["50"].startswith("| 50 | 2 | +5.0 ± 5.0% |")
    assert "Runs held by more than one file: 2, identical: 1" in text
    assert f"- arm '1' seed 1: {second} differs from {first}" in text


def test_combine_without_a_fresh_arm_says_so(tmp_path: Path) -> None:
    only = _write(tmp_path / "a.json", {"50": {"0": _run(0.2, 20.0)}})
    with pytest.raises(SystemExit, match="no fresh arm"):
        staleness_seeds.combine([only])


def test_historical_results_pool_whatever_their_arms_and_new_runs_refuse_dropped_mitigations(tmp_path: Path) -> None:
    # the study's own result files hold arms of the dropped mitigations: combine still reads them
    # the confirmation on seeds 13-25 quoted in the README: 50 steps depth +2.5 %, normals +1.6 %; 200 steps
    # depth +0.5 %, normals +1.3 % (changes of the seed means)
    results = Path(__file__).resolve().parents[1] / "results"
    text = staleness_seeds.combine([results / "staleness-seeds-staggered-13-25.json"])
    assert "| 50, staggered | 13 | +2.8 ± 1.7% | +1.7 ± 1.3% | +2.5% | +1.6% |" in text
    assert "| 200, staggered | 13 | +0.7 ± 1.7% | +1.5 ± 1.2% | +0.5% | +1.3% |" in text
    with pytest.raises(SystemExit, match="mean of last 2.*05b8e3d"):
        staleness_seeds.main(["run", str(tmp_path / "out"), "1", "0", "1;200, mean of last 2"])
    assert not (tmp_path / "out").exists()
