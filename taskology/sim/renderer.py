"""The embedded renderer: Embree ray casting of a :class:`~taskology.sim.world.SceneState` into the
named layers of the shard schema (camera, LiDAR, ego pose, object boxes).

Static geometry lives in one Embree scene built once per sequence; each moving object has its own
small scene in its object frame, also built once (:mod:`taskology.sim.instances`). Camera and LiDAR
rays are cast together in one batch into the static scene; then only the rays passing near an
object (pixel box / beam window, then a slab test in its frame) are moved into its frame and cast
with the nearest distance so far as ``tfar``, so any hit there is nearer. One fused Numba pass per
sensor (:mod:`taskology.sim.layers`) resolves the hits against per-triangle tables (class,
material, colour, track id), shades (or paints sky) and writes the labels. Optional shadow rays
(``shadows=True``) are cast towards the sun from lit camera hits, static scene then objects.

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
from taskology.sim import hits, instances, sensors
from taskology.sim import layers as layers_mod
from taskology.sim.instances import DynamicInstances
from taskology.sim.world import SceneState

SKY = layers_mod.SKY  # semantic id of sky pixels
#: offset of shadow-ray origins along the surface normal, metres.
_SHADOW_BIAS_M = 0.02


def _embree_scene(triangles: np.ndarray) -> rtcore_scene.EmbreeScene:
    """Embree scene over (T, 3, 3) world triangles (float32 inside Embree)."""
    scene = rtcore_scene.EmbreeScene()
    if len(triangles):
        mesh_construction.TriangleMesh(scene=scene, vertices=np.ascontiguousarray(triangles, np.float32))
    return scene


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
        top, bottom = lidar_vfov_deg
        self._lidar_elevations = np.radians(np.linspace(top, bottom, lidar_beams) if lidar_beams > 1
                                            else np.array([(top + bottom) / 2]))
        self._lidar_azimuth_steps = int(lidar_azimuth)
        self.lidar_range_m = float(lidar_range_m)
        # Embree's tfar per ray: camera rays unbounded (1e5 m), LiDAR rays end at the range
        self._t_max = np.concatenate([np.full(len(self._cam_dirs), 1e5, np.float32),
                                      np.full(len(self._lidar_dirs), self.lidar_range_m, np.float32)])
        # per-frame ray buffers (world frame), reused across frames
        n_rays = len(self._t_max)
        self._dirs, self._origins = np.empty((n_rays, 3)), np.empty((n_rays, 3))
        self._dirs32, self._origins32 = np.empty((n_rays, 3), np.float32), np.empty((n_rays, 3), np.float32)
        self.lidar_noise_m = float(lidar_noise_m)
        self.lidar_dropout = float(lidar_dropout)
        self.shadows = shadows
        self.seed = int(seed)
        self._static_key: object | None = None
        self._static_scene: rtcore_scene.EmbreeScene | None = None
        self._dynamic: DynamicInstances | None = None
        self._dynamic_key: object | None = None
        self._tables_key: tuple | None = None
        self._surface_tables: layers_mod.SurfaceTables | None = None

    # ------------------------------------------------------------------ set-up per sequence
    def _prepare(self, state: SceneState) -> None:
        if self._static_key is not state.static:
            self._static_scene = _embree_scene(state.static.triangles)
            self._static_key = state.static
        if self._dynamic is None or self._dynamic_key is not state.assets \
                or not np.array_equal(self._dynamic.asset_index, state.asset_index):
            self._dynamic = DynamicInstances(state.assets, state.asset_index)
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
        world_from_cam, world_from_lidar, origins, dirs = self._world_rays(state)
        n_cam, n_lidar = len(self._cam_dirs), len(self._lidar_dirs)
        # embreex writes the hit distances into the ``dists`` array it is given: pass a copy
        np.copyto(self._origins32, origins)
        np.copyto(self._dirs32, dirs)
        hit = self._static_scene.run(self._origins32, self._dirs32, dists=self._t_max.copy(), output=1)
        t = hit["tfar"].astype(np.float64)  # t_max where nothing was hit
        objects = self._dynamic
        dyn = objects.intersect(state.world_from_object, origins, dirs, t,
                                self._candidates(state, world_from_cam, world_from_lidar))  # updates t
        hit_record = layers_mod.RayHits(t, hit["primID"], hit["Ng"], dyn["triangle"], dyn["u"], dyn["v"], dyn["normal"])
        tables = self._tables(state)
        layers = self._camera_layers(state, world_from_cam, dirs[:n_cam], hit_record.take(0, n_cam), tables)
        layers["ego/world_from_ego"] = state.world_from_ego.astype(np.float64)
        if self.lidar_enabled:
            layers.update(self._lidar_layers(frame_index, world_from_lidar, dirs[n_cam:],
                                             hit_record.take(n_cam, n_cam + n_lidar), tables))
        layers.update(self._object_layers(state))
        return layers

    def _tables(self, state: SceneState) -> layers_mod.SurfaceTables:
        """Per-triangle attribute tables of this sequence (cached with the scenes)."""
        assert self._dynamic is not None
        key = self._tables_key
        if key is None or key[0] is not state.static or key[1] is not self._dynamic \
                or not np.array_equal(key[2], state.track_id):
            objects, static = self._dynamic, state.static
            self._surface_tables = layers_mod.SurfaceTables.build(
                static.class_id, static.material, static.colour, objects.class_id, objects.material, objects.colour,
                objects.triangles, objects.object_of_triangle, state.track_id)
            self._tables_key = (state.static, self._dynamic, state.track_id.copy())
        assert self._surface_tables is not None
        return self._surface_tables

    def _world_rays(self, state: SceneState) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """world_from_cam, world_from_lidar (4, 4) and the frame's world rays: origins, unit dirs
        (N, 3) float64, camera pixels (row-major) then LiDAR beams (beam-major). The arrays are the
        renderer's own buffers, overwritten by the next frame (no layer refers to them)."""
        world_from_cam = state.world_from_ego @ np.linalg.inv(self.cam_from_ego)
        world_from_lidar = state.world_from_ego @ np.linalg.inv(self.lidar_from_ego)
        n_cam = len(self._cam_dirs)
        dirs, origins = self._dirs, self._origins
        # a contiguous R^T takes NumPy's fast matmul path (a transposed view is ~4x slower), same result
        np.matmul(self._cam_dirs, np.ascontiguousarray(world_from_cam[:3, :3].T), out=dirs[:n_cam])
        np.matmul(self._lidar_dirs, np.ascontiguousarray(world_from_lidar[:3, :3].T), out=dirs[n_cam:])
        origins[:n_cam], origins[n_cam:] = world_from_cam[:3, 3], world_from_lidar[:3, 3]
        return world_from_cam, world_from_lidar, origins, dirs

    def frame_rays(self, state: SceneState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rays :meth:`render` casts for ``state``: origins, unit directions (N, 3) float32 (world
        frame; camera pixels row-major, then LiDAR beams) and each ray's maximum distance (N,)
        float32, metres (what benchmarks cast as the raw reference)."""
        _, _, origins, dirs = self._world_rays(state)
        return origins.astype(np.float32), dirs.astype(np.float32), self._t_max.copy()

    def _candidates(self, state: SceneState, world_from_cam: np.ndarray,
                    world_from_lidar: np.ndarray) -> list[np.ndarray]:
        """Per object, the indices into the camera+LiDAR ray batch that may hit it."""
        assert self._dynamic is not None
        if not len(self._dynamic):
            return []
        objects = self._dynamic
        cam_from_object = np.linalg.inv(world_from_cam)[None] @ state.world_from_object
        cams = instances.camera_candidates(instances.box_corners(objects.box_lo, objects.box_hi, cam_from_object),
                                           self.K, self.height, self.width)
        if not self.lidar_enabled:
            return cams
        lidar_from_object = np.linalg.inv(world_from_lidar)[None] @ state.world_from_object
        lidars = instances.lidar_candidates(objects.box_lo, objects.box_hi, lidar_from_object, self._lidar_elevations,
                                            self._lidar_azimuth_steps, self.lidar_range_m)
        n_cam = self.height * self.width
        return [l + n_cam if not len(c) else c if not len(l) else np.concatenate([c, l + n_cam])
                for c, l in zip(cams, lidars)]

    def _shadowed(self, state: SceneState, origin: np.ndarray, dirs: np.ndarray, hit_record: layers_mod.RayHits,
                  tables: layers_mod.SurfaceTables) -> np.ndarray:
        """(N,) bool: camera hits facing the sun whose shadow ray towards it is blocked (static scene,
        then the moving objects)."""
        assert self._static_scene is not None and self._dynamic is not None
        rays = hits.resolve_hits(np.broadcast_to(origin, dirs.shape), dirs, *hit_record, *tables)
        sun = np.asarray(state.sun_direction, np.float64)
        shadowed = np.zeros(len(dirs), bool)
        lit_idx = np.flatnonzero(rays["hit"] & (rays["normal"] @ sun > 0))
        if not len(lit_idx):
            return shadowed
        world_point = origin + dirs[lit_idx] * rays["t"][lit_idx, None]
        src = world_point + rays["normal"][lit_idx] * _SHADOW_BIAS_M
        blocked = self._static_scene.run(src.astype(np.float32),
                                         np.broadcast_to(sun.astype(np.float32), src.shape).copy(),
                                         query="OCCLUDED") >= 0
        rest = lit_idx[~blocked]
        blocked_dyn = self._dynamic.occluded(state.world_from_object, src[~blocked], sun)
        shadowed[lit_idx[blocked]] = True
        shadowed[rest[blocked_dyn]] = True
        return shadowed

    def _camera_layers(self, state: SceneState, world_from_cam: np.ndarray, dirs: np.ndarray,
                       hit_record: layers_mod.RayHits, tables: layers_mod.SurfaceTables) -> dict[str, np.ndarray]:
        h, w = self.height, self.width
        origin = world_from_cam[:3, 3].copy()
        shadowed = self._shadowed(state, origin, dirs, hit_record, tables) if self.shadows else None
        cam = layers_mod.camera_layers(hit_record, tables, origin, dirs, self._cam_z, world_from_cam[:3, :3],
                                       float(self.K[0, 0]), state.sun_direction, shadowed)
        return {
            "camera/rgb": cam["rgb"].reshape(h, w, 3),
            "camera/depth": cam["depth"].reshape(h, w),
            "camera/normals": cam["normals"].reshape(h, w, 3),
            "camera/semantic": cam["semantic"].reshape(h, w),
            "camera/instance": cam["instance"].reshape(h, w),
            "camera/K": self.K.copy(),
            "camera/cam_from_ego": self.cam_from_ego.copy(),
        }

    def _lidar_layers(self, frame_index: int, world_from_lidar: np.ndarray, dirs_world: np.ndarray,
                      hit_record: layers_mod.RayHits, tables: layers_mod.SurfaceTables) -> dict[str, np.ndarray]:
        n = len(dirs_world)
        rng = np.random.default_rng([self.seed, int(frame_index)])
        dropped = rng.random(n) < self.lidar_dropout if self.lidar_dropout > 0 else None
        noise = rng.normal(0.0, self.lidar_noise_m, n) if self.lidar_noise_m > 0 else None
        lidar = layers_mod.lidar_layers(hit_record, tables, world_from_lidar[:3, 3].copy(), dirs_world,
                                        self._lidar_dirs, self.lidar_range_m, dropped, noise)
        return {
            "lidar/points": lidar["points"],
            "lidar/semantic": lidar["semantic"],
            "lidar/instance": lidar["instance"],
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
