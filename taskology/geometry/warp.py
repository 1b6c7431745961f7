"""Differentiable photometric warp of frame t+1 into frame t (depth + ego-motion + object motion).

For every pixel ``(v, u)`` of frame t with depth ``z``:

1. unproject: ``p_t = z K^-1 [u, v, 1]^T`` (camera t, OpenCV axes, metres);
2. move: ``p_t1 = R p_t + t + o(v, u)`` where ``[R | t] = cam_t1_from_cam_t`` and ``o`` is the optional
   per-pixel object translation, expressed in the camera t+1 frame and added *after* the rigid motion
   (it is the residual motion of independently moving objects, zero on static background);
3. project into camera t+1: ``[u', v'] = (K p_t1)[:2] / p_t1_z``;
4. sample ``image_t1`` bilinearly at ``(u', v')`` with ``grid_sample(align_corners=True)``: the centre of
   pixel ``(v, u)`` is at coordinates ``(u, v)``, the convention of :mod:`taskology.geometry.camera`.

A pixel is *valid* when its depth is > 0 and finite, the moved point is in front of camera t+1
(``z > 1e-6`` m) and ``(u', v')`` lies inside ``[0, W-1] x [0, H-1]`` (so all four bilinear taps are real
pixels; 1e-6 px of slack absorbs rounding, and such points are clamped onto the border). Invalid pixels get 0 in ``image`` and must be masked by the caller. Everything is
differentiable w.r.t. ``depth_t``, ``cam_t1_from_cam_t``, ``object_translation`` and ``image_t1``.

Example:
    >>> import torch
    >>> K = torch.tensor([[[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]]])
    >>> image = torch.rand(1, 3, 12, 16)
    >>> result = warp_frame(image, torch.full((1, 1, 12, 16), 5.0), K, torch.eye(4)[None])
    >>> bool(torch.allclose(result.image, image, atol=1e-5)), bool(result.valid.all())
    (True, True)
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from taskology.geometry.camera import points_from_depth_torch, project_points_torch
from taskology.geometry.rigid import transform_points_torch

__all__ = ["WarpResult", "warp_frame"]

#: moved points closer than this (metres) to camera t+1's image plane count as behind it.
_MIN_DEPTH = 1e-6
#: projections this far (pixels) outside the image still count as inside (rounding of K^-1 K).
_EDGE_TOLERANCE_PX = 1e-6


class WarpResult(NamedTuple):
    """Output of :func:`warp_frame`.

    Attributes:
        image: (B, C, H, W) frame t+1 sampled where frame t's points land; 0 where not valid.
        projected_depth: (B, 1, H, W) z (metres) of the moved point in camera t+1.
        valid: (B, 1, H, W) bool: depth_t > 0, in front of camera t+1, inside the image.
    """

    image: torch.Tensor
    projected_depth: torch.Tensor
    valid: torch.Tensor


def _check_inputs(image_t1: torch.Tensor, depth_t: torch.Tensor, K: torch.Tensor, cam_t1_from_cam_t: torch.Tensor,
                  object_translation: torch.Tensor | None) -> None:
    if image_t1.ndim != 4:
        raise ValueError(f"warp_frame: image_t1 must be (B, C, H, W), found {tuple(image_t1.shape)}")
    batch, _, height, width = image_t1.shape
    expected = {
        "depth_t": (depth_t, (batch, 1, height, width)),
        "K": (K, (batch, 3, 3)),
        "cam_t1_from_cam_t": (cam_t1_from_cam_t, (batch, 4, 4)),
    }
    if object_translation is not None:
        expected["object_translation"] = (object_translation, (batch, 3, height, width))
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"warp_frame: {name} must be {shape} to match image_t1 {tuple(image_t1.shape)}, "
                             f"found {tuple(tensor.shape)}")
    if height < 2 or width < 2:
        raise ValueError(f"warp_frame: image must be at least 2x2 pixels, found {height}x{width}")


def warp_frame(image_t1: torch.Tensor, depth_t: torch.Tensor, K: torch.Tensor, cam_t1_from_cam_t: torch.Tensor,
               object_translation: torch.Tensor | None = None) -> WarpResult:
    """Warp frame t+1 into frame t's pixel grid (see module docstring for the exact model).

    Args:
        image_t1: (B, C, H, W) float, frame t+1.
        depth_t: (B, 1, H, W) float, planar depth of frame t in metres (``<= 0`` = invalid).
        K: (B, 3, 3) intrinsics shared by both frames.
        cam_t1_from_cam_t: (B, 4, 4) ego-motion.
        object_translation: optional (B, 3, H, W) per-pixel translation in metres, camera t+1 frame,
            added after the rigid motion.

    Returns:
        :class:`WarpResult` (image, projected_depth, valid); reconstruct frame t as ``result.image`` on
        ``result.valid``.
    """
    _check_inputs(image_t1, depth_t, K, cam_t1_from_cam_t, object_translation)
    batch, _, height, width = image_t1.shape
    dtype = image_t1.dtype
    depth_ok = torch.isfinite(depth_t) & (depth_t > 0)  # (B,1,H,W)
    depth = torch.where(depth_ok, depth_t, torch.zeros_like(depth_t)).to(dtype)
    points_t = points_from_depth_torch(depth, K.to(dtype))  # (B,3,H,W)
    points_t1 = transform_points_torch(cam_t1_from_cam_t.to(dtype), points_t)  # (B,3,H,W)
    if object_translation is not None:
        points_t1 = points_t1 + object_translation.to(dtype)
    pixels, z_t1 = project_points_torch(points_t1, K.to(dtype))  # (B,2,H,W), (B,1,H,W)
    u, v = pixels[:, 0], pixels[:, 1]  # (B,H,W)
    slack = _EDGE_TOLERANCE_PX
    inside = (u >= -slack) & (u <= width - 1 + slack) & (v >= -slack) & (v <= height - 1 + slack)  # (B,H,W)
    valid = depth_ok & (z_t1 > _MIN_DEPTH) & inside[:, None]  # (B,1,H,W)
    grid = torch.stack([2.0 * u / (width - 1) - 1.0, 2.0 * v / (height - 1) - 1.0], dim=-1)  # (B,H,W,2)
    grid = torch.where(valid[:, 0, :, :, None], grid.clamp(-1.0, 1.0), torch.zeros_like(grid))  # (B,H,W,2)
    sampled = F.grid_sample(image_t1, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    image = torch.where(valid, sampled, torch.zeros_like(sampled))  # (B,C,H,W)
    return WarpResult(image=image, projected_depth=z_t1, valid=valid)
