"""The rendered layers agree with each other: depth vs normals, sky, LiDAR vs boxes, instance masks vs
projected boxes, photometric warp with ground-truth depth and motion, determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.path import Path as PolygonPath
from scipy.spatial import ConvexHull

from taskology.geometry.boxes import box_corners, points_in_boxes_mask
from taskology.geometry.camera import normals_from_depth
from taskology.geometry.warp import warp_frame
from taskology.sim.renderer import EmbeddedRenderer
from taskology.sim.world import World

from taskology.sim.config import WorldConfig
from taskology.sim.scenarios import lead_vehicle_world, render_sequence

SKY, ROAD, SIDEWALK, BUILDING, CAR = 11, 1, 2, 3, 14
SMALL_CONFIG = WorldConfig(blocks=2, cars=8, pedestrians=12)


def _box_pose(box: np.ndarray) -> np.ndarray:
    """ego_from_box (4, 4) for one (x, y, z, l, w, h, yaw) box."""
    c, s = np.cos(box[6]), np.sin(box[6])
    out = np.eye(4)
    out[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    out[:3, 3] = box[:3]
    return out


def test_layer_shapes_and_dtypes(street_frames) -> None:
    layers = street_frames[0][0]
    assert layers["camera/rgb"].shape == (32, 96, 3) and layers["camera/rgb"].dtype == np.uint8
    assert layers["camera/depth"].dtype == np.float32 and layers["camera/normals"].shape == (32, 96, 3)
    assert layers["camera/semantic"].dtype == np.uint8 and layers["camera/instance"].dtype == np.int32
    assert layers["lidar/points"].shape[1] == 4 and layers["lidar/points"].dtype == np.float32
    assert len(layers["lidar/points"]) == len(layers["lidar/semantic"]) == len(layers["lidar/instance"])
    assert 0 < len(layers["lidar/points"]) <= 8 * 256
    n = len(layers["objects/track_id"])
    assert layers["objects/box"].shape == (n, 7) and layers["objects/velocity"].shape == (n, 3)


def test_depth_is_zero_exactly_on_sky_and_normals_are_unit_elsewhere(street_frames) -> None:
    for layers in street_frames[0]:
        depth, sem = layers["camera/depth"], layers["camera/semantic"]
        sky = sem == SKY
        assert sky.any() and (~sky).any()
        np.testing.assert_array_equal(depth == 0, sky)
        assert np.all(depth[~sky] > 0.1)
        normals = layers["camera/normals"]
        assert np.all(normals[sky] == 0) and np.all(layers["camera/instance"][sky] == -1)
        np.testing.assert_allclose(np.linalg.norm(normals[~sky], axis=-1), 1.0, atol=1e-5)


def test_normals_face_the_camera(street_frames) -> None:
    layers = street_frames[0][0]
    K, depth = layers["camera/K"], layers["camera/depth"]
    v, u = np.mgrid[0:32, 0:96]
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1)
    hit = depth > 0
    assert np.all(np.sum(layers["camera/normals"][hit] * rays[hit], axis=-1) < 0)


def test_normals_from_depth_match_the_normals_layer_away_from_edges(street_frames) -> None:
    for layers in street_frames[0]:
        depth, normals, sem = layers["camera/depth"], layers["camera/normals"], layers["camera/semantic"]
        estimate = normals_from_depth(depth, layers["camera/K"])
        # interior pixels: the 3x3 neighbourhood lies on one plane (same face normal and class, all hits;
        # the class check separates parallel planes like road and kerb top)
        same = np.ones(depth.shape, bool)
        for dv in (-1, 0, 1):
            for du in (-1, 0, 1):
                shifted = np.roll(np.roll(normals, dv, 0), du, 1)
                same &= np.all(np.abs(shifted - normals) < 1e-4, axis=-1) & (np.roll(np.roll(depth, dv, 0), du, 1) > 0)
                same &= np.roll(np.roll(sem, dv, 0), du, 1) == sem
        same[[0, -1], :] = same[:, [0, -1]] = False
        same &= np.linalg.norm(estimate, axis=-1) > 0.5
        assert same.sum() > 400
        cos = np.sum(estimate[same] * normals[same], axis=-1)
        assert np.mean(cos > np.cos(np.radians(3.0))) > 0.95, np.percentile(cos, [1, 5, 50])


def test_lidar_points_of_an_object_lie_inside_its_box(street_frames) -> None:
    checked = 0
    for layers in street_frames[0]:
        pts = layers["lidar/points"][:, :3].astype(np.float64)
        ego_from_lidar = np.linalg.inv(layers["lidar/lidar_from_ego"])
        pts_ego = pts @ ego_from_lidar[:3, :3].T + ego_from_lidar[:3, 3]
        inst, tracks, boxes = layers["lidar/instance"], layers["objects/track_id"], layers["objects/box"]
        mask = points_in_boxes_mask(pts_ego, boxes, eps=2e-3)  # (O, P)
        for row, track in enumerate(tracks):
            own = inst == track
            assert mask[row, own].all(), f"track {track}: points outside its box"
            checked += int(own.sum())
        # points not on any object never lie clearly inside a box (boxes shrunk by 5 cm)
        shrunk = boxes.copy()
        shrunk[:, 3:6] -= 0.1
        inside_any = points_in_boxes_mask(pts_ego, shrunk).any(axis=0)
        assert not inside_any[inst == -1].any()
        assert set(np.unique(inst[inst >= 0])) <= set(tracks.tolist())
    assert checked > 20


def test_instance_masks_match_the_projected_boxes(street_frames) -> None:
    best_fraction = 0.0
    for layers in street_frames[0]:
        K, cam_from_ego = layers["camera/K"], layers["camera/cam_from_ego"]
        inst, depth = layers["camera/instance"], layers["camera/depth"]
        v, u = np.mgrid[0:inst.shape[0], 0:inst.shape[1]]
        pixels = np.stack([u.ravel(), v.ravel()], 1).astype(float)
        for track, box in zip(layers["objects/track_id"], layers["objects/box"]):
            corners = box_corners(box[None])[0]  # (8, 3) ego frame
            cam = corners @ cam_from_ego[:3, :3].T + cam_from_ego[:3, 3]
            own = inst == track
            if not own.any():
                continue
            assert np.all(cam[:, 2] > 0.1)  # a visible object in front of the camera
            uv = cam[:, :2] / cam[:, 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
            hull = PolygonPath(uv[ConvexHull(uv).vertices])
            inside = hull.contains_points(pixels, radius=1.5).reshape(inst.shape) | \
                hull.contains_points(pixels, radius=-1.5).reshape(inst.shape)
            assert inside[own].all(), f"track {track}: instance pixels outside its projected box"
            interior = hull.contains_points(pixels).reshape(inst.shape)
            if interior.sum() >= 30 and np.all(depth[interior] > 0):
                best_fraction = max(best_fraction, float(np.mean(own[interior])))
    assert best_fraction > 0.6  # the unoccluded lead car fills most of its projected box


def _pixel_motion_target(frame_t: dict, frame_t1: dict, pose_t: np.ndarray, pose_t1: np.ndarray) -> tuple:
    """cam_{t+1}_from_cam_t and the per-pixel object translation (3, H, W) in camera t+1 (warp_frame's model)."""
    cam_from_ego, K = frame_t["camera/cam_from_ego"], frame_t["camera/K"]
    world_from_cam_t = pose_t @ np.linalg.inv(cam_from_ego)
    world_from_cam_t1 = pose_t1 @ np.linalg.inv(cam_from_ego)
    cam_t1_from_cam_t = np.linalg.inv(world_from_cam_t1) @ world_from_cam_t
    depth, inst = frame_t["camera/depth"], frame_t["camera/instance"]
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w]
    pts = np.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], -1).reshape(-1, 3)
    rigid = pts @ cam_t1_from_cam_t[:3, :3].T + cam_t1_from_cam_t[:3, 3]
    moved = rigid.copy()
    boxes_t1 = dict(zip(frame_t1["objects/track_id"].tolist(), frame_t1["objects/box"]))
    for track, box in zip(frame_t["objects/track_id"], frame_t["objects/box"]):
        sel = inst.ravel() == track
        if not sel.any() or int(track) not in boxes_t1:
            continue
        world_from_obj_t = pose_t @ _box_pose(box)
        world_from_obj_t1 = pose_t1 @ _box_pose(boxes_t1[int(track)])
        motion = np.linalg.inv(world_from_cam_t1) @ world_from_obj_t1 @ np.linalg.inv(world_from_obj_t) @ world_from_cam_t
        moved[sel] = pts[sel] @ motion[:3, :3].T + motion[:3, 3]
    return cam_t1_from_cam_t, (moved - rigid).T.reshape(3, h, w), moved[:, 2].reshape(h, w)


