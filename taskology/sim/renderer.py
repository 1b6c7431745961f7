"""The embedded renderer: Embree ray casting of a :class:`~taskology.sim.world.SceneState` into the
named layers of the shard schema (camera, LiDAR, ego pose, object boxes).

Static geometry lives in one Embree scene built once per sequence; moving objects are transformed
into the world and put into a small scene built per frame. Camera and LiDAR rays are cast together
in one batch per scene; the dynamic scene is cast with the static hit distance as ``tfar``, so any
hit there is the nearest one. Per-hit attributes (class, material, colour, track id) are gathered
from per-triangle arrays indexed by primitive id; shading runs in a Numba kernel.

Example:
    >>> from taskology.sim.world import World, WorldConfig
    >>> world = World.generate(0, WorldConfig(blocks=2, cars=2, pedestrians=1))
    >>> layers = EmbeddedRenderer((32, 96), lidar_beams=8, lidar_azimuth=64).render(world.state())
    >>> layers["camera/rgb"].shape, layers["lidar/points"].shape[1]
    ((32, 96, 3), 4)
"""
from __future__ import annotations

import numpy as np
from embreex import mesh_construction, rtcore_scene

from taskology.errors import SimError
from taskology.sim import materials as mat
from taskology.sim import sensors, shading
from taskology.sim.meshes import MeshAsset
from taskology.sim.world import SceneState

SKY = 11
#: offset of shadow-ray origins along the surface normal, metres.
_SHADOW_BIAS_M = 0.02


def _embree_scene(triangles: np.ndarray) -> rtcore_scene.EmbreeScene:
    """Embree scene over (T, 3, 3) world triangles (float32 inside Embree)."""
    scene = rtcore_scene.EmbreeScene()
    if len(triangles):
        mesh_construction.TriangleMesh(scene=scene, vertices=np.ascontiguousarray(triangles, np.float32))
    return scene


class _DynamicAssets:
    """Per-triangle arrays of all dynamic assets in object order, built once per sequence."""

    def __init__(self, assets: list[MeshAsset], asset_index: np.ndarray) -> None:
        self.asset_index = asset_index.copy()
        tris = [assets[a].triangles for a in asset_index]
        counts = np.array([len(t) for t in tris], np.int64)
        self.object_of_triangle = np.repeat(np.arange(len(asset_index)), counts)
        self.triangles = np.concatenate(tris) if tris else np.zeros((0, 3, 3))
        self.class_id = np.concatenate([assets[a].class_id for a in asset_index]) if tris else np.zeros(0, np.uint8)
        self.material = np.concatenate([assets[a].material for a in asset_index]) if tris else np.zeros(0, np.uint8)
        self.colour = np.concatenate([assets[a].colour for a in asset_index]) if tris else np.zeros((0, 3), np.float32)

    def world_triangles(self, world_from_object: np.ndarray) -> np.ndarray:
        """(T, 3, 3) float64 triangles posed in the world."""
        rot = world_from_object[self.object_of_triangle, :3, :3]
        trans = world_from_object[self.object_of_triangle, :3, 3]
        return np.einsum("tij,tvj->tvi", rot, self.triangles) + trans[:, None, :]


