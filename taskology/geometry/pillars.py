"""LiDAR bird's-eye-view (BEV) pillar encoding and the global augmentation of a sweep with its boxes.

Frames and units follow docs/conventions.md: points are (N, 4) ``x, y, z, intensity`` in the ego frame
(x forward, y left, z up, metres, origin on the ground), boxes (M, 7) ``(x, y, z, l, w, h, yaw)``.

:class:`BevGrid` is a regular grid over the ego x-y plane: canvas row ``i`` covers
``x in [x_min + i * cell, x_min + (i + 1) * cell)``, column ``j`` covers the same along y, so the canvas is
``(H, W)`` with ``H`` cells along x and ``W`` along y. A point belongs to cell ``(floor((x - x_min) / cell),
floor((y - y_min) / cell))`` computed in float64 (the same operations in all three implementations, so a
point exactly on a border lands in the same cell in each); it is kept when that cell is on the canvas and
``z_min <= z < z_max``. Every range is half-open.

:func:`bev_pillars` encodes a sweep as ``(6, H, W)`` float32 channels :data:`PILLAR_FEATURES`, each about
in [0, 1]; empty cells are 0 in every channel. It runs one Numba kernel (one pass scattering the points
into per-cell accumulators, then one pass over the cells; serial); :func:`bev_pillars_reference` is the NumPy twin
built on ``np.add.at`` / ``np.maximum.at`` / ``np.minimum.at``, and :func:`bev_pillars_torch` the
vectorised torch twin (``index_add_``, ``scatter_reduce_``), on any device.

:func:`augment_sweep` rotates a sweep and its boxes about the ego z axis, optionally mirrors them
(y -> -y) and scales them, so that which point lies in which box is unchanged;
:func:`random_augmentation` draws its keyword arguments.

Example:
    >>> grid = BevGrid()
    >>> grid.shape
    (128, 128)
    >>> points = np.array([[0.2, 0.1, 1.0, 0.5], [0.3, 0.4, 2.0, 0.7]], dtype=np.float32)
    >>> canvas = bev_pillars(points, grid)
    >>> canvas.shape
    (6, 128, 128)
    >>> [round(float(v), 3) for v in canvas[:, 64, 64]]  # both points in the cell at x, y in [0, 0.5)
    [0.263, 0.5, 0.3, 0.4, 0.6, 0.2]
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from taskology.geometry.boxes import GeometryInputError, validate_boxes

if TYPE_CHECKING:
    import torch

#: The channels of :func:`bev_pillars`, in order, each about in [0, 1] (empty cells: 0):
#: ``log_count`` = min(log1p(count) / log1p(:data:`LOG_COUNT_SATURATION`), 1);
#: ``z_max``, ``z_min``, ``z_mean`` = (z - grid z_min) / (grid z_max - grid z_min) of the cell's points;
#: ``intensity_mean`` = mean intensity, as is; ``z_spread`` = (z max - z min) / (grid z_max - grid z_min).
PILLAR_FEATURES = ("log_count", "z_max", "z_min", "z_mean", "intensity_mean", "z_spread")

#: Points per cell at which ``log_count`` reaches 1 (more points keep it at 1).
LOG_COUNT_SATURATION = 64

#: How far (in cells) a range may be from a whole number of cells.
_DIVISIBILITY_TOL = 1e-9


def _check_range(name: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise GeometryInputError(f"BevGrid.{name}: expected a pair (min, max) of numbers, found {value!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise GeometryInputError(f"BevGrid.{name}: expected finite min < max, found ({lo}, {hi})")
    return lo, hi


@dataclasses.dataclass(frozen=True)
class BevGrid:
    """A bird's-eye-view grid in the ego frame (metres); see the module docstring for the cell convention.

    Attributes:
        x_range: (min, max) along x (forward), a whole number of cells.
        y_range: (min, max) along y (left), a whole number of cells.
        z_range: (min, max) of the heights kept, also the scale of the z channels.
        cell_m: cell side, > 0.

    Example:
        >>> grid = BevGrid(x_range=(0.0, 10.0), y_range=(-5.0, 5.0), cell_m=0.5)
        >>> grid.shape, grid.cell_of([1.25, 0.0]), grid.centre_of(2, 10)
        ((20, 20), (2.5, 10.0), (1.25, 0.25))
    """

    x_range: tuple[float, float] = (-32.0, 32.0)
    y_range: tuple[float, float] = (-32.0, 32.0)
    z_range: tuple[float, float] = (-0.5, 4.5)
    cell_m: float = 0.5

    def __post_init__(self) -> None:
        try:
            cell = float(self.cell_m)
        except (TypeError, ValueError) as exc:
            raise GeometryInputError(f"BevGrid.cell_m: expected a number, found {self.cell_m!r}") from exc
        if not (math.isfinite(cell) and cell > 0):
            raise GeometryInputError(f"BevGrid.cell_m: expected a finite cell size > 0, found {cell}")
        object.__setattr__(self, "cell_m", cell)
        for name in ("x_range", "y_range", "z_range"):
            object.__setattr__(self, name, _check_range(name, getattr(self, name)))
        for name in ("x_range", "y_range"):
            lo, hi = getattr(self, name)
            cells = (hi - lo) / cell
            if abs(cells - round(cells)) > _DIVISIBILITY_TOL:
                raise GeometryInputError(f"BevGrid.{name}: expected a whole number of {cell} m cells, found "
                                         f"({lo}, {hi}): {cells} cells")

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W): cells along x, cells along y."""
        return (round((self.x_range[1] - self.x_range[0]) / self.cell_m),
                round((self.y_range[1] - self.y_range[0]) / self.cell_m))

    def cell_of(self, xy: Any) -> tuple[Any, Any]:
        """Continuous cell coordinates ``(i, j)`` of ego points ``xy`` (..., 2), metres: the point lies in
        canvas cell ``(floor(i), floor(j))``, whose centre is at ``(i, j) + 0.5``. Floats for one point,
        float64 arrays (...) for several."""
        arr = np.asarray(xy, dtype=np.float64)
        if arr.ndim == 0 or arr.shape[-1] != 2:
            raise GeometryInputError(f"BevGrid.cell_of: expected (..., 2) x, y, found shape {arr.shape}")
        i = (arr[..., 0] - self.x_range[0]) / self.cell_m
        j = (arr[..., 1] - self.y_range[0]) / self.cell_m
        return (float(i), float(j)) if arr.ndim == 1 else (i, j)

    def centre_of(self, i: Any, j: Any) -> tuple[Any, Any]:
        """Ego ``(x, y)`` in metres of the centre of cell ``(i, j)`` (integers, or arrays of them)."""
        x = self.x_range[0] + (np.asarray(i, dtype=np.float64) + 0.5) * self.cell_m
        y = self.y_range[0] + (np.asarray(j, dtype=np.float64) + 0.5) * self.cell_m
        return (float(x), float(y)) if x.ndim == 0 and y.ndim == 0 else (x, y)

    def _params(self) -> tuple[float, float, float, float, float, int, int]:
        h, w = self.shape
        return self.x_range[0], self.y_range[0], self.z_range[0], self.z_range[1], self.cell_m, h, w