def test_warping_the_next_frame_reproduces_this_frame_on_static_and_moving_pixels() -> None:
    frames, _ = render_sequence(lead_vehicle_world(3, SMALL_CONFIG), EmbeddedRenderer((64, 208), lidar_beams=0), 2)
    f0, f1 = frames
    cam_t1_from_cam_t, translation, _ = _pixel_motion_target(f0, f1, f0["ego/world_from_ego"],
                                                                f1["ego/world_from_ego"])
    image_t1 = torch.from_numpy(f1["camera/rgb"].astype(np.float64) / 255).permute(2, 0, 1)[None]
    result = warp_frame(image_t1, torch.from_numpy(f0["camera/depth"].astype(np.float64))[None, None],
                        torch.from_numpy(f0["camera/K"])[None], torch.from_numpy(cam_t1_from_cam_t)[None],
                        object_translation=torch.from_numpy(translation)[None])
    warped = result.image[0].permute(1, 2, 0).numpy()
    valid = result.valid[0, 0].numpy()
    # occlusions: the point must be the visible surface in frame t+1 (nearest-pixel depth check),
    # and away from depth / instance edges where bilinear sampling mixes surfaces
    K, depth1, inst0 = f0["camera/K"], f1["camera/depth"], f0["camera/instance"]
    h, w = depth1.shape
    depth0 = f0["camera/depth"]
    v, u = np.mgrid[0:h, 0:w]
    pts0 = np.stack([(u - K[0, 2]) / K[0, 0] * depth0, (v - K[1, 2]) / K[1, 1] * depth0, depth0], -1).reshape(-1, 3)
    p1 = pts0 @ cam_t1_from_cam_t[:3, :3].T + cam_t1_from_cam_t[:3, 3] + translation.reshape(3, -1).T
    uu = np.clip(np.round(p1[:, 0] / np.maximum(p1[:, 2], 1e-6) * K[0, 0] + K[0, 2]).astype(int), 0, w - 1)
    vv = np.clip(np.round(p1[:, 1] / np.maximum(p1[:, 2], 1e-6) * K[1, 1] + K[1, 2]).astype(int), 0, h - 1)
    visible = (np.abs(depth1[vv, uu] - p1[:, 2]) < 0.03 * p1[:, 2]).reshape(h, w)
    smooth = np.ones((h, w), bool)
    for dv in (-1, 0, 1):
        for du in (-1, 0, 1):
            nb = np.roll(np.roll(depth0, dv, 0), du, 1)
            smooth &= (np.abs(nb - depth0) < 0.05 * depth0) & (np.roll(np.roll(inst0, dv, 0), du, 1) == inst0)
    use = valid & visible & smooth & (depth0 > 0)
    residual = np.abs(warped - f0["camera/rgb"] / 255.0).mean(axis=-1)
    moving = use & (inst0 >= 0) & np.any(np.abs(translation) > 0.05, axis=0)
    static = use & (inst0 < 0)
    assert static.sum() > 2000 and moving.sum() > 50
    assert np.median(residual[static]) < 0.02 and np.mean(residual[static]) < 0.04
    assert np.median(residual[moving]) < 0.03 and np.mean(residual[moving]) < 0.05
    # control: without object motion the moving pixels do not line up
    wrong = warp_frame(image_t1, torch.from_numpy(depth0.astype(np.float64))[None, None],
                       torch.from_numpy(K)[None], torch.from_numpy(cam_t1_from_cam_t)[None])
    wrong_res = np.abs(wrong.image[0].permute(1, 2, 0).numpy() - f0["camera/rgb"] / 255.0).mean(axis=-1)
    assert np.mean(wrong_res[moving]) > 2 * np.mean(residual[moving])


