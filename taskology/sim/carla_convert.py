"""CARLA data -> the shard schema: exact, pure conversions (plain NumPy, no ``carla`` or server needed).

The embedded renderer and the CARLA backend (:mod:`taskology.sim.carla_backend`, which talks to the
server) write the identical schema (:mod:`taskology.data.schema`), so a model trained on one reads the
other. What the conversions rely on:

- CARLA cameras deliver BGRA ``uint8`` images. Depth is encoded as
  ``metres = 1000 * (R + G*256 + B*65536) / (256**3 - 1)`` (planar z-buffer depth; the far plane,
  1000 m, is the sky and becomes ``0`` = invalid). Semantic tags (CARLA >= 0.9.14) are in the R
  channel; the instance camera carries the tag in R and the actor id in G (low byte) and B (high byte)
  (CARLA 0.9.16's encoding: older servers put Unreal's own object ids there).
- The normals camera (``sensor.camera.normals``, CARLA 0.9.16) encodes Unreal's world-space surface
  normal, each component mapped from [-1, 1] to [0, 255]: ``n = 2 c / 255 - 1`` with x, y, z in R, G, B.
- Unreal frames are left-handed: x forward, y right, z up. Ours (world, ego, LiDAR) are right-handed:
  x forward, y left, z up. A point converts by flipping y; a transform ``M`` by ``S @ M @ S`` with
  ``S = diag(1, -1, 1, 1)``; a yaw angle by a sign flip. The camera frame is OpenCV (x right, y down,
  z forward), reached from the Unreal sensor frame by :data:`CV_FROM_UE`.
- ``carla.BoundingBox`` holds half sizes (``extent``), a location relative to its actor, and a
  rotation in degrees; ours is ``(x, y, z, l, w, h, yaw)`` in the ego frame, z at the centre, radians.
- Camera intrinsics come from the horizontal field of view: ``f = W / (2 tan(fov / 2))``, principal
  point at the image centre, ``((W - 1) / 2, (H - 1) / 2)`` in our pixel-centre convention.

Example:
    >>> import numpy as np
    >>> bgra = np.zeros((1, 1, 4), np.uint8); bgra[..., 2] = 255      # R = 255, G = B = 0
    >>> float(depth_metres_from_bgra(bgra)[0, 0]) == float(np.float32(1000 * 255 / (256**3 - 1)))
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from taskology.data.schema import MOVABLE_CLASS_IDS, SEMANTIC_CLASSES
from taskology.errors import SimError

#: Unreal (left-handed, x forward, y right, z up) <-> ours (right-handed, y left): flip y. Own inverse.
FLIP_Y = np.diag([1.0, -1.0, 1.0, 1.0])
#: OpenCV camera (x right, y down, z forward) from the Unreal sensor frame (x forward, y right, z up).
CV_FROM_UE = np.array([[0.0, 1.0, 0.0, 0.0],
                       [0.0, 0.0, -1.0, 0.0],
                       [1.0, 0.0, 0.0, 0.0],
                       [0.0, 0.0, 0.0, 1.0]])
#: distance CARLA's depth camera reports for the sky (the far plane), metres.
CARLA_FAR_PLANE_M = 1000.0
#: CARLA tags (>= 0.9.14) that our schema does not render, mapped to the nearest class we do.
#: Every other id in 0..28 maps to itself (the schema reuses CARLA's ids); ids above 28 -> 0.
CARLA_TAG_REMAP: dict[int, int] = {
    17: 0,   # train -> unlabeled (not a class we render or track)
    20: 0,   # static -> unlabeled
    21: 0,   # dynamic -> unlabeled
    22: 0,   # other -> unlabeled
    23: 10,  # water -> terrain
    25: 10,  # ground -> terrain
    26: 3,   # bridge -> building
    27: 10,  # rail track -> terrain
    28: 5,   # guard rail -> fence
}


def _tag_lut() -> np.ndarray:
    lut = np.zeros(256, np.uint8)
    for tag in SEMANTIC_CLASSES:
        lut[tag] = tag
    for tag, ours in CARLA_TAG_REMAP.items():
        lut[tag] = ours
    return lut


_TAG_LUT = _tag_lut()


# ----------------------------------------------------------------------------------------- images
def _check_bgra(bgra: np.ndarray, what: str) -> None:
    if bgra.dtype != np.uint8 or bgra.ndim < 3 or bgra.shape[-1] != 4:
        raise SimError(f"{what}: expected a BGRA uint8 image (..., H, W, 4), found {bgra.dtype} {bgra.shape}")


def bgra_from_raw(raw: bytes | memoryview, height: int, width: int) -> np.ndarray:
    """View a ``carla.Image.raw_data`` buffer as ``(H, W, 4) uint8`` BGRA (no copy)."""
    arr = np.frombuffer(raw, dtype=np.uint8)
    if arr.size != height * width * 4:
        raise SimError(f"CARLA image: expected {height}x{width}x4 = {height * width * 4} bytes, found {arr.size}")
    return arr.reshape(height, width, 4)


def rgb_from_bgra(bgra: np.ndarray) -> np.ndarray:
    """``(..., H, W, 4) uint8`` BGRA -> ``(..., H, W, 3) uint8`` RGB (alpha dropped), contiguous."""
    _check_bgra(bgra, "rgb camera")
    return np.ascontiguousarray(bgra[..., 2::-1])


def depth_metres_from_bgra(bgra: np.ndarray, far_plane_m: float = CARLA_FAR_PLANE_M) -> np.ndarray:
    """Decode CARLA's depth camera: ``(..., H, W, 4) uint8`` BGRA -> ``(..., H, W) float32`` metres.

    ``metres = 1000 * (R + G*256 + B*65536) / (256**3 - 1)``, computed in float64 and rounded once to
    float32. Pixels at the far plane (``>= far_plane_m``, the sky) become ``0`` (invalid).
    """
    _check_bgra(bgra, "depth camera")
    code = (bgra[..., 2].astype(np.float64) + bgra[..., 1].astype(np.float64) * 256.0
            + bgra[..., 0].astype(np.float64) * 65536.0)
    metres = CARLA_FAR_PLANE_M * code / (256.0**3 - 1.0)
    metres[metres >= far_plane_m] = 0.0
    return metres.astype(np.float32)


def schema_tags_from_carla(tags: np.ndarray) -> np.ndarray:
    """CARLA semantic tag ids (any integer array) -> schema tag ids ``uint8`` (see CARLA_TAG_REMAP)."""
    tags = np.asarray(tags)
    clipped = np.where((tags >= 0) & (tags < 256), tags, 0).astype(np.intp)
    return _TAG_LUT[clipped]


def semantic_from_bgra(bgra: np.ndarray) -> np.ndarray:
    """Semantic camera ``(..., H, W, 4)`` BGRA -> ``(..., H, W) uint8`` schema tags (tag in the R channel)."""
    _check_bgra(bgra, "semantic camera")
    return schema_tags_from_carla(bgra[..., 2])


def actor_ids_from_instance_bgra(bgra: np.ndarray) -> np.ndarray:
    """Instance camera ``(..., H, W, 4)`` BGRA -> ``(..., H, W) int32`` low 16 bits of the actor id (G + 256 B)."""
    _check_bgra(bgra, "instance camera")
    return bgra[..., 1].astype(np.int32) + bgra[..., 0].astype(np.int32) * 256


def track_ids_from_actor_ids(actor_ids: np.ndarray, semantic: np.ndarray, tracked_ids: np.ndarray, *,
                             low16: bool) -> np.ndarray:
    """Per-pixel/point track ids: the actor id where it belongs to a tracked actor of a movable class, else -1.

    Args:
        actor_ids: (...) int actor ids as the sensor reports them.
        semantic: (...) uint8 schema tags of the same pixels/points.
        tracked_ids: (T,) int full CARLA actor ids of the objects written to ``objects/``.
        low16: the sensor reports only the low 16 bits of the id (the instance camera); the semantic
            LiDAR reports full ids.

    Returns:
        (...) int32 track ids (= CARLA actor id), -1 for background and untracked (e.g. parked) objects.

    Example:
        >>> track_ids_from_actor_ids(np.array([5, 7, 5]), np.array([14, 14, 1], np.uint8), np.array([5]), low16=False)
        array([ 5, -1, -1], dtype=int32)
    """
    tracked = np.asarray(tracked_ids, np.int64).reshape(-1)
    actor_ids = np.asarray(actor_ids, np.int64)
    out = np.full(actor_ids.shape, -1, np.int32)
    if tracked.size == 0:
        return out
    keys = tracked & 0xFFFF if low16 else tracked
    if np.unique(keys).size != keys.size:
        raise SimError(f"CARLA instance ids: tracked actors {tracked.tolist()} collide in the 16-bit instance channel")
    order = np.argsort(keys)
    sorted_keys = keys[order]
    pos = np.clip(np.searchsorted(sorted_keys, actor_ids), 0, keys.size - 1)
    hit = (sorted_keys[pos] == actor_ids) & np.isin(semantic, sorted(MOVABLE_CLASS_IDS))
    out[hit] = tracked[order][pos][hit].astype(np.int32)
    return out


def normals_from_carla_bgra(bgra: np.ndarray, cam_from_world: np.ndarray, K: np.ndarray,
                            depth: np.ndarray) -> np.ndarray:
    """CARLA 0.9.16's normals camera -> ``(H, W, 3) float32`` unit normals in our convention.

    Args:
        bgra: (H, W, 4) uint8 BGRA; R, G, B hold Unreal's world-space normal, ``n = 2 c / 255 - 1``.
        cam_from_world: (4, 4) OpenCV camera <- our right-handed world frame (only the rotation is used).
        K: (3, 3) intrinsics of the camera (to tell which way a pixel's ray points).
        depth: (H, W) float32 planar depth, metres; ``<= 0`` (sky, invalid) gets a zero normal.

    Returns:
        Unit normals in the camera frame pointing towards the camera (``n . p < 0``; a back face's normal
        is flipped), float32, zeros where the depth is invalid or the encoded vector is not a direction
        (length < 0.5 after decoding).

    Example:
        >>> wall = np.zeros((1, 1, 4), np.uint8); wall[0, 0, :3] = (128, 128, 0)   # B, G, R: world -x
        >>> cam_from_world = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])  # looks along +x
        >>> normals_from_carla_bgra(wall, cam_from_world, np.eye(3), np.ones((1, 1), np.float32)).round(2) + 0.0
        array([[[ 0.,  0., -1.]]], dtype=float32)
    """
    _check_bgra(bgra, "normals camera")
    height, width = bgra.shape[:2]
    depth = np.asarray(depth)
    if depth.shape != (height, width):
        raise SimError(f"normals camera: expected depth of shape {(height, width)}, found {depth.shape}")
    world = bgra[..., 2::-1].astype(np.float64) * (2.0 / 255.0) - 1.0       # (H, W, 3) Unreal x, y, z
    world[..., 1] = -world[..., 1]                                           # ours: y left
    cam = world @ np.asarray(cam_from_world, np.float64)[:3, :3].T          # (H, W, 3)
    length = np.linalg.norm(cam, axis=-1, keepdims=True)
    cam = cam / np.maximum(length, 1e-12)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(np.asarray(K, np.float64)).T   # (H, W, 3)
    cam = np.where((cam * rays).sum(-1, keepdims=True) > 0.0, -cam, cam)     # face the camera
    keep = (length[..., 0] >= 0.5) & (depth > 0) & np.isfinite(depth)
    return np.where(keep[..., None], cam, 0.0).astype(np.float32)


# ------------------------------------------------------------------------------------ transforms
def matrix_from_carla_pose(location_m: tuple[float, float, float], rotation_deg: tuple[float, float, float]) -> np.ndarray:
    """The 4x4 float64 matrix of a ``carla.Transform`` in Unreal (left-handed) coordinates.

    Same formula as ``carla.Transform.get_matrix()``. ``location_m = (x, y, z)`` metres,
    ``rotation_deg = (pitch, yaw, roll)`` degrees (CARLA's argument order).
    """
    pitch, yaw, roll = (math.radians(a) for a in rotation_deg)
    cp, sp, cy, sy, cr, sr = math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw), math.cos(roll), math.sin(roll)
    x, y, z = location_m
    return np.array([[cp * cy, cy * sp * sr - sy * cr, -cy * sp * cr - sy * sr, x],
                     [cp * sy, sy * sp * sr + cy * cr, -sy * sp * cr + cy * sr, y],
                     [sp, -cp * sr, cp * cr, z],
                     [0.0, 0.0, 0.0, 1.0]])


def carla_pose_from_matrix(matrix_lh: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Inverse of :func:`matrix_from_carla_pose`: 4x4 left-handed rigid matrix -> ((x, y, z), (pitch, yaw, roll) deg)."""
    r = np.asarray(matrix_lh, np.float64)
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, r[2, 0]))))
    yaw = math.degrees(math.atan2(r[1, 0], r[0, 0]))
    roll = math.degrees(math.atan2(-r[2, 1], r[2, 2]))
    return (float(r[0, 3]), float(r[1, 3]), float(r[2, 3])), (pitch, yaw, roll)


