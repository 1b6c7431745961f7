"""Rotated IoU of upright 3D boxes (bird's-eye view and 3D) and rotated non-maximum suppression.

Boxes are ``(N, 7)`` float64 ``(x, y, z, l, w, h, yaw)`` (see :mod:`taskology.geometry.boxes`).

Method (Numba kernel ``_pair_iou``), all float64, for each pair (a, b):

1. **Local frame.** b is expressed in the frame of a (centre difference taken first, then rotated by
   ``-yaw_a``), so a becomes the axis-aligned rectangle ``[-l/2, l/2] x [-w/2, w/2]``. Subtracting
   the centres first keeps full precision for scenes far from the origin (centres near 4e5 m).
2. **Cheap rejection**: a sweep along x (b sorted by x; only boxes within reach are visited), then
   bounding circles (``|c_b - c_a| >= r_a + r_b`` -> 0), then the separating-axis test on the four
   box axes (exact for rectangles; touching counts as separated -> 0).
3. **Containment** (with a relative tolerance of ``1e-12`` of the largest box dimension): if one
   footprint lies in the other, the intersection is the smaller area, exactly. This gives exact 1
   for identical boxes and for ``yaw + pi``.
4. Otherwise **Sutherland-Hodgman clipping** of b's footprint against the four sides of a, and the
   shoelace area of the clipped polygon (taken relative to its first vertex). Slivers below
   ``1e-12`` of the larger footprint area are rounding noise and count as 0 (touching boxes -> 0).
5. 3D: the footprint intersection times the overlap of the z intervals. IoU is clamped to [0, 1];
   a box of zero footprint (BEV) or zero volume (3D) has IoU 0 with everything.

:func:`box_iou_reference` is an independent pure-Python twin (vertex collection: corners of each box
inside the other plus edge-edge crossings, sorted by angle) used by the tests next to shapely.

Example:
    >>> import numpy as np
    >>> a = np.array([[0.0, 0, 0, 1, 1, 1, 0]])
    >>> float(box_iou_bev(a, a + [0.5, 0, 0, 0, 0, 0, 0])[0, 0])  # overlap 0.5 / union 1.5
    0.3333333333333333
"""
from __future__ import annotations

import math

import numba
import numpy as np

from taskology.geometry.boxes import GeometryInputError, validate_boxes

#: Relative tolerances of the kernel (see module docstring, steps 3 and 4).
CONTAINMENT_RTOL = 1e-12
SLIVER_RTOL = 1e-12

_SX = np.array([1.0, -1.0, -1.0, 1.0])  # footprint corner signs, counter-clockwise from front-left
_SY = np.array([1.0, 1.0, -1.0, -1.0])


@numba.njit(cache=True)
def _clip(xs: np.ndarray, ys: np.ndarray, n: int, out_x: np.ndarray, out_y: np.ndarray, axis: int, sign: float,
          bound: float) -> int:
    """Keep the part of polygon ``(xs, ys)[:n]`` where ``sign * coord[axis] <= bound``; returns its size."""
    m = 0
    j = n - 1
    prev = sign * (xs[j] if axis == 0 else ys[j])
    for k in range(n):
        cur = sign * (xs[k] if axis == 0 else ys[k])
        if (cur <= bound) != (prev <= bound):  # the edge j -> k crosses the clip line
            t = (bound - prev) / (cur - prev)
            if axis == 0:
                out_x[m], out_y[m] = sign * bound, ys[j] + t * (ys[k] - ys[j])
            else:
                out_x[m], out_y[m] = xs[j] + t * (xs[k] - xs[j]), sign * bound
            m += 1
        if cur <= bound:
            out_x[m], out_y[m] = xs[k], ys[k]
            m += 1
        j, prev = k, cur
    return m


@numba.njit(cache=True)
def _features(boxes: np.ndarray) -> np.ndarray:
    """(N, 7) boxes -> (N, 10): the box, then cos(yaw), sin(yaw), bounding-circle radius."""
    out = np.empty((boxes.shape[0], 10))
    for i in range(boxes.shape[0]):
        for k in range(7):
            out[i, k] = boxes[i, k]
        out[i, 7], out[i, 8] = math.cos(boxes[i, 6]), math.sin(boxes[i, 6])
        out[i, 9] = 0.5 * math.sqrt(boxes[i, 3] * boxes[i, 3] + boxes[i, 4] * boxes[i, 4])
    return out