def test_typical_frames_show_road_sidewalk_buildings_sky_and_cars(street_frames) -> None:
    classes = set()
    for layers in street_frames[0]:
        classes |= set(np.unique(layers["camera/semantic"]).tolist())
    assert {ROAD, SIDEWALK, BUILDING, SKY, CAR} <= classes


def test_rendering_is_deterministic_and_seed_dependent() -> None:
    def run(seed: int) -> list[dict[str, np.ndarray]]:
        frames, _ = render_sequence(World.generate(seed, SMALL_CONFIG),
                                    EmbeddedRenderer((16, 48), lidar_beams=4, lidar_azimuth=64,
                                                     lidar_noise_m=0.02, lidar_dropout=0.1), 2)
        return frames

    a, b, c = run(11), run(11), run(12)
    for fa, fb in zip(a, b):
        assert fa.keys() == fb.keys()
        for key in fa:
            np.testing.assert_array_equal(fa[key], fb[key], err_msg=key)
    assert not np.array_equal(a[0]["camera/rgb"], c[0]["camera/rgb"])
    assert not np.array_equal(a[0]["ego/world_from_ego"], c[0]["ego/world_from_ego"])


@pytest.mark.parametrize("hw", [(32, 96), (64, 208), (7, 5)])
def test_camera_sizes_render(hw: tuple[int, int]) -> None:
    world = World.generate(0, SMALL_CONFIG)
    layers = EmbeddedRenderer(hw, lidar_beams=0).render(world.state())
    assert layers["camera/rgb"].shape == (*hw, 3) and "lidar/points" not in layers
    assert np.isclose(2 * np.degrees(np.arctan(hw[1] / 2 / layers["camera/K"][0, 0])), 90.0)