def _check_grid(grid: Any) -> BevGrid:
    if not isinstance(grid, BevGrid):
        raise GeometryInputError(f"grid: expected a BevGrid, found {type(grid).__name__}")
    return grid


def _validate_points(points: Any, name: str = "points") -> np.ndarray:
    """(N, 4) C-contiguous float32 or float64 (other dtypes become float64), all finite."""
    arr = np.asarray(points)
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    arr = np.ascontiguousarray(arr)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise GeometryInputError(f"{name}: expected an (N, 4) array (x, y, z, intensity), found shape {arr.shape}")
    if arr.size and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise GeometryInputError(f"{name}: {bad} of {len(arr)} points are non-finite (NaN or inf); drop or "
                                 "repair them first")
    return arr


# ---------------------------------------------------------------------------------------------- kernel


@numba.njit(cache=True)
def _flush(acc_count: np.ndarray, acc: np.ndarray, c: int, n: int, top: float, bottom: float, z_sum: float,
           i_sum: float) -> None:
    """Merge a run of ``n`` points of cell ``c`` into the per-cell accumulators."""
    acc_count[c] += n
    acc[0, c] = max(acc[0, c], top)
    acc[1, c] = min(acc[1, c], bottom)
    acc[2, c] += z_sum
    acc[3, c] += i_sum


