"""experiments/consistency/depth_scale_diagnosis.py: median scaling removes a wrong scale and nothing else, and the
diagnosis reads a run's depth checkpoint."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import depth_scale_diagnosis as diagnosis


def test_median_scaling_removes_the_scale_and_keeps_the_shape_error() -> None:
    truth = torch.tensor([[[[2.0, 4.0, 0.0], [8.0, 16.0, 0.0]]]])          # 0: no ground truth
    shape = truth * torch.tensor([[[[1.0, 1.0, 1.0], [1.0, 1.5, 1.0]]]])    # one pixel 50 % too far
    raw, scaled, logs = diagnosis.scale_figures(shape, truth)
    assert raw == pytest.approx([0.125]) and scaled == pytest.approx([0.125]) and logs == pytest.approx([0.0])
    raw, scaled, logs = diagnosis.scale_figures(3 * shape, truth)           # and three times too far
    assert raw == pytest.approx([(2 + 2 + 2 + 3.5) / 4]) and scaled == pytest.approx([0.125])
    assert logs == pytest.approx([math.log(3)])


def test_the_diagnosis_of_a_tiny_run_covers_every_validation_frame(tiny_world, tiny_run, capsys) -> None:
    assert diagnosis.main([str(tiny_run), str(tiny_world.root), *tiny_world.overrides]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["frames"] == 8 and figures["run"] == str(tiny_run)
    assert all(math.isfinite(figures[k]) for k in ("abs_rel", "abs_rel_median_scaled", "mean_abs_log_scale"))
    assert diagnosis.main([str(tiny_run.parent / "nope"), str(tiny_world.root), *tiny_world.overrides]) == 2