def test_frame_rays_are_the_rays_the_renderer_casts() -> None:
    """Casting frame_rays into the static town reproduces the rendered depth and LiDAR ranges of a
    world without moving objects (the benchmark's raw reference relies on this)."""
    from taskology.sim.renderer import _embree_scene

    world = World.generate(6, WorldConfig(blocks=2, cars=0, pedestrians=0))
    renderer = EmbeddedRenderer((16, 48), lidar_beams=4, lidar_azimuth=64, shadows=False)
    state = world.state()
    layers = renderer.render(state)
    origins, dirs, t_max = renderer.frame_rays(state)
    n_cam = 16 * 48
    assert origins.shape == dirs.shape == (n_cam + 4 * 64, 3) and origins.dtype == dirs.dtype == np.float32
    hit = _embree_scene(state.static.triangles).run(origins, dirs, dists=t_max.copy(), output=1)
    t = np.where(hit["primID"] >= 0, hit["tfar"].astype(np.float64), 0.0)
    depth = (t[:n_cam] * renderer._cam_z).astype(np.float32).reshape(16, 48)
    np.testing.assert_array_equal(depth, layers["camera/depth"])
    ranges = np.linalg.norm(layers["lidar/points"][:, :3].astype(np.float64), axis=1)
    np.testing.assert_allclose(np.sort(ranges), np.sort(t[n_cam:][t[n_cam:] > 0]), rtol=1e-5)
