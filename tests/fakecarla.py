"""An in-process fake of the ``carla`` module and a CARLA server, for the backend and SimActor tests.

Just enough of the API to drive :mod:`taskology.sim.carla_backend` without a network: a client, one
world with settings, a blueprint library (vehicles, pedestrians, the walker AI controller, cameras,
optionally the normals camera), actors that move nowhere, sensors that answer every tick, and a
traffic manager. Faults on demand:

- ``fake.down = True``: every request raises ``RuntimeError`` as a client timeout does;
  ``fake.restart()`` brings the server back as a fresh episode (new world id, default asynchronous
  settings, no actors), as a restarted server does. ``fake.down_at_tick = n`` takes it down at the
  n-th tick of the episode; ``fake.back_after = k`` restarts it once ``k`` version requests failed.
- ``fake.version``: what ``get_server_version()`` reports.
- ``fake.normals_camera``: whether ``sensor.camera.normals`` is in the blueprint library;
  ``fake.normal_bgra``: the (B, G, R) every normals pixel carries (default: world +z, up).
- ``fake.mute``: a sensor type id that stops sending data (a stall while the server answers).

A world object of an episode that ended (the server restarted) raises on every use, as CARLA's does.

Install it with ``monkeypatch.setitem(sys.modules, "carla", fake.module)``.
"""
from __future__ import annotations

import fnmatch
import itertools
import types
from typing import Any

import numpy as np

from taskology.sim import carla_convert as cc

SENSOR_TYPES = ("sensor.camera.rgb", "sensor.camera.depth", "sensor.camera.semantic_segmentation",
                "sensor.camera.instance_segmentation", "sensor.lidar.ray_cast_semantic")
#: depth code of every depth pixel (R channel): 1000 * 100 / (256**3 - 1) metres
DEPTH_CODE = 100