@numba.njit(cache=True)
def _pair_iou(fa: np.ndarray, i: int, fb: np.ndarray, j: int, use_3d: bool, buf: np.ndarray) -> float:
    """IoU of box ``fa[i]`` and box ``fb[j]`` (rows of :func:`_features`); ``buf`` is (4, 8) float64 scratch."""
    dx, dy = fb[j, 0] - fa[i, 0], fb[j, 1] - fa[i, 1]
    reach = fa[i, 9] + fb[j, 9]
    if dx * dx + dy * dy >= reach * reach:
        return 0.0
    area_a, area_b = fa[i, 3] * fa[i, 4], fb[j, 3] * fb[j, 4]
    if area_a <= 0.0 or area_b <= 0.0:
        return 0.0
    overlap_z = 1.0
    if use_3d:
        ha, hb = fa[i, 5], fb[j, 5]
        if ha <= 0.0 or hb <= 0.0:
            return 0.0
        dz = fb[j, 2] - fa[i, 2]
        overlap_z = min(0.5 * ha, dz + 0.5 * hb) - max(-0.5 * ha, dz - 0.5 * hb)
        if overlap_z <= 0.0:
            return 0.0
    ca, sa, cb, sb = fa[i, 7], fa[i, 8], fb[j, 7], fb[j, 8]
    cr, sr = cb * ca + sb * sa, sb * ca - cb * sa  # cos, sin of yaw_b - yaw_a
    acr, asr = abs(cr), abs(sr)
    hla, hwa, hlb, hwb = 0.5 * fa[i, 3], 0.5 * fa[i, 4], 0.5 * fb[j, 3], 0.5 * fb[j, 4]
    # Separating axes: the centre offset on each box's two axes against the projected half extents.
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy  # centre of b in a's frame
    ext_bu, ext_bv = hlb * acr + hwb * asr, hlb * asr + hwb * acr  # half extents of b along a's axes
    if abs(u) >= hla + ext_bu or abs(v) >= hwa + ext_bv:
        return 0.0
    ub, vb = cb * dx + sb * dy, -sb * dx + cb * dy  # centre offset along b's axes
    ext_au, ext_av = hla * acr + hwa * asr, hla * asr + hwa * acr  # half extents of a along b's axes
    if abs(ub) >= hlb + ext_au or abs(vb) >= hwb + ext_av:
        return 0.0
    tol = CONTAINMENT_RTOL * max(max(fa[i, 3], fa[i, 4]), max(fb[j, 3], fb[j, 4]))
    small = min(area_a, area_b)
    if (abs(u) + ext_bu <= hla + tol and abs(v) + ext_bv <= hwa + tol) \
            or (abs(ub) + ext_au <= hlb + tol and abs(vb) + ext_av <= hwb + tol):
        inter = small  # one footprint contains the other
    else:
        xs, ys, tx, ty = buf[0], buf[1], buf[2], buf[3]
        for k in range(4):
            x, y = _SX[k] * hlb, _SY[k] * hwb
            xs[k], ys[k] = u + cr * x - sr * y, v + sr * x + cr * y
        n = _clip(xs, ys, 4, tx, ty, 0, 1.0, hla)
        n = _clip(tx, ty, n, xs, ys, 0, -1.0, hla)
        n = _clip(xs, ys, n, tx, ty, 1, 1.0, hwa)
        n = _clip(tx, ty, n, xs, ys, 1, -1.0, hwa)
        twice = 0.0
        for k in range(1, n - 1):
            twice += (xs[k] - xs[0]) * (ys[k + 1] - ys[0]) - (xs[k + 1] - xs[0]) * (ys[k] - ys[0])
        inter = min(0.5 * twice, small)
        if inter <= SLIVER_RTOL * max(area_a, area_b):
            return 0.0
    if use_3d:
        inter *= overlap_z
        area_a *= fa[i, 5]
        area_b *= fb[j, 5]
    iou = inter / (area_a + area_b - inter)
    return min(max(iou, 0.0), 1.0)


@numba.njit(cache=True, parallel=True)
def _iou_matrix_kernel(a: np.ndarray, b_sorted: np.ndarray, order: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                       use_3d: bool) -> np.ndarray:
    """IoU of every a against ``b_sorted[lo[i]:hi[i]]`` (b sorted by x); writes column ``order[k]``."""
    out = np.zeros((a.shape[0], b_sorted.shape[0]))
    fa, fb = _features(a), _features(b_sorted)
    for i in numba.prange(a.shape[0]):
        buf = np.empty((4, 8))
        for k in range(lo[i], hi[i]):
            if abs(fb[k, 1] - fa[i, 1]) < fa[i, 9] + fb[k, 9]:
                iou = _pair_iou(fa, i, fb, k, use_3d, buf)
                if iou > 0.0:
                    out[i, order[k]] = iou
    return out


