"""Rigid motion: apply, compose and invert 4x4 transforms, SO(3) exp/log, per-object motion.

Conventions (docs/conventions.md): transforms are named ``dst_from_src``, shape (4, 4) (or batched (B, 4, 4)),
float64; a point maps as ``p_dst = dst_from_src @ p_src``. Rotations as axis-angle vectors (..., 3)
in radians (direction = axis, norm = angle).

Each Numba kernel has a plain NumPy reference beside it (``_*_reference``) used by the tests; the
torch twins (``*_torch``) are differentiable and used by consistency relations.

Example:
    >>> import numpy as np
    >>> rot_z_90 = np.eye(4); rot_z_90[:3, :3] = so3_exp(np.array([0.0, 0.0, np.pi / 2]))
    >>> np.round(transform_points(rot_z_90, np.array([[1.0, 0.0, 0.0]])), 12)
    array([[0., 1., 0.]])
"""
from __future__ import annotations

import numba
import numpy as np
import torch

__all__ = [
    "transform_points", "compose", "invert", "so3_exp", "so3_log", "transform_points_per_object",
    "so3_exp_torch", "transform_points_torch", "pose_from_axis_angle_torch",
]

#: below this angle (radians) exp/log use Taylor series instead of sin/cos ratios.
_SMALL_ANGLE = 1e-6
#: above pi minus this angle, so3_log reads the axis from the symmetric part of R.
_NEAR_PI = 1e-3


def _as_float64(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name}: expected a numeric array, found dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float64)


def _check_transforms(name: str, transforms: np.ndarray) -> np.ndarray:
    transforms = _as_float64(name, transforms)
    if transforms.ndim not in (2, 3) or transforms.shape[-2:] != (4, 4):
        raise ValueError(f"{name}: expected shape (4, 4) or (B, 4, 4), found {transforms.shape}")
    return transforms


# ----------------------------------------------------------------------------------------------
# transform_points
# ----------------------------------------------------------------------------------------------
@numba.njit(parallel=True, cache=True)
def _transform_points_kernel(transforms: np.ndarray, points: np.ndarray) -> np.ndarray:
    """transforms (B,4,4) float64, points (B,N,3) float64 -> (B,N,3) float64."""
    batch, count = points.shape[0], points.shape[1]
    out = np.empty_like(points)
    for flat in numba.prange(batch * count):
        b = flat // count
        n = flat - b * count
        x, y, z = points[b, n, 0], points[b, n, 1], points[b, n, 2]
        for row in range(3):
            out[b, n, row] = (transforms[b, row, 0] * x + transforms[b, row, 1] * y
                              + transforms[b, row, 2] * z + transforms[b, row, 3])
    return out


def _transform_points_reference(transforms: np.ndarray, points: np.ndarray) -> np.ndarray:
    """NumPy reference of :func:`_transform_points_kernel` (same shapes)."""
    return np.einsum("bij,bnj->bni", transforms[:, :3, :3], points) + transforms[:, None, :3, 3]


