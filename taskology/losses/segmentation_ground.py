"""``segmentation_ground`` (logic, positive evidence): a level surface at ground height is ground.

The other logic relations can only *penalise* segmentation: "this normal is not level, so this is not
road" moves probability out of a class and the softmax puts it anywhere (docs/consistency.md, "A
tolerance for segmentation"). This relation gives segmentation *positive* evidence from geometry:

- From the peer depth ``d`` and the camera mount, each pixel's 3D point ``X = d K^-1 (u, v, 1)`` has a
  height above the ego ground plane ``h = up . (X - t)`` where ``up = R[:, 2]`` and ``t`` are the
  rotation's third column and the translation of ``cam_from_ego`` (the ego origin is on the ground,
  DESIGN.md; a point at the origin has ``X = t``, so ``h = 0``).
- Where ``|h| < height_tolerance_m``, the peer normal is within ``angle_tolerance_deg`` of ``up`` and the
  depth is not at its far limit, the pixel shows a level surface at ground height. In the towns we
  render (and in CARLA) that is road, sidewalk, road line or terrain (park lawns at kerb height):
  ``LEVEL_GROUND_CLASS_IDS``. Car roofs, walls, poles, people are not level or not at ground height.
- Loss: the cross-entropy of that class *group*, ``-log(p_road + p_sidewalk + p_road_line +
  p_terrain)``, averaged over the evidence pixels (0 where there are none). It says "one of these
  classes", never which one; the labels still decide between road and sidewalk.

Zero on ground truth (a ground pixel of the simulator is labelled one of those classes); positive where
segmentation puts a level surface at ground height in another class. The evidence mask is a hard test
on the peers' outputs, so no gradient could reach depth or normals: the relation teaches segmentation
only (``Relation.receivers``).

Options (``relations.segmentation_ground.options``): ``height_tolerance_m`` (default 0.4: the kerb is
0.15 m and a 10 % depth error at a pixel looking down from 1.6 m moves its height by 0.16 m) and
``angle_tolerance_deg`` (default 15).

Example:
    >>> from taskology.tasks.segmentation import SegmentationTask
    >>> from taskology.tasks.depth import DepthTask
    >>> from taskology.sim.sensors import default_cam_from_ego
    >>> tasks = {"segmentation": SegmentationTask(width=4, class_ids=(1, 14)), "depth": DepthTask(width=4)}
    >>> M = torch.from_numpy(default_cam_from_ego()).float()[None]
    >>> K = torch.tensor([[[40.0, 0, 0.5], [0, 40.0, 0.5], [0, 0, 1]]])
    >>> up = M[:, :3, 2].reshape(1, 3, 1, 1).expand(1, 3, 2, 2)
    >>> ground = ground_evidence_mask(torch.full((1, 1, 2, 2), 0.3), up, K, M, tasks["depth"])  # too near
    >>> bool(ground.any())
    False
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from taskology.data.schema import GROUND_CLASS_IDS, TERRAIN_CLASS_ID
from taskology.geometry.camera import points_from_depth_torch
from taskology.losses.depth_normals import far_mask
from taskology.losses.segmentation_geometry import up_in_camera
from taskology.tasks.base import Task

#: classes a level surface at ground height may belong to: the ground classes plus terrain (lawns).
LEVEL_GROUND_CLASS_IDS: frozenset[int] = GROUND_CLASS_IDS | {TERRAIN_CLASS_ID}


def height_above_ground(depth: torch.Tensor, K: torch.Tensor, cam_from_ego: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) height (metres) of each pixel's 3D point above the ego ground plane (module docstring)."""
    points = points_from_depth_torch(depth, K)                                  # (B, 3, H, W) camera frame
    t = cam_from_ego[:, :3, 3].reshape(-1, 3, 1, 1).to(depth.dtype)
    return ((points - t) * up_in_camera(cam_from_ego.to(depth.dtype))).sum(dim=1, keepdim=True)


def ground_evidence_mask(depth: torch.Tensor, normals: torch.Tensor, K: torch.Tensor, cam_from_ego: torch.Tensor,
                         depth_task: Task, height_tolerance_m: float = 0.4,
                         angle_tolerance_deg: float = 15.0) -> torch.Tensor:
    """(B, 1, H, W) bool: level surface at ground height, by the peers' depth and normals."""
    depth = depth.detach().clamp_min(0.0)
    up = up_in_camera(cam_from_ego.to(depth.dtype))
    level = (normals.detach().to(depth.dtype) * up).sum(dim=1, keepdim=True) > math.cos(
        math.radians(angle_tolerance_deg))
    low = height_above_ground(depth, K.to(depth.dtype), cam_from_ego).abs() < height_tolerance_m
    near = (depth > 0) & ~far_mask(depth, {"depth": depth_task})
    return level & low & near


def segmentation_ground_loss(outputs: Mapping[str, Mapping[str, torch.Tensor]], batch: Mapping[str, Any],
                             tasks: Mapping[str, Task], *, height_tolerance_m: float = 0.4,
                             angle_tolerance_deg: float = 15.0) -> torch.Tensor:
    """Mean ``-log p(level ground classes)`` over the evidence pixels -> scalar >= 0 (module docstring).
    The options' valid ranges are declared once, in ``RELATIONS``."""
    logits = outputs["segmentation"]["logits"]
    mask = ground_evidence_mask(outputs["depth"]["depth"].to(logits.dtype), outputs["normals"]["normals"],
                                batch["K"], batch["cam_from_ego"], tasks["depth"],
                                float(height_tolerance_m), float(angle_tolerance_deg)).to(logits.dtype)
    index = tasks["segmentation"].class_index(sorted(LEVEL_GROUND_CLASS_IDS))
    if not index:      # none of the classes is trained: no evidence can be given
        return logits.sum() * 0.0
    log_all = torch.logsumexp(logits, dim=1, keepdim=True)
    log_group = torch.logsumexp(logits[:, index], dim=1, keepdim=True)
    return ((log_all - log_group) * mask).sum() / mask.sum().clamp_min(1.0)
