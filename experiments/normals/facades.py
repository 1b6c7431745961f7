"""Which way facades face: the vehicle's two horizontal axes in the camera frame, signed per pixel to face the camera.
Run: not a script; ``diagnose_facade_parallax.py`` and ../segmentation/diagnose_relation_targets.py (its facade line) import it.

:func:`facade_axes` is copied from ``taskology/losses/segmentation_geometry.py`` as of commit 05b8e3d, the last
commit with the street-grid prior it served (``relations.segmentation_geometry.options.manhattan_weight``,
dropped: README.md). On a street grid a facade faces along the street or across it, and the vehicle drives
along it, so a facade's normal is (nearly) the vehicle's forward axis or its left axis, whichever faces the
camera at that pixel.

Example (camera looking along the vehicle's forward axis, its x axis the vehicle's right; pixel (0, 0) looks
left of the centre, along the ray (-0.3, 0, 1)):
    >>> cam_from_ego = torch.tensor([[[0.0, -1, 0, 0], [0, 0, -1, 1.5], [1, 0, 0, 0], [0, 0, 0, 1]]])
    >>> K = torch.tensor([[[10.0, 0, 3], [0, 10.0, 0], [0, 0, 1]]])
    >>> facade_axes(cam_from_ego, K, 1, 1)[0, :, :, 0, 0].tolist()   # across the street; along it, facing right
    [[-0.0, -0.0, -1.0], [1.0, -0.0, -0.0]]
"""
from __future__ import annotations

import torch

from taskology.geometry.camera import points_from_depth_torch


def facade_axes(cam_from_ego: torch.Tensor, K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The vehicle's forward and left axes in the camera frame, each signed per pixel to face the camera:
    (B, 2, 3, H, W) unit vectors (``cam_from_ego`` (B, 4, 4), ``K`` (B, 3, 3))."""
    rays = points_from_depth_torch(torch.ones(cam_from_ego.shape[0], 1, height, width, dtype=cam_from_ego.dtype,
                                              device=cam_from_ego.device), K)            # (B, 3, H, W), z = 1
    axes = cam_from_ego[:, :3, :2].transpose(1, 2).reshape(-1, 2, 3, 1, 1)               # ego x, y in the camera
    facing = -torch.sign((axes * rays.unsqueeze(1)).sum(dim=2, keepdim=True))
    return axes * torch.where(facing == 0, torch.ones_like(facing), facing)


def snap_to_axes(normals: torch.Tensor, axes: torch.Tensor) -> torch.Tensor:
    """Each normal (B, 3, H, W) replaced by the nearer (larger cosine) of its pixel's two axes (B, 2, 3, H, W)."""
    nearer = (normals.unsqueeze(1) * axes).sum(dim=2).argmax(dim=1, keepdim=True)     # (B, 1, H, W)
    return torch.where(nearer == 0, axes[:, 0], axes[:, 1])
