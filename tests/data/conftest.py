"""Fixtures of the data-store tests: small synthetic shards with physically shaped random layers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from taskology.data.shard import write_shard


def rotation_z(yaw: float) -> np.ndarray:
    """(3, 3) float64 rotation about +z by ``yaw`` radians."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def synthetic_layers(frames: int = 4, hw: tuple[int, int] = (32, 96), seed: int = 0, *, camera: bool = True,
                     lidar: bool = True, objects: bool = True) -> dict[str, np.ndarray]:
    """All layers of a random but physically shaped sequence (whole arrays with offsets).

    Depth positive with some 0 (sky) pixels, unit normals facing the camera, rigid poses, ragged
    lidar/object rows of varying (sometimes zero) length.
    """
    rng = np.random.default_rng(seed)
    h, w = hw
    layers: dict[str, np.ndarray] = {}
    if camera:
        depth = rng.uniform(1.0, 80.0, size=(frames, h, w)).astype(np.float32)
        depth[:, : h // 4] = 0.0
        normals = rng.normal(size=(frames, h, w, 3)).astype(np.float32)
        normals[..., 2] = -np.abs(normals[..., 2]) - 0.1
        normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
        layers.update({
            "camera/rgb": rng.integers(0, 256, size=(frames, h, w, 3), dtype=np.uint8),
            "camera/depth": depth,
            "camera/normals": normals.astype(np.float32),
            "camera/semantic": rng.choice(np.array([1, 2, 3, 11, 14], np.uint8), size=(frames, h, w)),
            "camera/instance": rng.integers(-1, 5, size=(frames, h, w)).astype(np.int32),
            "camera/K": np.array([[w / 2, 0, w / 2], [0, w / 2, h / 2], [0, 0, 1]], dtype=np.float64),
            "camera/cam_from_ego": np.array([[0, -1, 0, 0], [0, 0, -1, 1.6], [1, 0, 0, -0.5], [0, 0, 0, 1]],
                                            dtype=np.float64),
        })
    poses = np.stack([np.eye(4) for _ in range(frames)])
    for f in range(frames):
        poses[f, :3, :3] = rotation_z(0.05 * f)
        poses[f, :3, 3] = [1.5 * f, 0.2 * f, 0.0]
    layers["ego/world_from_ego"] = poses
    if lidar:
        counts = rng.integers(0, 200, size=frames)
        counts[0] = 150
        if frames > 2:
            counts[2] = 0
        total = int(counts.sum())
        points = rng.uniform(-50, 50, size=(total, 4)).astype(np.float32)
        points[:, 3] = rng.uniform(0, 1, size=total)
        layers.update({
            "lidar/points": points,
            "lidar/semantic": rng.choice(np.array([1, 3, 14], np.uint8), size=total),
            "lidar/instance": rng.integers(-1, 5, size=total).astype(np.int32),
            "lidar/offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            "lidar/lidar_from_ego": np.eye(4),
        })
        layers["lidar/lidar_from_ego"][2, 3] = -1.8
    if objects:
        counts = rng.integers(1, 5, size=frames)
        total = int(counts.sum())
        boxes = np.column_stack([rng.uniform(-30, 30, (total, 3)), rng.uniform(0.5, 5, (total, 3)),
                                 rng.uniform(-np.pi, np.pi, total)])
        layers.update({
            "objects/track_id": np.concatenate([np.arange(c) for c in counts]).astype(np.int32),
            "objects/class_id": rng.choice(np.array([12, 14], np.uint8), size=total),
            "objects/box": boxes,
            "objects/velocity": rng.normal(size=(total, 3)).astype(np.float32),
            "objects/offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        })
    return layers


def make_shard(directory: Path, sequence_id: str, frames: int = 4, seed: int = 0, **kwargs: object) -> Path:
    layers = synthetic_layers(frames, seed=seed, **kwargs)  # type: ignore[arg-type]
    return write_shard(directory / f"{sequence_id}.h5", layers, sequence_id=sequence_id, frame_rate=10.0,
                       generator={"backend": "synthetic", "seed": seed, "config": {"frames": frames}})


@pytest.fixture
def shard_path(tmp_path: Path) -> Path:
    """One complete shard (all groups, 4 frames, 32x96)."""
    return make_shard(tmp_path, "seq0000")


@pytest.fixture
def dataset_root(tmp_path: Path) -> Path:
    """A directory of 5 complete shards of 6 frames each (different seeds)."""
    root = tmp_path / "data"
    root.mkdir()
    for i in range(5):
        make_shard(root, f"seq{i:04d}", frames=6, seed=i)
    return root
