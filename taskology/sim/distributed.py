"""Simulating sequences on a Dask cluster: one task per sequence, each worker writes its own shard.

Every sequence of a run is independent and seeded by ``(seed, index)``, so a cluster simulates them in
any order and on any worker and the shards hold what a serial run writes: every dataset and attribute
(:func:`~taskology.sim.cache.shard_digest`), and the files are byte for byte the same (label layers are
deflate-compressed, whose output depends on the data only; :class:`~taskology.data.writer.ShardWriter`). A
worker writes through the atomic :class:`~taskology.data.writer.ShardWriter` (a hidden temp file in
the output folder, linked to its final name when complete), so the folder must be one the workers
see at the same path: a local folder for a local cluster, a shared filesystem (NFS, Lustre, a
bucket mounted with s3fs/gcsfuse) for a remote one. :func:`check_workers` verifies that, and that the
workers run the same simulator code, before anything is submitted.

A worker that dies mid-sequence leaves at most a temp file; the scheduler reschedules its sequence on
another worker (up to ``distributed.scheduler.allowed-failures`` deaths per sequence, 3 by default),
which simulates it again from frame 0. The caller removes the dead writer's temp file afterwards.

What runs on a worker is a *sequence job*: a picklable callable ``job(out_dir, index, progress=...,
server=...) -> Path`` that writes shard ``index`` into ``out_dir`` and calls ``progress(frames_done)``
after each frame. :class:`EmbeddedSequence` is the embedded renderer's; a backend that needs one
external server per running sequence (CARLA) gets one of ``servers`` in ``server``, and at most one
sequence runs per server at a time.

Example:
    >>> job = EmbeddedSequence(seed=0, frames=2, camera_hw=(32, 96), lidar_beams=4)
    >>> job.shard_name(3)
    'seed0-seq00003.h5'
    >>> with open_cluster(ClusterSpec(address="local", n_workers=2)) as session:  # doctest: +SKIP
    ...     simulate_on_cluster(session.client, job, Path("data/sim"), [0, 1, 2, 3])
"""
from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from taskology.errors import SimError
from taskology.sim.config import WorldConfig
from taskology.sim.generate import generate_shard, sequence_id_for

#: seconds between checks of the running sequences (progress refresh).
POLL_S = 0.25
#: Dask settings of a local cluster's scheduler made for simulating: a worker gets its next sequence
#: when it finishes one (saturation 1.0). Sequences take seconds; a second one queued on a busy worker
#: (the default 1.1 queues two per single-threaded worker) would wait there while another worker idles.
LOCAL_SCHEDULER_CONFIG = {"distributed.scheduler.worker-saturation": 1.0}


class SequenceJob(Protocol):
    """Simulates one sequence into one shard (see the module docstring); picklable."""

    frames: int

    def shard_name(self, index: int) -> str: ...

    def __call__(self, out_dir: Path, index: int, *, progress: Callable[[int], None] | None = None,
                 server: str | None = None) -> Path: ...


@dataclass(frozen=True)
class _Sequence:
    """What every sequence job fixes: run seed, frames, camera (H, W) pixels, LiDAR beams x azimuth steps,
    frame rate in Hz."""

    seed: int
    frames: int
    camera_hw: tuple[int, int]
    lidar_beams: int
    lidar_azimuth: int = 1024
    frame_rate: float = 10.0


@dataclass(frozen=True)
class EmbeddedSequence(_Sequence):
    """Sequence job of the embedded renderer: :func:`~taskology.sim.generate.generate_shard` with
    fixed parameters."""

    world: WorldConfig = field(default_factory=WorldConfig)

    def shard_name(self, index: int) -> str:
        return f"{sequence_id_for(self.seed, index)}.h5"

    def __call__(self, out_dir: Path, index: int, *, progress: Callable[[int], None] | None = None,
                 server: str | None = None) -> Path:
        if server is not None:
            raise SimError(f"the embedded renderer takes no simulation server, found {server!r}")
        return generate_shard(Path(out_dir), seed=self.seed, index=index, frames=self.frames, camera_hw=self.camera_hw,
                              lidar_beams=self.lidar_beams, lidar_azimuth=self.lidar_azimuth,
                              frame_rate=self.frame_rate, world=self.world, progress=progress)


