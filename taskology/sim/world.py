"""The world model: a seeded town with moving vehicles, pedestrians and the ego vehicle.

The world knows nothing about rendering (one world model, several backends): :meth:`World.state` returns a
:class:`SceneState` (static meshes + dynamic object instances with poses, classes, track ids and
velocities) that any renderer turns into named layers; :meth:`World.step` moves the agents.

Example:
    >>> world = World.generate(0, WorldConfig(blocks=2, cars=3, pedestrians=2))
    >>> state = world.state()
    >>> state.world_from_object.shape, state.track_id.tolist()
    ((5, 4, 4), [0, 1, 2, 3, 4])
    >>> world.step(0.1)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taskology.sim import agents as ag
from taskology.sim import meshes
from taskology.sim.config import WorldConfig
from taskology.sim.meshes import MeshAsset
from taskology.sim.town import Town

_CAR_KINDS = ("hatchback", "sedan", "sedan", "suv", "van")
#: how far ahead a vehicle looks for a leader or a pedestrian, metres.
_LOOKAHEAD_M = 14.0
#: vehicles slow to this speed for a turn within this distance ahead.
_TURN_SPEED_MPS = 3.0
_TURN_LOOKAHEAD_M = 10.0


def pose_matrix(x: float, y: float, z: float, yaw: float) -> np.ndarray:
    """world_from_object (4, 4) float64 for a level object at (x, y, z) with heading ``yaw`` (rad)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0, x], [s, c, 0, y], [0, 0, 1, z], [0, 0, 0, 1]], np.float64)


def asset_boxes(assets: list[MeshAsset], asset_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) centres and (N, 3) sizes (l, w, h) of the object-frame mesh boxes of ``assets[asset_index]``."""
    boxes = [assets[a].box() for a in asset_index]
    return (np.array([c for c, _ in boxes], np.float64).reshape(-1, 3),
            np.array([z for _, z in boxes], np.float64).reshape(-1, 3))


@dataclass(frozen=True)
class SceneState:
    """Everything a renderer needs for one frame.

    Attributes:
        time: seconds since the start of the sequence.
        static: merged static meshes (world frame); the same object for the whole sequence.
        assets: dynamic object meshes (object frame); the same list for the whole sequence.
        world_from_ego: (4, 4) float64 ego pose.
        world_from_object: (N, 4, 4) float64 object poses.
        asset_index: (N,) int64 index into ``assets``.
        track_id: (N,) int32 stable object ids.
        class_id: (N,) uint8 CARLA tag ids.
        velocity: (N, 3) float64 world-frame velocity, m/s.
        ego_velocity: (3,) float64 world-frame ego velocity, m/s.
        sun_direction: (3,) float64 unit vector towards the sun, world frame.
        box_centre, box_size: (N, 3) float64 object-frame box centre and (l, w, h) of each object's
            mesh, or None to compute them from ``assets`` (:meth:`World.state` passes cached ones).
    """

    time: float
    static: MeshAsset
    assets: list[MeshAsset]
    world_from_ego: np.ndarray
    world_from_object: np.ndarray
    asset_index: np.ndarray
    track_id: np.ndarray
    class_id: np.ndarray
    velocity: np.ndarray
    ego_velocity: np.ndarray
    sun_direction: np.ndarray
    box_centre: np.ndarray | None = None
    box_size: np.ndarray | None = None

    def boxes_in_ego(self) -> np.ndarray:
        """(N, 7) float64 boxes (x, y, z, l, w, h, yaw) in the ego frame, z at the centre, exactly
        enclosing each object's mesh (objects and ego are level, so only yaw differs)."""
        ego_from_world = np.linalg.inv(self.world_from_ego)
        n = len(self.track_id)
        if n == 0:
            return np.zeros((0, 7))
        if self.box_centre is not None and self.box_size is not None:
            centre, size = self.box_centre, self.box_size  # (N, 3) object frame
        else:
            centre, size = asset_boxes(self.assets, self.asset_index)
        ego_from_object = ego_from_world[None] @ self.world_from_object  # (N, 4, 4)
        c = np.einsum("nij,nj->ni", ego_from_object[:, :3, :3], centre) + ego_from_object[:, :3, 3]
        yaw = np.arctan2(ego_from_object[:, 1, 0], ego_from_object[:, 0, 0])
        return np.concatenate([c, size, yaw[:, None]], axis=1)


