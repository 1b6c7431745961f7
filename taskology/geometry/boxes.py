"""3D boxes: corners, rigid motion of boxes, and which points lie in which box.

A box is one row ``(x, y, z, l, w, h, yaw)`` of a ``(N, 7)`` float64 array in the ego/LiDAR frame
(x forward, y left, z up; metres, radians): ``(x, y, z)`` is the box centre (z at mid-height), ``l``
is the extent along the heading, ``w`` across it, ``h`` along +z, and ``yaw`` the heading angle
about +z measured from +x. Boxes stay upright (no roll or pitch). Transforms are 4x4 ``dst_from_src``
matrices acting on column vectors.

Kernels: :func:`points_in_boxes` and :func:`points_in_boxes_mask` run one Numba kernel, parallel over
points: the boxes are binned into a uniform bird's-eye-view grid (cells about half a median footprint
wide), so each point tests only the boxes listed in its cell, each first against the box's
axis-aligned bound; :func:`points_in_boxes_reference` is the plain NumPy twin the tests compare them with.
:func:`box_corners`, :func:`transform_boxes` and :func:`box_motion` are O(N) vectorised NumPy (a
Numba kernel would only add compile time). Rotated IoU and NMS live in
:mod:`taskology.geometry.box_iou`.

Example:
    >>> import numpy as np
    >>> boxes = np.array([[10.0, 0.0, 1.0, 4.0, 2.0, 1.5, 0.0]])
    >>> points = np.array([[11.9, 0.5, 1.0], [12.1, 0.0, 1.0]])
    >>> points_in_boxes(points, boxes).tolist()
    [0, -1]
"""
from __future__ import annotations

import math

import numba
import numpy as np

from taskology.errors import TaskologyError

#: Default inclusion tolerance of :func:`points_in_boxes`, metres: a point is inside a box when
#: ``|local coordinate| <= half extent + POINT_IN_BOX_EPS`` on all three box axes.
POINT_IN_BOX_EPS = 1e-9

#: Corner signs in the box frame, in units of half extents: bottom face (z = -h/2) counter-clockwise
#: seen from above starting front-left, then the top face in the same order.
_CORNER_SIGNS = np.array([[1, 1, -1], [-1, 1, -1], [-1, -1, -1], [1, -1, -1],
                          [1, 1, 1], [-1, 1, 1], [-1, -1, 1], [1, -1, 1]], dtype=np.float64)


class GeometryInputError(TaskologyError, ValueError):
    """An array handed to a geometry function has the wrong shape, dtype or values."""


