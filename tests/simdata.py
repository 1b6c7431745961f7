"""Tiny simulator shards for tests (32x96, few frames; without LiDAR, and with a 32-beam LiDAR), generated once
per test session."""
from __future__ import annotations

from pathlib import Path

SIM_HW = (32, 96)
SIM_SEQUENCES = 5
SIM_FRAMES = 8
LIDAR_SEQUENCES = 3
LIDAR_FRAMES = 5


def _render(root: Path, sequences: int, frames: int, lidar_beams: int) -> Path:
    from taskology.sim.generate import generate_shard

    root.mkdir(parents=True, exist_ok=True)
    if len(list(root.glob("*.h5"))) < sequences:
        for index in range(sequences):
            generate_shard(root, seed=0, index=index, frames=frames, camera_hw=SIM_HW, lidar_beams=lidar_beams,
                           overwrite=True)
    return root


def make_sim_root(root: Path) -> Path:
    """Render ``SIM_SEQUENCES`` sequences of ``SIM_FRAMES`` frames without LiDAR into ``root`` (idempotent)."""
    return _render(root, SIM_SEQUENCES, SIM_FRAMES, 0)


def make_lidar_root(root: Path) -> Path:
    """Render ``LIDAR_SEQUENCES`` sequences of ``LIDAR_FRAMES`` frames with camera and 32-beam LiDAR into
    ``root`` (idempotent)."""
    return _render(root, LIDAR_SEQUENCES, LIDAR_FRAMES, 32)