@numba.njit(cache=True)
def _bev_pillars_kernel(points: np.ndarray, x_min: float, y_min: float, z_min: float, z_max: float, cell: float,
                        h: int, w: int, log_sat: float) -> np.ndarray:
    """One pass over the points, then one over the cells. A sweep comes in scan order, so consecutive points
    mostly share a cell: a run of them is summed in registers and merged into the cell's accumulators when
    the cell changes (about twice as fast on a simulator sweep as updating memory per point)."""
    cells = h * w
    count = np.zeros(cells, dtype=np.int64)
    acc = np.empty((4, cells))  # z max, z min, z sum, intensity sum
    acc[0] = -np.inf
    acc[1] = np.inf
    acc[2] = 0.0
    acc[3] = 0.0
    run_c, run_n, run_top, run_bottom, run_z, run_i = -1, 0, -np.inf, np.inf, 0.0, 0.0
    for k in range(points.shape[0]):
        z = np.float64(points[k, 2])
        if not (z >= z_min and z < z_max):
            continue
        fi = np.floor((np.float64(points[k, 0]) - x_min) / cell)
        fj = np.floor((np.float64(points[k, 1]) - y_min) / cell)
        if fi < 0.0 or fi >= h or fj < 0.0 or fj >= w:
            continue
        c = int(fi) * w + int(fj)
        if c != run_c:
            if run_n > 0:
                _flush(count, acc, run_c, run_n, run_top, run_bottom, run_z, run_i)
            run_c, run_n, run_top, run_bottom, run_z, run_i = c, 0, -np.inf, np.inf, 0.0, 0.0
        run_n += 1
        run_top = max(run_top, z)
        run_bottom = min(run_bottom, z)
        run_z += z
        run_i += np.float64(points[k, 3])
    if run_n > 0:
        _flush(count, acc, run_c, run_n, run_top, run_bottom, run_z, run_i)
    out = np.zeros((6, h, w), dtype=np.float32)
    span = z_max - z_min
    for c in range(cells):
        n = count[c]
        if n == 0:
            continue
        r, q = c // w, c % w
        out[0, r, q] = min(math.log1p(n) / log_sat, 1.0)
        out[1, r, q] = (acc[0, c] - z_min) / span
        out[2, r, q] = (acc[1, c] - z_min) / span
        out[3, r, q] = (acc[2, c] / n - z_min) / span
        out[4, r, q] = acc[3, c] / n
        out[5, r, q] = (acc[0, c] - acc[1, c]) / span
    return out


def bev_pillars(points: np.ndarray, grid: BevGrid) -> np.ndarray:
    """Encode a LiDAR sweep as bird's-eye-view pillar features.

    Args:
        points: (N, 4) float32 ``x, y, z, intensity`` in the ego frame (metres); N may be 0. Points outside
            the grid's x, y or z range are dropped.
        grid: the canvas.

    Returns:
        (6, H, W) float32, channels :data:`PILLAR_FEATURES`; empty cells are 0.

    Raises:
        GeometryInputError: a wrong shape, or non-finite points (the message gives their count).
    """
    grid = _check_grid(grid)
    arr = _validate_points(points)
    x_min, y_min, z_min, z_max, cell, h, w = grid._params()
    return _bev_pillars_kernel(arr, x_min, y_min, z_min, z_max, cell, h, w, math.log1p(LOG_COUNT_SATURATION))


def bev_pillars_reference(points: np.ndarray, grid: BevGrid) -> np.ndarray:
    """NumPy twin of :func:`bev_pillars` (``np.add.at`` / ``np.maximum.at`` / ``np.minimum.at`` on the
    (H, W) canvas); same arguments, same result up to float rounding."""
    grid = _check_grid(grid)
    arr = _validate_points(points).astype(np.float64)
    x_min, y_min, z_min, z_max, cell, h, w = grid._params()
    fi = np.floor((arr[:, 0] - x_min) / cell)
    fj = np.floor((arr[:, 1] - y_min) / cell)
    z = arr[:, 2]
    keep = (fi >= 0) & (fi < h) & (fj >= 0) & (fj < w) & (z >= z_min) & (z < z_max)
    rows, cols, z, intensity = fi[keep].astype(np.intp), fj[keep].astype(np.intp), z[keep], arr[keep, 3]
    count = np.zeros((h, w))
    z_sum = np.zeros((h, w))
    i_sum = np.zeros((h, w))
    top = np.full((h, w), -np.inf)
    bottom = np.full((h, w), np.inf)
    np.add.at(count, (rows, cols), 1.0)
    np.add.at(z_sum, (rows, cols), z)
    np.add.at(i_sum, (rows, cols), intensity)
    np.maximum.at(top, (rows, cols), z)
    np.minimum.at(bottom, (rows, cols), z)
    full = count > 0
    n = np.where(full, count, 1.0)
    span = z_max - z_min
    channels = [np.minimum(np.log1p(count) / math.log1p(LOG_COUNT_SATURATION), 1.0),
                (top - z_min) / span, (bottom - z_min) / span, (z_sum / n - z_min) / span, i_sum / n,
                (top - bottom) / span]
    return np.stack([np.where(full, c, 0.0) for c in channels]).astype(np.float32)


