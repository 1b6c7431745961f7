"""``SimActor``: a Dask actor that keeps generating simulated shards into a run directory.

The engine uses it as the mediator stream: it asks :meth:`SimActor.shards` for the complete shards
that exist now and reads them itself. Generation runs in a background thread started by
:meth:`SimActor.start` because a worker has one actor thread shared by all its actors (docs/conventions.md):
every actor method returns in milliseconds.

Guarantees (the decisions are pure functions below, tested without a cluster):

- **No duplicates.** Sequence ids derive from ``(seed, index)`` (:func:`taskology.sim.generate.sequence_id_for`);
  a shard file is ``<sequence_id>.h5`` and the writer refuses to overwrite. On start the actor resumes
  at :func:`next_index` = one past the highest index it finds on disk or in its ledger
  (``sim_actor.json``, written atomically after each shard), so a restarted actor neither repeats nor
  overwrites an index; an index whose writer died is regenerated from scratch (deterministically).
- **No corrupt shards.** Shards appear only complete (temp file + link, see
  :mod:`taskology.data.writer`). On start the actor takes an exclusive ``flock`` on
  ``.sim_actor.lock`` (the OS drops it when a process dies, so a killed actor never blocks its
  successor, and a live one is never raced), deletes stale temp files of dead writers, opens and
  validates every existing shard and moves invalid ones aside as ``<name>.corrupt`` (never ``*.h5``).
- **Bounded pool.** With ``pool_size=N`` :meth:`SimActor.shards` lists the newest N shards; the
  files of the ``retire_margin`` (default N) shards before them stay on disk too, so a reader that got
  an older listing can still open it; older ones are unlinked (:meth:`SimActor.retire` deletes now). Unlinking a complete file is atomic; a reader that already opened it keeps
  reading the old inode (POSIX), a reader that lists and then opens a retired path gets
  ``FileNotFoundError`` and should re-list.

- **No orphan.** An actor whose driver died (the worker released it:
  :class:`~taskology.cluster.release.ReleaseWatch`) abandons its shard as :meth:`SimActor.stop` does and
  releases the directory lock; its generator thread is registered under the run directory, so a resumed
  driver waits for it (:func:`~taskology.cluster.release.await_orphans`) before starting a new actor.

- **Either simulator.** ``backend="embedded"`` renders with the built-in simulator;
  ``backend="carla"`` records from a CARLA server through one :class:`~taskology.sim.carla_backend.CarlaSession`
  held by the generator thread (synchronous mode while it runs, the server's settings restored when it
  ends, reconnection with back-off when the server restarts: the interrupted shard is recorded again,
  never served half-written).

Example (on a cluster)::

    actor = client.submit(SimActor, "runs/x/mediator", seed=0, frames=20, pool_size=64, actor=True).result()
    actor.start().result()
    paths = actor.shards().result()          # complete shards, oldest first
    actor.status().result()["frames_per_s"]
"""
from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

from taskology.atomic import write_json_atomic
from taskology.cluster.release import ReleaseWatch, register
from taskology.errors import SimError, TaskologyError

_log = logging.getLogger(__name__)

LEDGER_NAME = "sim_actor.json"
LOCK_NAME = ".sim_actor.lock"
CORRUPT_SUFFIX = ".corrupt"
#: consecutive failures of the same index after which the actor gives up (generation is deterministic,
#: so a failure that repeats is not going away).
MAX_CONSECUTIVE_FAILURES = 3
#: seconds a released actor waits for its generator to stop before giving its directory lock back
RELEASE_JOIN_S = 120.0


# ---------------------------------------------------------------------------------- pure decisions
@dataclass(frozen=True)
class ResumePlan:
    """What a (re)starting actor found in its run directory.

    Attributes:
        indices: index -> sequence id of the shard files that belong to this seed.
        foreign: file stems that are not a sequence of this seed (the actor refuses to mix them).
        next_index: the first index to generate.
    """

    indices: dict[int, str]
    foreign: list[str] = field(default_factory=list)
    next_index: int = 0


