"""scripts/staleness_seeds.py combine: runs pooled arm by arm, pairs with the fresh arm, repeated runs checked."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("staleness_seeds",
                                               Path(__file__).parents[2] / "scripts" / "staleness_seeds.py")
staleness_seeds = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(staleness_seeds)


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
