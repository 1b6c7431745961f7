"""CARLA backend: record driving sequences from a CARLA server into the shard schema.

The ``carla`` package is an optional extra (``pip install 'taskology[carla]'``) and is imported lazily;
the server cannot run on the project's CI machines, so the network path is exercised against an
in-process fake server in the tests and against a real one only by tests marked ``carla``. The pure
conversions (images, frames, boxes, normals) are in :mod:`taskology.sim.carla_convert`.

A :class:`CarlaSession` is one connection in synchronous mode:

- **Version.** On connect the server's version is checked: older than 0.9.16 is refused (the instance
  camera's actor-id encoding read here is CARLA 0.9.16's; older servers encode Unreal's own ids).
- **Synchronous mode** with ``fixed_delta_seconds = 1 / frame_rate`` and physics substeps of at most
  :data:`PHYSICS_SUBSTEP_S` (so frame rates below :data:`MIN_FRAME_RATE_HZ` are refused); the traffic
  manager synchronous too. :meth:`CarlaSession.close` restores the settings the server had; a server
  found synchronous was left so by a client that died (one client per server) and is given back
  asynchronous with a variable time-step, CARLA's default.
- **Reconnect.** When a recording fails and the server no longer answers, or answers with another
  episode (it restarted), the session reconnects with exponential back-off (up to
  ``CarlaOptions.reconnect_s``) and records the sequence again from scratch; a half-written shard never
  appears (:class:`~taskology.data.shard.ShardWriter` writes a temp file and links it when complete).
- **Traffic.** Per sequence an ego vehicle and up to ``vehicles`` others on the traffic manager's
  autopilot, and up to ``walkers`` pedestrians driven by ``controller.ai.walker`` to random navigation
  points; all seeded by ``(seed, index)``, all destroyed when the sequence ends.
- **Normals.** If the server offers ``sensor.camera.normals`` its image is used
  (:func:`~taskology.sim.carla_convert.normals_from_carla_bgra`), else normals are estimated from depth.
  The shard's generator description says which (``config.normals``).

A shard's generator description holds everything that decides its content (seed, index, frames, sensors,
traffic, map, server version, normals source), not the server's address: a rerun against another server
of the same map and version finds the same shards complete (:func:`generate_carla_shards` skips them).

Example (needs a server)::

    path = generate_carla_sequence("data/carla", host="127.0.0.1:2000", index=0, seed=0, frames=20)
"""
from __future__ import annotations

import itertools
import math
import queue
import random
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

import numpy as np

from taskology.data.schema import MOVABLE_CLASS_IDS
from taskology.errors import DataError, SimError
from taskology.sim.carla_convert import (
    FLIP_Y,
    CarlaObject,
    SensorRig,
    bgra_from_raw,
    carla_pose_from_matrix,
    default_sensor_rig,
    fov_from_intrinsics,
    frame_layers_from_carla,
    mount_from_cam_from_ego,
)

#: the oldest server whose sensor encodings the conversions read correctly.
MIN_SERVER_VERSION = (0, 9, 16)
#: the camera sensors we attach, name -> CARLA blueprint.
CAMERA_BLUEPRINTS = {"rgb": "sensor.camera.rgb", "depth": "sensor.camera.depth",
                     "semantic": "sensor.camera.semantic_segmentation",
                     "instance": "sensor.camera.instance_segmentation"}
#: attached as well when the server's blueprint library has it.
NORMALS_BLUEPRINT = "sensor.camera.normals"
WALKER_CONTROLLER = "controller.ai.walker"
#: actors farther than this from the ego are not written to ``objects/``, metres.
OBJECT_RANGE_M = 80.0
#: physics substep the session asks for, seconds, and the most substeps CARLA allows per tick.
PHYSICS_SUBSTEP_S = 0.01
MAX_PHYSICS_SUBSTEPS = 16
#: the lowest frame rate whose tick CARLA's physics substeps can cover, Hz.
MIN_FRAME_RATE_HZ = 1.0 / (PHYSICS_SUBSTEP_S * MAX_PHYSICS_SUBSTEPS)
#: a sequence interrupted by this many server restarts in a row is given up.
MAX_RECORD_ATTEMPTS = 5
#: suffix of a shard file set aside as invalid (the SimActor's too)
CORRUPT_SUFFIX = ".corrupt"
#: ``role_name`` of every actor a session spawns: a session that finds the server left synchronous by a
#: client that died destroys that client's actors by it (they would block the seeded spawn points).
ROLE_NAME = "taskology"


class CarlaVersionError(SimError):
    """The server is older than :data:`MIN_SERVER_VERSION` (never retried)."""