@dataclass(frozen=True)
class CarlaSequence(_Sequence):
    """Sequence job of the CARLA backend: :func:`~taskology.sim.carla_backend.generate_carla_sequence`
    against the server given in ``server`` (``HOST:PORT``, in no one else's use while the sequence
    records). A complete, identical shard is kept; progress is reported once, when the sequence is done.
    Traffic (``vehicles``, ``walkers``, ``warmup_ticks``) as :func:`generate_carla_sequence`'s defaults."""

    vehicles: int = 30
    walkers: int = 20
    warmup_ticks: int = 20

    def shard_name(self, index: int) -> str:
        from taskology.sim.carla_backend import carla_sequence_id

        return f"{carla_sequence_id(self.seed, index)}.h5"

    def __call__(self, out_dir: Path, index: int, *, progress: Callable[[int], None] | None = None,
                 server: str | None = None) -> Path:
        from taskology.sim.carla_backend import generate_carla_sequence

        if server is None:
            raise SimError("the CARLA backend records each sequence from a server: expected HOST:PORT, found none")
        path = generate_carla_sequence(Path(out_dir), host=server, index=index, seed=self.seed, frames=self.frames,
                                       camera_hw=self.camera_hw, lidar_beams=self.lidar_beams,
                                       lidar_azimuth=self.lidar_azimuth, frame_rate=self.frame_rate,
                                       vehicles=self.vehicles, walkers=self.walkers, warmup_ticks=self.warmup_ticks)
        if progress is not None:
            progress(self.frames)
        return path


class FrameTally:
    """Frames done over a run's sequences, from per-frame reports of the workers and finished sequences.

    A sequence that is simulated again (its worker died) reports from frame 1 again; the latest report
    of a sequence counts. Thread-safe: reports arrive on the Dask client's thread.

    Example:
        >>> tally = FrameTally(frames=10)
        >>> tally.report(0, 4); tally.report(1, 2); tally.report(0, 1)  # sequence 0 started again
        >>> tally.finish(1); tally.done()
        11
    """

    def __init__(self, frames: int) -> None:
        self.frames = int(frames)
        self._running: dict[int, int] = {}
        self._finished: set[int] = set()
        self._lock = threading.Lock()

    def report(self, index: int, frames_done: int) -> None:
        with self._lock:
            if index not in self._finished:
                self._running[index] = min(int(frames_done), self.frames)

    def finish(self, index: int) -> None:
        with self._lock:
            self._running.pop(index, None)
            self._finished.add(index)

    def done(self) -> int:
        with self._lock:
            return self.frames * len(self._finished) + sum(self._running.values())


def _worker_view(root: str, probe: str) -> tuple[bool, str]:
    """On a worker: whether it sees ``root/probe``, and its simulator fingerprint."""
    from taskology.sim.cache import simulator_fingerprint

    return Path(root, probe).is_file(), simulator_fingerprint()


def check_workers(client: Any, root: Path) -> int:
    """Check that every worker sees ``root`` (a probe file written here is read there) and runs the
    same simulator code as this process (:func:`~taskology.sim.cache.simulator_fingerprint`); returns
    the number of workers. Raises :class:`SimError` naming the first worker that does not."""
    from taskology.sim.cache import simulator_fingerprint

    probe = Path(root) / f".taskology-probe-{secrets.token_hex(4)}"
    probe.write_text("written by taskology sim to check that the workers see this folder\n")
    try:
        views = client.run(_worker_view, str(root), probe.name)
    except Exception as exc:  # noqa: BLE001 - whatever a worker raised, one line
        raise SimError(f"cannot run the simulator on the cluster's workers ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''}); install taskology there") from exc
    finally:
        probe.unlink(missing_ok=True)
    ours = simulator_fingerprint()
    for address, (sees, fingerprint) in sorted(views.items()):
        if not sees:
            raise SimError(f"worker {address} does not see the output folder {root}: --out must be on a "
                           f"filesystem every worker mounts at the same path (nothing was simulated)")
        if fingerprint != ours:
            raise SimError(f"worker {address} runs other simulator code (fingerprint {fingerprint}, here {ours}): "
                           f"its shards would differ; install the same taskology on the workers")
    if not views:
        raise SimError("the cluster has no worker to simulate on")
    return len(views)