def _iou_matrix(a: np.ndarray, b: np.ndarray, use_3d: bool) -> np.ndarray:
    """Validate, then sweep along x: sort b by x (NumPy, outside the kernel: sorting is slow to
    JIT-compile) and give each box of a the window of b whose x lies within reach of it."""
    a, b = validate_boxes(a, "a"), validate_boxes(b, "b")
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    order = np.argsort(b[:, 0], kind="stable")
    b_sorted = np.ascontiguousarray(b[order])
    reach = 0.5 * (np.hypot(a[:, 3], a[:, 4]) + np.hypot(b[:, 3], b[:, 4]).max())
    lo = np.searchsorted(b_sorted[:, 0], a[:, 0] - reach, side="left")
    hi = np.searchsorted(b_sorted[:, 0], a[:, 0] + reach, side="right")
    return _iou_matrix_kernel(a, b_sorted, order, lo, hi, use_3d)


@numba.njit(cache=True)
def _nms_kernel(boxes: np.ndarray, order: np.ndarray, iou_threshold: float) -> np.ndarray:
    f = _features(boxes)
    suppressed = np.zeros(boxes.shape[0], dtype=np.bool_)
    keep = np.empty(boxes.shape[0], dtype=np.int64)
    buf = np.empty((4, 8))
    n_keep = 0
    for oi in range(order.shape[0]):
        i = order[oi]
        if suppressed[i]:
            continue
        keep[n_keep] = i
        n_keep += 1
        for oj in range(oi + 1, order.shape[0]):
            j = order[oj]
            if not suppressed[j] and _pair_iou(f, i, f, j, False, buf) > iou_threshold:
                suppressed[j] = True
    return keep[:n_keep]


