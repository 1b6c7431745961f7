"""``segmentation_geometry`` (logic): ground is level, walls are upright, sky is far.

- Pixels of ground classes (road, sidewalk, road line: ``GROUND_CLASS_IDS``) have the ground's
  up-vector as normal. In the camera frame ``up = R_cam_from_ego @ (0, 0, 1)``; the camera is above
  the ground, so this direction points towards the camera (our normal convention).
  Term: ``mean(p_ground * (1 - cos(n, up)))``.
- Pixels of vertical structures (building, wall, fence, pole: ``VERTICAL_CLASS_IDS``) have horizontal
  normals: ``n . up = 0``. Term: ``mean(p_vertical * |n . up|)`` (the sine of the normal's elevation).
  It fixes only the elevation, not which way a facade faces; on 2 %-label runs it is the part of the
  building normals the depth-derived normals get wrong most (experiments/normals/README.md).
- Sky has no valid depth: the depth task must predict its far limit there. Term:
  ``mean(p_sky * (log max_depth - log depth) / (log max_depth - log min_depth))`` (0 at the limit).

The loss is the sum of the terms. Feeds segmentation (through ``p``), normals and depth.

Option ``segmentation_tolerance_deg`` (``relations.segmentation_geometry.options``, default 0): when
segmentation is the receiver, the ground and vertical terms teach it only where the peer's normal is
further than this angle from what the class implies: ``p_ground * relu(cos tol - cos(n, up))`` and
``p_vertical * relu(|n . up| - sin tol)``. Without it, every degree of error in the peer's normals
drains probability from the ground and vertical classes (the contrapositive "this normal is not up, so
this is not road" learnt from noise, docs/relations.md); with it, segmentation only hears "this
normal is clearly not level ground". Normals and depth, as receivers, keep the full terms. 0 is the
plain relation (the hinge with tolerance 0 equals it).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from taskology.data.schema import GROUND_CLASS_IDS, SKY_CLASS_ID, VERTICAL_CLASS_IDS
from taskology.tasks.base import Task


def up_in_camera(cam_from_ego: torch.Tensor) -> torch.Tensor:
    """(B, 4, 4) camera mounts -> (B, 3, 1, 1) unit ground up-vector in the camera frame."""
    return cam_from_ego[:, :3, 2].reshape(-1, 3, 1, 1)


def segmentation_geometry_terms(outputs: Mapping[str, Mapping[str, torch.Tensor]], batch: Mapping[str, Any],
                                tasks: Mapping[str, Task], tolerance_deg: float = 0.0) -> dict[str, torch.Tensor]:
    """The three terms (``ground``, ``vertical``, ``sky``), scalars; ``tolerance_deg`` > 0 hinges the ground and
    vertical terms (module docstring). Valid ranges of the options are declared once, in ``RELATIONS``
    (checked by the config and the engine)."""
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
    return {"ground": ground, "vertical": vertical, "sky": sky}


def segmentation_geometry_loss(outputs: Mapping[str, Mapping[str, torch.Tensor]], batch: Mapping[str, Any],
                               tasks: Mapping[str, Task], *, receiver: str | None = None,
                               segmentation_tolerance_deg: float = 0.0) -> torch.Tensor:
    """Sum of the terms -> scalar; hinged for the segmentation receiver (module docstring)."""
    tolerance = float(segmentation_tolerance_deg) if receiver == "segmentation" else 0.0
    terms = segmentation_geometry_terms(outputs, batch, tasks, tolerance)
    return terms["ground"] + terms["vertical"] + terms["sky"]