def _simulate_on_worker(job: SequenceJob, out_dir: str, index: int, topic: str, server: str | None) -> str:
    """A cluster task: run ``job`` for sequence ``index``, reporting frames done under ``topic``."""
    from distributed import get_worker

    worker = get_worker()

    def progress(frames_done: int) -> None:
        worker.log_event(topic, [index, frames_done])

    return str(job(Path(out_dir), index, progress=progress, server=server))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def simulate_on_cluster(client: Any, job: SequenceJob, root: Path, indices: Sequence[int], *,
                        servers: Sequence[str] | None = None,
                        on_progress: Callable[[int], None] | None = None) -> list[Path]:
    """Simulate sequences ``indices`` with ``job`` on the workers of ``client``, one task per sequence,
    into ``root`` (which the workers must see: :func:`check_workers`). Returns the shard paths in
    ``indices`` order.

    Args:
        servers: one simulation server per concurrently running sequence (CARLA ``HOST:PORT``); each
            task gets a free one and at most ``len(servers)`` sequences run at once. ``None``: no
            servers, every sequence is submitted at once and the scheduler spreads them.
        on_progress: called from this thread with the frames done over all ``indices`` (a progress bar).

    Raises:
        SimError: a sequence failed (its error on one line; the other sequences are cancelled, shards
            already written stay and a rerun keeps them), or its workers died too often.
    """
    from distributed import wait
    from distributed.client import FutureCancelledError

    root = Path(root)
    todo = list(indices)
    free = list(servers) if servers is not None else None
    if free is not None and not free:
        raise SimError("expected at least one simulation server, found none")
    tally = FrameTally(job.frames)
    topic = f"taskology-sim-{secrets.token_hex(6)}"
    client.subscribe_topic(topic, lambda event: tally.report(*event[1]))
    running: dict[Any, tuple[int, str | None]] = {}
    paths: dict[int, Path] = {}

    def submit_next() -> None:
        while todo and (free is None or free):
            index, server = todo.pop(0), (free.pop(0) if free is not None else None)
            name = job.shard_name(index).removesuffix(".h5")
            future = client.submit(_simulate_on_worker, job, str(root), index, topic, server,
                                   key=f"simulate-{name}-{topic[-12:]}", pure=False)
            running[future] = (index, server)

    try:
        submit_next()
        while running:
            try:
                finished = wait(list(running), timeout=POLL_S, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                finished = set()
            for future in finished:
                index, server = running.pop(future)
                try:
                    paths[index] = Path(future.result())
                except (Exception, FutureCancelledError) as exc:  # noqa: BLE001 - one line per failure
                    raise SimError(f"sequence {job.shard_name(index)} failed on the cluster: {_first_line(exc)}"
                                   + (f" (server {server})" if server else "")
                                   + "; shards already written are kept and a rerun skips them") from exc
                tally.finish(index)
                if free is not None and server is not None:
                    free.append(server)
            submit_next()
            if on_progress is not None:
                on_progress(tally.done())
    finally:
        if running:
            client.cancel(list(running))
        try:
            client.unsubscribe_topic(topic)
        except Exception:  # noqa: BLE001 - the connection may be gone already; nothing to undo then
            pass
    expected = {index: root / job.shard_name(index) for index in indices}
    for index, path in paths.items():
        if path != expected[index]:
            raise SimError(f"sequence {job.shard_name(index)}: a worker wrote {path}, expected {expected[index]}")
    return [paths[index] for index in indices]


__all__ = ["LOCAL_SCHEDULER_CONFIG", "CarlaSequence", "EmbeddedSequence", "FrameTally", "SequenceJob", "check_workers", "simulate_on_cluster"]
