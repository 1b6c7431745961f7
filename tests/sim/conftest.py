"""Shared scene for the simulator tests: a small street with a car driving ahead of the ego."""
from __future__ import annotations

import numpy as np
import pytest

from taskology.sim.renderer import EmbeddedRenderer
from taskology.sim.scenarios import lead_vehicle_world, render_sequence
from taskology.sim.world import SceneState


@pytest.fixture(scope="session")
def street_frames() -> tuple[list[dict[str, np.ndarray]], list[SceneState]]:
    """3 frames at 32x96 camera, 8x256 LiDAR, 10 Hz, lead car in view."""
    from taskology.sim.config import WorldConfig

    world = lead_vehicle_world(3, WorldConfig(blocks=2, cars=8, pedestrians=12))
    return render_sequence(world, EmbeddedRenderer((32, 96), lidar_beams=8, lidar_azimuth=256), 3)