def transform_points(dst_from_src: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply rigid transform(s) to points.

    Args:
        dst_from_src: (4, 4) or (B, 4, 4) float64.
        points: (N, 3), or (B, N, 3) when the transform is batched, in the src frame (metres).

    Returns:
        (N, 3) or (B, N, 3) float64 points in the dst frame. A single (4, 4) with (B, N, 3) points
        applies the same transform to every batch element.

    Example:
        >>> shift = np.eye(4); shift[:3, 3] = [1.0, 2.0, 3.0]
        >>> transform_points(shift, np.zeros((1, 3)))
        array([[1., 2., 3.]])
    """
    transforms = _check_transforms("transform_points: dst_from_src", dst_from_src)
    points = _as_float64("transform_points: points", points)
    if points.ndim not in (2, 3) or points.shape[-1] != 3:
        raise ValueError(f"transform_points: points must be (N, 3) or (B, N, 3), found {points.shape}")
    squeeze = points.ndim == 2 and transforms.ndim == 2
    if transforms.ndim == 2:
        transforms = transforms[None]
    if points.ndim == 2:
        if transforms.shape[0] != 1:
            raise ValueError(f"transform_points: batched transforms {transforms.shape} need points (B, N, 3), "
                             f"found {points.shape}")
        points = points[None]
    if transforms.shape[0] == 1 and points.shape[0] > 1:
        transforms = np.ascontiguousarray(np.broadcast_to(transforms, (points.shape[0], 4, 4)))
    if transforms.shape[0] != points.shape[0]:
        raise ValueError(f"transform_points: batch sizes differ: dst_from_src {transforms.shape}, "
                         f"points {points.shape}")
    out = _transform_points_kernel(transforms, points)
    return out[0] if squeeze else out


def compose(a_from_b: np.ndarray, b_from_c: np.ndarray) -> np.ndarray:
    """``a_from_c = a_from_b @ b_from_c`` for (4, 4) or (B, 4, 4) float64 transforms (broadcasting).

    Example:
        >>> compose(np.eye(4), np.eye(4)).shape
        (4, 4)
    """
    a_from_b = _check_transforms("compose: a_from_b", a_from_b)
    b_from_c = _check_transforms("compose: b_from_c", b_from_c)
    return a_from_b @ b_from_c


def invert(a_from_b: np.ndarray) -> np.ndarray:
    """Rigid inverse ``b_from_a`` of (4, 4) or (B, 4, 4) float64 transforms: [R^T, -R^T t; 0 0 0 1].

    Assumes the rotation block is orthonormal (it is not re-orthonormalised).

    Example:
        >>> shift = np.eye(4); shift[:3, 3] = [1.0, 0.0, 0.0]
        >>> invert(shift)[:3, 3]
        array([-1., -0., -0.])
    """
    a_from_b = _check_transforms("invert: a_from_b", a_from_b)
    rot_t = np.swapaxes(a_from_b[..., :3, :3], -1, -2)
    out = np.zeros_like(a_from_b)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", rot_t, a_from_b[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


# ----------------------------------------------------------------------------------------------
# SO(3) exponential and logarithm
# ----------------------------------------------------------------------------------------------
def so3_exp(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues' formula: axis-angle (..., 3) radians -> rotation matrices (..., 3, 3) float64.

    Uses Taylor series of sin(t)/t and (1-cos t)/t^2 below 1e-6 rad, so tiny angles are exact.

    Example:
        >>> np.round(so3_exp(np.array([0.0, 0.0, np.pi / 2])) @ [1.0, 0.0, 0.0], 12)
        array([0., 1., 0.])
    """
    v = _as_float64("so3_exp: axis_angle", axis_angle)
    if v.shape[-1:] != (3,):
        raise ValueError(f"so3_exp: axis_angle must be (..., 3), found {v.shape}")
    theta2 = np.sum(v * v, axis=-1)
    theta = np.sqrt(theta2)
    small = theta < _SMALL_ANGLE
    safe = np.where(small, 1.0, theta)
    a = np.where(small, 1.0 - theta2 / 6.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta2 / 24.0, (1.0 - np.cos(safe)) / (safe * safe))
    hat = _hat(v)
    eye = np.broadcast_to(np.eye(3), hat.shape)
    return eye + a[..., None, None] * hat + b[..., None, None] * (hat @ hat)


def _hat(v: np.ndarray) -> np.ndarray:
    """Skew-symmetric matrices (..., 3, 3) with hat(v) @ w == cross(v, w)."""
    hat = np.zeros(v.shape[:-1] + (3, 3))
    hat[..., 0, 1], hat[..., 0, 2] = -v[..., 2], v[..., 1]
    hat[..., 1, 0], hat[..., 1, 2] = v[..., 2], -v[..., 0]
    hat[..., 2, 0], hat[..., 2, 1] = -v[..., 1], v[..., 0]
    return hat


def so3_log(rotation: np.ndarray) -> np.ndarray:
    """Inverse of :func:`so3_exp`: rotations (..., 3, 3) -> axis-angle (..., 3), angle in [0, pi].

    The angle is ``atan2(|vee(R - R^T)| / 2, (trace R - 1) / 2)`` (accurate everywhere, unlike
    ``arccos``). Below 1e-6 rad the axis-angle is ``vee(R - R^T) / 2`` with a Taylor correction; within
    1e-3 rad of pi the axis is read from the symmetric part ``(R + R^T) / 2 = cos t I + (1 - cos t) n n^T``
    (largest diagonal entry first) and its sign chosen to agree with ``vee(R - R^T)``. At exactly pi,
    ``v`` and ``-v`` are the same rotation; either may be returned.

    Example:
        >>> np.round(so3_log(so3_exp(np.array([0.1, -0.2, 0.3]))), 12)
        array([ 0.1, -0.2,  0.3])
    """
    rot = _as_float64("so3_log: rotation", rotation)
    if rot.shape[-2:] != (3, 3):
        raise ValueError(f"so3_log: rotation must be (..., 3, 3), found {rot.shape}")
    vee = np.stack([rot[..., 2, 1] - rot[..., 1, 2], rot[..., 0, 2] - rot[..., 2, 0],
                    rot[..., 1, 0] - rot[..., 0, 1]], axis=-1)  # = 2 sin(t) n
    sin_t = 0.5 * np.linalg.norm(vee, axis=-1)
    cos_t = 0.5 * (np.trace(rot, axis1=-2, axis2=-1) - 1.0)
    theta = np.arctan2(sin_t, cos_t)
    safe_sin = np.where(sin_t > 0, sin_t, 1.0)
    scale = np.where(theta < _SMALL_ANGLE, 0.5 * (1.0 + theta * theta / 6.0), 0.5 * theta / safe_sin)
    out = scale[..., None] * vee
    near_pi = theta > np.pi - _NEAR_PI
    if np.any(near_pi):
        sym = 0.5 * (rot[near_pi] + np.swapaxes(rot[near_pi], -1, -2))
        c = cos_t[near_pi][:, None, None]
        outer = (sym - c * np.eye(3)) / (1.0 - c)  # = n n^T
        diag = np.diagonal(outer, axis1=-2, axis2=-1)
        pivot = np.argmax(diag, axis=-1)
        rows = outer[np.arange(len(pivot)), pivot]  # = n_pivot * n
        axis = rows / np.sqrt(np.maximum(diag[np.arange(len(pivot)), pivot], 1e-300))[:, None]
        axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
        sign = np.where(np.sum(axis * vee[near_pi], axis=-1) < 0, -1.0, 1.0)
        out[near_pi] = (sign * theta[near_pi])[:, None] * axis
    return out


# ----------------------------------------------------------------------------------------------
# per-object motion
# ----------------------------------------------------------------------------------------------
@numba.njit(parallel=True, cache=True)
def _transform_points_per_object_kernel(points: np.ndarray, object_index: np.ndarray,
                                        transforms: np.ndarray) -> np.ndarray:
    """points (N,3) float64, object_index (N,) int64 in [-1, K), transforms (K,4,4) -> (N,3)."""
    out = np.empty_like(points)
    for n in numba.prange(points.shape[0]):
        k = object_index[n]
        x, y, z = points[n, 0], points[n, 1], points[n, 2]
        if k < 0:
            out[n, 0], out[n, 1], out[n, 2] = x, y, z
        else:
            for row in range(3):
                out[n, row] = (transforms[k, row, 0] * x + transforms[k, row, 1] * y
                               + transforms[k, row, 2] * z + transforms[k, row, 3])
    return out


def _transform_points_per_object_reference(points: np.ndarray, object_index: np.ndarray,
                                           transforms: np.ndarray) -> np.ndarray:
    """NumPy reference of :func:`_transform_points_per_object_kernel`."""
    out = points.copy()
    moved = object_index >= 0
    t = transforms[object_index[moved]]
    out[moved] = np.einsum("nij,nj->ni", t[:, :3, :3], points[moved]) + t[:, :3, 3]
    return out


def transform_points_per_object(points: np.ndarray, object_index: np.ndarray,
                                transforms: np.ndarray) -> np.ndarray:
    """Move each point by the transform of the object it belongs to.

    Args:
        points: (N, 3) float, metres.
        object_index: (N,) integer; ``k`` in [0, K) selects ``transforms[k]``, ``-1`` leaves the point
            unchanged (background).
        transforms: (K, 4, 4) float64 ``dst_from_src`` per object (K may be 0).

    Returns:
        (N, 3) float64.

    Example:
        >>> up = np.eye(4)[None].copy(); up[0, 2, 3] = 1.0
        >>> transform_points_per_object(np.zeros((2, 3)), np.array([0, -1]), up)
        array([[0., 0., 1.],
               [0., 0., 0.]])
    """
    points = _as_float64("transform_points_per_object: points", points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"transform_points_per_object: points must be (N, 3), found {points.shape}")
    index = np.asarray(object_index)
    if index.shape != (points.shape[0],) or not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"transform_points_per_object: object_index must be integer ({points.shape[0]},), "
                         f"found {index.dtype} {index.shape}")
    transforms = _as_float64("transform_points_per_object: transforms", transforms)
    if transforms.ndim != 3 or transforms.shape[1:] != (4, 4):
        raise ValueError(f"transform_points_per_object: transforms must be (K, 4, 4), found {transforms.shape}")
    if index.size and (index.min() < -1 or index.max() >= transforms.shape[0]):
        raise ValueError(f"transform_points_per_object: object_index must lie in [-1, {transforms.shape[0]}), "
                         f"found range [{index.min()}, {index.max()}]")
    return _transform_points_per_object_kernel(points, index.astype(np.int64), transforms)


