"""Schema layers from ray hits: the camera images (rgb, depth, normals, semantic, instance) and the
LiDAR returns (points + intensity, semantic, instance) of one frame, straight from the raw hits of
the static and the dynamic scene.

Two implementations with identical formulas:

- :func:`camera_layers_reference` / :func:`lidar_layers_reference`: NumPy, built on
  :func:`taskology.sim.hits.resolve_hits_reference` and :func:`taskology.sim.shading.shade_reference`;
- :func:`camera_layers` / :func:`lidar_layers`: one fused serial Numba pass per sensor (hit
  resolution, shading or sky, labels) with no per-ray intermediate arrays; the work per ray is a few
  loads and one texture evaluation, less than a thread launch. Tests compare them.

Inputs (N rays of one sensor):

- ``hits``: :class:`RayHits` (nearest distance after both scenes and the static / dynamic hit records);
- ``tables``: :class:`SurfaceTables` (per-triangle class, material, colour; dynamic triangles in
  their object frames, their object and the objects' track ids);
- ``dirs``: (N, 3) float64 unit world directions; ``origin``: (3,) float64 world sensor position.

Example:
    >>> import numpy as np
    >>> hits = RayHits(t=np.array([2.0, 1e5]), static_prim=np.array([0, -1], np.int32),
    ...                static_ng=np.array([[0, 0, 3.0], [0, 0, 0]], np.float32), dyn_tri=np.array([-1, -1]),
    ...                dyn_u=np.zeros(2), dyn_v=np.zeros(2), dyn_ng=np.zeros((2, 3)))
    >>> tables = SurfaceTables.build(np.array([1], np.uint8), np.array([0], np.uint8), np.ones((1, 3), np.float32))
    >>> out = camera_layers(hits, tables, np.zeros(3), np.array([[0.0, 0, -1], [0, 0, 1]]), np.ones(2), np.eye(3),
    ...                     100.0, np.array([0, 0, 1.0]))
    >>> out["depth"].tolist(), out["semantic"].tolist(), out["normals"].tolist()
    ([2.0, 0.0], [1, 11], [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from taskology.sim import hits as hit_resolution
from taskology.sim import materials as mat
from taskology.sim import shading

SKY = 11


class RayHits(NamedTuple):
    """Raw hits of N rays after the static and the dynamic scene.

    Attributes:
        t: (N,) float64 nearest distance over both scenes, metres (anything on a miss).
        static_prim: (N,) int32 static triangle or -1; static_ng: (N, 3) float32 its (unnormalised) normal.
        dyn_tri: (N,) int64 global dynamic triangle or -1 (wins over the static hit).
        dyn_u, dyn_v: (N,) float64 barycentrics of the dynamic hit; dyn_ng: (N, 3) float64 its world normal.
    """

    t: np.ndarray
    static_prim: np.ndarray
    static_ng: np.ndarray
    dyn_tri: np.ndarray
    dyn_u: np.ndarray
    dyn_v: np.ndarray
    dyn_ng: np.ndarray

    def take(self, start: int, stop: int) -> RayHits:
        """The hits of rays ``start:stop`` (views)."""
        return RayHits(*(a[start:stop] for a in self))


class SurfaceTables(NamedTuple):
    """Per-triangle surface attributes (Ts static, Td dynamic triangles, K objects).

    Attributes:
        static_class, static_material: (Ts,) uint8; static_colour: (Ts, 3) float32 linear RGB.
        dyn_class, dyn_material: (Td,) uint8; dyn_colour: (Td, 3) float32.
        dyn_triangles: (Td, 3, 3) float64 corners in the object frame (texture frame of moving objects).
        dyn_object: (Td,) int64 object of each dynamic triangle; track_id: (K,) int32.
    """

    static_class: np.ndarray
    static_material: np.ndarray
    static_colour: np.ndarray
    dyn_class: np.ndarray
    dyn_material: np.ndarray
    dyn_colour: np.ndarray
    dyn_triangles: np.ndarray
    dyn_object: np.ndarray
    track_id: np.ndarray

    @classmethod
    def build(cls, static_class: np.ndarray, static_material: np.ndarray, static_colour: np.ndarray,
              dyn_class: np.ndarray | None = None, dyn_material: np.ndarray | None = None,
              dyn_colour: np.ndarray | None = None, dyn_triangles: np.ndarray | None = None,
              dyn_object: np.ndarray | None = None, track_id: np.ndarray | None = None) -> SurfaceTables:
        """Tables with contiguous schema dtypes; omitted dynamic tables mean no moving objects."""
        c = np.ascontiguousarray
        return cls(c(static_class, np.uint8), c(static_material, np.uint8), c(static_colour, np.float32),
                   c(np.zeros(0) if dyn_class is None else dyn_class, np.uint8),
                   c(np.zeros(0) if dyn_material is None else dyn_material, np.uint8),
                   c(np.zeros((0, 3)) if dyn_colour is None else dyn_colour, np.float32),
                   c(np.zeros((0, 3, 3)) if dyn_triangles is None else dyn_triangles, np.float64),
                   c(np.zeros(0) if dyn_object is None else dyn_object, np.int64),
                   c(np.zeros(0) if track_id is None else track_id, np.int32))

    def for_kernel(self) -> SurfaceTables:
        """The same tables with one dummy row where a dynamic table is empty (Numba needs typed,
        non-empty arrays; no dynamic hit can refer to them then)."""
        if len(self.dyn_class):
            return self
        return self._replace(dyn_class=np.zeros(1, np.uint8), dyn_material=np.zeros(1, np.uint8),
                             dyn_colour=np.zeros((1, 3), np.float32), dyn_triangles=np.zeros((1, 3, 3)),
                             dyn_object=np.zeros(1, np.int64), track_id=np.full(1, -1, np.int32))


def _resolved(hits: RayHits, tables: SurfaceTables, origin: np.ndarray, dirs: np.ndarray) -> dict[str, np.ndarray]:
    origins = np.broadcast_to(np.asarray(origin, np.float64), dirs.shape)
    return hit_resolution.resolve_hits_reference(origins, dirs, *hits, *tables)


# ---------------------------------------------------------------------------------- NumPy references
def camera_layers_reference(hits: RayHits, tables: SurfaceTables, origin: np.ndarray, dirs: np.ndarray,
                            cam_z: np.ndarray, world_from_cam_rot: np.ndarray, fx: float, sun_dir: np.ndarray,
                            shadowed: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Camera layers of N pixel rays (flat, row-major; reshape to (H, W, ...)).

    Args:
        hits, tables, origin, dirs: see the module docstring.
        cam_z: (N,) float64 camera-frame z of each unit ray (planar depth = range * cam_z).
        world_from_cam_rot: (3, 3) float64 rotation of the camera in the world.
        fx: focal length, pixels (pixel footprint on a surface = range / fx / |cos incidence|).
        sun_dir: (3,) float64 unit vector towards the sun, world frame.
        shadowed: (N,) bool, True where the hit point is in shadow (default: none).

    Returns:
        ``rgb`` (N, 3) uint8, ``depth`` (N,) float32 metres (0 on sky), ``normals`` (N, 3) float32
        camera frame towards the camera (0 on sky), ``semantic`` (N,) uint8 (sky 11), ``instance``
        (N,) int32 (-1 off objects).
    """
    rays = _resolved(hits, tables, origin, dirs)
    is_hit, t, normal = rays["hit"], rays["t"], rays["normal"]
    idx = np.flatnonzero(is_hit)
    normal_hit = normal[idx]
    sun = np.asarray(sun_dir, np.float64)
    lit = np.ones(len(idx), bool) if shadowed is None else ~np.asarray(shadowed, bool)[idx]
    incidence = np.abs(np.einsum("ij,ij->i", normal_hit, dirs[idx]))
    footprint = t[idx] / fx / np.maximum(incidence, 0.15)
    rgb = np.empty((len(t), 3), np.uint8)
    rgb[idx] = shading.shade_reference(rays["material"][idx], rays["colour"][idx], rays["point"][idx], normal_hit,
                                       lit, sun, footprint)
    sky = np.flatnonzero(~is_hit)
    rgb[sky] = shading.sky_reference(dirs[sky])
    return {"rgb": rgb, "depth": (t * cam_z).astype(np.float32),
            "normals": (normal @ world_from_cam_rot).astype(np.float32),  # R^T n per row; 0 stays 0
            "semantic": np.where(is_hit, rays["class_id"], SKY).astype(np.uint8), "instance": rays["instance"]}


