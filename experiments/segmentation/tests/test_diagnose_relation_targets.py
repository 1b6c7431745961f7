"""experiments/segmentation/diagnose_relation_targets.py: the vegetation-on-level-ground line counts what it says
it counts, and the whole diagnosis runs on a trained run."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from taskology.tasks.segmentation import SegmentationTask

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import diagnose_relation_targets as diagnose


def test_vegetation_on_the_evidence_is_broken_down_by_label_and_terrain_coverage_is_counted(capsys) -> None:
    seg = SegmentationTask(width=4, class_ids=(1, 9, 10, 14))               # road, vegetation, terrain, car
    # 8 pixels in a row: labels, what segmentation calls them, and the level-ground evidence
    labels = torch.tensor([10, 10, 10, 10, 14, 9, 1, 1]).view(1, 1, 1, 8)
    called = torch.tensor([9, 9, 10, 9, 9, 9, 1, 9]).view(1, 1, 1, 8)     # as contiguous ids below
    evidence = torch.tensor([1, 1, 1, 0, 1, 0, 1, 1], dtype=torch.bool).view(1, 1, 1, 8)
    index = {c: seg.class_index([c])[0] for c in (1, 9, 10, 14)}
    logits = torch.full((1, 4, 1, 8), -5.0)
    for x in range(8):
        logits[0, index[int(called[0, 0, 0, x])], 0, x] = 5.0
    diagnose.report_vegetation_on_evidence(evidence, labels, logits, seg)
    line = capsys.readouterr().out
    # evidence: 6 pixels; called vegetation on it: pixels 0, 1 (terrain), 4 (car), 7 (road) -> 4 of 6
    assert "evidence called vegetation: 0.6667 of the evidence" in line
    assert "road 0.250" in line and "terrain 0.500" in line and "car 0.250" in line and "vegetation 0." not in line
    # terrain: 4 pixels, 3 under the evidence, 2 of those called vegetation
    assert "covers 0.750 of the terrain pixels; covered and called vegetation: 0.500 of them" in line


def test_a_segmentation_without_vegetation_prints_nothing(capsys) -> None:
    seg = SegmentationTask(width=4, class_ids=(1, 10))
    mask = torch.ones(1, 1, 2, 2, dtype=torch.bool)
    diagnose.report_vegetation_on_evidence(mask, torch.full((1, 1, 2, 2), 10), torch.zeros(1, 2, 2, 2), seg)
    assert capsys.readouterr().out == ""


def test_the_diagnosis_of_a_tiny_run_reports_every_relation_target(tiny_world, tiny_run, capsys) -> None:
    sets = [f"--set={o}" for o in tiny_world.overrides]
    assert diagnose.main(["--config", "consistency", *sets, str(tiny_run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"8 val frames of {tiny_world.root}")
    for line in ("normals network:", "depth_normals target", "predicted ground", "facade pixels",
                 "ground evidence from the networks", "temporal pseudo-labels (colour check 0.1)"):
        assert line in out, line
    # the simulator's geometry marks level ground only, the street grid holds for its facades
    assert "ground evidence from the simulator:" in out and "precision 1.000" in out.split("from the simulator:")[1]
    assert "ground truth 0.0 deg from the nearer axis (1.00 within 10 deg)" in out


def test_a_run_without_checkpoints_is_refused_in_one_line(tiny_world, tmp_path, capsys) -> None:
    sets = [f"--set={o}" for o in tiny_world.overrides]
    assert diagnose.main(["--config", "consistency", *sets, str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: no checkpoint of task 'depth'\n"