class EmbeddedRenderer:
    """Camera + LiDAR ray caster.

    Args:
        camera_hw: (H, W) camera image size, pixels.
        lidar_beams: number of LiDAR beams (0 disables the LiDAR).
        lidar_azimuth: azimuth steps per revolution.
        hfov_deg: camera horizontal field of view, degrees.
        lidar_range_m: maximum LiDAR range, metres (also the radius for object boxes).
        lidar_vfov_deg: (top, bottom) beam elevations, degrees.
        lidar_noise_m: standard deviation of Gaussian range noise, metres.
        lidar_dropout: probability that a return is dropped.
        shadows: cast shadow rays towards the sun for camera pixels.
        seed: seed of the LiDAR noise / dropout (combined with the frame index).
    """

    def __init__(self, camera_hw: tuple[int, int] = (64, 208), lidar_beams: int = 32, lidar_azimuth: int = 1024, *,
                 hfov_deg: float = 90.0, lidar_range_m: float = 80.0,
                 lidar_vfov_deg: tuple[float, float] = sensors.LIDAR_VFOV_DEG, lidar_noise_m: float = 0.0,
                 lidar_dropout: float = 0.0, shadows: bool = True, seed: int = 0) -> None:
        height, width = int(camera_hw[0]), int(camera_hw[1])
        if height < 1 or width < 1:
            raise SimError(f"EmbeddedRenderer: camera size must be positive, found {camera_hw}")
        if not 0 <= lidar_beams <= 128 or lidar_azimuth < 1:
            raise SimError(f"EmbeddedRenderer: lidar beams must be 0..128 and azimuth >= 1, "
                           f"found {lidar_beams} x {lidar_azimuth}")
        self.height, self.width = height, width
        self.K = sensors.camera_intrinsics(height, width, hfov_deg)
        self.cam_from_ego = sensors.default_cam_from_ego()
        self.lidar_from_ego = sensors.default_lidar_from_ego()
        self._cam_dirs, self._cam_z = sensors.camera_rays(self.K, height, width)
        self.lidar_enabled = lidar_beams > 0
        self._lidar_dirs = sensors.lidar_rays(lidar_beams, lidar_azimuth, lidar_vfov_deg) if self.lidar_enabled \
            else np.zeros((0, 3))
        self.lidar_range_m = float(lidar_range_m)
        self.lidar_noise_m = float(lidar_noise_m)
        self.lidar_dropout = float(lidar_dropout)
        self.shadows = shadows
        self.seed = int(seed)
        self._static_key: object | None = None
        self._static_scene: rtcore_scene.EmbreeScene | None = None
        self._dynamic: _DynamicAssets | None = None
        self._dynamic_key: object | None = None

    # ------------------------------------------------------------------ set-up per sequence
    def _prepare(self, state: SceneState) -> None:
        if self._static_key is not state.static:
            self._static_scene = _embree_scene(state.static.triangles)
            self._static_key = state.static
        if self._dynamic is None or self._dynamic_key is not state.assets \
                or not np.array_equal(self._dynamic.asset_index, state.asset_index):
            self._dynamic = _DynamicAssets(state.assets, state.asset_index)
            self._dynamic_key = state.assets

    # ------------------------------------------------------------------ rendering
    def render(self, state: SceneState, frame_index: int = 0) -> dict[str, np.ndarray]:
        """Render one frame into schema layers (no frame axis).

        Returns keys ``camera/{rgb,depth,normals,semantic,instance,K,cam_from_ego}``,
        ``ego/world_from_ego``, ``lidar/{points,semantic,instance,lidar_from_ego}`` (when enabled) and
        ``objects/{track_id,class_id,box,velocity}`` with the dtypes/shapes of
        :mod:`taskology.data.schema`.
        """
        self._prepare(state)
        assert self._static_scene is not None and self._dynamic is not None
        world_from_cam = state.world_from_ego @ np.linalg.inv(self.cam_from_ego)
        world_from_lidar = state.world_from_ego @ np.linalg.inv(self.lidar_from_ego)
        n_cam, n_lidar = len(self._cam_dirs), len(self._lidar_dirs)
        dirs = np.concatenate([self._cam_dirs @ world_from_cam[:3, :3].T, self._lidar_dirs @ world_from_lidar[:3, :3].T])
        origins = np.concatenate([np.broadcast_to(world_from_cam[:3, 3], (n_cam, 3)),
                                  np.broadcast_to(world_from_lidar[:3, 3], (n_lidar, 3))])
        origins32, dirs32 = origins.astype(np.float32), dirs.astype(np.float32)

        hit = self._static_scene.run(origins32, dirs32, output=1)
        t, prim, normal = hit["tfar"], hit["primID"], hit["Ng"]
        dyn = self._dynamic
        dyn_scene = _embree_scene(dyn.world_triangles(state.world_from_object))
        dhit = dyn_scene.run(origins32, dirs32, dists=t.copy(), output=1) if len(dyn.triangles) else None
        is_dyn = dhit["primID"] >= 0 if dhit is not None else np.zeros(len(t), bool)
        is_hit = (prim >= 0) | is_dyn
        sp, dp = np.where(is_dyn, 0, np.maximum(prim, 0)), np.where(is_dyn, dhit["primID"], 0) if dhit is not None \
            else np.zeros(len(t), np.int64)
        if dhit is not None:
            t = np.where(is_dyn, dhit["tfar"], t)
            normal = np.where(is_dyn[:, None], dhit["Ng"], normal)
        static = state.static
        class_id = np.where(is_dyn, dyn.class_id[dp] if len(dyn.triangles) else 0, static.class_id[sp])
        material = np.where(is_dyn, dyn.material[dp] if len(dyn.triangles) else 0, static.material[sp])
        obj = dyn.object_of_triangle[dp] if len(dyn.triangles) else np.zeros(len(t), np.int64)
        instance = np.where(is_dyn, state.track_id[obj] if len(state.track_id) else -1, -1).astype(np.int32)
        t = np.where(is_hit, t, 0.0).astype(np.float64)
        normal = normal.astype(np.float64)
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        normal *= np.where(np.sum(normal * dirs, axis=1) > 0, -1.0, 1.0)[:, None]

        layers = self._camera_layers(state, world_from_cam, origins[:n_cam], dirs[:n_cam], t[:n_cam], is_hit[:n_cam],
                                     is_dyn[:n_cam], sp[:n_cam], dp[:n_cam], dhit, class_id[:n_cam],
                                     material[:n_cam], instance[:n_cam], normal[:n_cam], dyn_scene)
        layers["ego/world_from_ego"] = state.world_from_ego.astype(np.float64)
        if self.lidar_enabled:
            layers.update(self._lidar_layers(frame_index, t[n_cam:], is_hit[n_cam:], class_id[n_cam:],
                                             material[n_cam:], instance[n_cam:], normal[n_cam:], dirs[n_cam:]))
        layers.update(self._object_layers(state))
        return layers

    def _camera_layers(self, state: SceneState, world_from_cam: np.ndarray, origins: np.ndarray, dirs: np.ndarray,
                       t: np.ndarray, is_hit: np.ndarray, is_dyn: np.ndarray, sp: np.ndarray, dp: np.ndarray,
                       dhit: dict | None, class_id: np.ndarray, material: np.ndarray, instance: np.ndarray,
                       normal: np.ndarray, dyn_scene: rtcore_scene.EmbreeScene) -> dict[str, np.ndarray]:
        h, w = self.height, self.width
        dyn, static = self._dynamic, state.static
        assert dyn is not None
        idx = np.flatnonzero(is_hit)
        world_point = origins[idx] + dirs[idx] * t[idx, None]
        # texture frame: world for static geometry, object frame (barycentric) for moving objects
        tex_point = world_point.copy()
        colour = static.colour[sp[idx]]
        dyn_sel = is_dyn[idx]
        if dyn_sel.any() and dhit is not None:
            k = idx[dyn_sel]
            tri = dyn.triangles[dp[k]]
            u, v = dhit["u"][k, None].astype(np.float64), dhit["v"][k, None].astype(np.float64)
            tex_point[dyn_sel] = tri[:, 0] * (1 - u - v) + tri[:, 1] * u + tri[:, 2] * v
            colour[dyn_sel] = dyn.colour[dp[k]]
        sun = np.asarray(state.sun_direction, np.float64)
        lit = np.sum(normal[idx] * sun, axis=1) > 0
        if self.shadows and lit.any():
            src = (world_point[lit] + normal[idx][lit] * _SHADOW_BIAS_M).astype(np.float32)
            sdir = np.broadcast_to(sun.astype(np.float32), src.shape).copy()
            assert self._static_scene is not None
            blocked = self._static_scene.run(src, sdir, query="OCCLUDED") >= 0
            if len(dyn.triangles):
                blocked |= dyn_scene.run(src, sdir, query="OCCLUDED") >= 0
            lit[np.flatnonzero(lit)[blocked]] = False
        rgb = np.empty((h * w, 3), np.uint8)
        # pixel footprint on the surface: range / focal length, stretched at grazing incidence
        incidence = np.abs(np.sum(normal[idx] * dirs[idx], axis=1))
        footprint = t[idx] / self.K[0, 0] / np.maximum(incidence, 0.15)
        rgb[idx] = shading.shade(material[idx], colour, tex_point, normal[idx], lit, sun, footprint)
        sky = np.flatnonzero(~is_hit)
        rgb[sky] = shading.sky_reference(dirs[sky])
        depth = (t * self._cam_z).astype(np.float32)
        normals_cam = (normal @ world_from_cam[:3, :3]).astype(np.float32)  # R^T n for each row
        normals_cam[~is_hit] = 0.0
        semantic = np.where(is_hit, class_id, SKY).astype(np.uint8)
        return {
            "camera/rgb": rgb.reshape(h, w, 3),
            "camera/depth": depth.reshape(h, w),
            "camera/normals": normals_cam.reshape(h, w, 3),
            "camera/semantic": semantic.reshape(h, w),
            "camera/instance": instance.reshape(h, w),
            "camera/K": self.K.copy(),
            "camera/cam_from_ego": self.cam_from_ego.copy(),
        }

    def _lidar_layers(self, frame_index: int, t: np.ndarray, is_hit: np.ndarray, class_id: np.ndarray,
                      material: np.ndarray, instance: np.ndarray, normal: np.ndarray,
                      dirs_world: np.ndarray) -> dict[str, np.ndarray]:
        keep = is_hit & (t <= self.lidar_range_m)
        rng = np.random.default_rng([self.seed, int(frame_index)])
        if self.lidar_dropout > 0:
            keep &= rng.random(len(t)) >= self.lidar_dropout
        rng_noise = rng.normal(0.0, self.lidar_noise_m, len(t)) if self.lidar_noise_m > 0 else np.zeros(len(t))
        idx = np.flatnonzero(keep)
        r = np.maximum(t[idx] + rng_noise[idx], 0.0)
        xyz = self._lidar_dirs[idx] * r[:, None]
        cos = np.abs(np.sum(normal[idx] * dirs_world[idx], axis=1))
        intensity = np.clip(mat.REFLECTIVITY[material[idx]] * (0.3 + 0.7 * cos), 0.0, 1.0)
        return {
            "lidar/points": np.concatenate([xyz, intensity[:, None]], axis=1).astype(np.float32),
            "lidar/semantic": class_id[idx].astype(np.uint8),
            "lidar/instance": instance[idx].astype(np.int32),
            "lidar/lidar_from_ego": self.lidar_from_ego.copy(),
        }

    def _object_layers(self, state: SceneState) -> dict[str, np.ndarray]:
        boxes = state.boxes_in_ego()
        near = np.hypot(boxes[:, 0], boxes[:, 1]) <= self.lidar_range_m if len(boxes) else np.zeros(0, bool)
        return {
            "objects/track_id": state.track_id[near].astype(np.int32),
            "objects/class_id": state.class_id[near].astype(np.uint8),
            "objects/box": boxes[near].astype(np.float64),
            "objects/velocity": state.velocity[near].astype(np.float32),
        }
