"""Per-ray hit resolution: merge the static and the dynamic hits of a ray batch into per-ray surface
attributes (range, class, material, instance, unit normal facing the ray, texture-frame point,
base colour), gathered from per-triangle tables indexed by primitive id.

Two implementations with identical results: :func:`resolve_hits_reference` (vectorised NumPy) and
:func:`resolve_hits` (one fused serial Numba pass: the work per ray is a few loads, less than a thread launch). Tests compare them.

Inputs (N rays, Ts static / Td dynamic triangles, K objects):

- ``origins``, ``dirs``: (N, 3) float64 world rays (unit directions);
- ``t``: (N,) float64 nearest distance after both scenes (metres);
- ``static_prim``: (N,) int32 static triangle or -1; ``static_ng``: (N, 3) float32 its normal;
- ``dyn_tri``: (N,) int64 global dynamic triangle or -1; ``dyn_u``, ``dyn_v``: (N,) float64
  barycentrics; ``dyn_ng``: (N, 3) float64 world normal;
- tables: ``static_class``/``static_material`` (Ts,) uint8, ``static_colour`` (Ts, 3) float32;
  ``dyn_class``/``dyn_material`` (Td,) uint8, ``dyn_colour`` (Td, 3) float32, ``dyn_triangles``
  (Td, 3, 3) float64 object frame, ``dyn_object`` (Td,) int64, ``track_id`` (K,) int32.

Output dict: ``hit`` (N,) bool, ``t`` (N,) float64 (0 on a miss), ``class_id``/``material`` (N,)
uint8 (0 on a miss), ``instance`` (N,) int32 (-1), ``normal`` (N, 3) float64 unit towards the ray
origin (0 on a miss), ``point`` (N, 3) float64 texture-frame point (world for static, object frame
for dynamic hits), ``colour`` (N, 3) float32.

Example:
    >>> import numpy as np
    >>> out = resolve_hits_reference(
    ...     np.zeros((1, 3)), np.array([[0.0, 0, -1]]), np.array([2.0]), np.array([0], np.int32),
    ...     np.array([[0, 0, 3.0]], np.float32), np.array([-1]), np.zeros(1), np.zeros(1), np.zeros((1, 3)),
    ...     np.array([1], np.uint8), np.array([0], np.uint8), np.ones((1, 3), np.float32),
    ...     np.zeros(0, np.uint8), np.zeros(0, np.uint8), np.zeros((0, 3), np.float32), np.zeros((0, 3, 3)),
    ...     np.zeros(0, np.int64), np.zeros(0, np.int32))
    >>> out["point"].tolist(), out["normal"].tolist()
    ([[0.0, 0.0, -2.0]], [[0.0, 0.0, 1.0]])
"""
from __future__ import annotations

import numba
import numpy as np


def resolve_hits_reference(origins, dirs, t, static_prim, static_ng, dyn_tri, dyn_u, dyn_v, dyn_ng,  # noqa: ANN001, ANN201
                           static_class, static_material, static_colour, dyn_class, dyn_material, dyn_colour,
                           dyn_triangles, dyn_object, track_id):
    """NumPy reference (see the module docstring for arguments and outputs)."""
    n = len(t)
    is_dyn = dyn_tri >= 0
    hit = is_dyn | (static_prim >= 0)
    sp = np.maximum(static_prim, 0)
    dp = np.maximum(dyn_tri, 0)
    has_dyn = len(dyn_class) > 0
    has_static = len(static_class) > 0
    normal = np.where(is_dyn[:, None], dyn_ng, static_ng.astype(np.float64))
    length = np.linalg.norm(normal, axis=1)
    normal = normal / np.where(length > 0, length, 1.0)[:, None]
    normal = normal * np.where(np.einsum("ij,ij->i", normal, dirs) > 0, -1.0, 1.0)[:, None]
    normal[~hit] = 0.0
    zeros_u8 = np.zeros(n, np.uint8)
    s_class = static_class[sp] if has_static else zeros_u8
    s_mat = static_material[sp] if has_static else zeros_u8
    s_col = static_colour[sp] if has_static else np.zeros((n, 3), np.float32)
    d_class = dyn_class[dp] if has_dyn else zeros_u8
    d_mat = dyn_material[dp] if has_dyn else zeros_u8
    d_col = dyn_colour[dp] if has_dyn else np.zeros((n, 3), np.float32)
    class_id = np.where(is_dyn, d_class, s_class).astype(np.uint8)
    material = np.where(is_dyn, d_mat, s_mat).astype(np.uint8)
    colour = np.where(is_dyn[:, None], d_col, s_col).astype(np.float32)
    class_id[~hit] = 0
    material[~hit] = 0
    colour[~hit] = 0.0
    instance = np.full(n, -1, np.int32)
    if has_dyn:
        instance[is_dyn] = track_id[dyn_object[dp[is_dyn]]]
    t_out = np.where(hit, t, 0.0)
    point = origins + dirs * t_out[:, None]
    if has_dyn and is_dyn.any():
        tri = dyn_triangles[dp[is_dyn]]
        u, v = dyn_u[is_dyn, None], dyn_v[is_dyn, None]
        point[is_dyn] = tri[:, 0] * (1 - u - v) + tri[:, 1] * u + tri[:, 2] * v
    point[~hit] = 0.0
    return {"hit": hit, "t": t_out, "class_id": class_id, "material": material, "instance": instance,
            "normal": normal, "point": point, "colour": colour}