# ----------------------------------------------------------------------------------------------
# torch twins (differentiable)
# ----------------------------------------------------------------------------------------------
def so3_exp_torch(axis_angle: torch.Tensor) -> torch.Tensor:
    """Differentiable :func:`so3_exp`: (..., 3) radians -> (..., 3, 3), same dtype/device.

    Smooth at zero (Taylor branch below 1e-6 rad, with gradients that stay finite).

    Example:
        >>> so3_exp_torch(torch.zeros(2, 3)).shape
        torch.Size([2, 3, 3])
    """
    if axis_angle.shape[-1:] != (3,):
        raise ValueError(f"so3_exp_torch: axis_angle must be (..., 3), found {tuple(axis_angle.shape)}")
    theta2 = (axis_angle * axis_angle).sum(-1)
    small = theta2 < _SMALL_ANGLE ** 2
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / (theta * theta))
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    hat = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(axis_angle.shape[:-1] + (3, 3))
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a[..., None, None] * hat + b[..., None, None] * (hat @ hat)


def pose_from_axis_angle_torch(axis_angle: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Differentiable 4x4 transforms from axis-angle (B, 3) radians and translation (B, 3) metres -> (B, 4, 4).

    Example:
        >>> pose_from_axis_angle_torch(torch.zeros(1, 3), torch.ones(1, 3))[0, :3, 3]
        tensor([1., 1., 1.])
    """
    if axis_angle.shape != translation.shape or axis_angle.shape[-1:] != (3,):
        raise ValueError(f"pose_from_axis_angle_torch: axis_angle and translation must both be (B, 3), found "
                         f"{tuple(axis_angle.shape)} and {tuple(translation.shape)}")
    rot = so3_exp_torch(axis_angle)
    top = torch.cat([rot, translation[..., :, None]], dim=-1)  # (B,3,4)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


def transform_points_torch(dst_from_src: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Differentiable :func:`transform_points` for channel-first point tensors.

    Args:
        dst_from_src: (B, 4, 4).
        points: (B, 3, N) or (B, 3, H, W) in the src frame.

    Returns:
        Same shape as ``points``, in the dst frame.

    Example:
        >>> transform_points_torch(torch.eye(4)[None], torch.ones(1, 3, 5)).shape
        torch.Size([1, 3, 5])
    """
    if dst_from_src.ndim != 3 or dst_from_src.shape[1:] != (4, 4):
        raise ValueError(f"transform_points_torch: dst_from_src must be (B, 4, 4), found {tuple(dst_from_src.shape)}")
    if points.ndim not in (3, 4) or points.shape[1] != 3 or points.shape[0] != dst_from_src.shape[0]:
        raise ValueError(f"transform_points_torch: points must be (B, 3, N) or (B, 3, H, W) with "
                         f"B={dst_from_src.shape[0]}, found {tuple(points.shape)}")
    flat = points.reshape(points.shape[0], 3, -1)  # (B,3,N)
    moved = dst_from_src[:, :3, :3] @ flat + dst_from_src[:, :3, 3:4]  # (B,3,N)
    return moved.reshape(points.shape)
