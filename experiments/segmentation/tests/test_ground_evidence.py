"""experiments/segmentation/ground_evidence.py (copied from commit 05b8e3d): hand-worked heights, and on the
simulator's own depth and normals the evidence marks level ground only and most of the road."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from taskology.tasks.depth import DepthTask

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ground_evidence

# camera 1.5 m above the ego origin, looking along the vehicle's forward axis (camera y down = ego -z)
CAM_FROM_EGO = torch.tensor([[[0.0, -1, 0, 0], [0, 0, -1, 1.5], [1, 0, 0, 0], [0, 0, 0, 1]]])
K = torch.tensor([[[10.0, 0, 0], [0, 10.0, 0], [0, 0, 1]]])       # pixel (row 1.5, col 0): ray (0, 0.15, 1)
UP = torch.tensor([0.0, -1, 0]).view(1, 3, 1, 1)


def _pixel(depth: float, normal=UP, **options) -> bool:
    K_row = K.clone()
    K_row[0, 1, 2] = -1.5                                            # the pixel (0, 0) sees the ray (0, 0.15, 1)
    mask = ground_evidence.ground_evidence_mask(torch.full((1, 1, 1, 1), depth), normal, K_row, CAM_FROM_EGO,
                                                DepthTask(width=4), **options)
    return bool(mask[0, 0, 0, 0])


def test_heights_above_the_ground_plane_are_hand_worked() -> None:
    K_row = K.clone()
    K_row[0, 1, 2] = -1.5
    height = lambda d: float(ground_evidence.height_above_ground(torch.full((1, 1, 1, 1), d), K_row, CAM_FROM_EGO))
    assert height(10.0) == pytest.approx(0.0, abs=1e-6)       # the ray meets the ground 10 m ahead
    assert height(5.0) == pytest.approx(0.75, abs=1e-6)       # halfway: half the camera's height up
    assert height(20.0) == pytest.approx(-1.5, abs=1e-6)      # below the ground plane


def test_evidence_needs_a_level_normal_at_ground_height_within_the_tolerances() -> None:
    assert _pixel(10.0)                                                         # on the ground, level
    assert not _pixel(5.0)                                                      # 0.75 m up
    assert _pixel(9.0)                                                          # 0.15 m up: a kerb
    assert not _pixel(9.0, height_tolerance_m=0.05)                             # ... not with 5 cm
    wall = torch.tensor([0.0, 0, -1]).view(1, 3, 1, 1)
    assert not _pixel(10.0, wall)                                               # at ground height, not level
    tilted = torch.tensor([0.0, -1, -0.2]).view(1, 3, 1, 1) / (1.04 ** 0.5)     # 11.3 deg from up
    assert _pixel(10.0, tilted) and not _pixel(10.0, tilted, angle_tolerance_deg=10.0)


def test_on_the_simulators_geometry_the_evidence_is_level_ground_and_covers_most_of_the_road(tiny_world) -> None:
    from taskology.config import load_config
    from taskology.data.datasets import FrameDataset
    from taskology.engine.batches import collate
    from taskology.engine.task_data import manifest_for

    manifest = manifest_for(tiny_world.root, load_config("consistency", tiny_world.overrides))
    layers = ("camera/K", "camera/cam_from_ego", "camera/depth", "camera/normals", "camera/semantic")
    frames = [d[i] for split in ("val", "test") for d in [FrameDataset(manifest, split, layers=layers)]
              for i in range(len(d))]
    batch = collate(frames)
    depth_task = DepthTask(width=4)
    depth = torch.where(batch["depth"] > 0, batch["depth"], torch.full_like(batch["depth"], depth_task.max_depth))
    semantic = batch["semantic"]
    level = torch.isin(semantic, torch.tensor(sorted(ground_evidence.LEVEL_GROUND_CLASS_IDS)))
    road, sidewalk = semantic == 1, semantic == 2

    def mask(**options) -> torch.Tensor:
        return ground_evidence.ground_evidence_mask(depth, batch["normals"], batch["K"], batch["cam_from_ego"],
                                                    depth_task, **options)[:, 0]

    evidence = mask()
    assert int(evidence.sum()) > 100
    assert float((evidence & level).sum() / evidence.sum()) == 1.0
    assert float((evidence & road).sum() / road.sum()) > 0.8
    tight = mask(height_tolerance_m=0.05)   # the 0.15 m kerb: sidewalk excluded by a 5 cm tolerance, road kept
    assert float((tight & sidewalk).sum()) < 0.05 * float((evidence & sidewalk).sum())
    assert float((tight & road).sum() / road.sum()) > 0.8
