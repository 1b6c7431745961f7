"""Tiny simulator shards for tests (32x96, few frames, no LiDAR), generated once per test session."""
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