def right_handed_from_unreal(matrix_lh: np.ndarray) -> np.ndarray:
    """A transform between two Unreal frames -> the same transform between our right-handed frames.

    ``S @ M @ S`` with ``S = diag(1, -1, 1, 1)``; a proper rotation stays proper. Its own inverse.
    """
    return FLIP_Y @ np.asarray(matrix_lh, np.float64) @ FLIP_Y


def points_from_unreal(points_lh: np.ndarray) -> np.ndarray:
    """``(N, >=3)`` Unreal points/vectors -> ours: y negated, other columns unchanged (copy)."""
    out = np.array(points_lh, copy=True)
    out[:, 1] = -out[:, 1]
    return out


def cam_from_ego_from_mount(ego_from_sensor_lh: np.ndarray) -> np.ndarray:
    """``cam_from_ego`` (OpenCV camera <- our ego frame) of a camera mounted at ``ego_from_sensor_lh`` (Unreal)."""
    return CV_FROM_UE @ np.linalg.inv(ego_from_sensor_lh) @ FLIP_Y


def mount_from_cam_from_ego(cam_from_ego: np.ndarray) -> np.ndarray:
    """Inverse of :func:`cam_from_ego_from_mount`: the Unreal mount ``ego_from_sensor_lh`` of a camera."""
    return FLIP_Y @ np.linalg.inv(cam_from_ego) @ CV_FROM_UE