class World:
    """A generated town with agents; deterministic given (seed, config)."""

    def __init__(self, town: Town, assets: list[MeshAsset], agents: list[ag.Agent], ego: ag.Agent,
                 config: WorldConfig) -> None:
        self.town = town
        self.assets = assets
        self.agents = agents
        self.ego = ego
        self.config = config
        self.time = 0.0
        self.sun_direction = np.array([0.0, 0.0, 1.0])
        self._xy: np.ndarray | None = None
        self._yaw = np.zeros(0)
        self._is_vehicle = np.zeros(0, bool)
        #: (asset_index, box centres, box sizes) of the agents, read-only, shared by the states
        self._boxes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @classmethod
    def generate(cls, seed: int, config: WorldConfig | None = None) -> World:
        """Build the town, its vehicles, pedestrians and the ego from ``seed``."""
        config = config or WorldConfig()
        root = np.random.SeedSequence(int(seed))
        town_seed, agent_seed, ego_seed = root.spawn(3)
        town = Town.generate(np.random.default_rng(town_seed), config)
        rng = np.random.default_rng(agent_seed)
        assets: list[MeshAsset] = []
        agents: list[ag.Agent] = []
        ego_rng = np.random.default_rng(ego_seed)
        ego_follower, ego_route, _ = ag.start_vehicle_route(town, ego_rng)
        ego_speed = float(ego_rng.uniform(*config.ego_speed_mps))
        ego = ag.Agent(-1, meshes.CAR, -1, "vehicle", ego_speed, ego_speed, ego_follower, ego_route, ego_rng)
        taken = [ego_follower.position()]
        for _ in range(config.cars):
            agent_rng = np.random.default_rng(rng.integers(2**63))
            for _attempt in range(20):
                follower, route, _ = ag.start_vehicle_route(town, agent_rng)
                if min(np.linalg.norm(follower.position() - p) for p in taken) > 9.0:
                    break
            taken.append(follower.position())
            if agent_rng.random() < config.truck_fraction:
                kind = "truck" if agent_rng.random() < 0.5 else "bus"
            else:
                kind = _CAR_KINDS[int(agent_rng.integers(len(_CAR_KINDS)))]
            assets.append(meshes.build_vehicle(agent_rng, kind))
            cruise = float(agent_rng.uniform(*config.car_speed_mps))
            agents.append(ag.Agent(len(agents), meshes.VEHICLE_KINDS[kind][0], len(assets) - 1, "vehicle", cruise,
                                   cruise, follower, route, agent_rng))
        for _ in range(config.pedestrians):
            agent_rng = np.random.default_rng(rng.integers(2**63))
            follower, route = ag.start_walk_route(town, agent_rng)
            assets.append(meshes.build_pedestrian(agent_rng))
            cruise = float(agent_rng.uniform(*config.pedestrian_speed_mps))
            agents.append(ag.Agent(len(agents), meshes.PEDESTRIAN, len(assets) - 1, "pedestrian", cruise, cruise,
                                   follower, route, agent_rng))
        world = cls(town, assets, agents, ego, config)
        elevation, azimuth = np.radians(rng.uniform(35.0, 60.0)), rng.uniform(0.0, 2 * np.pi)
        world.sun_direction = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                                        np.sin(elevation)])
        world._extend_routes()
        return world

    # ------------------------------------------------------------------ dynamics
    def _extend_routes(self) -> None:
        for agent in [self.ego, *self.agents]:
            while agent.follower.remaining < 40.0:
                if agent.kind == "vehicle":
                    ag.extend_vehicle_route(self.town, agent)
                else:
                    ag.extend_walk_route(self.town, agent)

    def _target_speeds(self, everyone: list[ag.Agent]) -> np.ndarray:
        """(M,) cruise speeds, reduced before turns and to keep a gap to a vehicle ahead in the same
        lane or a pedestrian in the way (pedestrians' rows are unused)."""
        positions, headings, is_vehicle = self._xy, self._yaw, self._is_vehicle
        fwd = np.stack([np.cos(headings), np.sin(headings)], axis=1)  # (M, 2)
        rel = positions[None, :, :] - positions[:, None, :]  # (M, M, 2): row i sees agent j
        ahead = np.einsum("ijk,ik->ij", rel, fwd)
        lateral = np.abs(rel[..., 0] * -fwd[:, 1:2] + rel[..., 1] * fwd[:, 0:1])
        same_dir = np.cos(headings[None, :] - headings[:, None]) > 0.7
        blocking = (ahead > 0.5) & (ahead < _LOOKAHEAD_M) & (
            (is_vehicle[None, :] & same_dir & (lateral < 1.6)) | (~is_vehicle[None, :] & (lateral < 1.3)))
        np.fill_diagonal(blocking, False)
        cruise = np.array([a.cruise for a in everyone])
        turn_ahead = np.array([abs(np.sin((a.follower.heading(_TURN_LOOKAHEAD_M) - h) / 2)) > 0.2 if v else False
                               for a, h, v in zip(everyone, headings, is_vehicle)])
        cruise = np.where(turn_ahead, np.minimum(cruise, _TURN_SPEED_MPS), cruise)
        gap = np.where(blocking, ahead, np.inf).min(axis=1)
        return np.where(np.isfinite(gap), np.clip((gap - 7.0) * 0.8, 0.0, cruise), cruise)

    def step(self, dt: float) -> None:
        """Advance time by ``dt`` seconds: move along paths at the current speeds (the velocities of
        the last :meth:`state`), extend routes, then set the speeds of the next interval (gap keeping)."""
        everyone = [self.ego, *self.agents]
        for agent in everyone:
            agent.follower.advance(agent.speed * dt)
        self._extend_routes()
        self.time += dt
        self.sync_poses()
        targets = self._target_speeds(everyone)
        for agent, target in zip(everyone, targets):
            if agent.kind == "vehicle":
                agent.speed = min(max(float(target), agent.speed - 5.0 * dt), agent.speed + 2.0 * dt)

    # ------------------------------------------------------------------ snapshot
    def sync_poses(self) -> None:
        """Cache (x, y) and yaw of the ego (row 0) and every agent; :meth:`step` calls it, and so must
        code that edits agents' paths by hand (see :mod:`taskology.sim.scenarios`)."""
        everyone = [self.ego, *self.agents]
        self._xy = np.array([a.follower.position() for a in everyone]).reshape(-1, 2)
        self._yaw = np.array([a.follower.heading() for a in everyone])
        self._is_vehicle = np.array([a.kind == "vehicle" for a in everyone])

    def _poses(self) -> tuple[np.ndarray, np.ndarray]:
        """world_from_object (M, 4, 4) and world velocity (M, 3) of the ego (row 0) and the agents."""
        if getattr(self, "_xy", None) is None or len(self._xy) != len(self.agents) + 1:
            self.sync_poses()
        xy, yaw = self._xy, self._yaw
        z = np.where(self._is_vehicle, 0.0, self.town.ground_height(xy))
        c, s = np.cos(yaw), np.sin(yaw)
        poses = np.zeros((len(yaw), 4, 4))
        poses[:, 0, 0], poses[:, 0, 1], poses[:, 1, 0], poses[:, 1, 1] = c, -s, s, c
        poses[:, 2, 2] = poses[:, 3, 3] = 1.0
        poses[:, 0, 3], poses[:, 1, 3], poses[:, 2, 3] = xy[:, 0], xy[:, 1], z
        speed = np.array([a.speed for a in [self.ego, *self.agents]])
        velocity = np.stack([c * speed, s * speed, np.zeros_like(speed)], axis=1)
        return poses, velocity

    def state(self) -> SceneState:
        """Snapshot of the current frame (poses are copies; later steps do not change it)."""
        poses, velocities = self._poses()
        n = len(self.agents)
        asset_index = np.array([a.asset for a in self.agents], np.int64)
        if self._boxes is None or not np.array_equal(self._boxes[0], asset_index):
            centre, size = asset_boxes(self.assets, asset_index)
            centre.flags.writeable = size.flags.writeable = False
            self._boxes = (asset_index.copy(), centre, size)
        _, centre, size = self._boxes
        return SceneState(
            time=self.time,
            static=self.town.static,
            assets=self.assets,
            world_from_ego=poses[0],
            world_from_object=poses[1:].reshape(n, 4, 4),
            asset_index=asset_index,
            track_id=np.array([a.track_id for a in self.agents], np.int32),
            class_id=np.array([a.class_id for a in self.agents], np.uint8),
            velocity=velocities[1:].reshape(n, 3),
            ego_velocity=velocities[0],
            sun_direction=self.sun_direction.copy(),
            box_centre=centre,
            box_size=size,
        )