def bev_pillars_torch(points: torch.Tensor, grid: BevGrid) -> torch.Tensor:
    """Torch twin of :func:`bev_pillars`: (N, 4) tensor on any device -> (6, H, W) float32 on that device.

    Vectorised: ``index_add_`` for counts and sums, ``scatter_reduce_`` (``amax`` / ``amin``) for the
    heights, computed in float64. Not differentiable (it bins). Raises :class:`GeometryInputError` on a
    wrong shape or non-finite points, like :func:`bev_pillars`.
    """
    import torch

    grid = _check_grid(grid)
    if not isinstance(points, torch.Tensor) or points.ndim != 2 or points.shape[1] != 4:
        found = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise GeometryInputError(f"points: expected an (N, 4) tensor (x, y, z, intensity), found {found}")
    x_min, y_min, z_min, z_max, cell, h, w = grid._params()
    p = points.detach().to(torch.float64)
    finite = torch.isfinite(p).all(dim=1)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise GeometryInputError(f"points: {bad} of {len(p)} points are non-finite (NaN or inf); drop or "
                                 "repair them first")
    fi = torch.floor((p[:, 0] - x_min) / cell)
    fj = torch.floor((p[:, 1] - y_min) / cell)
    z = p[:, 2]
    keep = (fi >= 0) & (fi < h) & (fj >= 0) & (fj < w) & (z >= z_min) & (z < z_max)
    flat = fi[keep].long() * w + fj[keep].long()
    z, intensity = z[keep], p[keep, 3]
    zeros = p.new_zeros(h * w)
    count = zeros.clone().index_add_(0, flat, torch.ones_like(z))
    z_sum = zeros.clone().index_add_(0, flat, z)
    i_sum = zeros.clone().index_add_(0, flat, intensity)
    top = torch.full_like(zeros, -math.inf).scatter_reduce_(0, flat, z, "amax")
    bottom = torch.full_like(zeros, math.inf).scatter_reduce_(0, flat, z, "amin")
    full = count > 0
    n = torch.where(full, count, torch.ones_like(count))
    span = z_max - z_min
    channels = torch.stack([torch.clamp(torch.log1p(count) / math.log1p(LOG_COUNT_SATURATION), max=1.0),
                            (top - z_min) / span, (bottom - z_min) / span, (z_sum / n - z_min) / span, i_sum / n,
                            (top - bottom) / span])
    return torch.where(full, channels, torch.zeros_like(channels)).to(torch.float32).reshape(6, h, w)


# ---------------------------------------------------------------------------------------- augmentation


def wrap_angle(yaw: np.ndarray) -> np.ndarray:
    """Angles (radians) wrapped to [-pi, pi).

    Example:
        >>> wrap_angle(np.array([np.pi, -np.pi, 3 * np.pi / 2])).tolist() == [-np.pi, -np.pi, -np.pi / 2]
        True
    """
    out = yaw - 2.0 * np.pi * np.floor((yaw + np.pi) / (2.0 * np.pi))
    out = np.where(out >= np.pi, out - 2.0 * np.pi, out)  # rounding can land one step outside
    return np.where(out < -np.pi, out + 2.0 * np.pi, out)