def resolve_indices(stems: Iterable[str], id_for: Callable[[int], str], *, start: int = 0,
                    limit: int = 1_000_000) -> tuple[dict[int, str], list[str]]:
    """Map shard file stems to their index by enumerating ``id_for(i)`` from ``start`` (then from 0).

    Does not assume a format for sequence ids. Returns ``(index -> stem, unmatched stems)``. Cost is
    one call of ``id_for`` per index up to the highest one found (or ``limit`` if some never match).

    Example:
        >>> resolve_indices(["s3", "s1", "x"], lambda i: f"s{i}", limit=10)
        ({1: 's1', 3: 's3'}, ['x'])
    """
    wanted = set(stems)
    found: dict[int, str] = {}
    start = min(max(start, 0), limit)
    for i in itertools.chain(range(start, limit), range(0, start)):
        if not wanted:
            break
        sid = id_for(i)
        if sid in wanted:
            found[i] = sid
            wanted.discard(sid)
    return dict(sorted(found.items())), sorted(wanted)


def next_index(existing: Iterable[int], ledger_next: int) -> int:
    """First index to generate: one past the highest existing shard, never below the ledger's next.

    Example:
        >>> next_index([0, 1, 2], 0), next_index([], 7), next_index([3], 7), next_index([9], 7)
        (3, 7, 7, 10)
    """
    return max([ledger_next, 0, *(i + 1 for i in existing)])


def indices_to_retire(indices: Sequence[int], keep: int | None) -> list[int]:
    """The oldest indices beyond the newest ``keep`` (``None``: keep all), oldest first.

    Example:
        >>> indices_to_retire([4, 2, 3, 5], keep=2), indices_to_retire([1, 2], keep=None)
        ([2, 3], [])
    """
    if keep is None:
        return []
    if keep < 0:
        raise SimError(f"retire: keep must be >= 0 shards, found {keep}")
    ordered = sorted(indices)
    return ordered[:max(len(ordered) - keep, 0)]


def plan_resume(stems: Iterable[str], id_for: Callable[[int], str], ledger_next: int) -> ResumePlan:
    """Combine :func:`resolve_indices` and :func:`next_index` for a run directory's shard stems."""
    stems = list(stems)
    # ids of a pool near the ledger's position are found fastest starting just below it
    indices, foreign = resolve_indices(stems, id_for, start=max(ledger_next - len(stems) - 1, 0))
    return ResumePlan(indices, foreign, next_index(indices, ledger_next))