def box_iou_bev(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise bird's-eye-view IoU of yaw-rotated boxes.

    Args:
        a: (N, 7) float64 boxes ``(x, y, z, l, w, h, yaw)``, metres / radians.
        b: (M, 7) float64 boxes, same frame.

    Returns:
        (N, M) float64 in [0, 1]: footprint intersection area / footprint union area.

    Example:
        >>> a = np.array([[0.0, 0, 0, 2, 2, 1, 0]])
        >>> float(box_iou_bev(a, a + [0, 0, 0, 0, 0, 0, np.pi / 4])[0, 0])  # square vs square at 45 deg
        0.7071067811865475
    """
    return _iou_matrix(a, b, use_3d=False)


def box_iou_3d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise 3D IoU of upright yaw-rotated boxes: footprint intersection x z-overlap over volume union.

    Args:
        a: (N, 7) float64 boxes.
        b: (M, 7) float64 boxes.

    Returns:
        (N, M) float64 in [0, 1].

    Example:
        >>> a = np.array([[0.0, 0, 0, 2, 2, 2, 0]])
        >>> float(box_iou_3d(a, a + [0, 0, 1, 0, 0, 0, 0])[0, 0])  # half the height overlaps: 4 / 12
        0.3333333333333333
    """
    return _iou_matrix(a, b, use_3d=True)


def nms_bev(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy rotated non-maximum suppression in bird's-eye view.

    Boxes are visited by descending score (ties: lower index first); a box is kept unless its BEV IoU
    with an already kept box is ``> iou_threshold``.

    Args:
        boxes: (N, 7) float64 boxes.
        scores: (N,) float scores, higher is better.
        iou_threshold: in [0, 1].

    Returns:
        (K,) int64 indices of the kept boxes, in descending score order.

    Example:
        >>> boxes = np.array([[0.0, 0, 0, 4, 2, 1, 0], [0.2, 0, 0, 4, 2, 1, 0], [9, 0, 0, 4, 2, 1, 0]])
        >>> nms_bev(boxes, np.array([0.5, 0.9, 0.7]), 0.5).tolist()
        [1, 2]
    """
    arr = validate_boxes(boxes)
    sc = np.asarray(scores, dtype=np.float64)
    if sc.shape != (arr.shape[0],):
        raise GeometryInputError(f"nms_bev: expected scores of shape ({arr.shape[0]},), found {sc.shape}")
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise GeometryInputError(f"nms_bev: expected iou_threshold in [0, 1], found {iou_threshold}")
    if np.isnan(sc).any():
        raise GeometryInputError("nms_bev: expected scores without NaN")
    order = np.argsort(-sc, kind="stable")
    return _nms_kernel(arr, order, float(iou_threshold))


# ----------------------------------------------------------------------------------------------
# Independent pure-Python reference (a different polygon-intersection algorithm than the kernel).


def _footprint(box: np.ndarray, origin: np.ndarray) -> np.ndarray:
    c, s = math.cos(box[6]), math.sin(box[6])
    x, y = _SX * 0.5 * box[3], _SY * 0.5 * box[4]
    return np.stack([box[0] - origin[0] + c * x - s * y, box[1] - origin[1] + s * x + c * y], axis=1)


def _inside(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Points inside (or on) a counter-clockwise convex polygon."""
    ok = np.ones(len(points), dtype=bool)
    for k in range(len(poly)):
        p, q = poly[k], poly[(k + 1) % len(poly)]
        ok &= (q[0] - p[0]) * (points[:, 1] - p[1]) - (q[1] - p[1]) * (points[:, 0] - p[0]) >= -1e-12
    return ok


def footprint_intersection_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection area of two box footprints, pure Python: corners of each inside the other plus edge
    crossings, sorted by angle about their mean, shoelace. Computed about the pair's mean centre."""
    if math.hypot(a[0] - b[0], a[1] - b[1]) > 0.5 * (math.hypot(a[3], a[4]) + math.hypot(b[3], b[4])) + 1e-9:
        return 0.0  # bounding circles apart (only a shortcut; the rest is exact without it)
    origin = 0.5 * (a[:2] + b[:2])
    pa, pb = _footprint(a, origin), _footprint(b, origin)
    verts = [*pa[_inside(pa, pb)], *pb[_inside(pb, pa)]]
    for i in range(4):
        p, r = pa[i], pa[(i + 1) % 4] - pa[i]
        for j in range(4):
            q, s = pb[j], pb[(j + 1) % 4] - pb[j]
            denom = r[0] * s[1] - r[1] * s[0]
            if denom == 0.0:
                continue
            t = ((q[0] - p[0]) * s[1] - (q[1] - p[1]) * s[0]) / denom
            w = ((q[0] - p[0]) * r[1] - (q[1] - p[1]) * r[0]) / denom
            if 0.0 <= t <= 1.0 and 0.0 <= w <= 1.0:
                verts.append(p + t * r)
    if len(verts) < 3:
        return 0.0
    pts = np.array(verts)
    centre = pts.mean(axis=0)
    pts = pts[np.argsort(np.arctan2(pts[:, 1] - centre[1], pts[:, 0] - centre[0]))]
    x, y = pts[:, 0], pts[:, 1]
    return max(0.0, 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)))


def box_iou_reference(a: np.ndarray, b: np.ndarray, use_3d: bool = False) -> np.ndarray:
    """Pure-Python twin of :func:`box_iou_bev` / :func:`box_iou_3d`: (N, 7), (M, 7) -> (N, M)."""
    a, b = validate_boxes(a, "a"), validate_boxes(b, "b")
    out = np.zeros((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            inter = footprint_intersection_reference(a[i], b[j])
            va, vb = a[i, 3] * a[i, 4], b[j, 3] * b[j, 4]
            if use_3d:
                lo = max(a[i, 2] - a[i, 5] / 2, b[j, 2] - b[j, 5] / 2)
                hi = min(a[i, 2] + a[i, 5] / 2, b[j, 2] + b[j, 5] / 2)
                inter, va, vb = inter * max(0.0, hi - lo), va * a[i, 5], vb * b[j, 5]
            union = va + vb - inter
            out[i, j] = 0.0 if va <= 0 or vb <= 0 or union <= 0 else min(1.0, inter / union)
    return out


def nms_bev_reference(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
                      iou: np.ndarray | None = None) -> np.ndarray:
    """Pure-Python greedy twin of :func:`nms_bev` over the reference IoU matrix (or a given (N, N) ``iou``)."""
    if iou is None:
        iou = box_iou_reference(boxes, boxes)
    order = sorted(range(len(scores)), key=lambda k: (-float(scores[k]), k))
    keep: list[int] = []
    for i in order:
        if all(iou[k, i] <= iou_threshold for k in keep):
            keep.append(i)
    return np.array(keep, dtype=np.int64)
