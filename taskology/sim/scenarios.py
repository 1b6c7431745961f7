"""Hand-arranged situations on top of a generated world, for tests, benchmarks and previews.

Example:
    >>> from taskology.sim.renderer import EmbeddedRenderer
    >>> world = lead_vehicle_world(3, WorldConfig(blocks=2, cars=2, pedestrians=0))
    >>> frames, states = render_sequence(world, EmbeddedRenderer((16, 48), lidar_beams=0), 2)
    >>> len(frames), int(states[0].track_id[0])
    (2, 0)
"""
from __future__ import annotations

import copy

import numpy as np

from taskology.sim.config import WorldConfig
from taskology.sim.meshes import CAR
from taskology.sim.renderer import EmbeddedRenderer
from taskology.sim.world import SceneState, World


def lead_vehicle_world(seed: int, config: WorldConfig | None = None, gap_m: float = 11.0,
                       speed_mps: float = 4.0) -> World:
    """A generated world whose first car drives ``gap_m`` ahead of the ego in the ego's lane at
    ``speed_mps`` (so a moving car is in view from the first frame)."""
    world = World.generate(seed, config or WorldConfig())
    lead = next(a for a in world.agents if a.class_id == CAR)
    lead.follower = copy.deepcopy(world.ego.follower)
    lead.follower.advance(gap_m)
    lead.route = world.ego.route
    lead.cruise = lead.speed = float(speed_mps)
    world.sync_poses()
    return world


def render_sequence(world: World, renderer: EmbeddedRenderer, frames: int,
                    dt: float = 0.1) -> tuple[list[dict[str, np.ndarray]], list[SceneState]]:
    """Render ``frames`` frames ``dt`` seconds apart; returns the layers and the scene states."""
    layers, states = [], []
    for f in range(frames):
        state = world.state()
        states.append(state)
        layers.append(renderer.render(state, f))
        world.step(dt)
    return layers, states