@numba.njit(cache=True)
def _resolve_kernel(origins, dirs, t, static_prim, static_ng, dyn_tri, dyn_u, dyn_v, dyn_ng, static_class,  # noqa: ANN001
                    static_material, static_colour, dyn_class, dyn_material, dyn_colour, dyn_triangles, dyn_object,
                    track_id, hit, t_out, class_id, material, instance, normal, point, colour):
    for i in range(t.shape[0]):
        d = dyn_tri[i]
        s = static_prim[i]
        instance[i] = -1
        if d < 0 and s < 0:
            hit[i] = False
            t_out[i] = 0.0
            class_id[i] = 0
            material[i] = 0
            for k in range(3):
                normal[i, k] = 0.0
                point[i, k] = 0.0
                colour[i, k] = 0.0
            continue
        hit[i] = True
        t_out[i] = t[i]
        if d >= 0:
            nx, ny, nz = dyn_ng[i, 0], dyn_ng[i, 1], dyn_ng[i, 2]
            class_id[i] = dyn_class[d]
            material[i] = dyn_material[d]
            instance[i] = track_id[dyn_object[d]]
            u, v = dyn_u[i], dyn_v[i]
            for k in range(3):
                colour[i, k] = dyn_colour[d, k]
                point[i, k] = dyn_triangles[d, 0, k] * (1 - u - v) + dyn_triangles[d, 1, k] * u \
                    + dyn_triangles[d, 2, k] * v
        else:
            nx, ny, nz = float(static_ng[i, 0]), float(static_ng[i, 1]), float(static_ng[i, 2])
            class_id[i] = static_class[s]
            material[i] = static_material[s]
            for k in range(3):
                colour[i, k] = static_colour[s, k]
                point[i, k] = origins[i, k] + dirs[i, k] * t[i]
        length = np.sqrt(nx * nx + ny * ny + nz * nz)
        if length > 0:
            nx, ny, nz = nx / length, ny / length, nz / length
        if nx * dirs[i, 0] + ny * dirs[i, 1] + nz * dirs[i, 2] > 0:
            nx, ny, nz = -nx, -ny, -nz
        normal[i, 0], normal[i, 1], normal[i, 2] = nx, ny, nz


def resolve_hits(origins, dirs, t, static_prim, static_ng, dyn_tri, dyn_u, dyn_v, dyn_ng,  # noqa: ANN001, ANN201
                 static_class, static_material, static_colour, dyn_class, dyn_material, dyn_colour,
                 dyn_triangles, dyn_object, track_id):
    """Numba twin of :func:`resolve_hits_reference` (same arguments, same outputs)."""
    n = len(t)
    out = {"hit": np.empty(n, np.bool_), "t": np.empty(n), "class_id": np.empty(n, np.uint8),
           "material": np.empty(n, np.uint8), "instance": np.empty(n, np.int32), "normal": np.empty((n, 3)),
           "point": np.empty((n, 3)), "colour": np.empty((n, 3), np.float32)}
    if len(dyn_class) == 0:  # numba needs non-empty typed tables; no dynamic hit can refer to them
        dyn_class, dyn_material = np.zeros(1, np.uint8), np.zeros(1, np.uint8)
        dyn_colour, dyn_triangles = np.zeros((1, 3), np.float32), np.zeros((1, 3, 3))
        dyn_object, track_id = np.zeros(1, np.int64), np.full(1, -1, np.int32)
    c = np.ascontiguousarray
    _resolve_kernel(c(origins, np.float64), c(dirs, np.float64), c(t, np.float64), c(static_prim, np.int32),
                    c(static_ng, np.float32), c(dyn_tri, np.int64), c(dyn_u, np.float64), c(dyn_v, np.float64),
                    c(dyn_ng, np.float64), c(static_class, np.uint8), c(static_material, np.uint8),
                    c(static_colour, np.float32), c(dyn_class, np.uint8), c(dyn_material, np.uint8),
                    c(dyn_colour, np.float32), c(dyn_triangles, np.float64), c(dyn_object, np.int64),
                    c(track_id, np.int32), out["hit"], out["t"], out["class_id"], out["material"], out["instance"],
                    out["normal"], out["point"], out["colour"])
    return out