class FakeCarla:
    def __init__(self, *, version: str = "0.9.16", normals_camera: bool = False) -> None:
        self.version = version
        self.normals_camera = normals_camera
        self.normal_bgra = (255, 128, 128)
        self.down = False
        self.down_at_tick: int | None = None
        self.back_after: int | None = None
        self.refused = 0
        self.mute: str | None = None
        self.on_tick: Any = None          # called at every tick request (the client's thread), e.g. to look around
        self.unseen: set[int] = set()     # actor ids the snapshot does not have (spawned or destroyed meanwhile)
        self.episodes = itertools.count(1)
        self.clients: list[Any] = []
        self.connect_attempts = 0
        self.destroyed: list[int] = []
        self.tm_seeds: list[int] = []
        self.tm_sync: bool | None = None
        self.pedestrian_seeds: list[int] = []
        self.module = self._build_module()
        self.world = self.World(self)

    # ------------------------------------------------------------------ faults
    def check(self) -> None:
        if self.down:
            raise RuntimeError("time-out of 100ms while waiting for the simulator, make sure the simulator is "
                               "ready and connected to 127.0.0.1:2000")

    def restart(self) -> None:
        """The server comes back as a fresh episode: new world id, default settings, no actors."""
        self.world = self.World(self)
        self.down = False
        self.down_at_tick = self.back_after = None
        self.refused = 0

    # ------------------------------------------------------------------ module
    def _build_module(self) -> types.ModuleType:
        fake = self

        class Location:
            def __init__(self, x: float = 0.0, y: float = 0.0, z: float = 0.0) -> None:
                self.x, self.y, self.z = x, y, z

        class Rotation:
            def __init__(self, pitch: float = 0.0, yaw: float = 0.0, roll: float = 0.0) -> None:
                self.pitch, self.yaw, self.roll = pitch, yaw, roll

        class Transform:
            def __init__(self, location: Location | None = None, rotation: Rotation | None = None) -> None:
                self.location, self.rotation = location or Location(), rotation or Rotation()

            def get_matrix(self) -> list[list[float]]:
                r, loc = self.rotation, self.location
                return cc.matrix_from_carla_pose((loc.x, loc.y, loc.z), (r.pitch, r.yaw, r.roll)).tolist()

        class Client:
            def __init__(self, host: str, port: int) -> None:
                fake.clients.append(self)
                self.host, self.port, self.timeout = host, port, None

            def set_timeout(self, seconds: float) -> None:
                self.timeout = seconds

            def get_server_version(self) -> str:
                fake.connect_attempts += 1
                if fake.down and fake.back_after is not None:
                    fake.refused += 1
                    if fake.refused > fake.back_after:
                        fake.restart()
                fake.check()
                return fake.version

            def get_world(self) -> Any:
                fake.check()
                return fake.world

            def get_trafficmanager(self, port: int = 8000) -> Any:
                fake.check()
                tm = types.SimpleNamespace(get_port=lambda: 8000)
                tm.set_synchronous_mode = lambda on: (fake.check(), setattr(fake, "tm_sync", on))
                tm.set_random_device_seed = lambda seed: (fake.check(), fake.tm_seeds.append(seed))
                return tm

            def apply_batch_sync(self, commands: list[Any]) -> None:
                fake.check()
                for c in commands:
                    actor_id = c.actor if isinstance(c.actor, int) else c.actor.id   # DestroyActor(actor or id)
                    fake.world.actors.pop(actor_id, None)
                    fake.destroyed.append(actor_id)

        self.Location, self.Transform = Location, Transform
        module = types.ModuleType("carla")
        for cls in (Location, Rotation, Transform, Client):
            setattr(module, cls.__name__, cls)
        module.command = types.SimpleNamespace(DestroyActor=lambda actor: types.SimpleNamespace(actor=actor))
        return module

    # ------------------------------------------------------------------ server side
    class Blueprint:
        def __init__(self, name: str) -> None:
            self.id = name
            self.attributes: dict[str, str] = {"number_of_wheels": "4"} if name.startswith("vehicle.") else {}
            if not name.startswith("controller."):
                self.attributes["role_name"] = "default"
            if name.startswith("walker."):
                self.attributes["is_invincible"] = "true"

        def set_attribute(self, key: str, value: str) -> None:
            self.attributes[key] = value

        def get_attribute(self, key: str) -> str:
            return self.attributes[key]

        def has_attribute(self, key: str) -> bool:
            return key in self.attributes

    class Actor:
        def __init__(self, fake: FakeCarla, actor_id: int, bp: Any, transform: Any, parent: Any) -> None:
            self.fake, self.id, self.type_id, self.bp = fake, actor_id, bp.id, bp
            self.attributes = dict(bp.attributes)
            self.transform, self.parent = transform, parent
            walker = bp.id.startswith("walker.")
            extent = fake.Location(0.3, 0.3, 0.9) if walker else fake.Location(2, 1, 0.75)
            self.bounding_box = types.SimpleNamespace(location=fake.Location(0, 0, extent.z), extent=extent,
                                                      rotation=fake.module.Rotation())
            self.semantic_tags = [12] if walker else [14]
            self.callback: Any = None
            self.autopilot: tuple[bool, int] | None = None
            self.calls: list[tuple[str, Any]] = []   # controller: start, go_to_location, set_max_speed, stop

        def get_transform(self) -> Any:
            return self.transform

        def get_velocity(self) -> Any:
            return self.fake.Location(2.0, 1.0, 0.0)

        def set_autopilot(self, on: bool, port: int) -> None:
            self.autopilot = (on, port)

        def listen(self, callback: Any) -> None:
            self.callback = callback

        def stop(self) -> None:
            self.fake.check()
            self.callback = None
            self.calls.append(("stop", None))

        def start(self) -> None:
            self.calls.append(("start", None))

        def go_to_location(self, location: Any) -> None:
            self.calls.append(("go_to_location", (location.x, location.y, location.z)))

        def set_max_speed(self, speed: float) -> None:
            self.calls.append(("set_max_speed", speed))

    class World:
        def __init__(self, fake: FakeCarla) -> None:
            self.fake = fake
            self.id = next(fake.episodes)
            self.settings = types.SimpleNamespace(synchronous_mode=False, fixed_delta_seconds=None, substepping=True,
                                                  max_substep_delta_time=0.01, max_substeps=10)
            self.applied: list[Any] = []
            self.actors: dict[int, Any] = {}
            self.spawned: list[Any] = []
            self.frame = 100
            self.ticks = 0
            self.next_id = itertools.count(70000)
            self.nav = itertools.count()

        def _check(self) -> None:
            self.fake.check()
            if self is not self.fake.world:
                raise RuntimeError("trying to operate on an expired episode: the simulator was restarted")

        def get_settings(self) -> Any:
            self._check()
            return types.SimpleNamespace(**vars(self.settings))

        def apply_settings(self, settings: Any) -> None:
            self._check()
            self.settings = settings
            self.applied.append(types.SimpleNamespace(**vars(settings)))

        def get_blueprint_library(self) -> Any:
            fake = self.fake
            self._check()
            names = ["vehicle.b", "vehicle.a", "walker.pedestrian.0002", "walker.pedestrian.0001",
                     "controller.ai.walker", *SENSOR_TYPES]
            if fake.normals_camera:
                names.append("sensor.camera.normals")

            class Library:
                def filter(self, pattern: str) -> list[Any]:
                    return [fake.Blueprint(n) for n in names if fnmatch.fnmatchcase(n, pattern)]

                def find(self, name: str) -> Any:
                    if name not in names:
                        raise IndexError(f"blueprint {name!r} not found")
                    return fake.Blueprint(name)
            return Library()

        def get_map(self) -> Any:
            self._check()
            Transform, Location = self.fake.Transform, self.fake.Location
            points = [Transform(Location(0, 0, 0)), Transform(Location(10, 3, 0), self.fake.module.Rotation(yaw=90))]
            return types.SimpleNamespace(name="Carla/Maps/FakeTown", get_spawn_points=lambda: points)

        def spawn_actor(self, bp: Any, transform: Any, attach_to: Any = None) -> Any:
            self._check()
            actor = self.fake.Actor(self.fake, next(self.next_id), bp, transform, attach_to)
            self.actors[actor.id] = actor
            self.spawned.append(actor)
            return actor

        try_spawn_actor = spawn_actor

        def set_pedestrians_seed(self, seed: int) -> None:
            self.fake.pedestrian_seeds.append(seed)

        def get_random_location_from_navigation(self) -> Any:
            self._check()
            k = next(self.nav)
            return self.fake.Location(5.0 + k, -2.0 - k, 0.0)

        def tick(self, seconds: float = 10.0) -> int:
            fake = self.fake
            if fake.on_tick is not None:
                fake.on_tick()
            self._check()
            self.ticks += 1
            if fake.down_at_tick is not None and self.ticks >= fake.down_at_tick:
                fake.down = True
                fake.check()
            self.frame += 1
            for actor in list(self.actors.values()):
                if actor.callback is not None and actor.type_id != fake.mute:
                    actor.callback(fake.measurement(actor, self.frame))
            return self.frame

        def get_snapshot(self) -> Any:
            self._check()
            return types.SimpleNamespace(find=lambda i: self.actors.get(i) if i not in self.fake.unseen else None)

        def get_actors(self) -> Any:
            self._check()

            class ActorList(list):
                def filter(self, pattern: str) -> list[Any]:
                    return [a for a in self if fnmatch.fnmatchcase(a.type_id, pattern)]
            return ActorList(self.actors.values())

    # ------------------------------------------------------------------ sensor data
    def measurement(self, sensor: Any, frame: int) -> Any:
        attrs = sensor.bp.attributes
        if sensor.type_id.startswith("sensor.lidar"):
            rec = np.zeros(3, cc.SEMANTIC_LIDAR_DTYPE)
            rec["x"], rec["y"], rec["z"], rec["cos_inc"] = [5, 6, 7], [1, 2, 3], [0, 0, 0], [1, 1, 1]
            rec["actor_id"], rec["tag"] = [70001, 0, 0], [14, 1, 1]
            return types.SimpleNamespace(frame=frame, raw_data=rec.tobytes())
        h, w = int(attrs["image_size_y"]), int(attrs["image_size_x"])
        img = np.zeros((h, w, 4), np.uint8)
        if sensor.type_id.endswith("normals"):
            img[..., :3] = self.normal_bgra
            return types.SimpleNamespace(frame=frame, raw_data=img.tobytes())
        img[..., 2] = 1 if sensor.type_id.endswith("segmentation") else DEPTH_CODE    # road tag / depth code
        if sensor.type_id.endswith("segmentation"):
            img[0, 0, 2] = 14                                                  # a car pixel, in both label cameras
        if sensor.type_id.endswith("instance_segmentation"):
            img[0, 0, :2] = [0x11, 0x71]                                       # actor 70001: B, G = 0x11, 0x71
        return types.SimpleNamespace(frame=frame, raw_data=img.tobytes())
