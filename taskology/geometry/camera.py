"""Pinhole camera geometry: unproject depth, project points, surface normals from depth.

Conventions (docs/conventions.md): camera frame is OpenCV (x right, y down, z forward); depth is planar z-depth
in metres, float32, with ``0`` (or any non-finite / negative value) marking an invalid pixel; normals
are unit vectors in the camera frame pointing **towards the camera** (``n . p < 0``).

**Pixel-centre convention.** Pixel ``(row v, column u)`` of an image has its centre at continuous
pixel coordinates ``(u, v)`` (integers; OpenCV's convention, *not* ``u + 0.5``). Unprojection uses
``p = depth * K^-1 [u, v, 1]^T`` and projection ``[u, v] = (K p)[:2] / p_z``, so unproject -> project
returns the integer pixel grid exactly (up to rounding). The torch warp samples with
``grid_sample(..., align_corners=True)``, whose -1/+1 are the centres of the first/last pixels: the
same convention.

**Normals rule.** Let ``P`` be the unprojected points. A neighbour (left/right/up/down) of a valid
pixel with depth ``z`` is *usable* when its depth ``z_n`` is valid and ``|z_n - z| <= max_relative_jump
* z`` (no depth discontinuity). The horizontal tangent is ``P[right] - P[left]`` when both are usable
(central difference), else the one-sided ``P[right] - P`` or ``P - P[left]``; likewise vertically.
The normal is ``cross(t_vertical, t_horizontal)`` normalised (this already points towards the camera
for a visible surface); if ``n . P > 0`` (noisy or back-facing estimate) it is flipped. Pixels that
are invalid, lack a usable neighbour in either direction, or get a zero cross product, get the zero
vector (and ``valid = False`` in the torch twin).

Each Numba kernel has a NumPy reference beside it (``_*_reference``); the ``*_torch`` twins are
batched, channel-first and differentiable, and match the NumPy ones on valid pixels.

Example:
    >>> import numpy as np
    >>> K = np.array([[100.0, 0, 15.5], [0, 100.0, 11.5], [0, 0, 1]])
    >>> normals = normals_from_depth(np.full((24, 32), 2.0, np.float32), K)
    >>> normals[5, 7]
    array([ 0.,  0., -1.], dtype=float32)
"""
from __future__ import annotations

import numba
import numpy as np
import torch

__all__ = [
    "points_from_depth", "project_points", "normals_from_depth",
    "points_from_depth_torch", "project_points_torch", "normals_from_depth_torch",
    "DEFAULT_MAX_RELATIVE_JUMP",
]

#: default relative depth jump beyond which two neighbouring pixels are not differenced.
DEFAULT_MAX_RELATIVE_JUMP = 0.1
#: torch projection divides by max(z, this) so gradients stay finite; callers mask z <= 0 anyway.
_MIN_PROJECTION_DEPTH = 1e-6


# ----------------------------------------------------------------------------------------------
# input validation
# ----------------------------------------------------------------------------------------------
def _check_intrinsics(name: str, intrinsics: np.ndarray, batch: int | None) -> np.ndarray:
    """Return intrinsics as (B, 3, 3) float64 (B = batch or 1) after checking shape and form."""
    k = np.asarray(intrinsics, dtype=np.float64)
    if k.ndim == 2:
        k = k[None]
    if k.ndim != 3 or k.shape[1:] != (3, 3):
        raise ValueError(f"{name}: K must be (3, 3) or (B, 3, 3), found {np.shape(intrinsics)}")
    if batch is not None and k.shape[0] not in (1, batch):
        raise ValueError(f"{name}: K has batch {k.shape[0]} but the depth/points have batch {batch}")
    if not np.all(np.isfinite(k)):
        raise ValueError(f"{name}: K must be finite")
    if np.any(k[:, 2] != np.array([0.0, 0.0, 1.0])) or np.any(k[:, 1, 0] != 0.0):
        raise ValueError(f"{name}: K must be upper triangular with last row [0, 0, 1], found {k[0].tolist()}")
    if np.any(k[:, 0, 0] <= 0) or np.any(k[:, 1, 1] <= 0):
        raise ValueError(f"{name}: K must have positive focal lengths fx, fy, found {k[:, 0, 0]}, {k[:, 1, 1]}")
    if batch is not None and k.shape[0] == 1 and batch > 1:
        k = np.broadcast_to(k, (batch, 3, 3))
    return np.ascontiguousarray(k)