def validate_boxes(boxes: np.ndarray, name: str = "boxes") -> np.ndarray:
    """Return ``boxes`` as a C-contiguous ``(N, 7)`` float64 array, or raise :class:`GeometryInputError`.

    Sizes ``l, w, h`` must be finite and >= 0 (zero-size boxes are allowed: they contain only the
    points on them and have IoU 0 with everything).
    """
    arr = np.ascontiguousarray(boxes, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 7:
        raise GeometryInputError(f"{name}: expected an (N, 7) array (x, y, z, l, w, h, yaw), found shape {arr.shape}")
    if arr.shape[0] and not np.isfinite(arr).all():
        raise GeometryInputError(f"{name}: expected finite values, found NaN or inf in {np.argwhere(~np.isfinite(arr))[0].tolist()}")
    if arr.shape[0] and (arr[:, 3:6] < 0).any():
        row = int(np.argwhere((arr[:, 3:6] < 0).any(axis=1))[0, 0])
        raise GeometryInputError(f"{name}: expected sizes l, w, h >= 0, found {arr[row, 3:6].tolist()} in row {row}")
    return arr


def _validate_points(points: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise GeometryInputError(f"points: expected a (P, 3) array (x, y, z), found shape {arr.shape}")
    return arr


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """The 8 corners of each box.

    Args:
        boxes: (N, 7) float64, ``(x, y, z, l, w, h, yaw)``, metres / radians.

    Returns:
        (N, 8, 3) float64, metres, same frame as ``boxes``. Corner order in the box frame
        (``+x`` = front, ``+y`` = left, ``+z`` = up): 0 front-left-bottom, 1 rear-left-bottom,
        2 rear-right-bottom, 3 front-right-bottom, then 4-7 the same on the top face. So
        ``corners[:, :4, :2]`` is the BEV footprint, counter-clockwise seen from above.

    Example:
        >>> box_corners(np.array([[0.0, 0, 0, 4, 2, 2, 0]]))[0, 0].tolist()
        [2.0, 1.0, -1.0]
    """
    arr = validate_boxes(boxes)
    local = _CORNER_SIGNS[None] * (0.5 * arr[:, None, 3:6])  # (N, 8, 3)
    c, s = np.cos(arr[:, 6])[:, None], np.sin(arr[:, 6])[:, None]
    out = np.empty_like(local)
    out[..., 0] = c * local[..., 0] - s * local[..., 1] + arr[:, None, 0]
    out[..., 1] = s * local[..., 0] + c * local[..., 1] + arr[:, None, 1]
    out[..., 2] = local[..., 2] + arr[:, None, 2]
    return out


def _validate_transform(dst_from_src: np.ndarray, name: str) -> np.ndarray:
    mat = np.asarray(dst_from_src, dtype=np.float64)
    if mat.shape != (4, 4):
        raise GeometryInputError(f"{name}: expected a (4, 4) rigid transform, found shape {mat.shape}")
    rot = mat[:3, :3]
    if not np.isfinite(mat).all() or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-6) \
            or np.linalg.det(rot) < 0 or not np.allclose(mat[3], [0, 0, 0, 1]):
        raise GeometryInputError(f"{name}: expected a rigid transform (orthonormal rotation, det +1, last row "
                                 f"0 0 0 1), found {mat.tolist()}")
    return mat


def transform_boxes(dst_from_src: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Move boxes from frame ``src`` to frame ``dst``.

    The centre is transformed as a point; the new yaw is the heading of the transformed heading
    vector ``R @ (cos yaw, sin yaw, 0)`` projected on the dst x-y plane, so for a rotation about z by
    ``theta`` it is ``yaw + theta`` (wrapped to ``(-pi, pi]``). Roll and pitch of the transform are
    not representable by an upright box and are dropped; sizes are unchanged.

    Args:
        dst_from_src: (4, 4) float64 rigid transform.
        boxes: (N, 7) float64 boxes in ``src``.

    Returns:
        (N, 7) float64 boxes in ``dst``.

    Example:
        >>> turn = np.array([[0.0, -1, 0, 1], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])  # +90 deg about z, +1 m x
        >>> np.round(transform_boxes(turn, np.array([[2.0, 0, 0, 4, 2, 1, 0]])), 6).tolist()
        [[1.0, 2.0, 0.0, 4.0, 2.0, 1.0, 1.570796]]
    """
    mat = _validate_transform(dst_from_src, "dst_from_src")
    arr = validate_boxes(boxes)
    out = arr.copy()
    out[:, :3] = arr[:, :3] @ mat[:3, :3].T + mat[:3, 3]
    heading = mat[:2, :2] @ np.stack([np.cos(arr[:, 6]), np.sin(arr[:, 6])])  # (2, N), z part dropped
    out[:, 6] = np.arctan2(heading[1], heading[0])
    return out


def box_poses(boxes: np.ndarray) -> np.ndarray:
    """``frame_from_box`` for each box: (N, 7) -> (N, 4, 4) float64 (rotation about z by yaw, centre)."""
    arr = validate_boxes(boxes)
    c, s = np.cos(arr[:, 6]), np.sin(arr[:, 6])
    pose = np.zeros((arr.shape[0], 4, 4))
    pose[:, 0, 0], pose[:, 0, 1], pose[:, 1, 0], pose[:, 1, 1] = c, -s, s, c
    pose[:, 2, 2] = pose[:, 3, 3] = 1.0
    pose[:, :3, 3] = arr[:, :3]
    return pose


def box_motion(box_t: np.ndarray, box_t1: np.ndarray) -> np.ndarray:
    """The rigid motion, in the boxes' frame, that carries the pose of ``box_t`` onto ``box_t1``.

    ``motion[i] = pose(box_t1[i]) @ inverse(pose(box_t[i]))``, a rotation about z by the yaw change
    followed by a translation, so ``motion[i] @ corner`` maps each corner of ``box_t[i]`` onto the
    same-numbered corner of ``box_t1[i]`` when the sizes agree (sizes are otherwise ignored).

    Args:
        box_t: (N, 7) float64 boxes at time t.
        box_t1: (N, 7) float64 the same objects at time t+1, same frame.

    Returns:
        (N, 4, 4) float64 ``frame_from_frame`` motions.

    Example:
        >>> m = box_motion(np.array([[0.0, 0, 0, 4, 2, 1, 0]]), np.array([[1.0, 0, 0, 4, 2, 1, 0]]))
        >>> m[0, :3, 3].tolist()
        [1.0, 0.0, 0.0]
    """
    a, b = validate_boxes(box_t, "box_t"), validate_boxes(box_t1, "box_t1")
    if a.shape != b.shape:
        raise GeometryInputError(f"box_motion: expected box_t and box_t1 of the same shape, found {a.shape} and {b.shape}")
    dyaw = b[:, 6] - a[:, 6]
    c, s = np.cos(dyaw), np.sin(dyaw)
    motion = np.zeros((a.shape[0], 4, 4))
    motion[:, 0, 0], motion[:, 0, 1], motion[:, 1, 0], motion[:, 1, 1] = c, -s, s, c
    motion[:, 2, 2] = motion[:, 3, 3] = 1.0
    # t = c_t1 - R c_t, written so large absolute coordinates cancel early.
    dx, dy = -a[:, 0], -a[:, 1]
    motion[:, 0, 3] = b[:, 0] + (c * dx - s * dy)
    motion[:, 1, 3] = b[:, 1] + (s * dx + c * dy)
    motion[:, 2, 3] = b[:, 2] - a[:, 2]
    return motion


# ----------------------------------------------------------------------------------------------
# Points in boxes: Numba kernels and their NumPy reference.


@numba.njit(cache=True)
def _box_grid(boxes: np.ndarray, eps: float, cell: float):  # type: ignore[no-untyped-def]
    """Uniform BEV grid over the boxes' axis-aligned bounds, as CSR lists of box indices per cell.

    Returns ``(bounds (N, 6): x_lo, x_hi, y_lo, y_hi, cos, sin; x0, y0, x1, y1, inv_cell_x, inv_cell_y,
    nx, ny, starts (nx*ny + 1,), items)``. Cells are ``cell`` metres wide, but at most ~16N + 256
    cells and at most 1024 per axis; each box is listed, in index order, in every cell its bound
    touches, so a cell's list is ascending.
    """
    n = boxes.shape[0]
    bounds = np.empty((n, 6))
    x0, x1, y0, y1 = np.inf, -np.inf, np.inf, -np.inf
    for j in range(n):
        c, s = math.cos(boxes[j, 6]), math.sin(boxes[j, 6])
        ex = 0.5 * (abs(c) * boxes[j, 3] + abs(s) * boxes[j, 4]) + eps
        ey = 0.5 * (abs(s) * boxes[j, 3] + abs(c) * boxes[j, 4]) + eps
        bounds[j, 0], bounds[j, 1] = boxes[j, 0] - ex, boxes[j, 0] + ex
        bounds[j, 2], bounds[j, 3] = boxes[j, 1] - ey, boxes[j, 1] + ey
        bounds[j, 4], bounds[j, 5] = c, s
        x0, x1 = min(x0, bounds[j, 0]), max(x1, bounds[j, 1])
        y0, y1 = min(y0, bounds[j, 2]), max(y1, bounds[j, 3])
    cell = max(cell, math.sqrt((x1 - x0) * (y1 - y0) / (16 * n + 256)))
    nx = min(int((x1 - x0) / cell) + 1, 1024) if cell > 0 else 1
    ny = min(int((y1 - y0) / cell) + 1, 1024) if cell > 0 else 1
    inv_cx = nx / (x1 - x0) if x1 > x0 else 0.0
    inv_cy = ny / (y1 - y0) if y1 > y0 else 0.0
    counts = np.zeros(nx * ny + 1, dtype=np.int64)
    for step in range(2):  # 0: count entries per cell, 1: fill
        if step == 1:
            starts = np.zeros(nx * ny + 1, dtype=np.int64)
            for k in range(nx * ny):
                starts[k + 1] = starts[k] + counts[k]
            items = np.empty(starts[nx * ny], dtype=np.int64)
            fill = np.empty(nx * ny, dtype=np.int64)
            for k in range(nx * ny):
                fill[k] = starts[k]
        for j in range(n):
            ix_lo, ix_hi = int((bounds[j, 0] - x0) * inv_cx), min(int((bounds[j, 1] - x0) * inv_cx), nx - 1)
            iy_lo, iy_hi = int((bounds[j, 2] - y0) * inv_cy), min(int((bounds[j, 3] - y0) * inv_cy), ny - 1)
            for iy in range(iy_lo, iy_hi + 1):
                for ix in range(ix_lo, ix_hi + 1):
                    if step == 0:
                        counts[iy * nx + ix] += 1
                    else:
                        items[fill[iy * nx + ix]] = j
                        fill[iy * nx + ix] += 1
    return bounds, x0, y0, x1, y1, inv_cx, inv_cy, nx, ny, starts, items


@numba.njit(cache=True, parallel=True)
def _points_in_boxes_kernel(points: np.ndarray, boxes: np.ndarray, eps: float, cell: float, mask: np.ndarray,
                            first: np.ndarray, want_mask: bool) -> None:
    bounds, x0, y0, x1, y1, inv_cx, inv_cy, nx, ny, starts, items = _box_grid(boxes, eps, cell)
    for p in numba.prange(points.shape[0]):
        px, py, pz = points[p, 0], points[p, 1], points[p, 2]
        if not (px >= x0 and px <= x1 and py >= y0 and py <= y1):  # also skips NaN
            continue
        cell = min(int((py - y0) * inv_cy), ny - 1) * nx + min(int((px - x0) * inv_cx), nx - 1)
        for k in range(starts[cell], starts[cell + 1]):
            j = items[k]
            if px < bounds[j, 0] or px > bounds[j, 1] or py < bounds[j, 2] or py > bounds[j, 3]:
                continue
            dx, dy, dz = px - boxes[j, 0], py - boxes[j, 1], pz - boxes[j, 2]
            c, s = bounds[j, 4], bounds[j, 5]
            if abs(dz) <= 0.5 * boxes[j, 5] + eps and abs(c * dx + s * dy) <= 0.5 * boxes[j, 3] + eps \
                    and abs(-s * dx + c * dy) <= 0.5 * boxes[j, 4] + eps:
                if want_mask:
                    mask[j, p] = True
                    if first[p] < 0:
                        first[p] = j
                else:
                    first[p] = j
                    break


def _grid_cell(boxes: np.ndarray) -> float:
    """Grid cell size, metres: half the median BEV diagonal of the boxes (computed in NumPy: sorting
    is slow to JIT-compile)."""
    return float(0.5 * np.median(np.hypot(boxes[:, 3], boxes[:, 4])))


def points_in_boxes(points: np.ndarray, boxes: np.ndarray, eps: float = POINT_IN_BOX_EPS) -> np.ndarray:
    """Index of the box containing each point, or -1.

    Boundary rule: a point is inside box j when its coordinates in the box frame satisfy
    ``|u| <= l/2 + eps``, ``|v| <= w/2 + eps`` and ``|z - z_j| <= h/2 + eps`` (faces, edges and corners
    included; ``eps`` absorbs the rounding of points computed on a face). Where boxes overlap the
    **lowest box index wins**. Points with NaN coordinates are in no box.

    Args:
        points: (P, 3) float64, metres, same frame as ``boxes``.
        boxes: (N, 7) float64 boxes.
        eps: inclusion tolerance, metres (default :data:`POINT_IN_BOX_EPS` = 1e-9).

    Returns:
        (P,) int64 box index in ``[0, N)`` or -1.

    Example:
        >>> points_in_boxes(np.array([[2.0, 1.0, 0.5]]), np.array([[0.0, 0, 0, 4, 2, 1, 0]])).tolist()
        [0]
    """
    pts, arr = _validate_points(points), validate_boxes(boxes)
    first = np.full(pts.shape[0], -1, dtype=np.int64)
    if len(arr):
        _points_in_boxes_kernel(pts, arr, float(eps), _grid_cell(arr), np.zeros((0, 0), dtype=np.bool_), first, False)
    return first


def points_in_boxes_mask(points: np.ndarray, boxes: np.ndarray, eps: float = POINT_IN_BOX_EPS) -> np.ndarray:
    """Membership of every point in every box, same boundary rule as :func:`points_in_boxes`.

    Args:
        points: (P, 3) float64, metres.
        boxes: (N, 7) float64 boxes.
        eps: inclusion tolerance, metres.

    Returns:
        (N, P) bool, ``mask[j, p]`` is True when point p lies in box j.

    Example:
        >>> points_in_boxes_mask(np.zeros((1, 3)), np.array([[0.0, 0, 0, 1, 1, 1, 0]] * 2)).tolist()
        [[True], [True]]
    """
    pts, arr = _validate_points(points), validate_boxes(boxes)
    mask = np.zeros((arr.shape[0], pts.shape[0]), dtype=np.bool_)
    first = np.full(pts.shape[0], -1, dtype=np.int64)
    if len(arr):
        _points_in_boxes_kernel(pts, arr, float(eps), _grid_cell(arr), mask, first, True)
    return mask


def points_in_boxes_reference(points: np.ndarray, boxes: np.ndarray, eps: float = POINT_IN_BOX_EPS) -> np.ndarray:
    """Plain NumPy twin of :func:`points_in_boxes_mask`: (P, 3), (N, 7) -> (N, P) bool.

    Transforms all points into every box frame at once by broadcasting (memory O(N P)).
    """
    pts, arr = _validate_points(points), validate_boxes(boxes)
    d = pts[None, :, :] - arr[:, None, :3]  # (N, P, 3)
    c, s = np.cos(arr[:, 6])[:, None], np.sin(arr[:, 6])[:, None]
    u = c * d[..., 0] + s * d[..., 1]
    v = -s * d[..., 0] + c * d[..., 1]
    half = 0.5 * arr[:, 3:6, None] + eps  # (N, 3, 1)
    return (np.abs(u) <= half[:, 0]) & (np.abs(v) <= half[:, 1]) & (np.abs(d[..., 2]) <= half[:, 2])
