"""Sensor models of the ego vehicle: a pinhole camera (OpenCV frame) and a spinning LiDAR.

Both are fixed rays in their own frame plus a mount (``cam_from_ego``, ``lidar_from_ego``); the
renderer rotates the rays into the world per frame.

Conventions: ego x forward, y left, z up, origin on the ground under the vehicle centre. Camera
OpenCV (x right, y down, z forward), pixel (row r, column c) looks through image point (u=c, v=r).

Example:
    >>> K = camera_intrinsics(64, 208, hfov_deg=90.0)
    >>> round(float(K[0, 0]), 9), float(K[0, 2])
    (104.0, 103.5)
"""
from __future__ import annotations

import numpy as np

#: camera position on the ego (x forward, y left, z up), metres, and its downward pitch.
CAMERA_POSITION_M = (0.8, 0.0, 1.6)
CAMERA_PITCH_DEG = 3.0
#: LiDAR position on the ego (roof), metres; its axes are the ego's.
LIDAR_POSITION_M = (0.0, 0.0, 1.9)
#: vertical field of view of a typical 32-beam sensor, degrees (top, bottom).
LIDAR_VFOV_DEG = (10.67, -30.67)


def camera_intrinsics(height: int, width: int, hfov_deg: float = 90.0) -> np.ndarray:
    """(3, 3) float64 pinhole K with square pixels, principal point at the image centre."""
    fx = (width / 2.0) / np.tan(np.radians(hfov_deg) / 2.0)
    return np.array([[fx, 0.0, (width - 1) / 2.0], [0.0, fx, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def default_cam_from_ego() -> np.ndarray:
    """(4, 4) float64 ego -> camera (OpenCV), camera at :data:`CAMERA_POSITION_M` pitched down."""
    # ego_from_cam rotation columns: camera x (right) = -ego y, camera y (down) = -ego z, camera z = ego x
    r = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    p = np.radians(CAMERA_PITCH_DEG)
    pitch = np.array([[np.cos(p), 0.0, np.sin(p)], [0.0, 1.0, 0.0], [-np.sin(p), 0.0, np.cos(p)]])  # about ego y
    ego_from_cam = np.eye(4)
    ego_from_cam[:3, :3] = pitch @ r
    ego_from_cam[:3, 3] = CAMERA_POSITION_M
    return np.linalg.inv(ego_from_cam)


def default_lidar_from_ego() -> np.ndarray:
    """(4, 4) float64 ego -> lidar: a pure translation, the LiDAR sits at :data:`LIDAR_POSITION_M`."""
    out = np.eye(4)
    out[:3, 3] = -np.asarray(LIDAR_POSITION_M)
    return out


def camera_rays(K: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit ray directions in the camera frame and their z components.

    Returns:
        dirs: (H*W, 3) float64 unit directions, row-major over pixels.
        z: (H*W,) float64 z component of each unit direction (planar depth = range * z).
    """
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    pix = np.stack([u.ravel(), v.ravel(), np.ones(height * width)], axis=1)
    d = pix @ np.linalg.inv(K).T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return d, d[:, 2].copy()


def lidar_rays(beams: int, azimuth_steps: int, vfov_deg: tuple[float, float] = LIDAR_VFOV_DEG) -> np.ndarray:
    """(beams * azimuth_steps, 3) float64 unit directions in the LiDAR frame, beam-major, beams
    evenly spaced from the top to the bottom elevation, azimuth from +x counter-clockwise."""
    top, bottom = vfov_deg
    elevation = np.radians(np.linspace(top, bottom, beams) if beams > 1 else np.array([(top + bottom) / 2]))
    azimuth = np.arange(azimuth_steps) * (2 * np.pi / azimuth_steps)
    el, az = np.meshgrid(elevation, azimuth, indexing="ij")
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1).reshape(-1, 3)