def _check_depth(name: str, depth: np.ndarray) -> tuple[np.ndarray, bool]:
    """Return depth as (B, H, W) float32 and whether the input was a single (H, W) image."""
    d = np.asarray(depth)
    if d.ndim not in (2, 3) or not np.issubdtype(d.dtype, np.floating):
        raise ValueError(f"{name}: depth must be float (H, W) or (B, H, W) metres, found {d.dtype} {d.shape}")
    single = d.ndim == 2
    return np.ascontiguousarray(d[None] if single else d, dtype=np.float32), single


# ----------------------------------------------------------------------------------------------
# points_from_depth
# ----------------------------------------------------------------------------------------------
@numba.njit(parallel=True, cache=True)
def _points_from_depth_kernel(depth: np.ndarray, k_inv: np.ndarray) -> np.ndarray:
    """depth (B,H,W) float32, k_inv (B,3,3) float64 -> (B,H,W,3) float32, zeros where invalid."""
    batch, height, width = depth.shape
    out = np.empty((batch, height, width, 3), dtype=np.float32)
    for row in numba.prange(batch * height):
        b = row // height
        v = row - b * height
        for u in range(width):
            z = depth[b, v, u]
            if z > 0 and np.isfinite(z):
                for c in range(3):
                    out[b, v, u, c] = z * (k_inv[b, c, 0] * u + k_inv[b, c, 1] * v + k_inv[b, c, 2])
            else:
                out[b, v, u, 0] = 0.0
                out[b, v, u, 1] = 0.0
                out[b, v, u, 2] = 0.0
    return out


def _points_from_depth_reference(depth: np.ndarray, k_inv: np.ndarray) -> np.ndarray:
    """NumPy reference of :func:`_points_from_depth_kernel` (same shapes and dtypes)."""
    batch, height, width = depth.shape
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rays = np.einsum("bij,jhw->bhwi", k_inv, np.stack([u, v, np.ones_like(u)]))
    valid = np.isfinite(depth) & (depth > 0)
    z = np.where(valid, depth, 0.0).astype(np.float64)
    return (rays * z[..., None]).astype(np.float32)


