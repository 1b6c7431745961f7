"""CARLA conversions: exact known answers, round trips, the carla objects offline (no server needed)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from taskology.errors import SimError
from taskology.sim import carla_convert as cb


def _bgra(b: int, g: int, r: int, a: int = 255) -> np.ndarray:
    return np.array([[[b, g, r, a]]], np.uint8)


# ----------------------------------------------------------------------------------------- images
def test_depth_known_answers() -> None:
    one_code = 1000.0 / (256**3 - 1)
    assert cb.depth_metres_from_bgra(_bgra(0, 0, 1))[0, 0] == np.float32(one_code)          # R is the low byte
    assert cb.depth_metres_from_bgra(_bgra(0, 1, 0))[0, 0] == np.float32(256 * one_code)    # G the middle byte
    assert cb.depth_metres_from_bgra(_bgra(1, 0, 0))[0, 0] == np.float32(65536 * one_code)  # B the high byte
    assert cb.depth_metres_from_bgra(_bgra(255, 255, 255))[0, 0] == 0.0                      # far plane = sky
    assert cb.depth_metres_from_bgra(_bgra(255, 255, 254))[0, 0] == np.float32(1000.0 * (256**3 - 2) / (256**3 - 1))
    assert cb.depth_metres_from_bgra(_bgra(0, 0, 0))[0, 0] == 0.0


def test_depth_matches_integer_reference_on_random_pixels() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    got = cb.depth_metres_from_bgra(img)
    assert got.dtype == np.float32 and got.shape == (5, 7)
    for i in range(5):
        for j in range(7):
            b, g, r, _ = (int(v) for v in img[i, j])
            code = int.from_bytes(bytes([r, g, b]), "little")   # R low, B high
            want = 1000.0 * code / 16777215 if code < 16777215 else 0.0
            assert got[i, j] == np.float32(want)


def test_rgb_semantic_instance_channels() -> None:
    px = _bgra(10, 20, 30, 40)
    assert cb.rgb_from_bgra(px)[0, 0].tolist() == [30, 20, 10]
    assert cb.semantic_from_bgra(_bgra(0, 0, 14))[0, 0] == 14        # car: tag in R, kept 1:1
    assert cb.semantic_from_bgra(_bgra(0, 0, 24))[0, 0] == 24        # road line
    assert cb.semantic_from_bgra(_bgra(14, 14, 25))[0, 0] == 10      # ground -> terrain (documented remap)
    assert cb.semantic_from_bgra(_bgra(0, 0, 17))[0, 0] == 0         # train -> unlabeled
    assert cb.semantic_from_bgra(_bgra(0, 0, 200))[0, 0] == 0        # unknown tag -> unlabeled
    assert cb.actor_ids_from_instance_bgra(_bgra(0x12, 0x34, 14))[0, 0] == 0x1234
    with pytest.raises(SimError, match="BGRA uint8"):
        cb.rgb_from_bgra(np.zeros((2, 2, 3), np.uint8))
    raw = bytes(range(8))
    assert cb.bgra_from_raw(raw, 1, 2).tolist() == [[[0, 1, 2, 3], [4, 5, 6, 7]]]
    with pytest.raises(SimError, match="expected 2x2x4"):
        cb.bgra_from_raw(raw, 2, 2)


def test_every_schema_tag_maps_to_itself() -> None:
    from taskology.data.schema import SEMANTIC_CLASSES

    tags = np.array(sorted(SEMANTIC_CLASSES))
    assert cb.schema_tags_from_carla(tags).tolist() == tags.tolist()
    assert set(cb.schema_tags_from_carla(np.arange(0, 300)).tolist()) <= set(SEMANTIC_CLASSES)


def test_track_ids_from_actor_ids() -> None:
    tracked = np.array([70000, 12])                         # 70000 = 0x11170 -> camera sees 0x1170
    ids = np.array([0x1170, 0x1170, 12, 13, 70000])
    sem = np.array([14, 1, 12, 14, 14], np.uint8)             # car, road, pedestrian, car, car
    cam = cb.track_ids_from_actor_ids(ids, sem, tracked, low16=True)
    assert cam.dtype == np.int32 and cam.tolist() == [70000, -1, 12, -1, -1]
    lidar = cb.track_ids_from_actor_ids(ids, sem, tracked, low16=False)
    assert lidar.tolist() == [-1, -1, 12, -1, 70000]
    assert cb.track_ids_from_actor_ids(ids, sem, np.array([], np.int64), low16=True).tolist() == [-1] * 5
    with pytest.raises(SimError, match="collide"):
        cb.track_ids_from_actor_ids(ids, sem, np.array([5, 5 + 65536]), low16=True)


# ------------------------------------------------------------------------------------ transforms
def test_carla_pose_matrix_known_answers() -> None:
    yaw90 = cb.matrix_from_carla_pose((1.0, 2.0, 3.0), (0.0, 90.0, 0.0))
    np.testing.assert_allclose(yaw90, [[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]], atol=1e-15)
    pitch30 = cb.matrix_from_carla_pose((0, 0, 0), (30.0, 0.0, 0.0))
    np.testing.assert_allclose(pitch30[:3, 0], [math.cos(math.pi / 6), 0, 0.5], atol=1e-15)  # nose up


def test_carla_pose_round_trip_random() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        loc = tuple(rng.uniform(-100, 100, 3))
        rot = (rng.uniform(-89, 89), rng.uniform(-179, 179), rng.uniform(-179, 179))
        m = cb.matrix_from_carla_pose(loc, rot)
        np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-12)
        assert np.linalg.det(m[:3, :3]) == pytest.approx(1.0)
        loc2, rot2 = cb.carla_pose_from_matrix(m)
        np.testing.assert_allclose(loc2, loc, atol=1e-12)
        np.testing.assert_allclose(rot2, rot, atol=1e-9)


def test_right_handed_conversion_flips_yaw_and_commutes_with_points() -> None:
    m_lh = cb.matrix_from_carla_pose((4.0, -2.0, 1.0), (0.0, 30.0, 0.0))     # Unreal yaw +30 = turning right
    m = cb.right_handed_from_unreal(m_lh)
    assert math.atan2(m[1, 0], m[0, 0]) == pytest.approx(-math.radians(30.0))
    np.testing.assert_allclose(m[:3, 3], [4.0, 2.0, 1.0])
    assert np.linalg.det(m[:3, :3]) == pytest.approx(1.0)
    rng = np.random.default_rng(2)
    m_lh = cb.matrix_from_carla_pose(tuple(rng.normal(size=3)), tuple(rng.uniform(-80, 80, 3)))
    p_lh = rng.normal(size=(10, 3))
    moved_then_flipped = cb.points_from_unreal((m_lh[:3, :3] @ p_lh.T).T + m_lh[:3, 3])
    flipped_then_moved = (cb.right_handed_from_unreal(m_lh)[:3, :3] @ cb.points_from_unreal(p_lh).T).T \
        + cb.right_handed_from_unreal(m_lh)[:3, 3]
    np.testing.assert_allclose(moved_then_flipped, flipped_then_moved, atol=1e-12)


def test_cam_from_ego_of_forward_camera() -> None:
    mount = cb.matrix_from_carla_pose((1.5, 0.0, 1.7), (0.0, 0.0, 0.0))     # 1.5 m ahead, 1.7 m up, looking forward
    cam_from_ego = cb.cam_from_ego_from_mount(mount)
    assert np.linalg.det(cam_from_ego[:3, :3]) == pytest.approx(1.0)
    def cam(p: tuple[float, float, float]) -> np.ndarray:
        return (cam_from_ego @ np.array([*p, 1.0]))[:3]
    np.testing.assert_allclose(cam((10.0, 0.0, 1.7)), [0.0, 0.0, 8.5], atol=1e-12)   # straight ahead: +z
    np.testing.assert_allclose(cam((10.0, 2.0, 1.7)), [-2.0, 0.0, 8.5], atol=1e-12)  # ego left (+y) = image left (-x)
    np.testing.assert_allclose(cam((10.0, 0.0, 2.7)), [0.0, -1.0, 8.5], atol=1e-12)  # up = image up (-y)
    np.testing.assert_allclose(cb.mount_from_cam_from_ego(cam_from_ego), mount, atol=1e-12)
    yawed = cb.matrix_from_carla_pose((0.0, 0.0, 0.0), (0.0, 90.0, 0.0))      # looking to the right (Unreal +y)
    np.testing.assert_allclose((cb.cam_from_ego_from_mount(yawed) @ [0.0, -5.0, 0.0, 1.0])[:3], [0, 0, 5], atol=1e-12)


def test_lidar_from_ego_and_points() -> None:
    mount = cb.matrix_from_carla_pose((0.0, 0.5, 1.8), (0.0, 0.0, 0.0))      # 0.5 m to the right in Unreal
    lidar_from_ego = cb.sensor_from_ego_from_mount(mount)
    np.testing.assert_allclose(lidar_from_ego @ [0.0, 0.0, 0.0, 1.0], [0.0, 0.5, -1.8, 1.0], atol=1e-12)
    raw = np.array([[1.0, 2.0, 3.0, 0.5], [4.0, -5.0, 6.0, 1.5]], np.float32)
    out = cb.lidar_from_carla(raw.ravel())
    assert out.dtype == np.float32 and out.tolist() == [[1.0, -2.0, 3.0, 0.5], [4.0, 5.0, 6.0, 1.0]]
    assert raw[0, 1] == 2.0                                                      # input untouched
    rec = np.zeros(2, cb.SEMANTIC_LIDAR_DTYPE)
    rec["x"], rec["y"], rec["z"], rec["cos_inc"] = [1, 2], [3, -4], [5, 6], [0.25, -0.5]
    rec["actor_id"], rec["tag"] = [70000, 0], [14, 25]
    pts, tags, ids = cb.semantic_lidar_from_carla(rec.tobytes())
    assert pts.tolist() == [[1, -3, 5, 0.25], [2, 4, 6, 0.0]]
    assert tags.tolist() == [14, 10] and ids.tolist() == [70000, 0]


def test_box_in_ego_hand_worked() -> None:
    ego = cb.matrix_from_carla_pose((10.0, 5.0, 0.0), (0.0, 0.0, 0.0))
    actor = cb.matrix_from_carla_pose((20.0, 8.0, 0.0), (0.0, 90.0, 0.0))    # 3 m right of ego, heading right
    box = cb.box_in_ego(ego, actor, (0.0, 0.0, 0.8), (2.0, 1.0, 0.8), (0.0, 0.0, 0.0))
    np.testing.assert_allclose(box, [10.0, -3.0, 0.8, 4.0, 2.0, 1.6, -math.pi / 2], atol=1e-12)
    ego = cb.matrix_from_carla_pose((0.0, 0.0, 0.0), (0.0, 90.0, 0.0))        # ego faces Unreal +y
    actor = cb.matrix_from_carla_pose((1.0, 10.0, 0.0), (0.0, 100.0, 0.0))    # ahead, 1 m to ego's left
    box = cb.box_in_ego(ego, actor, (0.5, 0.0, 0.7), (2.2, 0.9, 0.7), (0.0, 0.0, 0.0))
    # box centre 0.5 m along the actor heading (Unreal yaw 100) from the actor origin
    cx, cy = 1.0 + 0.5 * math.cos(math.radians(100)), 10.0 + 0.5 * math.sin(math.radians(100))
    np.testing.assert_allclose(box, [cy, cx, 0.7, 4.4, 1.8, 1.4, -math.radians(10)], atol=1e-12)
    rotated = cb.box_in_ego(np.eye(4), np.eye(4), (0, 0, 0), (1, 1, 1), (0.0, -45.0, 0.0))
    assert rotated[6] == pytest.approx(math.pi / 4)                            # box yaw relative to actor, sign flipped


def test_intrinsics_from_fov() -> None:
    K = cb.intrinsics_from_fov(100, 200, 90.0)
    np.testing.assert_allclose(K, [[100, 0, 99.5], [0, 100, 49.5], [0, 0, 1]], atol=1e-12)
    assert cb.fov_from_intrinsics(K, 100, 200) == pytest.approx(90.0)
    K2 = cb.intrinsics_from_fov(64, 208, 72.5)
    assert cb.fov_from_intrinsics(K2, 64, 208) == pytest.approx(72.5)
    with pytest.raises(SimError, match="square pixels"):
        cb.fov_from_intrinsics(np.array([[100, 0, 99.5], [0, 90, 49.5], [0, 0, 1.0]]), 100, 200)
    with pytest.raises(SimError, match="centred"):
        cb.fov_from_intrinsics(np.array([[100, 0, 80.0], [0, 100, 49.5], [0, 0, 1.0]]), 100, 200)
    with pytest.raises(SimError, match="fov"):
        cb.intrinsics_from_fov(10, 10, 180.0)


def test_carla_objects_match_our_matrices() -> None:
    carla = pytest.importorskip("carla")
    rng = np.random.default_rng(3)
    for _ in range(20):
        loc, rot = rng.uniform(-50, 50, 3), rng.uniform(-80, 80, 3)
        t = carla.Transform(carla.Location(*map(float, loc)), carla.Rotation(pitch=rot[0], yaw=rot[1], roll=rot[2]))
        np.testing.assert_allclose(np.array(t.get_matrix()), cb.matrix_from_carla_pose(tuple(loc), tuple(rot)),
                                   atol=1e-4)  # carla computes in float32
    bb = carla.BoundingBox(carla.Location(0.1, 0.2, 0.7), carla.Vector3D(2.0, 1.0, 0.75))
    box = cb.box_in_ego(np.eye(4), np.eye(4), (bb.location.x, bb.location.y, bb.location.z),
                        (bb.extent.x, bb.extent.y, bb.extent.z), (bb.rotation.pitch, bb.rotation.yaw, bb.rotation.roll))
    np.testing.assert_allclose(box, [0.1, -0.2, 0.7, 4.0, 2.0, 1.5, 0.0], atol=1e-6)


# ------------------------------------------------------------------------------ frame assembly
def test_default_rig_mounts_as_carla_transforms() -> None:
    rig = cb.default_sensor_rig((64, 208), 32, 1024)
    (x, y, z), (pitch, yaw, roll) = cb.carla_pose_from_matrix(cb.mount_from_cam_from_ego(rig.cam_from_ego))
    np.testing.assert_allclose([x, y, z, pitch, yaw, roll], [0.8, 0.0, 1.6, -3.0, 0.0, 0.0], atol=1e-9)  # nose down
    lidar_mount = cb.FLIP_Y @ np.linalg.inv(rig.lidar_from_ego) @ cb.FLIP_Y
    (x, y, z), rot = cb.carla_pose_from_matrix(lidar_mount)
    np.testing.assert_allclose([x, y, z, *rot], [0.0, 0.0, 1.9, 0.0, 0.0, 0.0], atol=1e-12)
    assert cb.fov_from_intrinsics(rig.K, 64, 208) == pytest.approx(90.0)
    np.testing.assert_allclose(cb.intrinsics_from_fov(64, 208, 90.0), rig.K, atol=1e-12)  # CARLA reproduces K
    with pytest.raises(SimError, match="lidar_beams"):
        cb.default_sensor_rig((64, 208), 129, 1024)


def test_frame_layers_round_trip_through_the_shard_writer(tmp_path: object) -> None:
    from pathlib import Path

    from taskology.data.shard import Shard, ShardWriter

    h, w = 6, 8
    K = cb.intrinsics_from_fov(h, w, 90.0)
    rgb = np.zeros((h, w, 4), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 1, 2, 3                     # B, G, R
    depth = np.zeros((h, w, 4), np.uint8)
    code = round(5.0 * (256**3 - 1) / 1000.0)                            # ~5 m everywhere ...
    depth[..., 2], depth[..., 1], depth[..., 0] = code & 255, (code >> 8) & 255, code >> 16
    sem = np.zeros((h, w, 4), np.uint8)
    sem[..., 2] = 1                                                      # road
    sem[0, :, 2] = 11                                                    # ... except the sky row
    sem[3, 4, 2] = 14                                                    # one car pixel
    inst = sem.copy()
    inst[3, 4, 1], inst[3, 4, 0] = 0x70, 0x11                            # actor 70000 = 0x11170 -> low 16 bits 0x1170
    rec = np.zeros(2, cb.SEMANTIC_LIDAR_DTYPE)
    rec["x"], rec["y"], rec["z"], rec["cos_inc"], rec["actor_id"], rec["tag"] = [5, 7], [1, -2], [0, 0], [1, 1], \
        [70000, 3], [14, 1]
    ego = cb.matrix_from_carla_pose((100.0, 50.0, 0.0), (0.0, 0.0, 0.0))
    car = cb.CarlaObject(70000, 14, cb.matrix_from_carla_pose((105.0, 51.0, 0.0), (0.0, 0.0, 0.0)),
                         (0.0, 0.0, 0.75), (2.0, 1.0, 0.75), (0.0, 0.0, 0.0), (3.0, 4.0, 0.0))
    layers = cb.frame_layers_from_carla(rgb_bgra=rgb, depth_bgra=depth, semantic_bgra=sem, instance_bgra=inst,
                                        semantic_lidar_raw=rec.tobytes(), world_from_ego_lh=ego, objects=[car], K=K)
    path = Path(str(tmp_path)) / "c.h5"
    with ShardWriter(path, sequence_id="c", frame_rate=10.0, generator={"backend": "carla"}, camera_hw=(h, w),
                     lidar=True, objects=True) as writer:
        writer.set_static(**{"camera/K": K, "camera/cam_from_ego": cb.default_sensor_rig((h, w), 8, 16).cam_from_ego,
                             "lidar/lidar_from_ego": np.eye(4)})
        writer.append(layers)
    with Shard.open(path) as shard:
        shard.verify()
        f = shard.frame(0)
    assert f["camera/rgb"][0, 0].tolist() == [3, 2, 1]
    assert f["camera/depth"][0].tolist() == [0.0] * w                    # sky row invalid
    assert f["camera/depth"][2, 2] == pytest.approx(5.0, abs=1e-3)
    np.testing.assert_allclose(f["camera/normals"][2, 2], [0, 0, -1], atol=1e-5)   # fronto-parallel plane faces camera
    assert f["camera/instance"][3, 4] == 70000 and (f["camera/instance"] == -1).sum() == h * w - 1
    assert f["lidar/points"].tolist() == [[5, -1, 0, 1], [7, 2, 0, 1]] and f["lidar/instance"].tolist() == [70000, -1]
    np.testing.assert_allclose(f["objects/box"], [[5.0, -1.0, 0.75, 4.0, 2.0, 1.5, 0.0]], atol=1e-12)
    assert f["objects/velocity"].tolist() == [[3.0, -4.0, 0.0]] and f["objects/track_id"].tolist() == [70000]
    np.testing.assert_allclose(f["ego/world_from_ego"][:3, 3], [100.0, -50.0, 0.0])




# ------------------------------------------------------------------------------ normals camera
def _encode(n_ue: np.ndarray) -> np.ndarray:
    """Unreal world normals (..., 3) -> the normals camera's BGRA (c = (n + 1) / 2 * 255, rounded)."""
    c = np.clip(np.round((np.asarray(n_ue, np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    out = np.full((*c.shape[:-1], 4), 255, np.uint8)
    out[..., 0], out[..., 1], out[..., 2] = c[..., 2], c[..., 1], c[..., 0]     # B = z, G = y, R = x
    return out


def test_normals_camera_known_answers_and_orientation() -> None:
    rig = cb.default_sensor_rig((6, 8), 0, 16)
    world_from_ego_lh = cb.matrix_from_carla_pose((30.0, -4.0, 0.0), (0.0, 90.0, 0.0))     # ego heading Unreal +y
    cam_from_world = rig.cam_from_ego @ np.linalg.inv(cb.right_handed_from_unreal(world_from_ego_lh))
    depth = np.full((6, 8), 5.0, np.float32)
    depth[0, 0] = 0.0                                                                      # invalid -> zero normal
    # a wall facing the ego: its normal points back along the ego's heading, Unreal -y, i.e. ours +y
    wall = cb.normals_from_carla_bgra(_encode(np.tile([0.0, -1.0, 0.0], (6, 8, 1))), cam_from_world, rig.K, depth)
    assert wall.dtype == np.float32 and wall.shape == (6, 8, 3)
    np.testing.assert_allclose(np.linalg.norm(wall[1:, 1:], axis=-1), 1.0, atol=1e-6)
    want = rig.cam_from_ego[:3, :3] @ np.array([-1.0, 0.0, 0.0])                          # ego backwards, camera frame
    np.testing.assert_allclose(wall[3, 4], want, atol=0.01)
    assert wall[0, 0].tolist() == [0.0, 0.0, 0.0]
    # the ground (world up): seen from above below the horizon; a pixel ray above it sees its back, flipped
    up = cb.normals_from_carla_bgra(_encode(np.tile([0.0, 0.0, 1.0], (6, 8, 1))), cam_from_world, rig.K, depth)
    rays = np.stack([*np.meshgrid(np.arange(8.0), np.arange(6.0)), np.ones((6, 8))], -1) @ np.linalg.inv(rig.K).T
    assert ((up * rays).sum(-1)[depth > 0] < 0).all()                                      # every normal faces the camera
    ego_up = rig.cam_from_ego[:3, :3] @ np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(np.abs(up[3, 4] @ ego_up), 1.0, atol=1e-3)
    # a random normal field: decoding recovers it within the 8-bit quantisation, then the orientation rule
    rng = np.random.default_rng(4)
    n = rng.normal(size=(6, 8, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    got = cb.normals_from_carla_bgra(_encode(n), cam_from_world, rig.K, np.ones((6, 8), np.float32))
    n_cam = (n * [1.0, -1.0, 1.0]) @ cam_from_world[:3, :3].T
    n_cam = np.where((n_cam * rays).sum(-1, keepdims=True) > 0, -n_cam, n_cam)
    np.testing.assert_allclose(got, n_cam, atol=0.012)
    with pytest.raises(SimError, match="depth of shape"):
        cb.normals_from_carla_bgra(_encode(n), cam_from_world, rig.K, np.ones((2, 2), np.float32))


def test_frame_layers_take_the_normals_camera_when_given() -> None:
    h, w = 4, 6
    rig = cb.default_sensor_rig((h, w), 0, 16)
    depth = np.zeros((h, w, 4), np.uint8)
    depth[..., 2] = 200
    sem = np.zeros((h, w, 4), np.uint8)
    sem[..., 2] = 1
    normals = _encode(np.tile([-1.0, 0.0, 0.0], (h, w, 1)))                 # facing an ego at the origin, heading +x
    common = dict(rgb_bgra=sem, depth_bgra=depth, semantic_bgra=sem, instance_bgra=sem, semantic_lidar_raw=None,
                  world_from_ego_lh=np.eye(4), objects=[], K=rig.K)
    from_camera = cb.frame_layers_from_carla(**common, normals_bgra=normals, cam_from_ego=rig.cam_from_ego)
    np.testing.assert_allclose(from_camera["camera/normals"][2, 3], rig.cam_from_ego[:3, :3] @ [-1.0, 0, 0], atol=0.01)
    from taskology.geometry.camera import normals_from_depth

    from_depth = cb.frame_layers_from_carla(**common)
    assert np.array_equal(from_depth["camera/normals"], normals_from_depth(from_depth["camera/depth"], rig.K))
    with pytest.raises(SimError, match="cam_from_ego"):
        cb.frame_layers_from_carla(**common, normals_bgra=normals)
