"""Moving objects as Embree instances: one scene per object in its own frame, built once per
sequence; per frame only the rays that may pass through an object's bounding sphere are transformed
into its frame and cast (rebuilding a world-space scene per frame costs more than the rays, because
embreex copies vertices element by element in Python).

Candidate rays come from the sensors' structure, so finding them costs about the number of
candidates, not rays x objects:

- camera (pinhole pixel grid): the pixel box of the projected cube around the sphere;
- LiDAR (beam x azimuth grid): the beams within the sphere's elevation cone and the azimuth columns
  within its azimuth half-width ``asin(r / horizontal distance)``;
- parallel rays (shadow rays towards the sun): origins within ``r`` of the sphere centre across the
  ray direction, found by binary search on origins sorted along one axis of that plane.

Each is conservative (every ray that hits the sphere is listed); :func:`rays_hitting_sphere` is the
brute-force reference the tests compare against.

Example:
    >>> import numpy as np
    >>> K = np.array([[10.0, 0, 4.5], [0, 10.0, 4.5], [0, 0, 1]])
    >>> rays = camera_candidates(np.array([[0.0, 0, 10]]), np.array([1.0]), K, 10, 10)[0]
    >>> sorted({int(i) // 10 for i in rays}) == list(range(3, 7))
    True
"""
from __future__ import annotations

import numpy as np
from embreex import mesh_construction, rtcore_scene

from taskology.sim.meshes import MeshAsset


def rays_hitting_sphere(origins: np.ndarray, dirs: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Brute force: indices of the rays (unit ``dirs``) whose half-line meets the sphere. (M,) int64."""
    w = centre[None, :] - origins
    along = np.einsum("ij,ij->i", w, dirs)
    perp2 = np.einsum("ij,ij->i", w, w) - along**2
    inside = np.einsum("ij,ij->i", w, w) <= radius**2
    return np.flatnonzero(inside | ((along >= 0) & (perp2 <= radius**2))).astype(np.int64)


def camera_candidates(centres_cam: np.ndarray, radii: np.ndarray, K: np.ndarray, height: int,
                      width: int) -> list[np.ndarray]:
    """Per sphere (centres in the OpenCV camera frame), the row-major pixel indices whose ray may hit it."""
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)
    cube = centres_cam[:, None, :] + corners[None] * radii[:, None, None]  # (K, 8, 3)
    z = cube[..., 2]
    in_front = np.all(z >= 1e-3, axis=1)
    straddles = ~in_front & np.any(z >= 1e-3, axis=1)  # the sphere crosses the image plane: whole image
    safe_z = np.where(z >= 1e-3, z, 1.0)
    u = cube[..., 0] / safe_z * K[0, 0] + K[0, 2]
    v = cube[..., 1] / safe_z * K[1, 1] + K[1, 2]
    u0 = np.where(in_front, np.floor(u.min(axis=1)), 0).clip(0, None).astype(np.int64)
    u1 = np.where(in_front, np.ceil(u.max(axis=1)), width - 1).clip(None, width - 1).astype(np.int64)
    v0 = np.where(in_front, np.floor(v.min(axis=1)), 0).clip(0, None).astype(np.int64)
    v1 = np.where(in_front, np.ceil(v.max(axis=1)), height - 1).clip(None, height - 1).astype(np.int64)
    visible = (in_front | straddles) & (u0 <= u1) & (v0 <= v1)
    empty = np.zeros(0, np.int64)
    out = [empty] * len(radii)
    for k in np.flatnonzero(visible):
        rows = np.arange(v0[k], v1[k] + 1, dtype=np.int64)[:, None] * width
        out[k] = (rows + np.arange(u0[k], u1[k] + 1, dtype=np.int64)[None, :]).ravel()
    return out


def lidar_candidates(centres_lidar: np.ndarray, radii: np.ndarray, elevations_rad: np.ndarray,
                     azimuth_steps: int, max_range: float = np.inf) -> list[np.ndarray]:
    """Per sphere (centres in the LiDAR frame), the beam-major ray indices (beam * azimuth_steps +
    column, column k at azimuth 2 pi k / azimuth_steps) whose ray may hit it within ``max_range``."""
    step = 2 * np.pi / azimuth_steps
    dist = np.linalg.norm(centres_lidar, axis=1)
    horizontal = np.hypot(centres_lidar[:, 0], centres_lidar[:, 1])
    inside = dist <= radii
    half = np.arcsin(np.clip(radii / np.maximum(dist, 1e-12), 0.0, 1.0))
    el = np.arcsin(np.clip(centres_lidar[:, 2] / np.maximum(dist, 1e-12), -1.0, 1.0))
    around_axis = horizontal <= radii
    half_az = np.arcsin(np.clip(radii / np.maximum(horizontal, 1e-12), 0.0, 1.0))
    az = np.arctan2(centres_lidar[:, 1], centres_lidar[:, 0])
    k0 = np.floor((az - half_az) / step).astype(np.int64) - 1
    k1 = np.ceil((az + half_az) / step).astype(np.int64) + 1
    reachable = dist - radii <= max_range
    empty = np.zeros(0, np.int64)
    all_beams = np.arange(len(elevations_rad), dtype=np.int64)
    out = [empty] * len(radii)
    for k in np.flatnonzero(reachable):
        beams = all_beams if inside[k] else np.flatnonzero(
            (elevations_rad >= el[k] - half[k] - 1e-9) & (elevations_rad <= el[k] + half[k] + 1e-9))
        if not len(beams):
            continue
        if around_axis[k] or k1[k] - k0[k] + 1 >= azimuth_steps:
            cols = np.arange(azimuth_steps, dtype=np.int64)
        else:
            cols = np.arange(k0[k], k1[k] + 1, dtype=np.int64) % azimuth_steps
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
        centres = self.posed_centres(poses) if len(self) else np.zeros((0, 3))
        for k, idx in enumerate(candidates):
            if not len(idx):
                continue
            # drop rays already stopped before the sphere
            near = np.linalg.norm(centres[k] - origins[idx], axis=1) - self.radius[k]
            idx = idx[t_best[idx] > near]
            if not len(idx):
                continue
            rot, trans = poses[k, :3, :3], poses[k, :3, 3]
            o_local = ((origins[idx] - trans) @ rot).astype(np.float32)
            d_local = (dirs[idx] @ rot).astype(np.float32)
            hit = self.scenes[k].run(o_local, d_local, dists=t_best[idx].astype(np.float32), output=1)
            ok = (hit["primID"] >= 0) & (hit["tfar"] < t_best[idx])
            if not ok.any():
                continue
            sel = idx[ok]
            t_best[sel] = hit["tfar"][ok]
            triangle[sel] = self.tri_offset[k] + hit["primID"][ok]
            u[sel], v[sel] = hit["u"][ok], hit["v"][ok]
            normal[sel] = hit["Ng"][ok].astype(np.float64) @ rot.T
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
            hit = self.scenes[k].run(((origins[idx] - trans) @ rot).astype(np.float32),
                                     np.ascontiguousarray(np.broadcast_to(d32 @ rot.astype(np.float32), (len(idx), 3))),
                                     query="OCCLUDED")
            blocked[idx[hit >= 0]] = True
        return blocked