def points_from_depth(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Unproject a depth map to camera-frame points.

    Args:
        depth: (H, W) or (B, H, W) float32, planar z-depth in metres; ``<= 0`` or non-finite = invalid.
        K: (3, 3) or (B, 3, 3) intrinsics (upper triangular, last row [0, 0, 1]).

    Returns:
        (H, W, 3) or (B, H, W, 3) float32 points in metres (OpenCV axes), zeros where depth is invalid.
        Pixel (v, u) is unprojected at its centre ``(u, v)`` (see module docstring).

    Example:
        >>> K = np.array([[2.0, 0, 1], [0, 2.0, 1], [0, 0, 1]])
        >>> points_from_depth(np.full((3, 3), 4.0, np.float32), K)[0, 0]
        array([-2., -2.,  4.], dtype=float32)
    """
    d, single = _check_depth("points_from_depth", depth)
    k = _check_intrinsics("points_from_depth", K, d.shape[0])
    out = _points_from_depth_kernel(d, np.ascontiguousarray(np.linalg.inv(k)))
    return out[0] if single else out


# ----------------------------------------------------------------------------------------------
# project_points
# ----------------------------------------------------------------------------------------------
@numba.njit(parallel=True, cache=True)
def _project_points_kernel(points: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """points (N,3) float64, k (3,3) float64 -> pixels (N,2) float64 (NaN where z <= 0), depth (N,)."""
    count = points.shape[0]
    pixels = np.empty((count, 2), dtype=np.float64)
    depth = np.empty(count, dtype=np.float64)
    for n in numba.prange(count):
        x, y, z = points[n, 0], points[n, 1], points[n, 2]
        depth[n] = z
        if z > 0:
            pixels[n, 0] = (k[0, 0] * x + k[0, 1] * y + k[0, 2] * z) / z
            pixels[n, 1] = (k[1, 1] * y + k[1, 2] * z) / z
        else:
            pixels[n, 0] = np.nan
            pixels[n, 1] = np.nan
    return pixels, depth


def _project_points_reference(points: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference of :func:`_project_points_kernel`."""
    z = points[:, 2]
    homogeneous = points @ k.T
    with np.errstate(divide="ignore", invalid="ignore"):
        pixels = homogeneous[:, :2] / z[:, None]
    pixels[z <= 0] = np.nan
    return pixels, z.copy()


def project_points(points: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project camera-frame points to pixels.

    Args:
        points: (N, 3) metres, OpenCV camera frame.
        K: (3, 3) intrinsics.

    Returns:
        pixels (N, 2) float64 ``(u, v)`` in the pixel-centre convention of the module docstring
        (NaN where ``z <= 0``), and depth (N,) float64 = z in metres.

    Example:
        >>> K = np.array([[2.0, 0, 1], [0, 2.0, 1], [0, 0, 1]])
        >>> project_points(np.array([[-2.0, -2.0, 4.0]]), K)
        (array([[0., 0.]]), array([4.]))
    """
    pts = np.ascontiguousarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"project_points: points must be (N, 3), found {np.shape(points)}")
    k = _check_intrinsics("project_points", K, None)
    if k.shape[0] != 1:
        raise ValueError(f"project_points: K must be a single (3, 3) matrix, found {np.shape(K)}")
    return _project_points_kernel(pts, k[0])


# ----------------------------------------------------------------------------------------------
# normals_from_depth
# ----------------------------------------------------------------------------------------------
@numba.njit(inline="always")
def _unproject(depth: np.ndarray, k_inv: np.ndarray, b: int, v: int, u: int, c: int) -> float:
    return depth[b, v, u] * (k_inv[b, c, 0] * u + k_inv[b, c, 1] * v + k_inv[b, c, 2])


@numba.njit(inline="always")
def _usable(depth: np.ndarray, b: int, v: int, u: int, z: float, max_jump: float) -> bool:
    height, width = depth.shape[1], depth.shape[2]
    if v < 0 or v >= height or u < 0 or u >= width:
        return False
    zn = depth[b, v, u]
    return zn > 0 and np.isfinite(zn) and abs(zn - z) <= max_jump * z


@numba.njit(parallel=True, cache=True)
def _normals_from_depth_kernel(depth: np.ndarray, k_inv: np.ndarray, max_jump: float) -> np.ndarray:
    """depth (B,H,W) float32, k_inv (B,3,3) float64 -> (B,H,W,3) float32 unit normals or zeros."""
    batch, height, width = depth.shape
    out = np.zeros((batch, height, width, 3), dtype=np.float32)
    for row in numba.prange(batch * height):
        b = row // height
        v = row - b * height
        tu = np.empty(3)
        tv = np.empty(3)
        for u in range(width):
            z = np.float64(depth[b, v, u])
            if not (z > 0 and np.isfinite(z)):
                continue
            right = _usable(depth, b, v, u + 1, z, max_jump)
            left = _usable(depth, b, v, u - 1, z, max_jump)
            down = _usable(depth, b, v + 1, u, z, max_jump)
            up = _usable(depth, b, v - 1, u, z, max_jump)
            if not ((right or left) and (down or up)):
                continue
            u_hi = u + 1 if right else u
            u_lo = u - 1 if left else u
            v_hi = v + 1 if down else v
            v_lo = v - 1 if up else v
            for c in range(3):
                tu[c] = _unproject(depth, k_inv, b, v, u_hi, c) - _unproject(depth, k_inv, b, v, u_lo, c)
                tv[c] = _unproject(depth, k_inv, b, v_hi, u, c) - _unproject(depth, k_inv, b, v_lo, u, c)
            nx = tv[1] * tu[2] - tv[2] * tu[1]
            ny = tv[2] * tu[0] - tv[0] * tu[2]
            nz = tv[0] * tu[1] - tv[1] * tu[0]
            norm = np.sqrt(nx * nx + ny * ny + nz * nz)
            if norm == 0.0:
                continue
            facing = (nx * _unproject(depth, k_inv, b, v, u, 0) + ny * _unproject(depth, k_inv, b, v, u, 1)
                      + nz * _unproject(depth, k_inv, b, v, u, 2))
            if facing > 0:
                norm = -norm
            out[b, v, u, 0] = nx / norm
            out[b, v, u, 1] = ny / norm
            out[b, v, u, 2] = nz / norm
    return out


def _normals_from_depth_reference(depth: np.ndarray, k_inv: np.ndarray, max_jump: float) -> np.ndarray:
    """Vectorised NumPy reference of :func:`_normals_from_depth_kernel` (same shapes, float64 inside)."""
    batch, height, width = depth.shape
    z = depth.astype(np.float64)
    valid = np.isfinite(z) & (z > 0)
    z = np.where(valid, z, 0.0)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    points = np.einsum("bij,jhw->bhwi", k_inv, np.stack([u, v, np.ones_like(u)])) * z[..., None]
    pad = ((0, 0), (1, 1), (1, 1))
    zp, vp = np.pad(z, pad), np.pad(valid, pad)
    pp = np.pad(points, pad + ((0, 0),))

    def neighbour(dv: int, du: int) -> tuple[np.ndarray, np.ndarray]:
        sl = (slice(None), slice(1 + dv, 1 + dv + height), slice(1 + du, 1 + du + width))
        usable = vp[sl] & valid & (np.abs(zp[sl] - z) <= max_jump * z)
        return usable, pp[sl]

    (right, p_r), (left, p_l) = neighbour(0, 1), neighbour(0, -1)
    (down, p_d), (up, p_u) = neighbour(1, 0), neighbour(-1, 0)
    hi_u = np.where(right[..., None], p_r, points)
    lo_u = np.where(left[..., None], p_l, points)
    hi_v = np.where(down[..., None], p_d, points)
    lo_v = np.where(up[..., None], p_u, points)
    normals = np.cross(hi_v - lo_v, hi_u - lo_u)
    norm = np.linalg.norm(normals, axis=-1)
    ok = valid & (right | left) & (down | up) & (norm > 0)
    sign = np.where(np.sum(normals * points, axis=-1) > 0, -1.0, 1.0)
    normals = normals * (sign / np.where(ok, norm, 1.0))[..., None]
    return np.where(ok[..., None], normals, 0.0).astype(np.float32)


def normals_from_depth(depth: np.ndarray, K: np.ndarray,
                       max_relative_jump: float = DEFAULT_MAX_RELATIVE_JUMP) -> np.ndarray:
    """Surface normals from a depth map (rule in the module docstring).

    Args:
        depth: (H, W) or (B, H, W) float32 planar depth, metres; ``<= 0`` or non-finite = invalid.
        K: (3, 3) or (B, 3, 3) intrinsics.
        max_relative_jump: neighbours whose depth differs by more than this fraction of the centre
            depth are treated as across a discontinuity and not differenced.

    Returns:
        (H, W, 3) or (B, H, W, 3) float32 unit normals in the camera frame pointing towards the camera
        (``n . p < 0``); zeros where no normal can be estimated.

    Example:
        >>> K = np.array([[10.0, 0, 2], [0, 10.0, 2], [0, 0, 1]])
        >>> normals_from_depth(np.full((5, 5), 3.0, np.float32), K)[2, 2]
        array([ 0.,  0., -1.], dtype=float32)
    """
    d, single = _check_depth("normals_from_depth", depth)
    if not max_relative_jump > 0:
        raise ValueError(f"normals_from_depth: max_relative_jump must be > 0, found {max_relative_jump}")
    k = _check_intrinsics("normals_from_depth", K, d.shape[0])
    out = _normals_from_depth_kernel(d, np.ascontiguousarray(np.linalg.inv(k)), float(max_relative_jump))
    return out[0] if single else out


# ----------------------------------------------------------------------------------------------
# torch twins (batched, channel-first, differentiable)
# ----------------------------------------------------------------------------------------------
def _check_torch_intrinsics(name: str, K: torch.Tensor, batch: int) -> None:
    if K.ndim != 3 or K.shape[1:] != (3, 3) or K.shape[0] != batch:
        raise ValueError(f"{name}: K must be ({batch}, 3, 3), found {tuple(K.shape)}")


def _check_torch_depth(name: str, depth: torch.Tensor) -> None:
    if depth.ndim != 4 or depth.shape[1] != 1 or not depth.is_floating_point():
        raise ValueError(f"{name}: depth must be float (B, 1, H, W) metres, found {depth.dtype} {tuple(depth.shape)}")


def _pixel_grid(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """Homogeneous pixel centres (3, H*W): rows u, v, 1."""
    v, u = torch.meshgrid(torch.arange(height, dtype=like.dtype, device=like.device),
                          torch.arange(width, dtype=like.dtype, device=like.device), indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)])


def points_from_depth_torch(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Differentiable :func:`points_from_depth`: depth (B, 1, H, W) metres, K (B, 3, 3) -> (B, 3, H, W).

    Zero where depth is 0; invalid (negative/non-finite) depth must be zeroed by the caller.

    Example:
        >>> K = torch.tensor([[[2.0, 0, 1], [0, 2.0, 1], [0, 0, 1]]])
        >>> points_from_depth_torch(torch.full((1, 1, 3, 3), 4.0), K)[0, :, 0, 0]
        tensor([-2., -2.,  4.])
    """
    _check_torch_depth("points_from_depth_torch", depth)
    batch, _, height, width = depth.shape
    _check_torch_intrinsics("points_from_depth_torch", K, batch)
    rays = torch.linalg.inv(K.to(depth.dtype)) @ _pixel_grid(height, width, depth)  # (B,3,H*W)
    return rays.reshape(batch, 3, height, width) * depth  # (B,3,H,W)


def project_points_torch(points: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable :func:`project_points` for channel-first points.

    Args:
        points: (B, 3, N) or (B, 3, H, W), camera frame, metres.
        K: (B, 3, 3).

    Returns:
        pixels (B, 2, ...) ``(u, v)`` and depth (B, 1, ...) = z. Pixels are computed with
        ``max(z, 1e-6)`` in the denominator so they stay finite; mask ``depth > 0`` before use.

    Example:
        >>> K = torch.tensor([[[2.0, 0, 1], [0, 2.0, 1], [0, 0, 1]]])
        >>> project_points_torch(torch.tensor([[[-2.0], [-2.0], [4.0]]]), K)[0][0, :, 0]
        tensor([0., 0.])
    """
    if points.ndim not in (3, 4) or points.shape[1] != 3:
        raise ValueError(f"project_points_torch: points must be (B, 3, N) or (B, 3, H, W), found {tuple(points.shape)}")
    _check_torch_intrinsics("project_points_torch", K, points.shape[0])
    flat = points.reshape(points.shape[0], 3, -1)  # (B,3,N)
    homogeneous = K.to(points.dtype) @ flat  # (B,3,N)
    z = flat[:, 2:3]  # (B,1,N)
    pixels = homogeneous[:, :2] / z.clamp(min=_MIN_PROJECTION_DEPTH)  # (B,2,N)
    return pixels.reshape((points.shape[0], 2) + points.shape[2:]), z.reshape((points.shape[0], 1) + points.shape[2:])


def normals_from_depth_torch(depth: torch.Tensor, K: torch.Tensor,
                             max_relative_jump: float = DEFAULT_MAX_RELATIVE_JUMP
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable :func:`normals_from_depth` (same rule, see module docstring).

    Args:
        depth: (B, 1, H, W) float, metres; ``<= 0`` or non-finite = invalid.
        K: (B, 3, 3) intrinsics.
        max_relative_jump: relative depth jump beyond which neighbours are not differenced.

    Returns:
        normals (B, 3, H, W) unit, towards the camera, zero where not valid; valid (B, 1, H, W) bool.

    Example:
        >>> K = torch.tensor([[[10.0, 0, 2], [0, 10.0, 2], [0, 0, 1]]])
        >>> normals, valid = normals_from_depth_torch(torch.full((1, 1, 5, 5), 3.0), K)
        >>> normals[0, :, 2, 2], bool(valid.all())
        (tensor([ 0.,  0., -1.]), True)
    """
    _check_torch_depth("normals_from_depth_torch", depth)
    _check_torch_intrinsics("normals_from_depth_torch", K, depth.shape[0])
    valid = torch.isfinite(depth) & (depth > 0)  # (B,1,H,W)
    z = torch.where(valid, depth, torch.zeros_like(depth))
    points = points_from_depth_torch(z, K)  # (B,3,H,W)
    # The tangent along an axis is right * (P[u+1] - P[u]) + left * (P[u] - P[u-1]) with right/left the
    # usable flags: P[u+1] - P[u-1] when both are usable, the one-sided difference otherwise.
    tangents, has_neighbour = [], []
    for dim in (-1, -2):  # -1: along u (columns), -2: along v (rows)
        size = depth.shape[dim]
        hi = lambda t: t.narrow(dim, 1, size - 1)  # noqa: E731  (pixel + 1)
        lo = lambda t: t.narrow(dim, 0, size - 1)  # noqa: E731  (pixel)
        both_valid = hi(valid) & lo(valid)  # (B,1,...)
        jump = (hi(z) - lo(z)).abs()
        forward = both_valid & (jump <= max_relative_jump * lo(z))  # usable next neighbour of the lower pixel
        backward = both_valid & (jump <= max_relative_jump * hi(z))  # usable previous neighbour of the upper pixel
        step = hi(points) - lo(points)  # (B,3,...)
        tangent = torch.zeros_like(points)  # (B,3,H,W)
        lo(tangent).add_(step * forward.to(step.dtype))
        hi(tangent).add_(step * backward.to(step.dtype))
        neighbour = torch.zeros_like(valid)  # (B,1,H,W) bool
        lo(neighbour).copy_(forward)
        hi(neighbour).logical_or_(backward)
        tangents.append(tangent)
        has_neighbour.append(neighbour)
    normals = torch.cross(tangents[1], tangents[0], dim=1)  # (B,3,H,W) = t_v x t_u
    norm2 = (normals * normals).sum(1, keepdim=True)  # (B,1,H,W)
    ok = valid & has_neighbour[0] & has_neighbour[1] & (norm2 > 0)
    facing = (normals * points).sum(1, keepdim=True)
    inverse_norm = torch.rsqrt(torch.where(ok, norm2, torch.ones_like(norm2)))
    scale = torch.where(ok, torch.where(facing > 0, -inverse_norm, inverse_norm), torch.zeros_like(norm2))
    normals = normals * scale  # (B,3,H,W)
    return normals, ok