def augment_sweep(points: np.ndarray, boxes: np.ndarray, *, yaw: float, flip_y: bool,
                  scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Globally rotate, mirror and scale a sweep and its boxes, keeping which point lies in which box.

    In this order: a rotation by ``yaw`` about the ego z axis (points and box centres rotate, box yaws gain
    ``yaw``), then, with ``flip_y``, the mirror y -> -y (box yaws change sign), then a scaling of x, y, z
    of points and box centres and of the sizes l, w, h by ``scale``. Each step moves a point and a box
    alike, so a point's coordinates in a box's frame are only mirrored across the box's x-z plane and
    scaled like the box; membership is preserved exactly (up to float rounding). Intensities are kept.

    Args:
        points: (N, 4) ``x, y, z, intensity`` in the ego frame (float32 in, float32 out; computed in float64).
        boxes: (M, 7) float64 ``(x, y, z, l, w, h, yaw)``.
        yaw: rotation about +z, radians.
        flip_y: mirror y -> -y after the rotation.
        scale: > 0, applied to x, y, z and l, w, h.

    Returns:
        ``(points, boxes)``: new (N, 4) array of the input's float dtype, new (M, 7) float64 with yaws
        wrapped to [-pi, pi).

    Example:
        >>> pts = np.array([[1.0, 0.0, 0.5, 0.3]], dtype=np.float32)
        >>> box = np.array([[1.0, 0.0, 0.5, 2.0, 1.0, 1.0, 0.0]])
        >>> p, b = augment_sweep(pts, box, yaw=np.pi / 2, flip_y=True, scale=2.0)
        >>> np.round(p, 6).tolist(), np.round(b, 6).tolist()
        ([[0.0, -2.0, 1.0, 0.30000001192092896]], [[0.0, -2.0, 1.0, 4.0, 2.0, 2.0, -1.570796]])
    """
    arr = _validate_points(points)
    bx = validate_boxes(boxes)
    yaw, scale = float(yaw), float(scale)
    if not math.isfinite(yaw):
        raise GeometryInputError(f"augment_sweep: expected a finite yaw, found {yaw}")
    if not (math.isfinite(scale) and scale > 0):
        raise GeometryInputError(f"augment_sweep: expected a finite scale > 0, found {scale}")
    c, s = math.cos(yaw), math.sin(yaw)
    mirror = -1.0 if flip_y else 1.0

    def move(xyz: np.ndarray) -> np.ndarray:
        x, y, z = xyz[:, 0].astype(np.float64), xyz[:, 1].astype(np.float64), xyz[:, 2].astype(np.float64)
        return np.stack([scale * (c * x - s * y), scale * mirror * (s * x + c * y), scale * z], axis=1)

    out_points = np.empty_like(arr)
    out_points[:, :3] = move(arr[:, :3])
    out_points[:, 3] = arr[:, 3]
    out_boxes = np.empty_like(bx)
    out_boxes[:, :3] = move(bx[:, :3])
    out_boxes[:, 3:6] = scale * bx[:, 3:6]
    out_boxes[:, 6] = wrap_angle(mirror * (bx[:, 6] + yaw))
    return out_points, out_boxes


def random_augmentation(rng: np.random.Generator, max_yaw: float = math.pi / 4, flip_probability: float = 0.5,
                        scale_range: tuple[float, float] = (0.95, 1.05)) -> dict[str, Any]:
    """Draw the keyword arguments of :func:`augment_sweep`: ``yaw`` uniform in [-max_yaw, max_yaw],
    ``flip_y`` with probability ``flip_probability``, ``scale`` uniform in ``scale_range``.

    Example:
        >>> sorted(random_augmentation(np.random.default_rng(0)))
        ['flip_y', 'scale', 'yaw']
    """
    max_yaw, flip_probability = float(max_yaw), float(flip_probability)
    lo, hi = (float(v) for v in scale_range)
    if not (math.isfinite(max_yaw) and max_yaw >= 0):
        raise GeometryInputError(f"random_augmentation: expected a finite max_yaw >= 0, found {max_yaw}")
    if not 0.0 <= flip_probability <= 1.0:
        raise GeometryInputError(f"random_augmentation: expected flip_probability in [0, 1], found "
                                 f"{flip_probability}")
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise GeometryInputError(f"random_augmentation: expected scale_range 0 < min <= max, found ({lo}, {hi})")
    return {"yaw": float(rng.uniform(-max_yaw, max_yaw)), "flip_y": bool(rng.random() < flip_probability),
            "scale": float(rng.uniform(lo, hi))}