class SessionStopped(Exception):
    """The session's stop event was set while it waited for the server."""


# ------------------------------------------------------------------------------ pure decisions
def import_carla() -> ModuleType:
    """Import the optional ``carla`` package, or raise :class:`SimError` saying how to install it."""
    try:
        import carla
    except ImportError as exc:
        raise SimError("the CARLA backend needs the 'carla' Python package, which is not installed; "
                       "install it with: pip install 'taskology[carla]' (carla==0.9.16, matching the server)") from exc
    return carla


def parse_host(host: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)``; anything else raises :class:`SimError`."""
    name, sep, port = str(host).rpartition(":")
    if not sep or not name or not port.isdigit() or not 0 < int(port) < 65536:
        raise SimError(f"CARLA host must look like HOST:PORT (e.g. 127.0.0.1:2000), found {host!r}")
    return name, int(port)


def parse_server_version(text: str) -> tuple[int, int, int] | None:
    """``"0.9.16"``, ``"0.9.16-dirty"``, ``"0.9.15.2"`` -> ``(major, minor, patch)``; None if unreadable.

    Example:
        >>> parse_server_version("0.9.16-12-gabc"), parse_server_version("0.9.15.2"), parse_server_version("dev")
        ((0, 9, 16), (0, 9, 15), None)
    """
    match = re.match(r"\s*(\d+)\.(\d+)\.(\d+)", str(text))
    return None if match is None else (int(match.group(1)), int(match.group(2)), int(match.group(3)))


def check_server_version(version: str, where: str) -> None:
    """Raise :class:`CarlaVersionError` (one line) unless ``version`` is at least :data:`MIN_SERVER_VERSION`."""
    parsed = parse_server_version(version)
    need = ".".join(map(str, MIN_SERVER_VERSION))
    why = ("the instance camera's actor-id encoding read here is CARLA 0.9.16's; older servers encode "
           "Unreal's own ids")
    if parsed is None:
        raise CarlaVersionError(f"CARLA server at {where} reports version {version!r}, which is not a version "
                                f"number; expected {need} or newer ({why})")
    if parsed < MIN_SERVER_VERSION:
        raise CarlaVersionError(f"CARLA server at {where} is version {version}; expected {need} or newer ({why})")


def physics_substeps(frame_rate: float) -> int:
    """Physics substeps of :data:`PHYSICS_SUBSTEP_S` per tick at ``frame_rate`` Hz (SimError below the minimum).

    Example:
        >>> physics_substeps(10.0), physics_substeps(20.0), physics_substeps(6.25)
        (10, 5, 16)
    """
    if not frame_rate >= MIN_FRAME_RATE_HZ:
        raise SimError(f"CARLA backend: frame_rate must be >= {MIN_FRAME_RATE_HZ:g} Hz (a tick longer than "
                       f"{MAX_PHYSICS_SUBSTEPS} physics substeps of {PHYSICS_SUBSTEP_S:g} s is simulated "
                       f"inaccurately), found {frame_rate:g}")
    return max(1, math.ceil(1.0 / (frame_rate * PHYSICS_SUBSTEP_S) - 1e-9))


def backoff_delays(first_s: float, max_s: float) -> Iterator[float]:
    """Waits between reconnection attempts: ``first_s``, doubling, capped at ``max_s`` (endless).

    Example:
        >>> list(itertools.islice(backoff_delays(1.0, 5.0), 5))
        [1.0, 2.0, 4.0, 5.0, 5.0]
    """
    for k in itertools.count():
        yield min(first_s * 2.0 ** k, max_s)
        if first_s * 2.0 ** k >= max_s:
            break
    while True:
        yield max_s


def carla_sequence_id(seed: int, index: int) -> str:
    """Id of the ``index``-th CARLA sequence of ``seed`` (distinct from the embedded generator's ids)."""
    return f"carla-seed{seed}-seq{index:05d}"


@dataclass(frozen=True)
class CarlaOptions:
    """How to reach a server and what traffic to spawn (validated on construction).

    Attributes:
        host: ``"HOST:PORT"`` of the server.
        vehicles: other vehicles spawned per sequence (fewer where spawn points run out).
        walkers: pedestrians spawned per sequence with AI controllers (fewer where spawning fails).
        timeout_s: client timeout of one request, and how long a sensor may stay silent, seconds.
        warmup_ticks: ticks simulated before the first recorded frame (traffic gets moving).
        reconnect_s: how long a session waits for a server that went away before giving up, seconds.
        backoff_s: (first, longest) wait between reconnection attempts, seconds.
    """

    host: str = "127.0.0.1:2000"
    vehicles: int = 30
    walkers: int = 20
    timeout_s: float = 10.0
    warmup_ticks: int = 20
    reconnect_s: float = 300.0
    backoff_s: tuple[float, float] = (1.0, 30.0)

    def __post_init__(self) -> None:
        parse_host(self.host)
        if self.vehicles < 0 or self.walkers < 0 or self.warmup_ticks < 0:
            raise SimError(f"CARLA backend: vehicles, walkers and warmup_ticks must be >= 0, found "
                           f"{self.vehicles}, {self.walkers} and {self.warmup_ticks}")
        if not self.timeout_s > 0 or not self.reconnect_s >= 0:
            raise SimError(f"CARLA backend: timeout_s must be > 0 and reconnect_s >= 0 seconds, found "
                           f"{self.timeout_s} and {self.reconnect_s}")
        first, longest = self.backoff_s
        if not 0 < first <= longest:
            raise SimError(f"CARLA backend: backoff_s must be (first, longest) with 0 < first <= longest, "
                           f"found {self.backoff_s}")

    def content(self) -> dict[str, int]:
        """The options that decide a shard's content (the rest say how to reach the server)."""
        return {"vehicles": self.vehicles, "walkers": self.walkers, "warmup_ticks": self.warmup_ticks}


def carla_generator(*, seed: int, index: int, frames: int, rig: SensorRig, frame_rate: float, options: CarlaOptions,
                    map_name: str, server_version: str, normals: str) -> dict[str, Any]:
    """The ``generator`` attribute of a CARLA shard: everything that decides its content (no address)."""
    return {"backend": "carla", "seed": int(seed),
            "config": {"index": int(index), "frames": int(frames), "camera_hw": list(rig.camera_hw),
                       "lidar_beams": rig.lidar_beams, "lidar_azimuth": rig.lidar_azimuth,
                       "frame_rate": float(frame_rate), **options.content(), "map": str(map_name),
                       "server_version": str(server_version), "normals": normals}}


def _dotted(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> ``{"a.b": leaf}``."""
    if not isinstance(value, dict):
        return {prefix.rstrip("."): value}
    return {k: v for key, item in value.items() for k, v in _dotted(item, f"{prefix}{key}.").items()}


def existing_shard_problem(path: Path, generator: dict[str, Any]) -> tuple[str, str | None]:
    """What a rerun finds at ``path``: ``("missing", None)``, ``("complete", None)`` (valid, same
    generator), ``("different", what differs)`` or ``("invalid", why)``."""
    from taskology.data.shard import Shard

    if not path.exists():
        return "missing", None
    try:
        with Shard.open(path) as shard:
            existing = shard.generator
    except (DataError, OSError) as exc:
        return "invalid", str(exc)
    if existing == generator:
        return "complete", None
    old, new = _dotted(existing), _dotted(generator)
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "different", "; ".join(f"{k}: existing {old.get(k)!r}, this run {new.get(k)!r}" for k in keys[:6])


# ----------------------------------------------------------------------------------- connection
def connect(host: str, timeout_s: float = 10.0) -> Any:
    """A ``carla.Client`` connected to ``host`` (``"HOST:PORT"``), checked with one round trip.

    Raises:
        SimError: ``carla`` is not installed, ``host`` is malformed, or the server does not answer within
            ``timeout_s`` seconds (message: ``cannot reach CARLA server at HOST:PORT within N s``).
        CarlaVersionError: the server is older than 0.9.16.
    """
    carla = import_carla()
    name, port = parse_host(host)
    client = carla.Client(name, port)
    client.set_timeout(float(timeout_s))
    try:
        version = client.get_server_version()
    except RuntimeError as exc:
        raise SimError(f"cannot reach CARLA server at {name}:{port} within {timeout_s:g} s") from exc
    check_server_version(version, f"{name}:{port}")
    return client


class CarlaSession:
    """One synchronous-mode connection that records shards, reconnecting when the server restarts.

    Args:
        options: server address, traffic, timeouts.
        rig: the sensors (:func:`~taskology.sim.carla_convert.default_sensor_rig`).
        frame_rate: Hz; one tick per frame.
        stop: when set, a wait for the server ends with :class:`SessionStopped`.

    Use as a context manager, or call :meth:`close` (restores the server's settings).
    """

    def __init__(self, options: CarlaOptions, rig: SensorRig, *, frame_rate: float,
                 stop: threading.Event | None = None) -> None:
        self.options = options
        self.rig = rig
        self.frame_rate = float(frame_rate)
        self.substeps = physics_substeps(self.frame_rate)
        self._stop = stop or threading.Event()
        self._carla: ModuleType | None = None
        self._client: Any = None
        self._world: Any = None
        self._tm: Any = None
        self._world_id: Any = None
        self._original: Any = None
        self.server_version = ""
        self.map_name = ""
        self.has_normals_camera = False
        self.found_synchronous = False
        self.leftovers_destroyed = 0
        self.connects = 0
        self.waits_s: list[float] = []
        self.lost: list[str] = []

    # ------------------------------------------------------------------ connection
    def _connect_once(self) -> None:
        self._carla = import_carla()
        client = connect(self.options.host, self.options.timeout_s)
        try:
            world = client.get_world()
            if self._original is None or world.id != self._world_id:
                self._original = world.get_settings()   # this episode's own settings, restored by close()
                if self._original.synchronous_mode:     # a client that died holding it (one client per server):
                    self.found_synchronous = True       # give it back asynchronous, CARLA's default
                    self._original.synchronous_mode = False
                    self._original.fixed_delta_seconds = None
                    self._destroy_leftovers(client, world)
            self._world_id = world.id
            settings = world.get_settings()
            settings.synchronous_mode = True
            settings.fixed_delta_seconds = 1.0 / self.frame_rate
            settings.substepping = True
            settings.max_substep_delta_time = PHYSICS_SUBSTEP_S
            settings.max_substeps = self.substeps
            world.apply_settings(settings)
            tm = client.get_trafficmanager()
            tm.set_synchronous_mode(True)
            self.server_version = str(client.get_server_version())
            self.map_name = str(world.get_map().name)
            self.has_normals_camera = any(bp.id == NORMALS_BLUEPRINT
                                          for bp in world.get_blueprint_library().filter(NORMALS_BLUEPRINT))
        except RuntimeError as exc:   # the server went away while we set it up
            raise SimError(f"CARLA server at {self.options.host} stopped answering during setup: {exc}") from exc
        self._client, self._world, self._tm = client, world, tm
        self.connects += 1

    def _destroy_leftovers(self, client: Any, world: Any) -> None:
        """Destroy the actors a dead session of ours left (``role_name`` :data:`ROLE_NAME`) and their walkers' controllers."""
        assert self._carla is not None
        actors = list(world.get_actors())
        ours = {a.id for a in actors if a.attributes.get("role_name") == ROLE_NAME}
        ours |= {a.id for a in actors if a.type_id == WALKER_CONTROLLER and getattr(a.parent, "id", None) in ours}
        if ours:
            client.apply_batch_sync([self._carla.command.DestroyActor(i) for i in sorted(ours)])
            self.leftovers_destroyed += len(ours)

    def ensure_connected(self, *, patient: bool = True) -> None:
        """Connect unless connected. ``patient``: retry with back-off for ``options.reconnect_s`` seconds.

        Raises:
            SimError: unreachable (at once when not patient), or a refused version (never retried).
            SessionStopped: the stop event was set while waiting.
        """
        if self._client is not None:
            return
        deadline = time.monotonic() + self.options.reconnect_s
        delays = backoff_delays(*self.options.backoff_s)
        while True:
            try:
                self._connect_once()
                return
            except CarlaVersionError:
                raise
            except SimError as exc:
                delay = next(delays)
                if not patient or time.monotonic() + delay > deadline:
                    if not patient:
                        raise
                    raise SimError(f"CARLA server at {self.options.host} did not come back within "
                                   f"{self.options.reconnect_s:g} s ({exc})") from exc
            self.waits_s.append(delay)
            if self._stop.wait(delay):
                raise SessionStopped(f"stopped while waiting for the CARLA server at {self.options.host}")

    def _server_still_ours(self) -> bool:
        """Whether the server answers with the episode this session set up (else it went away or restarted)."""
        try:
            self._client.get_server_version()
            return bool(self._client.get_world().id == self._world_id)
        except RuntimeError:
            return False

    def close(self) -> None:
        """Restore the server's settings and the traffic manager's mode (nothing if the server is gone)."""
        if self._client is None:
            return
        try:
            self._tm.set_synchronous_mode(False)
            self._world.apply_settings(self._original)
        except RuntimeError:
            pass  # the server went away: it has nothing of ours to restore
        finally:
            self._client = self._world = self._tm = None

    def __enter__(self) -> CarlaSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def status(self) -> dict[str, Any]:
        """Connection facts for a status display (read from another thread: plain values only)."""
        return {"backend": "carla", "host": self.options.host, "connected": self._client is not None,
                "connects": self.connects, "reconnect_waits_s": list(self.waits_s), "lost": list(self.lost[-5:]),
                "server_version": self.server_version, "map": self.map_name,
                "normals": "camera" if self.has_normals_camera else "depth", "found_synchronous": self.found_synchronous,
                "leftovers_destroyed": self.leftovers_destroyed}

    # ------------------------------------------------------------------ shards
    def sequence_id(self, seed: int, index: int) -> str:
        return carla_sequence_id(seed, index)

    def generator(self, *, seed: int, index: int, frames: int) -> dict[str, Any]:
        """The generator description a shard recorded now would carry (connects first)."""
        self.ensure_connected()
        return carla_generator(seed=seed, index=index, frames=frames, rig=self.rig, frame_rate=self.frame_rate,
                               options=self.options, map_name=self.map_name, server_version=self.server_version,
                               normals="camera" if self.has_normals_camera else "depth")

    def write_shard(self, out_dir: Path, *, seed: int, index: int, frames: int,
                    progress: Callable[[int], None] | None = None, overwrite: bool = False) -> Path:
        """Record sequence ``(seed, index)`` into ``out_dir/<carla_sequence_id>.h5`` (atomically).

        A failure while the server still answers with the same episode is raised; a lost or restarted
        server is reconnected to (back-off) and the sequence recorded again from its first tick.
        """
        if frames <= 0:
            raise SimError(f"CARLA backend: frames must be > 0, found {frames}")
        for attempt in itertools.count(1):
            if attempt > MAX_RECORD_ATTEMPTS:
                raise SimError(f"CARLA server at {self.options.host}: lost {MAX_RECORD_ATTEMPTS} times while recording "
                               f"sequence {index} ({self.lost[-1]}); is another client restarting or reloading it?")
            self.ensure_connected()
            if not self._server_still_ours():   # restarted since the last shard: set the new episode up
                self.lost.append(f"before index {index}: the server restarted or stopped answering")
                self._client = self._world = self._tm = None
                continue
            try:
                return self._record(Path(out_dir), seed=seed, index=index, frames=frames, progress=progress,
                                    overwrite=overwrite)
            except (RuntimeError, SimError) as exc:
                if self._server_still_ours():
                    raise
                self.lost.append(f"index {index}: {type(exc).__name__}: {exc}")
                self._client = self._world = self._tm = None   # reconnect; the new episode has our actors no more
        raise AssertionError("unreachable")

    def _record(self, out_dir: Path, *, seed: int, index: int, frames: int,
                progress: Callable[[int], None] | None, overwrite: bool) -> Path:
        from taskology.data.shard import ShardWriter

        carla, client, world, tm, rig, opts = self._carla, self._client, self._world, self._tm, self.rig, self.options
        assert carla is not None
        rng = random.Random(seed * 1_000_003 + index)
        tm.set_random_device_seed(seed * 100_003 + index)
        library = world.get_blueprint_library()
        car_blueprints = sorted((bp for bp in library.filter("vehicle.*")
                                 if int(bp.get_attribute("number_of_wheels")) == 4), key=lambda bp: bp.id)
        spawn_points = world.get_map().get_spawn_points()
        if not car_blueprints or not spawn_points:
            raise SimError(f"CARLA map {self.map_name}: expected vehicle blueprints and spawn points, found none")
        generator = self.generator(seed=seed, index=index, frames=frames)
        chosen = rng.sample(spawn_points, min(len(spawn_points), opts.vehicles + 1))
        vehicles: list[Any] = []
        walkers: list[Any] = []
        controllers: list[Any] = []
        sensors: dict[str, tuple[Any, Any]] = {}
        try:
            ego = world.spawn_actor(_ours(rng.choice(car_blueprints)), chosen[0])
            vehicles.append(ego)
            ego.set_autopilot(True, tm.get_port())
            for point in chosen[1:]:
                npc = world.try_spawn_actor(_ours(rng.choice(car_blueprints)), point)
                if npc is not None:
                    npc.set_autopilot(True, tm.get_port())
                    vehicles.append(npc)
            self._spawn_walkers(world, library, rng, seed * 1_000_003 + index, walkers, controllers)
            height, width = rig.camera_hw
            fov = fov_from_intrinsics(rig.K, height, width)
            cam_mount = _carla_transform(carla, mount_from_cam_from_ego(rig.cam_from_ego))
            cameras = dict(CAMERA_BLUEPRINTS, **({"normals": NORMALS_BLUEPRINT} if self.has_normals_camera else {}))
            for name, blueprint in cameras.items():
                bp = library.find(blueprint)
                for key, value in (("image_size_x", width), ("image_size_y", height), ("fov", fov)):
                    bp.set_attribute(key, str(value))
                sensors[name] = (world.spawn_actor(_ours(bp), cam_mount, attach_to=ego), queue.Queue())
            if rig.lidar_beams:
                bp = library.find("sensor.lidar.ray_cast_semantic")
                upper, lower = rig.lidar_fov_deg
                for key, value in (("channels", rig.lidar_beams), ("range", rig.lidar_range_m),
                                   ("rotation_frequency", self.frame_rate), ("upper_fov", upper), ("lower_fov", lower),
                                   ("points_per_second", int(rig.lidar_beams * rig.lidar_azimuth * self.frame_rate))):
                    bp.set_attribute(key, str(value))
                lidar_mount = _carla_transform(carla, FLIP_Y @ np.linalg.inv(rig.lidar_from_ego) @ FLIP_Y)
                sensors["lidar"] = (world.spawn_actor(_ours(bp), lidar_mount, attach_to=ego), queue.Queue())
            for sensor, q in sensors.values():
                sensor.listen(q.put)
            for _ in range(opts.warmup_ticks):
                world.tick()
            sid = carla_sequence_id(seed, index)
            with ShardWriter(out_dir / f"{sid}.h5", sequence_id=sid, frame_rate=self.frame_rate, generator=generator,
                             camera_hw=rig.camera_hw, lidar=bool(rig.lidar_beams), objects=True,
                             overwrite=overwrite) as writer:
                static = {"camera/K": rig.K, "camera/cam_from_ego": rig.cam_from_ego}
                if rig.lidar_beams:
                    static["lidar/lidar_from_ego"] = rig.lidar_from_ego
                writer.set_static(**static)
                for f in range(frames):
                    frame = world.tick()
                    data = {name: _next_for_frame(q, frame, opts.timeout_s, name) for name, (_, q) in sensors.items()}
                    writer.append(self._frame_layers(world, ego, data))
                    if progress is not None:
                        progress(f + 1)
            return out_dir / f"{sid}.h5"
        finally:
            self._destroy(carla, client, sensors, controllers, walkers + vehicles)

    def _spawn_walkers(self, world: Any, library: Any, rng: random.Random, seed: int, walkers: list[Any],
                       controllers: list[Any]) -> None:
        """Up to ``options.walkers`` pedestrians at random navigation points, each with a started AI
        controller walking to another random point (appended to ``walkers`` / ``controllers``)."""
        if not self.options.walkers:
            return
        carla = self._carla
        assert carla is not None
        blueprints = sorted(library.filter("walker.pedestrian.*"), key=lambda bp: bp.id)
        if not blueprints:
            raise SimError(f"CARLA map {self.map_name}: expected walker.pedestrian.* blueprints, found none")
        world.set_pedestrians_seed(seed % 2**31)
        for _ in range(self.options.walkers):
            location = world.get_random_location_from_navigation()
            if location is None:
                continue
            bp = rng.choice(blueprints)
            if bp.has_attribute("is_invincible"):
                bp.set_attribute("is_invincible", "false")
            walker = world.try_spawn_actor(_ours(bp), carla.Transform(location))
            if walker is not None:
                walkers.append(walker)
        controller_bp = library.find(WALKER_CONTROLLER)
        for walker in walkers:
            controllers.append(world.spawn_actor(controller_bp, carla.Transform(), attach_to=walker))
        world.tick()   # a controller acts only after the tick that spawned it (synchronous mode)
        for controller in controllers:
            controller.start()
            target = world.get_random_location_from_navigation()
            if target is not None:
                controller.go_to_location(target)
            controller.set_max_speed(1.0 + rng.random())   # walking, 1-2 m/s

    def _frame_layers(self, world: Any, ego: Any, data: dict[str, Any]) -> dict[str, np.ndarray]:
        rig = self.rig
        snapshot = world.get_snapshot()
        world_from_ego_lh = _matrix(snapshot.find(ego.id).get_transform())
        ego_xyz = world_from_ego_lh[:3, 3]
        objects = []
        actors = world.get_actors()
        for actor in [*actors.filter("vehicle.*"), *actors.filter("walker.pedestrian.*")]:
            snap = snapshot.find(actor.id)   # None: not in this tick (spawned or destroyed meanwhile)
            if actor.id == ego.id or snap is None:
                continue
            world_from_actor_lh = _matrix(snap.get_transform())
            if np.linalg.norm(world_from_actor_lh[:3, 3] - ego_xyz) > OBJECT_RANGE_M:
                continue
            bb, v = actor.bounding_box, snap.get_velocity()
            objects.append(CarlaObject(actor.id, _class_of(actor), world_from_actor_lh,
                                       (bb.location.x, bb.location.y, bb.location.z),
                                       (bb.extent.x, bb.extent.y, bb.extent.z),
                                       (bb.rotation.pitch, bb.rotation.yaw, bb.rotation.roll), (v.x, v.y, v.z)))
        height, width = rig.camera_hw
        images = {name: bgra_from_raw(data[name].raw_data, height, width) for name in data if name != "lidar"}
        return frame_layers_from_carla(
            rgb_bgra=images["rgb"], depth_bgra=images["depth"], semantic_bgra=images["semantic"],
            instance_bgra=images["instance"], normals_bgra=images.get("normals"), cam_from_ego=rig.cam_from_ego,
            semantic_lidar_raw=bytes(data["lidar"].raw_data) if rig.lidar_beams else None,
            world_from_ego_lh=world_from_ego_lh, objects=objects, K=rig.K)

    @staticmethod
    def _destroy(carla: ModuleType, client: Any, sensors: dict[str, tuple[Any, Any]], controllers: list[Any],
                 actors: list[Any]) -> None:
        """Stop sensors and controllers, destroy everything spawned; a server that went away took them along."""
        try:
            for sensor, _ in sensors.values():
                sensor.stop()
            for controller in controllers:
                controller.stop()
            client.apply_batch_sync([carla.command.DestroyActor(a)
                                     for a in [s for s, _ in sensors.values()] + controllers + actors])
        except RuntimeError:
            pass


def _ours(bp: Any) -> Any:
    """``bp`` with ``role_name`` :data:`ROLE_NAME` (where the blueprint has that attribute)."""
    if bp.has_attribute("role_name"):
        bp.set_attribute("role_name", ROLE_NAME)
    return bp


def _carla_transform(carla: ModuleType, ego_from_sensor_lh: np.ndarray) -> Any:
    (x, y, z), (pitch, yaw, roll) = carla_pose_from_matrix(ego_from_sensor_lh)
    return carla.Transform(carla.Location(x=x, y=y, z=z), carla.Rotation(pitch=pitch, yaw=yaw, roll=roll))


def _matrix(transform: Any) -> np.ndarray:
    return np.array(transform.get_matrix(), np.float64)


def _class_of(actor: Any) -> int:
    tags = [t for t in getattr(actor, "semantic_tags", []) if int(t) in MOVABLE_CLASS_IDS]
    if tags:
        return int(tags[0])
    return 12 if actor.type_id.startswith("walker.") else 14


def _next_for_frame(q: Any, frame: int, timeout_s: float, name: str) -> Any:
    """The measurement of ``frame`` from a sensor queue (older ones are dropped)."""
    while True:
        try:
            data = q.get(timeout=timeout_s)
        except queue.Empty:
            raise SimError(f"CARLA sensor {name!r} sent no data for frame {frame} within {timeout_s:g} s") from None
        if data.frame >= frame:
            return data


# ------------------------------------------------------------------------------------- jobs
def _session(*, host: str, camera_hw: tuple[int, int], lidar_beams: int, lidar_azimuth: int, frame_rate: float,
             timeout_s: float, vehicles: int, walkers: int, warmup_ticks: int) -> CarlaSession:
    rig = default_sensor_rig(tuple(camera_hw), lidar_beams, lidar_azimuth)
    options = CarlaOptions(host=host, vehicles=vehicles, walkers=walkers, timeout_s=timeout_s, warmup_ticks=warmup_ticks)
    session = CarlaSession(options, rig, frame_rate=frame_rate)
    session.ensure_connected(patient=False)
    return session


def _ensure_sequence(session: CarlaSession, out_dir: Path, *, seed: int, index: int, frames: int,
                     overwrite: bool, say: Callable[[str], None]) -> Path:
    """The shard of ``(seed, index)`` in ``out_dir``: kept when complete and identical, else recorded
    (an invalid one set aside as ``<name>.corrupt``, stale temp files of the sequence removed)."""
    path = out_dir / f"{carla_sequence_id(seed, index)}.h5"
    state, detail = existing_shard_problem(path, session.generator(seed=seed, index=index, frames=frames))
    if state == "complete" and not overwrite:
        say(f"{path.name}: complete, identical (skipped)")
        return path
    if state == "different" and not overwrite:
        raise SimError(f"{path}: existing shard was made with another generator config ({detail}); use another "
                       "--out or the same parameters (nothing was written)")
    if state == "invalid":
        path.replace(path.with_name(path.name + CORRUPT_SUFFIX))
        say(f"{path.name}: invalid ({detail}); set aside as {path.name}{CORRUPT_SUFFIX}, recording it again")
    for temp in out_dir.glob(f".{path.name}.tmp-*"):
        temp.unlink(missing_ok=True)
    written = session.write_shard(out_dir, seed=seed, index=index, frames=frames, overwrite=overwrite)
    say(f"{path.name}: recorded ({frames} frames)")
    return written


def generate_carla_sequence(out_dir: Path | str, *, host: str, index: int, seed: int, frames: int,
                            camera_hw: tuple[int, int] = (64, 208), lidar_beams: int = 32, lidar_azimuth: int = 1024,
                            frame_rate: float = 10.0, vehicles: int = 30, walkers: int = 20, timeout_s: float = 10.0,
                            warmup_ticks: int = 20) -> Path:
    """Make sure shard ``out_dir/<carla_sequence_id(seed, index)>.h5`` exists, recording it from the
    server at ``host`` if needed; one job of a cluster (one server per worker). Returns its path.

    A complete shard with the same generator description (same parameters, map, server version and
    normals source) is kept as is; an invalid one is set aside (``.corrupt``) and recorded again; one
    made with other parameters is a :class:`SimError` (nothing overwritten). The shard is written
    atomically; the server's settings are restored before returning.

    Args:
        out_dir: folder of shards (created; shared between the jobs of a run).
        host: ``"HOST:PORT"`` of a CARLA >= 0.9.16 server in no one else's use (synchronous mode).
        index, seed: the sequence; they seed the traffic (same server, same map: same traffic).
        frames: frames recorded, one per tick of ``1 / frame_rate`` s.
        camera_hw, lidar_beams, lidar_azimuth: sensors, as the embedded renderer's.
        vehicles, walkers: traffic around the ego vehicle.
        timeout_s: per request and per sensor, seconds.
        warmup_ticks: ticks before the first frame.

    Raises:
        SimError: ``carla`` missing, server unreachable or older than 0.9.16, bad arguments, a sensor stalls,
            or a different shard of the same sequence exists.
    """
    if index < 0 or seed < 0:
        raise SimError(f"CARLA backend: index and seed must be >= 0, found {index} and {seed}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _session(host=host, camera_hw=camera_hw, lidar_beams=lidar_beams, lidar_azimuth=lidar_azimuth,
                  frame_rate=frame_rate, timeout_s=timeout_s, vehicles=vehicles, walkers=walkers,
                  warmup_ticks=warmup_ticks) as session:
        return _ensure_sequence(session, out_dir, seed=seed, index=index, frames=frames, overwrite=False,
                                say=lambda line: None)


def generate_carla_shards(out_dir: Path, *, host: str, sequences: int, frames: int, seed: int,
                          camera_hw: tuple[int, int] = (64, 208), lidar_beams: int = 32, lidar_azimuth: int = 1024,
                          frame_rate: float = 10.0, timeout_s: float = 10.0, vehicles: int = 30, walkers: int = 20,
                          warmup_ticks: int = 20, overwrite: bool = False,
                          say: Callable[[str], None] | None = None) -> list[Path]:
    """Sequences ``0 .. sequences-1`` of ``seed`` in ``out_dir`` from the server at ``host``, resumable.

    One session for all of them (arguments as :func:`generate_carla_sequence`). Every existing shard is
    checked before anything is recorded: complete, identical ones are skipped; one made with other
    parameters stops the job with a :class:`SimError` and nothing written; invalid ones and missing ones
    are recorded. ``overwrite`` records every sequence again. ``say`` gets one line per sequence.
    Returns the shard paths ``out_dir/<carla_sequence_id>.h5`` in index order.
    """
    if sequences <= 0 or frames <= 0:
        raise SimError(f"CARLA backend: sequences and frames must be > 0, found {sequences} and {frames}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SimError(f"--out {out_dir}: expected a directory, found a file")
    say = say or (lambda line: None)
    with _session(host=host, camera_hw=camera_hw, lidar_beams=lidar_beams, lidar_azimuth=lidar_azimuth,
                  frame_rate=frame_rate, timeout_s=timeout_s, vehicles=vehicles, walkers=walkers,
                  warmup_ticks=warmup_ticks) as session:
        if not overwrite:
            for index in range(sequences):
                path = out_dir / f"{carla_sequence_id(seed, index)}.h5"
                state, detail = existing_shard_problem(path, session.generator(seed=seed, index=index, frames=frames))
                if state == "different":
                    raise SimError(f"{path}: existing shard was made with another generator config ({detail}); use "
                                   "another --out or the same parameters (nothing was written)")
        out_dir.mkdir(parents=True, exist_ok=True)
        return [_ensure_sequence(session, out_dir, seed=seed, index=index, frames=frames, overwrite=overwrite, say=say)
                for index in range(sequences)]