def sensor_from_ego_from_mount(ego_from_sensor_lh: np.ndarray) -> np.ndarray:
    """``lidar_from_ego`` (our right-handed LiDAR frame <- ego) of a sensor mounted at ``ego_from_sensor_lh``."""
    return right_handed_from_unreal(np.linalg.inv(ego_from_sensor_lh))


def box_in_ego(world_from_ego_lh: np.ndarray, world_from_actor_lh: np.ndarray, box_location_m: tuple[float, float, float],
               box_extent_m: tuple[float, float, float], box_rotation_deg: tuple[float, float, float]) -> np.ndarray:
    """A ``carla.BoundingBox`` of an actor -> ``(7,) float64`` ``(x, y, z, l, w, h, yaw)`` in our ego frame.

    Args:
        world_from_ego_lh, world_from_actor_lh: 4x4 Unreal matrices (``Transform.get_matrix()``).
        box_location_m: box centre relative to the actor (``bounding_box.location``), Unreal, metres.
        box_extent_m: half sizes along the box's x, y, z (``bounding_box.extent``), metres.
        box_rotation_deg: (pitch, yaw, roll) of the box relative to the actor, degrees.

    Returns:
        Centre in the right-handed ego frame, full sizes ``l = 2 extent.x`` (along the heading),
        ``w = 2 extent.y``, ``h = 2 extent.z``, yaw in radians in (-pi, pi] about +z (left-handed yaw negated).
    """
    ego_from_box_lh = (np.linalg.inv(world_from_ego_lh) @ world_from_actor_lh
                       @ matrix_from_carla_pose(box_location_m, box_rotation_deg))
    ego_from_box = right_handed_from_unreal(ego_from_box_lh)
    yaw = math.atan2(ego_from_box[1, 0], ego_from_box[0, 0])
    ex, ey, ez = box_extent_m
    return np.array([*ego_from_box[:3, 3], 2.0 * ex, 2.0 * ey, 2.0 * ez, yaw], np.float64)


