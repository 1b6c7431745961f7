"""``segmentation_geometry`` (logic): ground is level, walls are upright, sky is far.

- Pixels of ground classes (road, sidewalk, road line: ``GROUND_CLASS_IDS``) have the ground's
  up-vector as normal. In the camera frame ``up = R_cam_from_ego @ (0, 0, 1)``; the camera is above
  the ground, so this direction points towards the camera (our normal convention).
  Term: ``mean(p_ground * (1 - cos(n, up)))``.
- Pixels of vertical structures (building, wall, fence, pole: ``VERTICAL_CLASS_IDS``) have horizontal
  normals: ``n . up = 0``. Term: ``mean(p_vertical * |n . up|)`` (the sine of the normal's elevation).
  It fixes only the elevation, not which way a facade faces; on 2 %-label runs it is the part of the
  building normals the depth-derived normals get wrong most (see docs/consistency.md).
- Sky has no valid depth: the depth task must predict its far limit there. Term:
  ``mean(p_sky * (log max_depth - log depth) / (log max_depth - log min_depth))`` (0 at the limit).
- Option ``manhattan_weight`` (default 0: off): on a street grid, facades (building, wall, fence:
  ``FACADE_CLASS_IDS``) face along or across the street, and the vehicle drives along it. So a facade's
  normal is one of the vehicle's horizontal axes, forward or left (the ego frame's x and y, in the camera
  frame ``R_cam_from_ego @ e_x`` and ``@ e_y``), with the sign that faces the camera (``a . ray < 0``).
  Term: ``mean(p_facade * (1 - max(cos(n, a_forward), cos(n, a_left))))``, weighted by the option: it
  pulls each facade normal onto the nearer axis. That fixes the tilt but keeps the network's choice of
  axis, right or wrong; on this project's validation runs the choice was the error, and the term did not
  help (docs/consistency.md). It teaches only normals (the segmentation and depth receivers do not get it). On the
  27-sequence world's validation frames the simulator's facade normals are within 10 degrees of an axis
  on 95 % of the facade pixels (mean 1.7 degrees; ``scripts/diagnose_relation_targets.py``); where
  streets do not form a grid, leave it at 0.

The loss is the sum of the terms. Feeds segmentation (through ``p``), normals and depth.

Option ``segmentation_tolerance_deg`` (``relations.segmentation_geometry.options``, default 0): when
segmentation is the receiver, the ground and vertical terms teach it only where the peer's normal is
further than this angle from what the class implies: ``p_ground * relu(cos tol - cos(n, up))`` and
``p_vertical * relu(|n . up| - sin tol)``. Without it, every degree of error in the peer's normals
drains probability from the ground and vertical classes (the contrapositive "this normal is not up, so
this is not road" learnt from noise, docs/consistency.md); with it, segmentation only hears "this
normal is clearly not level ground". Normals and depth, as receivers, keep the full terms. 0 is the
plain relation (the hinge with tolerance 0 equals it).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from taskology.data.schema import FACADE_CLASS_IDS, GROUND_CLASS_IDS, SKY_CLASS_ID, VERTICAL_CLASS_IDS
from taskology.geometry.camera import points_from_depth_torch
from taskology.tasks.base import Task


def up_in_camera(cam_from_ego: torch.Tensor) -> torch.Tensor:
    """(B, 4, 4) camera mounts -> (B, 3, 1, 1) unit ground up-vector in the camera frame."""
    return cam_from_ego[:, :3, 2].reshape(-1, 3, 1, 1)


def facade_axes(cam_from_ego: torch.Tensor, K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The vehicle's forward and left axes in the camera frame, each signed per pixel to face the camera:
    (B, 2, 3, H, W) unit vectors (module docstring, ``manhattan_weight``)."""
    rays = points_from_depth_torch(torch.ones(cam_from_ego.shape[0], 1, height, width, dtype=cam_from_ego.dtype,
                                              device=cam_from_ego.device), K)            # (B, 3, H, W), z = 1
    axes = cam_from_ego[:, :3, :2].transpose(1, 2).reshape(-1, 2, 3, 1, 1)               # ego x, y in the camera
    facing = -torch.sign((axes * rays.unsqueeze(1)).sum(dim=2, keepdim=True))
    return axes * torch.where(facing == 0, torch.ones_like(facing), facing)


def segmentation_geometry_terms(outputs: Mapping[str, Mapping[str, torch.Tensor]], batch: Mapping[str, Any],
                                tasks: Mapping[str, Task], tolerance_deg: float = 0.0,
                                manhattan: bool = False) -> dict[str, torch.Tensor]:
    """The three terms, and the facade term as ``manhattan`` when asked (it needs ``batch["K"]``);
    ``tolerance_deg`` > 0 hinges the ground and vertical terms (module docstring). Valid ranges of the
    options are declared once, in ``RELATIONS`` (checked by the config and the engine)."""
    logits = outputs["segmentation"]["logits"]
    normals = outputs["normals"]["normals"].to(logits.dtype)
    depth = outputs["depth"]["depth"].to(logits.dtype)
    segmentation, depth_task = tasks["segmentation"], tasks["depth"]
    up = up_in_camera(batch["cam_from_ego"].to(logits.dtype))
    p_ground, p_vertical, p_sky = segmentation.class_probabilities(
        logits, GROUND_CLASS_IDS, VERTICAL_CLASS_IDS, [SKY_CLASS_ID])
    elevation = (normals * up).sum(dim=1, keepdim=True)     # cos(n, up)
    if tolerance_deg > 0:
        tol = math.radians(tolerance_deg)
        ground = (p_ground * (math.cos(tol) - elevation).clamp_min(0.0)).mean()
        vertical = (p_vertical * (elevation.abs() - math.sin(tol)).clamp_min(0.0)).mean()
    else:
        ground = (p_ground * (1.0 - elevation)).mean()
        vertical = (p_vertical * elevation.abs()).mean()
    lo, hi = math.log(depth_task.min_depth), math.log(depth_task.max_depth)
    nearness = ((hi - torch.log(depth.clamp_min(1e-6))) / (hi - lo)).clamp_min(0.0)
    sky = (p_sky * nearness).mean()
    terms = {"ground": ground, "vertical": vertical, "sky": sky}
    if manhattan:
        (p_facade,) = segmentation.class_probabilities(logits, FACADE_CLASS_IDS)
        axes = facade_axes(batch["cam_from_ego"].to(logits.dtype), batch["K"].to(logits.dtype), *normals.shape[-2:])
        nearest = (normals.unsqueeze(1) * axes).sum(dim=2).amax(dim=1, keepdim=True)   # (B, 1, H, W)
        terms["manhattan"] = (p_facade * (1.0 - nearest)).mean()
    return terms


def segmentation_geometry_loss(outputs: Mapping[str, Mapping[str, torch.Tensor]], batch: Mapping[str, Any],
                               tasks: Mapping[str, Task], *, receiver: str | None = None,
                               segmentation_tolerance_deg: float = 0.0, manhattan_weight: float = 0.0) -> torch.Tensor:
    """Sum of the terms -> scalar; hinged for the segmentation receiver, the facade term for the normals
    receiver (or no named receiver) only (module docstring)."""
    tolerance = float(segmentation_tolerance_deg) if receiver == "segmentation" else 0.0
    manhattan = float(manhattan_weight) if receiver in (None, "normals") else 0.0
    terms = segmentation_geometry_terms(outputs, batch, tasks, tolerance, manhattan=manhattan > 0)
    loss = terms["ground"] + terms["vertical"] + terms["sky"]
    return loss + manhattan * terms["manhattan"] if manhattan > 0 else loss
