"""Tiny simulator shards for tests (32x96, few frames; without LiDAR, and with a 32-beam LiDAR), generated once
per test session."""
from __future__ import annotations

from pathlib import Path

SIM_HW = (32, 96)
SIM_SEQUENCES = 5
SIM_FRAMES = 8


def make_sim_root(root: Path) -> Path:
    """Render ``SIM_SEQUENCES`` sequences of ``SIM_FRAMES`` frames into ``root`` (idempotent)."""
    from taskology.sim.generate import generate_shard

    root.mkdir(parents=True, exist_ok=True)
    if len(list(root.glob("*.h5"))) < SIM_SEQUENCES:
        for index in range(SIM_SEQUENCES):
            generate_shard(root, seed=0, index=index, frames=SIM_FRAMES, camera_hw=SIM_HW, lidar_beams=0,
                           overwrite=True)
    return root


LIDAR_SEQUENCES = 3
LIDAR_FRAMES = 4


def make_lidar_root(root: Path) -> Path:
    """Render ``LIDAR_SEQUENCES`` sequences of ``LIDAR_FRAMES`` frames with camera and 32-beam LiDAR into
    ``root`` (idempotent)."""
    from taskology.sim.generate import generate_shard

    root.mkdir(parents=True, exist_ok=True)
    if len(list(root.glob("*.h5"))) < LIDAR_SEQUENCES:
        for index in range(LIDAR_SEQUENCES):
            generate_shard(root, seed=0, index=index, frames=LIDAR_FRAMES, camera_hw=SIM_HW, lidar_beams=32,
                           overwrite=True)
    return root