def lidar_from_carla(raw: np.ndarray) -> np.ndarray:
    """``carla.LidarMeasurement`` points ``(N, 4) float32`` (x, y, z, intensity; Unreal sensor frame) ->
    ``(N, 4) float32`` in our LiDAR frame (y negated), intensity clipped to [0, 1]."""
    pts = np.asarray(raw, np.float32).reshape(-1, 4)
    out = points_from_unreal(pts)
    out[:, 3] = np.clip(out[:, 3], 0.0, 1.0)
    return out


#: record layout of ``carla.SemanticLidarMeasurement.raw_data``.
SEMANTIC_LIDAR_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("cos_inc", "<f4"),
                                 ("actor_id", "<u4"), ("tag", "<u4")])


def semantic_lidar_from_carla(raw: bytes | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``carla.SemanticLidarMeasurement.raw_data`` -> (points (N, 4) float32, tags (N,) uint8, actor ids (N,) int64).

    Points are in our LiDAR frame (y negated). The semantic LiDAR has no intensity; we store the cosine of
    the incidence angle clipped to [0, 1] (a Lambertian return), which is what the intensity column means here.
    """
    rec = np.frombuffer(raw, SEMANTIC_LIDAR_DTYPE) if isinstance(raw, (bytes, bytearray, memoryview)) \
        else np.asarray(raw).view(SEMANTIC_LIDAR_DTYPE).reshape(-1)
    pts = np.stack([rec["x"], -rec["y"], rec["z"], np.clip(rec["cos_inc"], 0.0, 1.0)], axis=1).astype(np.float32)
    return pts, schema_tags_from_carla(rec["tag"]), rec["actor_id"].astype(np.int64)


def intrinsics_from_fov(height: int, width: int, fov_deg: float) -> np.ndarray:
    """CARLA pinhole camera ``K`` (3x3 float64, pixels) from its horizontal field of view in degrees.

    ``f = W / (2 tan(fov / 2))``. The image centre is the principal point; in our pixel convention
    (pixel ``u`` has its centre at ``u``, see :mod:`taskology.geometry.camera`) that is
    ``((W - 1) / 2, (H - 1) / 2)`` (CARLA's own examples write ``W / 2``, i.e. pixel corners).
    """
    if not 0.0 < fov_deg < 180.0:
        raise SimError(f"camera fov must be in (0, 180) degrees, found {fov_deg}")
    f = width / (2.0 * math.tan(math.radians(fov_deg) / 2.0))
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def fov_from_intrinsics(K: np.ndarray, height: int, width: int) -> float:
    """The horizontal fov (degrees) CARLA needs to reproduce ``K``; ``K`` must be square-pixel, centred."""
    K = np.asarray(K, np.float64)
    centred = np.allclose([K[0, 2], K[1, 2]], [(width - 1) / 2.0, (height - 1) / 2.0], atol=0.5 + 1e-9)
    if not (np.isclose(K[0, 0], K[1, 1], rtol=1e-6) and centred and K[0, 1] == 0.0):
        raise SimError(f"CARLA cameras have square pixels and a centred principal point; cannot reproduce K={K.tolist()}")
    return math.degrees(2.0 * math.atan(width / (2.0 * K[0, 0])))


# ------------------------------------------------------------------------------ frame assembly
@dataclass(frozen=True)
class SensorRig:
    """Where the sensors sit and how they sample; the same values the embedded renderer uses.

    Attributes:
        camera_hw: (H, W) pixels.
        K: (3, 3) float64 intrinsics (square pixels, centred; CARLA's fov is derived from it).
        cam_from_ego: (4, 4) float64, OpenCV camera <- ego.
        lidar_from_ego: (4, 4) float64, LiDAR (x forward, y left, z up) <- ego.
        lidar_beams: channels; 0 disables the LiDAR.
        lidar_azimuth: samples per revolution per beam (one revolution per frame).
        lidar_fov_deg: (upper, lower) elevation limits, degrees.
        lidar_range_m: maximum range, metres.
    """

    camera_hw: tuple[int, int]
    K: np.ndarray
    cam_from_ego: np.ndarray
    lidar_from_ego: np.ndarray
    lidar_beams: int
    lidar_azimuth: int
    lidar_fov_deg: tuple[float, float] = (10.0, -30.0)
    lidar_range_m: float = 100.0


@dataclass(frozen=True)
class CarlaObject:
    """One tracked actor at one tick, in CARLA's (Unreal) terms.

    Attributes:
        actor_id: CARLA actor id (becomes the track id).
        class_id: schema semantic tag of the actor's class.
        world_from_actor_lh: (4, 4) Unreal ``actor.get_transform().get_matrix()``.
        box_location_m, box_extent_m, box_rotation_deg: ``actor.bounding_box`` (relative to the actor).
        velocity_lh: ``actor.get_velocity()`` in the Unreal world frame, m/s.
    """

    actor_id: int
    class_id: int
    world_from_actor_lh: np.ndarray
    box_location_m: tuple[float, float, float]
    box_extent_m: tuple[float, float, float]
    box_rotation_deg: tuple[float, float, float]
    velocity_lh: tuple[float, float, float]


def frame_layers_from_carla(*, rgb_bgra: np.ndarray, depth_bgra: np.ndarray, semantic_bgra: np.ndarray,
                            instance_bgra: np.ndarray, semantic_lidar_raw: bytes | np.ndarray | None,
                            world_from_ego_lh: np.ndarray, objects: Sequence[CarlaObject],
                            K: np.ndarray, normals_bgra: np.ndarray | None = None,
                            cam_from_ego: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One tick of CARLA sensor data -> one frame of schema layers (``ShardWriter.append`` input).

    Images are ``(H, W, 4) uint8`` BGRA; ``semantic_lidar_raw`` is a ``SemanticLidarMeasurement`` buffer
    (``None``: no LiDAR group). Sky pixels get depth 0. Normals come from the server's normals camera
    when ``normals_bgra`` is given (:func:`normals_from_carla_bgra`; needs ``cam_from_ego``), else they
    are estimated from the depth (:func:`taskology.geometry.camera.normals_from_depth`). Boxes are in
    the ego frame, velocities in our world frame (Unreal world with y negated).
    """
    from taskology.data.schema import SKY_CLASS_ID
    from taskology.geometry.camera import normals_from_depth

    semantic = semantic_from_bgra(semantic_bgra)
    depth = depth_metres_from_bgra(depth_bgra)
    depth[semantic == SKY_CLASS_ID] = 0.0
    if normals_bgra is None:
        normals = normals_from_depth(depth, K)
    elif cam_from_ego is None:
        raise SimError("normals camera: cam_from_ego is needed to turn world normals into camera normals")
    else:
        cam_from_world = np.asarray(cam_from_ego, np.float64) @ np.linalg.inv(right_handed_from_unreal(world_from_ego_lh))
        normals = normals_from_carla_bgra(normals_bgra, cam_from_world, K, depth)
    tracked = np.array([o.actor_id for o in objects], np.int64)
    layers: dict[str, np.ndarray] = {
        "camera/rgb": rgb_from_bgra(rgb_bgra),
        "camera/depth": depth,
        "camera/normals": normals,
        "camera/semantic": semantic,
        "camera/instance": track_ids_from_actor_ids(actor_ids_from_instance_bgra(instance_bgra), semantic, tracked,
                                                    low16=True),
        "ego/world_from_ego": right_handed_from_unreal(world_from_ego_lh),
        "objects/track_id": tracked.astype(np.int32),
        "objects/class_id": np.array([o.class_id for o in objects], np.uint8),
        "objects/box": np.array([box_in_ego(world_from_ego_lh, o.world_from_actor_lh, o.box_location_m, o.box_extent_m,
                                            o.box_rotation_deg) for o in objects], np.float64).reshape(-1, 7),
        "objects/velocity": points_from_unreal(np.array([o.velocity_lh for o in objects], np.float32).reshape(-1, 3)),
    }
    if semantic_lidar_raw is not None:
        points, tags, ids = semantic_lidar_from_carla(semantic_lidar_raw)
        layers.update({"lidar/points": points, "lidar/semantic": tags,
                       "lidar/instance": track_ids_from_actor_ids(ids, tags, tracked, low16=False)})
    return layers


def default_sensor_rig(camera_hw: tuple[int, int], lidar_beams: int, lidar_azimuth: int) -> SensorRig:
    """The embedded renderer's sensors (its defaults): same K, mounts, LiDAR beams, elevations and range."""
    from taskology.sim import sensors
    from taskology.sim.renderer import EmbeddedRenderer

    height, width = camera_hw
    if height <= 0 or width <= 0:
        raise SimError(f"CARLA backend: camera size must be positive HxW, found {camera_hw}")
    if not 0 <= lidar_beams <= 128 or lidar_azimuth <= 0:
        raise SimError(f"CARLA backend: lidar_beams must be 0..128 and lidar_azimuth > 0, "
                       f"found {lidar_beams} and {lidar_azimuth}")
    renderer = EmbeddedRenderer((height, width), lidar_beams, lidar_azimuth)
    return SensorRig(camera_hw=(int(height), int(width)), K=renderer.K, cam_from_ego=renderer.cam_from_ego,
                     lidar_from_ego=renderer.lidar_from_ego, lidar_beams=int(lidar_beams),
                     lidar_azimuth=int(lidar_azimuth), lidar_fov_deg=tuple(sensors.LIDAR_VFOV_DEG),
                     lidar_range_m=renderer.lidar_range_m)
