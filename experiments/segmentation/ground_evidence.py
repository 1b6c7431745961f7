"""The level-ground evidence of the dropped ``segmentation_ground`` relation: a level surface at ground height.
Run: not a script; ``diagnose_relation_targets.py`` imports it (its "ground evidence" lines).

Copied from ``taskology/losses/segmentation_ground.py`` as of commit 05b8e3d, the last commit with the relation
(dropped: it cost segmentation mIoU on validation, README.md); the mask is unchanged, the loss is left out.

- From the peer depth ``d`` and the camera mount, each pixel's 3D point ``X = d K^-1 (u, v, 1)`` has a
  height above the ego ground plane ``h = up . (X - t)`` where ``up = R[:, 2]`` and ``t`` are the
  rotation's third column and the translation of ``cam_from_ego`` (the ego origin is on the ground; a
  point at the origin has ``X = t``, so ``h = 0``).
- Where ``|h| < height_tolerance_m``, the peer normal is within ``angle_tolerance_deg`` of ``up`` and the
  depth is not at its far limit, the pixel shows a level surface at ground height. In the towns we
  render (and in CARLA) that is road, sidewalk, road line or terrain (park lawns at kerb height):
  :data:`LEVEL_GROUND_CLASS_IDS`. Car roofs, walls, poles, people are not level or not at ground height.

Defaults: ``height_tolerance_m`` 0.4 (the kerb is 0.15 m and a 10 % depth error at a pixel looking down from
1.6 m moves its height by 0.16 m), ``angle_tolerance_deg`` 15.

Example:
    >>> from taskology.tasks.depth import DepthTask
    >>> from taskology.sim.sensors import default_cam_from_ego
    >>> M = torch.from_numpy(default_cam_from_ego()).float()[None]
    >>> K = torch.tensor([[[40.0, 0, 0.5], [0, 40.0, 0.5], [0, 0, 1]]])
    >>> up = M[:, :3, 2].reshape(1, 3, 1, 1).expand(1, 3, 2, 2)
    >>> ground = ground_evidence_mask(torch.full((1, 1, 2, 2), 0.3), up, K, M, DepthTask(width=4))  # too near
    >>> bool(ground.any())
    False
"""
from __future__ import annotations

import math
from typing import Any

import torch

from taskology.data.schema import GROUND_CLASS_IDS, TERRAIN_CLASS_ID
from taskology.geometry.camera import points_from_depth_torch
from taskology.losses.depth_normals import far_mask
from taskology.losses.segmentation_geometry import up_in_camera

#: classes a level surface at ground height may belong to: the ground classes plus terrain (lawns).
LEVEL_GROUND_CLASS_IDS: frozenset[int] = frozenset(GROUND_CLASS_IDS) | {TERRAIN_CLASS_ID}


def height_above_ground(depth: torch.Tensor, K: torch.Tensor, cam_from_ego: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) height (metres) of each pixel's 3D point above the ego ground plane (module docstring)."""
    points = points_from_depth_torch(depth, K)                                  # (B, 3, H, W) camera frame
    t = cam_from_ego[:, :3, 3].reshape(-1, 3, 1, 1).to(depth.dtype)
    return ((points - t) * up_in_camera(cam_from_ego.to(depth.dtype))).sum(dim=1, keepdim=True)


def ground_evidence_mask(depth: torch.Tensor, normals: torch.Tensor, K: torch.Tensor, cam_from_ego: torch.Tensor,
                         depth_task: Any, height_tolerance_m: float = 0.4,
                         angle_tolerance_deg: float = 15.0) -> torch.Tensor:
    """(B, 1, H, W) bool: level surface at ground height, by the peers' depth and normals (``depth_task``: the
    depth task, whose far limit marks depth without shape)."""
    depth = depth.detach().clamp_min(0.0)
    up = up_in_camera(cam_from_ego.to(depth.dtype))
    level = (normals.detach().to(depth.dtype) * up).sum(dim=1, keepdim=True) > math.cos(
        math.radians(angle_tolerance_deg))
    low = height_above_ground(depth, K.to(depth.dtype), cam_from_ego).abs() < height_tolerance_m
    near = (depth > 0) & ~far_mask(depth, {"depth": depth_task})
    return level & low & near
