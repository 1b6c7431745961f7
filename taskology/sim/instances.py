"""Moving objects as Embree instances: one scene per object in its own frame, built once per
sequence; per frame only the rays that may pass through an object's bounding box are transformed
into its frame and cast (rebuilding a world-space scene per frame costs more than the rays, because
embreex copies vertices element by element in Python).

Candidate rays come from the sensors' structure, so finding them costs about the number of
candidates, not rays x objects:

- camera (pinhole pixel grid): the pixel box of the projected object box (clipped at the near plane);
- LiDAR (beam x azimuth grid): the azimuth columns between the extreme footprint corners and the
  beams within the box's elevation range;
- parallel rays (shadow rays towards the sun): origins within the bounding sphere's radius across
  the ray direction, found by binary search on origins sorted along one axis of that plane.

Each is conservative (every ray that hits the box / sphere is listed; the tests compare with brute
force); candidates are then slab-tested against the box in the object frame before Embree.

Example:
    >>> import numpy as np
    >>> K = np.array([[10.0, 0, 4.5], [0, 10.0, 4.5], [0, 0, 1]])
    >>> pose = np.eye(4)[None].copy(); pose[0, 2, 3] = 10.0  # a 2 m cube 10 m ahead of the camera
    >>> corners = box_corners(np.full((1, 3), -1.0), np.full((1, 3), 1.0), pose)
    >>> rays = camera_candidates(corners, K, 10, 10)[0]
    >>> sorted({int(i) // 10 for i in rays})
    [3, 4, 5, 6]
"""
from __future__ import annotations

import numba
import numpy as np
from embreex import mesh_construction, rtcore_scene

from taskology.sim.meshes import MeshAsset


def rays_hitting_box(origins: np.ndarray, dirs: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                     world_from_object: np.ndarray) -> np.ndarray:
    """Brute force: indices of the rays (unit ``dirs``) whose half-line meets the posed box [lo, hi]. (M,) int64."""
    rot, trans = world_from_object[:3, :3], world_from_object[:3, 3]
    o, d = (origins - trans) @ rot, dirs @ rot
    with np.errstate(divide="ignore", invalid="ignore"):
        a, b = (lo - o) / d, (hi - o) / d
    a = np.where(np.isnan(a), -np.inf, a)
    b = np.where(np.isnan(b), np.inf, b)
    t_enter, t_exit = np.minimum(a, b).max(axis=1), np.maximum(a, b).min(axis=1)
    return np.flatnonzero(t_exit >= np.maximum(t_enter, 0.0)).astype(np.int64)


