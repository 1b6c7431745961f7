"""experiments/segmentation/diagnose_segmentation_errors.py: mIoU, boundaries, affinities and the mean-field
smoothing have known answers, and the diagnosis runs on trained runs."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import diagnose_segmentation_errors as errors


def test_miou_counts_only_the_classes_present_and_ignores_unlabelled_pixels() -> None:
    truth = torch.tensor([[0, 0, 1, 1, -1]])
    assert errors.miou(truth.clamp_min(0), truth, 5) == 1.0                       # class 2..4 absent: not counted
    assert errors.miou(torch.tensor([[0, 1, 1, 1, 0]]), truth, 2) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_colour_affinities_are_one_between_equal_colours_and_zero_across_the_border() -> None:
    rgb = torch.zeros(1, 3, 2, 3)
    rgb[..., 2] = 1.0                                                              # the last column is white
    weights = errors.affinities(rgb, None, None, 0.05, None, None)
    right = weights[errors.NEIGHBOURS.index((0, 1))][0, 0]
    assert right.tolist() == [[1.0, pytest.approx(0.0), 0.0], [1.0, pytest.approx(0.0), 0.0]]   # 0 at the image edge
    down = weights[errors.NEIGHBOURS.index((1, 0))][0, 0]
    assert down.tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]


def test_mean_field_pulls_an_unsure_pixel_to_its_confident_neighbours() -> None:
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, 0, 0, 0] = logits[0, 0, 0, 2] = 5.0                                 # both ends: class 0
    logits[0, 1, 0, 1] = 0.1                                                       # the middle leans to class 1
    weights = errors.affinities(torch.zeros(1, 3, 1, 3), None, None, 0.05, None, None)
    assert errors.mean_field(logits, weights, 0.0).argmax(1).tolist() == [[[0, 1, 0]]]
    assert errors.mean_field(logits, weights, 1.0).argmax(1).tolist() == [[[0, 0, 0]]]


def test_the_diagnosis_of_tiny_runs_reports_every_class_and_the_smoothing(tiny_world, tiny_run, capsys) -> None:
    sets = [f"--set={o}" for o in tiny_world.overrides]
    assert errors.main(["--config", "consistency", *sets, str(tiny_run), "--geometry", str(tiny_run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"8 val frames of {tiny_world.root}") and f"{tiny_run}: mIoU " in out
    assert "errors on a class boundary" in out and "affinity from colour + simulator geometry" in out
    assert errors.main(["--config", "consistency", *sets, str(tiny_run), "--split", "train"]) == 0
    assert " train frames of " in capsys.readouterr().out
    assert errors.main(["--config", "consistency", *sets, str(tiny_run), "--split", "train", "--geometry",
                        str(tiny_run)]) == 2
