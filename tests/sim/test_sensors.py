"""Sensor models: intrinsics, mounts and ray patterns worked out by hand."""
from __future__ import annotations

import numpy as np

from taskology.sim import sensors


def test_intrinsics_give_a_90_degree_horizontal_fov() -> None:
    K = sensors.camera_intrinsics(64, 208)
    np.testing.assert_allclose(K, [[104.0, 0, 103.5], [0, 104.0, 31.5], [0, 0, 1]])


def test_camera_rays_pass_through_their_pixels() -> None:
    K = sensors.camera_intrinsics(4, 6, hfov_deg=60.0)
    dirs, z = sensors.camera_rays(K, 4, 6)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0)
    np.testing.assert_allclose(z, dirs[:, 2])
    uv = dirs[:, :2] / dirs[:, 2:] * K[0, 0] + K[:2, 2]
    v, u = np.mgrid[0:4, 0:6]
    np.testing.assert_allclose(uv, np.stack([u.ravel(), v.ravel()], 1), atol=1e-9)


def test_camera_mount_looks_forward_and_slightly_down() -> None:
    cam_from_ego = sensors.default_cam_from_ego()
    np.testing.assert_allclose(cam_from_ego[:3, :3] @ cam_from_ego[:3, :3].T, np.eye(3), atol=1e-12)
    ego_from_cam = np.linalg.inv(cam_from_ego)
    np.testing.assert_allclose(ego_from_cam[:3, 3], sensors.CAMERA_POSITION_M)
    forward = ego_from_cam[:3, :3] @ [0, 0, 1.0]  # optical axis in the ego frame
    pitch = np.radians(sensors.CAMERA_PITCH_DEG)
    np.testing.assert_allclose(forward, [np.cos(pitch), 0, -np.sin(pitch)], atol=1e-12)
    np.testing.assert_allclose(ego_from_cam[:3, :3] @ [1.0, 0, 0], [0, -1, 0], atol=1e-12)  # image right = ego right


def test_lidar_rays_span_the_vertical_field_of_view() -> None:
    dirs = sensors.lidar_rays(32, 8).reshape(32, 8, 3)
    elevation = np.degrees(np.arcsin(dirs[..., 2]))
    np.testing.assert_allclose(elevation[0], 10.67)
    np.testing.assert_allclose(elevation[-1], -30.67)
    np.testing.assert_allclose(np.degrees(np.arctan2(dirs[0, :, 1], dirs[0, :, 0])) % 360, np.arange(8) * 45.0,
                               atol=1e-9)
    np.testing.assert_allclose(sensors.default_lidar_from_ego()[:3, 3], -np.asarray(sensors.LIDAR_POSITION_M))
