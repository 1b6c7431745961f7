"""Least-squares rigid fit (Kabsch / Horn): the proper rotation and translation that best map src onto dst.

Given corresponding points ``src_i``, ``dst_i`` (metres) and weights ``w_i >= 0``, find ``R`` in SO(3)
(never a reflection) and ``t`` minimising ``sum_i w_i |R src_i + t - dst_i|^2``; return ``dst_from_src``
(4, 4) float64.

Two independent methods compute the same optimum:

- the Numba kernel uses Horn's unit-quaternion method: the rotation is the eigenvector of the largest
  eigenvalue of a symmetric 4x4 matrix built from the weighted cross-covariance
  ``H = sum_i w_i (src_i - c_src)(dst_i - c_dst)^T``, found by cyclic Jacobi sweeps (exact to rounding,
  no LAPACK call per group, and always a proper rotation);
- the NumPy reference (``_kabsch_batched_reference``) uses the SVD ``H = U S V^T`` with the determinant
  correction ``R = V diag(1, 1, d) U^T``, ``d = sign(det(V U^T))``.

**Degenerate input.** The fit is unique iff the gap between the two largest eigenvalues of Horn's
matrix, ``2 (s2 + d s3)`` in terms of the singular values of ``H``, is positive. A group is
*degenerate* when it has fewer than 3 points with positive weight, when src or dst points coincide
(weighted spread below ``(1e-12 (1 + |centroid|))^2``), or when ``s2 + d s3 <= 1e-10 sqrt(tr C_src tr
C_dst)`` (collinear points, or a reflection-symmetric ambiguity). :func:`kabsch` raises
:class:`DegeneratePointSetError`; :func:`kabsch_batched` returns ``ok = False`` and a NaN matrix for
that group, so a degenerate result cannot be used silently.

Example:
    >>> import numpy as np
    >>> src = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    >>> np.round(kabsch(src, src + [1.0, 2.0, 3.0]), 12)[:3, 3]
    array([1., 2., 3.])
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from taskology.errors import TaskologyError

__all__ = ["kabsch", "kabsch_batched", "KabschBatchResult", "DegeneratePointSetError"]

#: relative gap below which the optimal rotation is not unique (see module docstring).
_GAP_TOLERANCE = 1e-10
#: relative spread below which the points count as coincident.
_COINCIDENT_TOLERANCE = 1e-12
_JACOBI_MAX_SWEEPS = 30


class DegeneratePointSetError(TaskologyError, ValueError):
    """Kabsch was given fewer than 3 weighted points, coincident or collinear points: no unique rotation."""


class KabschBatchResult(NamedTuple):
    """Output of :func:`kabsch_batched`.

    Attributes:
        dst_from_src: (G, 4, 4) float64; NaN for groups that are not ok.
        ok: (G,) bool, False where the group is degenerate (see module docstring).
    """

    dst_from_src: np.ndarray
    ok: np.ndarray


# ----------------------------------------------------------------------------------------------
# Numba kernel (Horn's quaternion method, Jacobi eigen-solver)
# ----------------------------------------------------------------------------------------------
@numba.njit(cache=True)
def _jacobi_eigen_symmetric4(a: np.ndarray, vectors: np.ndarray) -> None:
    """In place: diagonalise symmetric (4,4) ``a``; columns of ``vectors`` become its eigenvectors."""
    for i in range(4):
        for j in range(4):
            vectors[i, j] = 1.0 if i == j else 0.0
    for _ in range(_JACOBI_MAX_SWEEPS):
        off = 0.0
        diag = 0.0
        for p in range(4):
            diag += a[p, p] * a[p, p]
            for q in range(p + 1, 4):
                off += a[p, q] * a[p, q]
        if off <= 1e-36 * diag or off == 0.0:
            return
        for p in range(3):
            for q in range(p + 1, 4):
                apq = a[p, q]
                if apq == 0.0:
                    continue
                theta = (a[q, q] - a[p, p]) / (2.0 * apq)
                t = 1.0 / (abs(theta) + np.sqrt(theta * theta + 1.0))
                if theta < 0:
                    t = -t
                c = 1.0 / np.sqrt(t * t + 1.0)
                s = t * c
                for k in range(4):  # a <- a P (columns p, q)
                    akp, akq = a[k, p], a[k, q]
                    a[k, p] = c * akp - s * akq
                    a[k, q] = s * akp + c * akq
                for k in range(4):  # a <- P^T a (rows p, q)
                    apk, aqk = a[p, k], a[q, k]
                    a[p, k] = c * apk - s * aqk
                    a[q, k] = s * apk + c * aqk
                for k in range(4):
                    vkp, vkq = vectors[k, p], vectors[k, q]
                    vectors[k, p] = c * vkp - s * vkq
                    vectors[k, q] = s * vkp + c * vkq


@numba.njit(parallel=True, cache=True)
def _kabsch_batched_kernel(src: np.ndarray, dst: np.ndarray, weights: np.ndarray,
                           out: np.ndarray, ok: np.ndarray) -> None:
    """src, dst (G,N,3) float64, weights (G,N) float64 >= 0 -> fills out (G,4,4) and ok (G,) bool."""
    groups, count = src.shape[0], src.shape[1]
    for g in numba.prange(groups):
        total = 0.0
        positive = 0
        cs = np.zeros(3)
        cd = np.zeros(3)
        for n in range(count):
            w = weights[g, n]
            if w > 0:
                positive += 1
                total += w
                for c in range(3):
                    cs[c] += w * src[g, n, c]
                    cd[c] += w * dst[g, n, c]
        for r in range(4):
            for c in range(4):
                out[g, r, c] = np.nan
        ok[g] = False
        if positive < 3:
            continue
        cs /= total
        cd /= total
        h = np.zeros((3, 3))
        spread_s = 0.0
        spread_d = 0.0
        for n in range(count):
            w = weights[g, n]
            if w > 0:
                for i in range(3):
                    si = src[g, n, i] - cs[i]
                    spread_s += w * si * si
                    di = dst[g, n, i] - cd[i]
                    spread_d += w * di * di
                    for j in range(3):
                        h[i, j] += w * si * (dst[g, n, j] - cd[j])
        spread_s /= total
        spread_d /= total
        norm_cs = np.sqrt(cs[0] * cs[0] + cs[1] * cs[1] + cs[2] * cs[2])
        norm_cd = np.sqrt(cd[0] * cd[0] + cd[1] * cd[1] + cd[2] * cd[2])
        if (spread_s <= (_COINCIDENT_TOLERANCE * (1.0 + norm_cs)) ** 2
                or spread_d <= (_COINCIDENT_TOLERANCE * (1.0 + norm_cd)) ** 2):
            continue
        for i in range(3):
            for j in range(3):
                h[i, j] /= total
        sxx, sxy, sxz = h[0, 0], h[0, 1], h[0, 2]
        syx, syy, syz = h[1, 0], h[1, 1], h[1, 2]
        szx, szy, szz = h[2, 0], h[2, 1], h[2, 2]
        horn = np.empty((4, 4))
        horn[0, 0] = sxx + syy + szz
        horn[0, 1] = horn[1, 0] = syz - szy
        horn[0, 2] = horn[2, 0] = szx - sxz
        horn[0, 3] = horn[3, 0] = sxy - syx
        horn[1, 1] = sxx - syy - szz
        horn[1, 2] = horn[2, 1] = sxy + syx
        horn[1, 3] = horn[3, 1] = szx + sxz
        horn[2, 2] = -sxx + syy - szz
        horn[2, 3] = horn[3, 2] = syz + szy
        horn[3, 3] = -sxx - syy + szz
        vectors = np.empty((4, 4))
        _jacobi_eigen_symmetric4(horn, vectors)
        best, second = 0, -1
        for k in range(1, 4):
            if horn[k, k] > horn[best, best]:
                best = k
        for k in range(4):
            if k != best and (second < 0 or horn[k, k] > horn[second, second]):
                second = k
        gap = horn[best, best] - horn[second, second]
        if gap <= 2.0 * _GAP_TOLERANCE * np.sqrt(spread_s * spread_d):
            continue
        qw, qx, qy, qz = vectors[0, best], vectors[1, best], vectors[2, best], vectors[3, best]
        qn = np.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
        qw, qx, qy, qz = qw / qn, qx / qn, qy / qn, qz / qn
        rot = np.empty((3, 3))
        rot[0, 0] = 1.0 - 2.0 * (qy * qy + qz * qz)
        rot[0, 1] = 2.0 * (qx * qy - qw * qz)
        rot[0, 2] = 2.0 * (qx * qz + qw * qy)
        rot[1, 0] = 2.0 * (qx * qy + qw * qz)
        rot[1, 1] = 1.0 - 2.0 * (qx * qx + qz * qz)
        rot[1, 2] = 2.0 * (qy * qz - qw * qx)
        rot[2, 0] = 2.0 * (qx * qz - qw * qy)
        rot[2, 1] = 2.0 * (qy * qz + qw * qx)
        rot[2, 2] = 1.0 - 2.0 * (qx * qx + qy * qy)
        for r in range(3):
            out[g, r, 3] = cd[r]
            for c in range(3):
                out[g, r, c] = rot[r, c]
                out[g, r, 3] -= rot[r, c] * cs[c]
            out[g, 3, r] = 0.0
        out[g, 3, 3] = 1.0
        ok[g] = True


# ----------------------------------------------------------------------------------------------
# NumPy reference (vectorised SVD with determinant correction)
# ----------------------------------------------------------------------------------------------
def _kabsch_batched_reference(src: np.ndarray, dst: np.ndarray, weights: np.ndarray) -> KabschBatchResult:
    """Vectorised NumPy reference of :func:`_kabsch_batched_kernel` (same inputs, same degeneracy rule)."""
    positive = weights > 0
    w = np.where(positive, weights, 0.0)
    total = w.sum(axis=1)
    safe_total = np.where(total > 0, total, 1.0)[:, None]
    cs = np.einsum("gn,gni->gi", w, src) / safe_total
    cd = np.einsum("gn,gni->gi", w, dst) / safe_total
    src_c, dst_c = src - cs[:, None], dst - cd[:, None]
    h = np.einsum("gn,gni,gnj->gij", w, src_c, dst_c) / safe_total[..., None]
    spread_s = np.einsum("gn,gni,gni->g", w, src_c, src_c) / safe_total[:, 0]
    spread_d = np.einsum("gn,gni,gni->g", w, dst_c, dst_c) / safe_total[:, 0]
    u, s, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.swapaxes(vt, -1, -2) @ np.swapaxes(u, -1, -2)))
    d = np.where(d == 0, 1.0, d)
    correction = np.tile(np.eye(3), (len(d), 1, 1))
    correction[:, 2, 2] = d
    rot = np.swapaxes(vt, -1, -2) @ correction @ np.swapaxes(u, -1, -2)
    out = np.tile(np.eye(4), (len(d), 1, 1))
    out[:, :3, :3] = rot
    out[:, :3, 3] = cd - np.einsum("gij,gj->gi", rot, cs)
    ok = ((positive.sum(axis=1) >= 3)
          & (spread_s > (_COINCIDENT_TOLERANCE * (1.0 + np.linalg.norm(cs, axis=1))) ** 2)
          & (spread_d > (_COINCIDENT_TOLERANCE * (1.0 + np.linalg.norm(cd, axis=1))) ** 2)
          & (s[:, 1] + d * s[:, 2] > _GAP_TOLERANCE * np.sqrt(spread_s * spread_d)))
    out[~ok] = np.nan
    return KabschBatchResult(out, ok)


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------
def _check_inputs(name: str, src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None,
                  batched: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = np.ascontiguousarray(src, dtype=np.float64)
    dst = np.ascontiguousarray(dst, dtype=np.float64)
    shape = "(G, N, 3)" if batched else "(N, 3)"
    if src.ndim != (3 if batched else 2) or src.shape[-1] != 3 or src.shape != dst.shape:
        raise ValueError(f"{name}: src and dst must both be {shape}, found {src.shape} and {dst.shape}")
    if not (np.all(np.isfinite(src)) and np.all(np.isfinite(dst))):
        raise ValueError(f"{name}: src and dst must be finite")
    if weights is None:
        w = np.ones(src.shape[:-1])
    else:
        w = np.ascontiguousarray(weights, dtype=np.float64)
        if w.shape != src.shape[:-1]:
            raise ValueError(f"{name}: weights must be {src.shape[:-1]} to match src {src.shape}, found {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"{name}: weights must be finite and >= 0")
    if not batched:
        src, dst, w = src[None], dst[None], w[None]
    return src, dst, w


def kabsch_batched(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> KabschBatchResult:
    """Independent rigid fits of G groups of N corresponding points each.

    Args:
        src: (G, N, 3) float, metres.
        dst: (G, N, 3) float, metres, ``dst[g, n]`` corresponds to ``src[g, n]``.
        weights: optional (G, N) float >= 0 (0 excludes a point, e.g. padding); default all ones.

    Returns:
        :class:`KabschBatchResult` ``(dst_from_src (G, 4, 4) float64, ok (G,) bool)``; degenerate groups
        have ``ok = False`` and an all-NaN matrix (see module docstring).

    Example:
        >>> src = np.random.default_rng(0).normal(size=(2, 5, 3))
        >>> result = kabsch_batched(src, src + 1.0)
        >>> result.ok.tolist(), np.round(result.dst_from_src[:, :3, 3], 12).tolist()
        ([True, True], [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    """
    src, dst, w = _check_inputs("kabsch_batched", src, dst, weights, batched=True)
    out = np.empty((src.shape[0], 4, 4))
    ok = np.empty(src.shape[0], dtype=np.bool_)
    _kabsch_batched_kernel(src, dst, w, out, ok)
    return KabschBatchResult(out, ok)


def kabsch(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Rigid fit ``dst_from_src`` (4, 4) float64 minimising ``sum w |R src + t - dst|^2``, R proper.

    Args:
        src: (N, 3) float, metres.
        dst: (N, 3) float, metres, corresponding to ``src`` row by row.
        weights: optional (N,) float >= 0; default all ones.

    Raises:
        DegeneratePointSetError: fewer than 3 positive-weight points, coincident or collinear points.
        ValueError: wrong shapes, non-finite values or negative weights.

    Example:
        >>> src = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
        >>> rot_z_90 = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
        >>> np.round(kabsch(src, src @ rot_z_90.T)[:3, :3], 12) + 0.0  # + 0.0 turns -0. into 0.
        array([[ 0., -1.,  0.],
               [ 1.,  0.,  0.],
               [ 0.,  0.,  1.]])
    """
    src, dst, w = _check_inputs("kabsch", src, dst, weights, batched=False)
    out = np.empty((1, 4, 4))
    ok = np.empty(1, dtype=np.bool_)
    _kabsch_batched_kernel(src, dst, w, out, ok)
    if not ok[0]:
        raise DegeneratePointSetError(
            f"kabsch: no unique rigid fit for {src.shape[1]} points ({int((w > 0).sum())} with positive weight): "
            "need at least 3 points that are not coincident or collinear")
    return out[0]