def live_mediator_kwargs(config: Any, run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """:class:`SimActor` keyword arguments for the live mediator pool of an experiment ``config``
    (:class:`taskology.config.ExperimentConfig`) writing into ``run_dir``: the ``sim`` section's sensors,
    backend (with its CARLA options) and world, a seed of its own (:func:`taskology.sim.generate.live_mediator_seed`),
    a pool of ``exchange.mediator_pool_shards`` with as many shards of back-pressure.

    Example:
        >>> from taskology.config import load_config
        >>> kwargs = live_mediator_kwargs(load_config(None, ["sim.camera=32x96"]), "runs/x/mediator")
        >>> kwargs["camera_hw"], kwargs["backend"], kwargs["carla"], kwargs["pool_size"]
        ((32, 96), 'embedded', None, 4)
    """
    from taskology.sim.generate import live_mediator_seed

    sim, pool = config.sim, int(config.exchange.mediator_pool_shards)
    return dict(run_dir=str(run_dir), seed=live_mediator_seed(int(sim.seed)), frames=int(sim.frames),
                camera_hw=tuple(sim.camera_hw), lidar_beams=int(sim.lidar_beams), frame_rate=float(sim.frame_rate),
                pool_size=pool, max_ahead=pool, world=sim.world_changes(), backend=str(sim.backend),
                carla=sim.carla_options())


def frames_per_second(frames: int, seconds: float) -> float:
    """Throughput guard: ``frames / seconds``, 0 before any time has passed."""
    return frames / seconds if seconds > 0 else 0.0


# ---------------------------------------------------------------------------------------- I/O
def _validate_shard(path: Path) -> str | None:
    """``None`` if the shard opens and validates, else the reason."""
    from taskology.data.shard import Shard

    try:
        with Shard.open(path):
            return None
    except (TaskologyError, OSError) as exc:
        return str(exc)


class _StopRequested(Exception):
    """Raised from the progress callback to abort the shard being written (its temp file is dropped)."""


class ShardSource(Protocol):
    """What the generator thread writes shards with: the embedded simulator or a CARLA session."""

    def sequence_id(self, seed: int, index: int) -> str: ...

    def write_shard(self, out_dir: Path, *, seed: int, index: int, frames: int,
                    progress: Callable[[int], None] | None = None) -> Path: ...

    def status(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class EmbeddedSource:
    """:func:`taskology.sim.generate.generate_shard` with fixed sensor and world arguments."""

    def __init__(self, generate_kwargs: dict[str, Any]) -> None:
        self.generate_kwargs = generate_kwargs

    def sequence_id(self, seed: int, index: int) -> str:
        from taskology.sim.generate import sequence_id_for

        return sequence_id_for(seed, index)

    def write_shard(self, out_dir: Path, *, seed: int, index: int, frames: int,
                    progress: Callable[[int], None] | None = None) -> Path:
        from taskology.sim.generate import generate_shard

        return generate_shard(out_dir, seed=seed, index=index, frames=frames, progress=progress, **self.generate_kwargs)

    def status(self) -> dict[str, Any]:
        return {"backend": "embedded"}

    def close(self) -> None:
        pass


class SimActor:
    """Generate shards ``(seed, index)`` for ``index = next, next + 1, ...`` into ``run_dir``.

    Args:
        run_dir: directory of this actor's shards (created); one actor per directory (locked).
        seed: world seed; with the index it determines each shard bit for bit.
        frames: frames per shard.
        camera_hw, lidar_beams, lidar_azimuth, frame_rate: passed to :func:`taskology.sim.generate.generate_shard`.
        world: world parameters away from the default (keyword arguments of
            :class:`taskology.sim.config.WorldConfig`, e.g. ``{"ego_speed_mps": [2.0, 12.0]}``); ``None`` or
            ``{}``: the default world.
        pool_size: list only the newest ``pool_size`` shards (``None``: keep and list all).
        retire_margin: shards kept on disk beyond ``pool_size`` before the oldest are unlinked
            (``None``: ``pool_size``, i.e. files live while two pool generations are produced).
        max_shards: stop after this many shards exist in total (``None``: run until :meth:`stop`).
        max_ahead: back-pressure: pause while this many complete shards are newer than the newest one a
            consumer has taken (:meth:`taken`); ``None``: generate freely. With ``max_ahead = pool_size``
            the shards of the pool consumers hold are never retired under them.
        backend: ``"embedded"`` or ``"carla"`` (records from the server ``carla.host``).
        carla: :class:`~taskology.sim.carla_backend.CarlaOptions` of the CARLA backend (``None``: its
            defaults); only with ``backend="carla"``.
    """

    def __init__(self, run_dir: str | os.PathLike[str], *, seed: int = 0, frames: int = 20,
                 camera_hw: tuple[int, int] = (64, 208), lidar_beams: int = 32, lidar_azimuth: int = 1024,
                 frame_rate: float = 10.0, pool_size: int | None = None, max_shards: int | None = None,
                 retire_margin: int | None = None, max_ahead: int | None = None,
                 world: dict[str, Any] | None = None, backend: str = "embedded", carla: Any = None) -> None:
        if frames <= 0:
            raise SimError(f"SimActor: frames must be > 0, found {frames}")
        if backend not in ("embedded", "carla"):
            raise SimError(f"SimActor: backend must be 'embedded' or 'carla', found {backend!r}")
        if backend == "carla" and world:
            raise SimError(f"SimActor: world options {sorted(world)} belong to the embedded simulator; the carla "
                           "backend drives its own traffic")
        if backend == "embedded" and carla is not None:
            raise SimError("SimActor: CARLA options given with backend 'embedded'; pass backend='carla'")
        if backend == "carla":
            from taskology.sim.carla_backend import CarlaOptions, physics_substeps

            carla = CarlaOptions() if carla is None else carla
            if not isinstance(carla, CarlaOptions):
                raise SimError(f"SimActor: carla must be CarlaOptions or None, found {type(carla).__name__}")
            physics_substeps(float(frame_rate))   # refuses rates CARLA cannot simulate
        self.backend = backend
        self.carla = carla
        if pool_size is not None and pool_size < 1:
            raise SimError(f"SimActor: pool_size must be >= 1 shard or None, found {pool_size}")
        self.run_dir = Path(run_dir)
        self.seed = int(seed)
        self.frames = int(frames)
        self.generate_kwargs: dict[str, Any] = {"camera_hw": tuple(camera_hw), "lidar_beams": int(lidar_beams),
                                                "lidar_azimuth": int(lidar_azimuth), "frame_rate": float(frame_rate)}
        if world:  # only then: a default-world actor's ledger stays as before (resumable)
            from taskology.sim.config import WorldConfig

            self.generate_kwargs["world"] = WorldConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                           for k, v in world.items()})
        if retire_margin is not None and retire_margin < 0:
            raise SimError(f"SimActor: retire_margin must be >= 0 shards or None, found {retire_margin}")
        self.pool_size = pool_size
        self.retire_margin = pool_size if retire_margin is None else int(retire_margin)
        self.max_shards = max_shards
        if max_ahead is not None and max_ahead < 1:
            raise SimError(f"SimActor: max_ahead must be >= 1 shard or None, found {max_ahead}")
        self.max_ahead = max_ahead
        self._taken = -1                       # newest shard index a consumer has taken
        self._lock = threading.Lock()          # guards the state below
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._pool: dict[int, Path] = {}       # index -> complete shard path
        self._phase = "idle"
        self._next = 0
        self._done = 0
        self._retired = 0
        self._frames_done = 0
        self._busy_s = 0.0
        self._in_progress: dict[str, int] | None = None
        self._source: ShardSource | None = None
        self._errors: list[str] = []
        self._quarantined: list[str] = []
        self._removed_temp: list[str] = []
        self._watch = ReleaseWatch(self, self._on_release, name=f"SimActor-watch[{self.run_dir.name}]")

    # ------------------------------------------------------------------ actor methods (short)
    def start(self) -> dict[str, Any]:
        """Lock the run directory and start the background generator; returns :meth:`status`.

        Raises:
            SimError: another live actor holds the directory.
        """
        if self._thread is not None and self._thread.is_alive():
            return self.status()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self._lock_fd is None:
            fd = os.open(self.run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
                os.close(fd)
                raise SimError(f"{self.run_dir}: another SimActor ({holder or 'unknown pid'}) is generating here; "
                               "expected one actor per run directory") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
            self._lock_fd = fd
        self._stop.clear()
        with self._lock:
            self._phase = "scanning"
        self._thread = threading.Thread(target=self._run, name=f"SimActor[{self.run_dir.name}]", daemon=True)
        self._thread.start()
        register(self.run_dir, self._thread)
        self._watch.start()
        return self.status()

    def _on_release(self) -> None:
        """The worker let go of this actor (its driver is gone): stop; the thread releases the lock."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            _log.warning("SimActor %s: released by its driver while generating; stopping", self.run_dir)
            thread.join(RELEASE_JOIN_S)  # the shard in progress is abandoned at its next frame
        if thread is None or not thread.is_alive():
            self._release_dir_lock()  # nobody will call stop(): let the next actor have the directory

    def stop(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """Ask the generator to stop (the shard being written is abandoned, its temp file removed),
        wait up to ``timeout_s`` seconds, release the directory lock; returns :meth:`status`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._thread is None or not self._thread.is_alive():
            self._release_dir_lock()
        return self.status()

    def _release_dir_lock(self) -> None:
        """Close the lock file's descriptor (that releases the flock), once, whoever calls first."""
        with self._lock:
            fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def status(self) -> dict[str, Any]:
        """A snapshot: ``phase`` (idle|scanning|generating|finished|stopped|failed), ``running``,
        ``shards_done`` (by this actor), ``shards_available``, ``next_index``, ``in_progress``
        (``{"index", "frames_done", "frames"}`` or None), ``frames_per_s`` (while generating),
        ``retired``, ``errors``, ``quarantined``, ``removed_temp_files``, ``source`` (the simulator:
        ``backend``, and for CARLA its connection: ``connected``, ``connects``, ``reconnect_waits_s``, ...)."""
        source = self._source
        described = source.status() if source is not None else {"backend": self.backend}
        with self._lock:
            return {"phase": self._phase, "source": described, "running": bool(self._thread and self._thread.is_alive()),
                    "shards_done": self._done, "shards_available": len(self._pool), "next_index": self._next,
                    "in_progress": dict(self._in_progress) if self._in_progress else None,
                    "frames_per_s": frames_per_second(self._frames_done, self._busy_s), "retired": self._retired,
                    "errors": list(self._errors), "quarantined": list(self._quarantined),
                    "removed_temp_files": list(self._removed_temp)}

    def shards(self) -> list[str]:
        """Paths of the complete shards in the pool (the newest ``pool_size``), in index order (oldest first)."""
        with self._lock:
            indices = sorted(self._pool)
            if self.pool_size is not None:
                indices = indices[-self.pool_size:]
            return [str(self._pool[i]) for i in indices]

    def taken(self, paths: list[str]) -> int:
        """A consumer now uses ``paths`` (shards of this pool): generation may run ``max_ahead`` past the
        newest of them. Returns that index (-1 when none of the paths is a shard of this actor)."""
        wanted = {str(Path(p)) for p in paths}
        with self._lock:
            found = [i for i, path in self._pool.items() if str(path) in wanted]
            if found:
                self._taken = max(self._taken, max(found))
            return self._taken

    def _must_wait(self) -> bool:
        with self._lock:
            if self.max_ahead is None:
                return False
            return sum(1 for i in self._pool if i > self._taken) >= self.max_ahead

    def retire(self, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` shards now; returns the retired paths."""
        with self._lock:
            victims = [self._pool.pop(i) for i in indices_to_retire(list(self._pool), keep)]
            self._retired += len(victims)
        for path in victims:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        return [str(p) for p in victims]

    # ------------------------------------------------------------------ background thread
    def _config(self) -> dict[str, Any]:
        config = {"seed": self.seed, "frames": self.frames,
                  **{k: v.to_dict() if k == "world" else list(v) if isinstance(v, tuple) else v
                     for k, v in self.generate_kwargs.items()}}
        if self.backend == "carla":  # only then: an embedded actor's ledger stays as before (resumable)
            config.update(backend="carla", carla=self.carla.content())
        return config

    def _open_source(self) -> ShardSource:
        if self.backend == "embedded":
            return EmbeddedSource(self.generate_kwargs)
        from taskology.sim.carla_backend import CarlaSession
        from taskology.sim.carla_convert import default_sensor_rig

        kw = self.generate_kwargs
        rig = default_sensor_rig(kw["camera_hw"], kw["lidar_beams"], kw["lidar_azimuth"])
        return CarlaSession(self.carla, rig, frame_rate=kw["frame_rate"], stop=self._stop)

    def _scan(self, sequence_id_for: Callable[[int, int], str]) -> None:
        """Resume: check the ledger, drop stale temp files, validate shards, find the next index."""
        from taskology.data.writer import stale_temp_files

        ledger_path = self.run_dir / LEDGER_NAME
        ledger_next = 0
        if ledger_path.exists():
            try:
                ledger = json.loads(ledger_path.read_text())
            except (OSError, ValueError) as exc:
                raise SimError(f"{ledger_path}: unreadable ledger ({exc}); expected JSON written by SimActor") from exc
            if ledger.get("config") != self._config():
                raise SimError(f"{self.run_dir}: holds shards generated with {ledger.get('config')}, "
                               f"this actor would generate {self._config()}; use another run directory")
            ledger_next = int(ledger.get("next_index", 0))
        for temp in stale_temp_files(self.run_dir):
            temp.unlink(missing_ok=True)
            with self._lock:
                self._removed_temp.append(temp.name)
        plan = plan_resume((p.stem for p in self.run_dir.glob("*.h5")), lambda i: sequence_id_for(self.seed, i),
                           ledger_next)
        if plan.foreign:
            raise SimError(f"{self.run_dir}: holds shards that are not sequences of seed {self.seed}: "
                           f"{plan.foreign[:3]}{'...' if len(plan.foreign) > 3 else ''}; use another run directory")
        pool: dict[int, Path] = {}
        for index, stem in plan.indices.items():
            path = self.run_dir / f"{stem}.h5"
            reason = _validate_shard(path)
            if reason is None:
                pool[index] = path
            else:
                os.replace(path, path.with_name(path.name + CORRUPT_SUFFIX))
                with self._lock:
                    self._quarantined.append(f"{path.name}: {reason}")
        with self._lock:
            self._pool = pool
            self._next = plan.next_index

    def _run(self) -> None:
        from taskology.sim.carla_backend import CarlaVersionError, SessionStopped

        source: ShardSource | None = None
        try:
            source = self._source = self._open_source()
            self._scan(source.sequence_id)
            with self._lock:
                self._phase = "generating"
            failures = 0
            while not self._stop.is_set():
                with self._lock:
                    index = self._next
                if self.max_shards is not None and index >= self.max_shards:
                    with self._lock:
                        self._phase = "finished"
                    return
                if self._must_wait():
                    with self._lock:
                        self._phase = "waiting"  # consumers have not taken the newest shards yet
                    self._stop.wait(0.2)
                    continue
                with self._lock:
                    self._phase = "generating"
                try:
                    self._generate_one(source, index)
                    failures = 0
                except (_StopRequested, SessionStopped):
                    break
                except Exception as exc:  # noqa: BLE001 - reported through status(); retried, then given up
                    failures += 1
                    with self._lock:
                        self._errors = (self._errors + [f"index {index}: {type(exc).__name__}: {exc}"])[-20:]
                    if failures >= MAX_CONSECUTIVE_FAILURES or isinstance(exc, CarlaVersionError):  # never retried
                        with self._lock:
                            self._phase = "failed"
                        return
            with self._lock:
                self._phase = "stopped"
        except Exception as exc:  # noqa: BLE001 - scan errors end the thread; status() shows them
            with self._lock:
                self._errors.append(f"{type(exc).__name__}: {exc}")
                self._phase = "failed"
        finally:
            if source is not None:
                source.close()   # CARLA: the server's own settings back
            with self._lock:
                self._in_progress = None

    def _generate_one(self, source: ShardSource, index: int) -> None:
        with self._lock:
            self._in_progress = {"index": index, "frames_done": 0, "frames": self.frames}
        last = time.perf_counter()

        def progress(done: int) -> None:
            nonlocal last
            if self._stop.is_set():
                raise _StopRequested()
            now = time.perf_counter()
            with self._lock:
                if self._in_progress is not None:
                    self._in_progress["frames_done"] = done   # restarts at 1 when a shard is recorded again
                self._frames_done += 1
                self._busy_s += now - last
            last = now

        path = source.write_shard(self.run_dir, seed=self.seed, index=index, frames=self.frames, progress=progress)
        with self._lock:
            self._busy_s += time.perf_counter() - last
            self._pool[index] = Path(path)
            self._next = index + 1
            self._done += 1
            self._in_progress = None
        write_json_atomic(self.run_dir / LEDGER_NAME, {"config": self._config(), "next_index": index + 1})
        if self.pool_size is not None:
            self.retire(self.pool_size + (self.retire_margin or 0))