def lidar_layers_reference(hits: RayHits, tables: SurfaceTables, origin: np.ndarray, dirs: np.ndarray,
                           dirs_sensor: np.ndarray, max_range: float, dropped: np.ndarray | None = None,
                           range_noise: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """LiDAR returns of N beam rays: the rays that hit within ``max_range`` and are not ``dropped``.

    Args:
        hits, tables, origin, dirs: see the module docstring.
        dirs_sensor: (N, 3) float64 the same unit rays in the LiDAR frame.
        max_range: metres.
        dropped: (N,) bool returns removed by dropout (default none).
        range_noise: (N,) float64 metres added to each range, then clamped at 0 (default none).

    Returns:
        ``points`` (P, 4) float32 (x, y, z in the LiDAR frame, metres; intensity in [0, 1] =
        reflectivity * (0.3 + 0.7 |cos incidence|)), ``semantic`` (P,) uint8, ``instance`` (P,) int32.
    """
    rays = _resolved(hits, tables, origin, dirs)
    t = rays["t"]
    keep = rays["hit"] & (t <= max_range)
    if dropped is not None:
        keep &= ~np.asarray(dropped, bool)
    idx = np.flatnonzero(keep)
    r = t[idx]
    if range_noise is not None:
        r = np.maximum(r + np.asarray(range_noise, np.float64)[idx], 0.0)
    xyz = dirs_sensor[idx] * r[:, None]
    cos = np.abs(np.einsum("ij,ij->i", rays["normal"][idx], dirs[idx]))
    intensity = np.clip(mat.REFLECTIVITY[rays["material"][idx]] * (0.3 + 0.7 * cos), 0.0, 1.0)
    return {"points": np.concatenate([xyz, intensity[:, None]], axis=1).astype(np.float32),
            "semantic": rays["class_id"][idx], "instance": rays["instance"][idx]}


# ---------------------------------------------------------------------------------- Numba kernels
# The hit resolution below repeats :func:`taskology.sim.hits.resolve_hits` inline in each kernel: a
# helper returning the dozen per-hit values as a tuple measured ~10x slower than the inlined code.
@numba.njit(cache=True)
def _camera_kernel(origin, dirs, t, static_prim, static_ng, dyn_tri, dyn_u, dyn_v, dyn_ng, static_class,  # noqa: ANN001
                   static_material, static_colour, dyn_class, dyn_material, dyn_colour, dyn_triangles, dyn_object,
                   track_id, cam_z, rot, fx, sun_dir, shadowed, ambient, sun, window_rgb, horizon, zenith,
                   rgb, depth, normals, semantic, instance):
    for i in range(t.shape[0]):
        d, s = dyn_tri[i], static_prim[i]
        dx, dy, dz = dirs[i, 0], dirs[i, 1], dirs[i, 2]
        if d < 0 and s < 0:
            shading.sky_into(rgb, i, dx, dy, dz, horizon, zenith)
            depth[i] = 0.0
            normals[i, 0] = 0.0
            normals[i, 1] = 0.0
            normals[i, 2] = 0.0
            semantic[i] = SKY
            instance[i] = -1
            continue
        if d >= 0:
            nx, ny, nz = dyn_ng[i, 0], dyn_ng[i, 1], dyn_ng[i, 2]
            semantic[i] = dyn_class[d]
            material = dyn_material[d]
            instance[i] = track_id[dyn_object[d]]
            r, g, b = float(dyn_colour[d, 0]), float(dyn_colour[d, 1]), float(dyn_colour[d, 2])
            u, v = dyn_u[i], dyn_v[i]
            w = 1 - u - v
            px = dyn_triangles[d, 0, 0] * w + dyn_triangles[d, 1, 0] * u + dyn_triangles[d, 2, 0] * v
            py = dyn_triangles[d, 0, 1] * w + dyn_triangles[d, 1, 1] * u + dyn_triangles[d, 2, 1] * v
            pz = dyn_triangles[d, 0, 2] * w + dyn_triangles[d, 1, 2] * u + dyn_triangles[d, 2, 2] * v
        else:
            nx, ny, nz = float(static_ng[i, 0]), float(static_ng[i, 1]), float(static_ng[i, 2])
            semantic[i] = static_class[s]
            material = static_material[s]
            instance[i] = -1
            r, g, b = float(static_colour[s, 0]), float(static_colour[s, 1]), float(static_colour[s, 2])
            px, py, pz = origin[0] + dx * t[i], origin[1] + dy * t[i], origin[2] + dz * t[i]
        length = np.sqrt(nx * nx + ny * ny + nz * nz)
        if length > 0:
            nx, ny, nz = nx / length, ny / length, nz / length
        cos_view = nx * dx + ny * dy + nz * dz
        if cos_view > 0:
            nx, ny, nz = -nx, -ny, -nz
        footprint = t[i] / fx / max(abs(cos_view), 0.15)
        shading.shade_into(rgb, i, material, r, g, b, px, py, pz, nx, ny, nz, footprint, not shadowed[i], sun_dir,
                           ambient, sun, window_rgb)
        depth[i] = np.float32(t[i] * cam_z[i])
        normals[i, 0] = np.float32(nx * rot[0, 0] + ny * rot[1, 0] + nz * rot[2, 0])  # R^T n
        normals[i, 1] = np.float32(nx * rot[0, 1] + ny * rot[1, 1] + nz * rot[2, 1])
        normals[i, 2] = np.float32(nx * rot[0, 2] + ny * rot[1, 2] + nz * rot[2, 2])


@numba.njit(cache=True)
def _lidar_kernel(origin, dirs, t, static_prim, static_ng, dyn_tri, dyn_u, dyn_v, dyn_ng, static_class,  # noqa: ANN001
                  static_material, static_colour, dyn_class, dyn_material, dyn_colour, dyn_triangles, dyn_object,
                  track_id, dirs_sensor, max_range, dropped, range_noise, reflectivity, points, semantic, instance):
    n = 0
    for i in range(t.shape[0]):
        d, s = dyn_tri[i], static_prim[i]
        if (d < 0 and s < 0) or t[i] > max_range or dropped[i]:
            continue
        if d >= 0:
            nx, ny, nz = dyn_ng[i, 0], dyn_ng[i, 1], dyn_ng[i, 2]
            semantic[n] = dyn_class[d]
            material = dyn_material[d]
            instance[n] = track_id[dyn_object[d]]
        else:
            nx, ny, nz = float(static_ng[i, 0]), float(static_ng[i, 1]), float(static_ng[i, 2])
            semantic[n] = static_class[s]
            material = static_material[s]
            instance[n] = -1
        length = np.sqrt(nx * nx + ny * ny + nz * nz)
        if length > 0:
            nx, ny, nz = nx / length, ny / length, nz / length
        rng = max(t[i] + range_noise[i], 0.0)
        points[n, 0] = np.float32(dirs_sensor[i, 0] * rng)
        points[n, 1] = np.float32(dirs_sensor[i, 1] * rng)
        points[n, 2] = np.float32(dirs_sensor[i, 2] * rng)
        cos = abs(nx * dirs[i, 0] + ny * dirs[i, 1] + nz * dirs[i, 2])  # facing does not matter here
        points[n, 3] = np.float32(min(max(float(reflectivity[material]) * (0.3 + 0.7 * cos), 0.0), 1.0))
        n += 1
    return n


def _kernel_inputs(hits: RayHits, tables: SurfaceTables, origin: np.ndarray, dirs: np.ndarray) -> tuple:
    c = np.ascontiguousarray
    h = (c(hits.t, np.float64), c(hits.static_prim, np.int32), c(hits.static_ng, np.float32),
         c(hits.dyn_tri, np.int64), c(hits.dyn_u, np.float64), c(hits.dyn_v, np.float64), c(hits.dyn_ng, np.float64))
    return (np.asarray(origin, np.float64).reshape(3), c(dirs, np.float64), *h, *tables.for_kernel())


def camera_layers(hits: RayHits, tables: SurfaceTables, origin: np.ndarray, dirs: np.ndarray, cam_z: np.ndarray,
                  world_from_cam_rot: np.ndarray, fx: float, sun_dir: np.ndarray,
                  shadowed: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Numba twin of :func:`camera_layers_reference` (same arguments and outputs; float layers equal up
    to rounding of the normal rotation, rgb up to 1 level)."""
    n = len(hits.t)
    out = {"rgb": np.empty((n, 3), np.uint8), "depth": np.empty(n, np.float32),
           "normals": np.empty((n, 3), np.float32), "semantic": np.empty(n, np.uint8),
           "instance": np.empty(n, np.int32)}
    if n:
        shadow = np.zeros(n, np.bool_) if shadowed is None else np.ascontiguousarray(shadowed, np.bool_)
        _camera_kernel(*_kernel_inputs(hits, tables, origin, dirs), np.ascontiguousarray(cam_z, np.float64),
                       np.ascontiguousarray(world_from_cam_rot, np.float64), float(fx),
                       np.asarray(sun_dir, np.float64), shadow, shading.AMBIENT.astype(np.float64),
                       shading.SUN.astype(np.float64), shading.WINDOW.astype(np.float64),
                       shading.HORIZON.astype(np.float64), shading.ZENITH.astype(np.float64),
                       out["rgb"], out["depth"], out["normals"], out["semantic"], out["instance"])
    return out


def lidar_layers(hits: RayHits, tables: SurfaceTables, origin: np.ndarray, dirs: np.ndarray, dirs_sensor: np.ndarray,
                 max_range: float, dropped: np.ndarray | None = None,
                 range_noise: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Numba twin of :func:`lidar_layers_reference` (same arguments and outputs)."""
    n = len(hits.t)
    points, semantic, instance = np.empty((n, 4), np.float32), np.empty(n, np.uint8), np.empty(n, np.int32)
    if n:
        drop = np.zeros(n, np.bool_) if dropped is None else np.ascontiguousarray(dropped, np.bool_)
        noise = np.zeros(n) if range_noise is None else np.ascontiguousarray(range_noise, np.float64)
        n = _lidar_kernel(*_kernel_inputs(hits, tables, origin, dirs), np.ascontiguousarray(dirs_sensor, np.float64),
                          float(max_range), drop, noise, mat.REFLECTIVITY, points, semantic, instance)
    return {"points": points[:n].copy(), "semantic": semantic[:n].copy(), "instance": instance[:n].copy()}
