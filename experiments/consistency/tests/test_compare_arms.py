"""experiments/consistency/compare_arms.py: the validation check of a preset change (two variants of one arm)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compare_arms


def _write(folder: Path, seed: int, depth: float, miou: float, world: str = "w1") -> None:
    run = folder / f"0.1-collective-{seed}"
    run.mkdir(parents=True)
    tasks = {"depth": {"abs_rel": depth}, "normals": {"mean_angle_deg": 20.0}, "segmentation": {"miou": miou},
             "motion": {"ego_translation_err_m": 0.2}}
    (run / "metrics.json").write_text(json.dumps({"seed": seed, "split": "val", "world": world, "tasks": tasks}))


def test_changes_per_seed_of_the_means_and_their_sum_are_known_answers(tmp_path: Path) -> None:
    base, new = tmp_path / "base", tmp_path / "new"
    _write(base, 0, 0.20, 0.50), _write(base, 1, 0.30, 0.40)
    _write(new, 0, 0.18, 0.45), _write(new, 1, 0.30, 0.40), _write(new, 2, 0.10, 0.90)  # seed 2: base lacks it
    text, total = compare_arms.compare(compare_arms.load_runs(base, 0.1, "collective"),
                                       compare_arms.load_runs(new, 0.1, "collective"))
    assert text.startswith("Seeds 0, 1; split val; world w1.")
    # depth: means 0.25 -> 0.24 (+4.0 %), seeds +10.0 % / +0.0 %; mIoU: 0.45 -> 0.425 (-5.6 %), seeds -10.0 % / +0.0 %
    assert "| depth | abs_rel | 0.2500 | 0.2400 | +4.0 % | +10.0 % / +0.0 % |" in text
    assert "| segmentation | miou | 0.4500 | 0.4250 | -5.6 % | -10.0 % / +0.0 % |" in text
    assert total == pytest.approx(0.04 - 0.025 / 0.45)


def test_runs_of_different_worlds_are_refused(tmp_path: Path) -> None:
    _write(tmp_path / "a", 0, 0.2, 0.5, world="w1")
    _write(tmp_path / "b", 0, 0.2, 0.5, world="w2")
    with pytest.raises(SystemExit, match="differ in world"):
        compare_arms.compare(compare_arms.load_runs(tmp_path / "a", 0.1, "collective"),
                             compare_arms.load_runs(tmp_path / "b", 0.1, "collective"))
