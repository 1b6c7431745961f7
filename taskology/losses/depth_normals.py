"""``depth_normals``: surface normals are the derivative of depth.

Normals derived from the depth map (:func:`taskology.geometry.camera.normals_from_depth_torch`:
central differences of the unprojected points, invalid across relative depth jumps, i.e. at
discontinuities) must agree with the predicted normals. Loss: mean of ``1 - cos(angle)`` over pixels
where the derived normal is valid and the depth is not at the far limit (sky, where depth carries no
shape). Feeds depth (through the derivative) and normals.

Example:
    >>> K = torch.tensor([[[40.0, 0, 47.5], [0, 40.0, 15.5], [0, 0, 1]]])
    >>> depth = {"depth": torch.full((1, 1, 32, 96), 5.0)}
    >>> facing = {"normals": torch.tensor([0.0, 0, -1]).view(1, 3, 1, 1).expand(1, 3, 32, 96)}
    >>> float(depth_normals_loss({"depth": depth, "normals": facing}, {"K": K}, {}))
    0.0
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from taskology.geometry.camera import normals_from_depth_torch
from taskology.tasks.base import Task

#: share of the depth task's ``max_depth`` above which a pixel counts as "far" (sky) and is masked.
FAR_FRACTION = 0.95


def far_mask(depth: torch.Tensor, tasks: Mapping[str, Task]) -> torch.Tensor:
    """(B, 1, H, W) bool, True where depth is at the depth task's far limit (no shape there)."""
    max_depth = float(getattr(tasks.get("depth"), "max_depth", float("inf")))
    return depth >= FAR_FRACTION * max_depth


def depth_normals_loss(outputs: Mapping[str, Mapping[str, torch.Tensor]], batch: Mapping[str, Any],
                       tasks: Mapping[str, Task]) -> torch.Tensor:
    """Mean ``1 - cos`` between depth-derived and predicted normals on valid pixels -> scalar."""
    depth = outputs["depth"]["depth"]                       # (B, 1, H, W) metres
    normals = outputs["normals"]["normals"]                 # (B, 3, H, W) unit
    derived, valid = normals_from_depth_torch(depth, batch["K"].to(depth.dtype))
    mask = (valid & ~far_mask(depth, tasks)).to(depth.dtype)  # (B, 1, H, W)
    cos = (derived * normals.to(depth.dtype)).sum(dim=1, keepdim=True)
    return ((1.0 - cos) * mask).sum() / mask.sum().clamp_min(1.0)