def rays_hitting_sphere(origins: np.ndarray, dirs: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Brute force: indices of the rays (unit ``dirs``) whose half-line meets the sphere. (M,) int64."""
    w = centre[None, :] - origins
    along = np.einsum("ij,ij->i", w, dirs)
    perp2 = np.einsum("ij,ij->i", w, w) - along**2
    inside = np.einsum("ij,ij->i", w, w) <= radius**2
    return np.flatnonzero(inside | ((along >= 0) & (perp2 <= radius**2))).astype(np.int64)


_CORNER_SIGNS = np.array([[sx, sy, sz] for sx in (0, 1) for sy in (0, 1) for sz in (0, 1)], np.float64)
_EDGES = np.array([(i, j) for i in range(8) for j in range(i + 1, 8) if bin(i ^ j).count("1") == 1])


def box_corners(lo: np.ndarray, hi: np.ndarray, sensor_from_object: np.ndarray) -> np.ndarray:
    """(K, 8, 3) corners of object-frame boxes [lo, hi] (K, 3) mapped by (K, 4, 4) transforms."""
    local = lo[:, None, :] + _CORNER_SIGNS[None] * (hi - lo)[:, None, :]  # (K, 8, 3)
    return np.einsum("kij,kcj->kci", sensor_from_object[:, :3, :3], local) + sensor_from_object[:, None, :3, 3]


def camera_candidates(corners_cam: np.ndarray, K: np.ndarray, height: int, width: int,
                      near: float = 0.05) -> list[np.ndarray]:
    """Per box (corners (K, 8, 3) in the OpenCV camera frame), the row-major pixel indices whose ray
    may hit it: the pixel bounding box of the projection of the box part with depth >= ``near``
    (edges crossing that plane are clipped there)."""
    out = [np.zeros(0, np.int64)] * len(corners_cam)
    a, b = corners_cam[:, _EDGES[:, 0]], corners_cam[:, _EDGES[:, 1]]  # (K, 12, 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (near - a[..., 2]) / (b[..., 2] - a[..., 2])
    crosses = (s > 0) & (s < 1)
    clipped = a + np.where(crosses, s, 0.0)[..., None] * (b - a)  # (K, 12, 3)
    points = np.concatenate([corners_cam, clipped], axis=1)  # (K, 20, 3)
    usable = np.concatenate([corners_cam[..., 2] >= near, crosses], axis=1)
    z = np.where(usable, points[..., 2], 1.0)
    u = np.where(usable, points[..., 0] / z * K[0, 0] + K[0, 2], np.nan)
    v = np.where(usable, points[..., 1] / z * K[1, 1] + K[1, 2], np.nan)
    any_usable = usable.any(axis=1)
    if not any_usable.any():
        return out
    # pixel box per object, vectorised (rows without a usable point are skipped below)
    u_lo, u_hi = np.where(usable, u, np.inf).min(axis=1), np.where(usable, u, -np.inf).max(axis=1)
    v_lo, v_hi = np.where(usable, v, np.inf).min(axis=1), np.where(usable, v, -np.inf).max(axis=1)
    with np.errstate(invalid="ignore"):
        u0 = np.maximum(np.floor(u_lo), 0.0)
        u1 = np.minimum(np.ceil(u_hi), width - 1.0)
        v0 = np.maximum(np.floor(v_lo), 0.0)
        v1 = np.minimum(np.ceil(v_hi), height - 1.0)
    for k in np.flatnonzero(any_usable & (u0 <= u1) & (v0 <= v1)):
        u0k, u1k, v0k, v1k = int(u0[k]), int(u1[k]), int(v0[k]), int(v1[k])
        rows = np.arange(v0k, v1k + 1, dtype=np.int64)[:, None] * width
        out[k] = (rows + np.arange(u0k, u1k + 1, dtype=np.int64)[None, :]).ravel()
    return out


def lidar_candidates(lo: np.ndarray, hi: np.ndarray, lidar_from_object: np.ndarray, elevations_rad: np.ndarray,
                     azimuth_steps: int, max_range: float = np.inf) -> list[np.ndarray]:
    """Per level object box [lo, hi] (K, 3, object frame, posed by ``lidar_from_object`` (K, 4, 4) with
    a rotation about z only), the beam-major ray indices (beam * azimuth_steps + column, column k at
    azimuth 2 pi k / azimuth_steps) whose ray may hit it within ``max_range``.

    Azimuth: the extreme corners of the footprint (exact for a convex footprint not around the axis).
    Elevation: bounded by the box's height range over its nearest and farthest horizontal distance.
    """
    step = 2 * np.pi / azimuth_steps
    corners = box_corners(lo, hi, lidar_from_object)  # (K, 8, 3)
    rho_max = np.hypot(corners[..., 0], corners[..., 1]).max(axis=1)
    # nearest horizontal distance from the sensor axis to the footprint, in the object frame
    object_from_lidar = np.linalg.inv(lidar_from_object)
    axis = object_from_lidar[:, :2, 3]  # sensor position in the object frame (xy)
    centre, half = (lo[:, :2] + hi[:, :2]) / 2, (hi[:, :2] - lo[:, :2]) / 2
    rho_min = np.linalg.norm(np.maximum(np.abs(axis - centre) - half, 0.0), axis=1)
    around_axis = rho_min <= 1e-9
    z_lo, z_hi = corners[..., 2].min(axis=1), corners[..., 2].max(axis=1)
    el_hi = np.where(z_hi > 0, np.arctan2(z_hi, np.maximum(rho_min, 1e-9)), np.arctan2(z_hi, rho_max))
    el_lo = np.where(z_lo > 0, np.arctan2(z_lo, rho_max), np.arctan2(z_lo, np.maximum(rho_min, 1e-9)))
    nearest = np.hypot(rho_min, np.where(z_lo > 0, z_lo, np.where(z_hi < 0, -z_hi, 0.0)))
    az = np.arctan2(corners[..., 1], corners[..., 0])  # (K, 8)
    az_ref = az[:, :1]
    rel = (az - az_ref + np.pi) % (2 * np.pi) - np.pi  # unwrap around the first corner
    az_min, az_max = az_ref[:, 0] + rel.min(axis=1), az_ref[:, 0] + rel.max(axis=1)
    out = [np.zeros(0, np.int64)] * len(lo)
    # beams within [el_lo, el_hi] (vectorised over objects; beam order need not be monotonic)
    in_band = (elevations_rad[None, :] >= el_lo[:, None] - 1e-9) & (elevations_rad[None, :] <= el_hi[:, None] + 1e-9)
    col_lo = np.floor(az_min / step).astype(np.int64) - 1
    col_hi = np.ceil(az_max / step).astype(np.int64) + 1
    for k in np.flatnonzero((nearest <= max_range) & in_band.any(axis=1)):
        beams = np.flatnonzero(in_band[k])
        k0, k1 = int(col_lo[k]), int(col_hi[k])
        if around_axis[k] or k1 - k0 + 1 >= azimuth_steps:
            cols = np.arange(azimuth_steps, dtype=np.int64)
        else:
            cols = np.arange(k0, k1 + 1, dtype=np.int64) % azimuth_steps
        out[k] = (beams[:, None] * azimuth_steps + cols[None, :]).ravel()
    return out


def parallel_candidates(origins: np.ndarray, direction: np.ndarray, centres: np.ndarray,
                        radii: np.ndarray) -> list[np.ndarray]:
    """Per sphere, the indices of rays (origins (N, 3), one shared unit ``direction``) that may hit it."""
    helper = np.array([1.0, 0, 0]) if abs(direction[0]) < 0.9 else np.array([0, 1.0, 0])
    e1 = np.cross(direction, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(direction, e1)
    pu, pv, pa = origins @ e1, origins @ e2, origins @ direction
    order = np.argsort(pu, kind="stable")
    sorted_u = pu[order]
    out = []
    for c, r in zip(centres, radii):
        cu, cv, ca = c @ e1, c @ e2, c @ direction
        lo, hi = np.searchsorted(sorted_u, [cu - r, cu + r], side="left")[0], \
            np.searchsorted(sorted_u, cu + r, side="right")
        idx = order[lo:hi]
        keep = (np.abs(pv[idx] - cv) <= r) & (pa[idx] <= ca + r)
        out.append(np.sort(idx[keep]).astype(np.int64))
    return out


def local_rays_through_box_reference(origins: np.ndarray, dirs: np.ndarray, idx: np.ndarray,
                                     world_from_object: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                                     t_max: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rays ``idx`` of a world batch (origins, unit dirs (N, 3) float64) moved into an object frame,
    kept where they cross its box [lo, hi] (3,) before ``t_max`` (N,) (slab test; direction components
    below 1e-12 count as 1e-12).

    Returns ``kept`` (M,) int64 ray indices, ``o_local``, ``d_local`` (M, 3) float32 and
    ``t_local`` (M,) float32 (= t_max of the kept rays; rigid motion keeps distances), ready for Embree.
    """
    rot, trans = world_from_object[:3, :3], world_from_object[:3, 3]
    o_local = (origins[idx] - trans) @ rot
    d_local = dirs[idx] @ rot
    d = np.where(np.abs(d_local) < 1e-12, 1e-12, d_local)
    a, b = (lo - o_local) / d, (hi - o_local) / d
    t_enter = np.minimum(a, b).max(axis=1)
    t_exit = np.maximum(a, b).min(axis=1)
    through = (t_exit >= np.maximum(t_enter, 0.0)) & (t_enter <= t_max[idx])
    return (idx[through].astype(np.int64), o_local[through].astype(np.float32), d_local[through].astype(np.float32),
            t_max[idx][through].astype(np.float32))


@numba.njit(cache=True, inline="always")
def _slab(o: float, d: float, lo: float, hi: float) -> tuple[float, float]:
    """Entry and exit distance of a ray coordinate (origin o, direction d) through [lo, hi]."""
    if abs(d) < 1e-12:
        d = 1e-12
    a, b = (lo - o) / d, (hi - o) / d
    return min(a, b), max(a, b)


@numba.njit(cache=True)
def _local_rays_kernel(origins, dirs, idx, rot, lo, hi, t_max, kept, o_out, d_out, t_out):  # noqa: ANN001, ANN202
    # rot: the (4, 4) world_from_object; its top-left 3x3 is the rotation, column 3 the translation
    n = 0
    for m in range(idx.shape[0]):
        j = idx[m]
        px, py, pz = origins[j, 0] - rot[0, 3], origins[j, 1] - rot[1, 3], origins[j, 2] - rot[2, 3]
        dx, dy, dz = dirs[j, 0], dirs[j, 1], dirs[j, 2]
        ox = px * rot[0, 0] + py * rot[1, 0] + pz * rot[2, 0]  # (p - trans) @ rot
        oy = px * rot[0, 1] + py * rot[1, 1] + pz * rot[2, 1]
        oz = px * rot[0, 2] + py * rot[1, 2] + pz * rot[2, 2]
        ex = dx * rot[0, 0] + dy * rot[1, 0] + dz * rot[2, 0]
        ey = dx * rot[0, 1] + dy * rot[1, 1] + dz * rot[2, 1]
        ez = dx * rot[0, 2] + dy * rot[1, 2] + dz * rot[2, 2]
        a0, b0 = _slab(ox, ex, lo[0], hi[0])
        a1, b1 = _slab(oy, ey, lo[1], hi[1])
        a2, b2 = _slab(oz, ez, lo[2], hi[2])
        t_enter, t_exit = max(a0, a1, a2), min(b0, b1, b2)
        if t_exit >= max(t_enter, 0.0) and t_enter <= t_max[j]:
            kept[n] = j
            o_out[n, 0], o_out[n, 1], o_out[n, 2] = np.float32(ox), np.float32(oy), np.float32(oz)
            d_out[n, 0], d_out[n, 1], d_out[n, 2] = np.float32(ex), np.float32(ey), np.float32(ez)
            t_out[n] = np.float32(t_max[j])
            n += 1
    return n


def local_rays_through_box(origins: np.ndarray, dirs: np.ndarray, idx: np.ndarray, world_from_object: np.ndarray,
                           lo: np.ndarray, hi: np.ndarray,
                           t_max: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Numba twin of :func:`local_rays_through_box_reference` (same arguments and outputs; the
    object-frame rays agree to float64 rounding before the float32 cast)."""
    m = len(idx)
    kept, o_out = np.empty(m, np.int64), np.empty((m, 3), np.float32)
    d_out, t_out = np.empty((m, 3), np.float32), np.empty(m, np.float32)
    if m:
        c = np.ascontiguousarray
        m = _local_rays_kernel(c(origins, np.float64), c(dirs, np.float64), c(idx, np.int64),
                               c(world_from_object, np.float64), c(lo, np.float64), c(hi, np.float64),
                               c(t_max, np.float64), kept, o_out, d_out, t_out)
    return kept[:m], o_out[:m], d_out[:m], t_out[:m]


def merge_object_hits_reference(idx: np.ndarray, hit: dict[str, np.ndarray], world_from_object: np.ndarray,
                                tri_offset: int, t_best: np.ndarray, triangle: np.ndarray, u: np.ndarray,
                                v: np.ndarray, normal: np.ndarray) -> None:
    """Fold one object's Embree hits (``hit``: ``primID``, ``tfar``, ``u``, ``v``, ``Ng`` of the rays
    ``idx``, object frame) into the batch records, in place, where they are nearer than ``t_best``:
    ``t_best`` (N,) float64, ``triangle`` (N,) int64 (= ``tri_offset`` + primitive), ``u``/``v`` (N,)
    float64 barycentrics, ``normal`` (N, 3) float64 world-frame geometric normal."""
    ok = (hit["primID"] >= 0) & (hit["tfar"] < t_best[idx])
    sel = idx[ok]
    t_best[sel] = hit["tfar"][ok]
    triangle[sel] = tri_offset + hit["primID"][ok]
    u[sel], v[sel] = hit["u"][ok], hit["v"][ok]
    normal[sel] = hit["Ng"][ok].astype(np.float64) @ world_from_object[:3, :3].T


@numba.njit(cache=True)
def _merge_kernel(idx, prim, tfar, hit_u, hit_v, ng, rot, tri_offset, t_best, triangle, u, v, normal):  # noqa: ANN001
    for m in range(idx.shape[0]):
        j = idx[m]
        if prim[m] < 0 or not tfar[m] < t_best[j]:
            continue
        t_best[j] = tfar[m]
        triangle[j] = tri_offset + prim[m]
        u[j], v[j] = hit_u[m], hit_v[m]
        gx, gy, gz = float(ng[m, 0]), float(ng[m, 1]), float(ng[m, 2])
        for r in range(3):
            normal[j, r] = gx * rot[r, 0] + gy * rot[r, 1] + gz * rot[r, 2]


def merge_object_hits(idx: np.ndarray, hit: dict[str, np.ndarray], world_from_object: np.ndarray, tri_offset: int,
                      t_best: np.ndarray, triangle: np.ndarray, u: np.ndarray, v: np.ndarray,
                      normal: np.ndarray) -> None:
    """Numba twin of :func:`merge_object_hits_reference` (same arguments; ``idx`` without repeats;
    the normal rotation agrees to float64 rounding). The records must be contiguous."""
    if len(idx):
        c = np.ascontiguousarray
        _merge_kernel(c(idx, np.int64), c(hit["primID"], np.int32), c(hit["tfar"], np.float32),
                      c(hit["u"], np.float32), c(hit["v"], np.float32), c(hit["Ng"], np.float32),
                      c(world_from_object, np.float64), int(tri_offset), t_best, triangle, u, v, normal)


class DynamicInstances:
    """The moving objects of a sequence: per-object Embree scenes (object frame) and per-triangle
    attributes concatenated over objects (global triangle id = ``tri_offset[k] + prim``).

    Args:
        assets: the sequence's asset list; asset_index: (K,) asset of each object.
    """

    def __init__(self, assets: list[MeshAsset], asset_index: np.ndarray) -> None:
        self.asset_index = np.asarray(asset_index).copy()
        chosen = [assets[a] for a in self.asset_index]
        self.scenes = []
        for asset in chosen:
            scene = rtcore_scene.EmbreeScene()
            mesh_construction.TriangleMesh(scene, np.ascontiguousarray(asset.mesh.vertices, np.float32),
                                           np.ascontiguousarray(asset.mesh.faces, np.int32))
            self.scenes.append(scene)
        counts = np.array([len(a.mesh.faces) for a in chosen], np.int64)
        self.tri_offset = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.object_of_triangle = np.repeat(np.arange(len(chosen)), counts)
        empty = len(chosen) == 0
        self.triangles = np.zeros((0, 3, 3)) if empty else np.concatenate([a.triangles for a in chosen])
        self.class_id = np.zeros(0, np.uint8) if empty else np.concatenate([a.class_id for a in chosen])
        self.material = np.zeros(0, np.uint8) if empty else np.concatenate([a.material for a in chosen])
        self.colour = np.zeros((0, 3), np.float32) if empty else np.concatenate([a.colour for a in chosen])
        bounds = [a.mesh.bounds for a in chosen]
        self.centre = np.array([(lo + hi) / 2 for lo, hi in bounds]).reshape(-1, 3)
        self.radius = np.array([np.linalg.norm(hi - lo) / 2 + 0.05 for lo, hi in bounds])
        #: (K, 3) object-frame bounding boxes, padded by 1 cm
        self.box_lo = np.array([lo - 0.01 for lo, _ in bounds]).reshape(-1, 3)
        self.box_hi = np.array([hi + 0.01 for _, hi in bounds]).reshape(-1, 3)

    def _through_box(self, k: int, o_local: np.ndarray, d_local: np.ndarray, t_max: np.ndarray) -> np.ndarray:
        """(M,) bool: the rays (object frame) cross object k's bounding box before ``t_max`` (slab test)."""
        d = np.where(np.abs(d_local) < 1e-12, 1e-12, d_local)
        a = (self.box_lo[k] - o_local) / d
        b = (self.box_hi[k] - o_local) / d
        t_enter = np.minimum(a, b).max(axis=1)
        t_exit = np.maximum(a, b).min(axis=1)
        return (t_exit >= np.maximum(t_enter, 0.0)) & (t_enter <= t_max)

    def __len__(self) -> int:
        return len(self.scenes)

    def posed_centres(self, poses: np.ndarray) -> np.ndarray:
        """(K, 3) world centres of the bounding spheres for object poses (K, 4, 4)."""
        return np.einsum("kij,kj->ki", poses[:, :3, :3], self.centre) + poses[:, :3, 3]

    def intersect(self, poses: np.ndarray, origins: np.ndarray, dirs: np.ndarray, t_best: np.ndarray,
                  candidates: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Nearest hits of rays with the objects posed at ``poses`` (K, 4, 4) closer than ``t_best``.

        ``candidates[k]`` lists the rays that may hit object k. ``t_best`` (N,) float64 is updated in
        place. Returns ``triangle`` (N,) int64 global triangle id or -1, ``u``/``v`` (N,) barycentrics,
        ``normal`` (N, 3) float64 world-frame geometric normal (not normalised).
        """
        n = len(origins)
        triangle = np.full(n, -1, np.int64)
        u, v, normal = np.zeros(n), np.zeros(n), np.zeros((n, 3))
        for k, idx in enumerate(candidates):
            if not len(idx):
                continue
            idx, o_local, d_local, t_local = local_rays_through_box(origins, dirs, idx, poses[k], self.box_lo[k],
                                                                   self.box_hi[k], t_best)
            if not len(idx):
                continue
            hit = self.scenes[k].run(o_local, d_local, dists=t_local, output=1)
            merge_object_hits(idx, hit, poses[k], int(self.tri_offset[k]), t_best, triangle, u, v, normal)
        return {"triangle": triangle, "u": u, "v": v, "normal": normal}

    def occluded(self, poses: np.ndarray, origins: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """(N,) bool: the rays from ``origins`` along the shared unit ``direction`` hit some object."""
        blocked = np.zeros(len(origins), bool)
        if not len(self) or not len(origins):
            return blocked
        candidates = parallel_candidates(origins, direction, self.posed_centres(poses), self.radius)
        d32 = direction.astype(np.float32)
        for k, idx in enumerate(candidates):
            idx = idx[~blocked[idx]]
            if not len(idx):
                continue
            rot, trans = poses[k, :3, :3], poses[k, :3, 3]
            o_local = (origins[idx] - trans) @ rot
            d_local = np.broadcast_to(direction @ rot, o_local.shape)
            through = self._through_box(k, o_local, d_local, np.full(len(idx), np.inf))
            idx, o_local = idx[through], o_local[through]
            if not len(idx):
                continue
            hit = self.scenes[k].run(o_local.astype(np.float32),
                                     np.ascontiguousarray(np.broadcast_to(d32 @ rot.astype(np.float32), (len(idx), 3))),
                                     query="OCCLUDED")
            blocked[idx[hit >= 0]] = True
        return blocked
