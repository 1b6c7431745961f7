"""``taskology sim``: validate the request, check the output directory, generate shards with a
progress bar (resuming: identical existing shards are skipped, partial ones a stopped run left are
removed and simulated again), in this process or on a Dask cluster (one task per sequence,
:mod:`taskology.sim.distributed`; the same shards either way), or write a one-frame preview PNG. The
output folder carries a world record (:mod:`taskology.sim.cache`): shards left there by other simulator
code are kept only if today's code simulates them identically.

Example:
    $ taskology sim --out data/sim --sequences 2 --frames 10 --camera 64x208
    $ taskology sim --out data/sim --sequences 64 --cluster local --workers 2
    $ taskology sim --out /shared/sim --sequences 512 --cluster tls://10.0.0.5:8786 \\
          --tls-ca-file ca.pem --tls-cert cert.pem --tls-key key.pem
    $ taskology sim --camera 128x416 --preview docs/images/sim_preview.png
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import h5py

from taskology.config import flatten_dotted
from taskology.data.schema import SCHEMA_VERSION
from taskology.errors import NotAvailable, SimError
from taskology.sim.cache import CachedWorld, ensure_world
from taskology.sim.config import WorldConfig
from taskology.sim.generate import generate_shard, generator_description, validate_parameters

if TYPE_CHECKING:  # the cluster code is imported only when a cluster is asked for
    from taskology.cluster.session import ClusterSpec

LIDAR_AZIMUTH = 1024
FRAME_RATE = 10.0
#: ``scheme:/`` at the start of an ``--out`` (an fsspec URL such as ``s3://bucket/x``); one letter is a drive.
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):/")


def parse_camera(text: str) -> tuple[int, int]:
    """``"64x208"`` -> ``(64, 208)``; :class:`SimError` on anything else."""
    from taskology.config import parse_camera_hw

    try:
        return parse_camera_hw(text)
    except ValueError as exc:
        raise SimError(f"--camera: {exc}") from None


def _shard_generator(path: Path) -> tuple[int | None, dict | None]:
    """(schema_version, generator dict) from a shard's root attributes; SimError if unreadable."""
    try:
        with h5py.File(path, "r") as f:
            version = f.attrs.get("schema_version")
            generator = f.attrs.get("generator")
        return (int(version) if version is not None else None,
                json.loads(generator) if generator is not None else None)
    except (OSError, ValueError) as exc:
        raise SimError(f"{path}: existing file is not a readable shard ({exc}); move it away or choose another "
                       f"--out") from None


def check_output_dir(out: Path, generator: dict[str, Any]) -> None:
    """Raise :class:`SimError` if ``out`` holds shards of another schema or another generator config."""
    if out.exists() and not out.is_dir():
        raise SimError(f"--out {out}: expected a directory, found a file")
    if not out.exists():
        return
    for path in sorted(out.glob("*.h5")):
        if path.name.startswith("."):
            continue
        version, existing = _shard_generator(path)
        if version != SCHEMA_VERSION:
            raise SimError(f"{path}: existing shard has schema version {version}, expected {SCHEMA_VERSION}; "
                           f"use another --out (nothing was written)")
        if existing != generator:
            raise SimError(f"{path}: existing shard was made with another generator config "
                           f"({_describe_difference(existing, generator)}); use another --out or the same "
                           f"parameters (nothing was written)")


def _describe_difference(existing: Any, wanted: dict[str, Any]) -> str:
    """``"config.frames: existing 5, this run 6; ..."`` for the keys that differ."""
    old, new = flatten_dotted(existing), flatten_dotted(wanted)
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "; ".join(f"{k}: existing {old.get(k)!r}, this run {new.get(k)!r}" for k in keys[:6])


def checked_request(*, sequences: int, frames: int, seed: int, camera: str, lidar_beams: int,
                    ego_speed: tuple[float, float]) -> tuple[tuple[int, int], WorldConfig]:
    """The camera size and world of a simulation request; :class:`SimError` naming the first bad value."""
    camera_hw = parse_camera(camera)
    if not 0 < ego_speed[0] <= ego_speed[1] <= 40:
        raise SimError(f"--ego-speed: expected MIN MAX with 0 < MIN <= MAX <= 40 m/s, found {ego_speed[0]:g} "
                       f"{ego_speed[1]:g}")
    world = WorldConfig(ego_speed_mps=(float(ego_speed[0]), float(ego_speed[1])))
    if sequences <= 0:
        raise SimError(f"--sequences must be > 0, found {sequences}")
    validate_parameters(seed=seed, index=0, frames=frames, camera_hw=camera_hw, lidar_beams=lidar_beams,
                        lidar_azimuth=LIDAR_AZIMUTH, frame_rate=FRAME_RATE)
    return camera_hw, world


def checked_output(out: Path | str) -> Path:
    """The output folder of ``--out``: a path (``file://`` URLs too). Other URLs (``s3://``, ``gs://``, ...)
    raise :class:`SimError`: shards are HDF5 files written in place and renamed atomically, which needs a
    local or shared filesystem.

    Example:
        >>> checked_output("file:///data/sim"), checked_output(Path("data/sim"))
        (PosixPath('/data/sim'), PosixPath('data/sim'))
    """
    text = str(out)
    match = _URL.match(text)
    if match is None:
        return Path(out)
    scheme = match.group("scheme").lower()
    if scheme == "file":
        return Path(text[len(match.group(0)) - 1:])
    raise SimError(f"--out {text}: {scheme}:// URLs are not supported; shards are written to a local or shared "
                   f"filesystem path (HDF5 in place, then an atomic rename): mount the bucket (s3fs, gcsfuse) "
                   f"and give its path, or simulate locally and copy")


def parse_carla_hosts(text: str) -> list[str]:
    """``"a:2000,b:2000"`` -> ``["a:2000", "b:2000"]`` (one CARLA server per worker); :class:`SimError`
    naming the first entry that is not ``HOST:PORT``, or a server given twice."""
    from taskology.sim.carla_backend import parse_host

    hosts = [h.strip() for h in str(text).split(",")]
    for host in hosts:
        try:
            parse_host(host)
        except SimError as exc:
            raise SimError(f"--carla-host: {exc}") from None
    if len(set(hosts)) != len(hosts):
        raise SimError(f"--carla-host: each server once (one per worker), found {text!r}")
    return hosts


def checked_cluster(cluster: str | None, workers: int | None = None, tls_ca_file: Path | None = None,
                    tls_cert: Path | None = None, tls_key: Path | None = None) -> ClusterSpec | None:
    """Where to simulate: ``None`` (this process) for no ``--cluster`` or ``none``, else the
    :class:`~taskology.cluster.session.ClusterSpec` of ``local`` (``workers`` processes; default: one per
    core, at most one per sequence to simulate) or of a scheduler at ``tcp://``/``tls://HOST:PORT`` (TLS
    with the three PEM files). :class:`SimError` naming the first option that does not fit."""
    from taskology.config import parse_cluster_address

    tls_files = {"--tls-ca-file": tls_ca_file, "--tls-cert": tls_cert, "--tls-key": tls_key}
    given = [name for name, path in tls_files.items() if path is not None]
    address = None
    if cluster is not None:
        try:
            address = parse_cluster_address(cluster)
        except ValueError as exc:
            raise SimError(f"--cluster: {exc}") from None
    if address in (None, "none"):
        if workers is not None or given:
            raise SimError(f"{'--workers' if workers is not None else given[0]} needs --cluster (local, "
                           f"tcp://HOST:PORT or tls://HOST:PORT)")
        return None
    if workers is not None and address != "local":
        raise SimError(f"--workers starts local workers; with --cluster {address} the scheduler's workers simulate")
    if workers is not None and workers < 1:
        raise SimError(f"--workers must be >= 1, found {workers}")
    if address.startswith("tls://") and len(given) != 3:
        missing = [name for name, path in tls_files.items() if path is None]
        raise SimError(f"--cluster {address} needs {', '.join(missing)} (PEM files of the cluster's CA, this "
                       f"client's certificate and key)")
    if given and not address.startswith("tls://"):
        raise SimError(f"{given[0]}: TLS files go with --cluster tls://HOST:PORT, found --cluster {address}")
    for name, path in tls_files.items():
        if path is not None and not Path(path).is_file():
            raise SimError(f"{name}: expected a PEM file, found nothing at {path}")
    from taskology.cluster.session import ClusterSpec, TLSFiles

    tls = TLSFiles(Path(tls_ca_file), Path(tls_cert), Path(tls_key)) if len(given) == 3 else None  # type: ignore[arg-type]
    # no GPUs for local workers: the embedded renderer runs on CPU (and detecting GPUs imports torch)
    return ClusterSpec(address=address, n_workers=workers, tls=tls, spare_workers=0, gpus=())


def sim_command(out: Path | str, sequences: int, frames: int, seed: int, camera: str, lidar_beams: int,
                backend: str, carla_host: str, preview: Path | None, ego_speed: tuple[float, float] = (5.0, 9.0),
                cluster: str | None = None, workers: int | None = None, tls_ca_file: Path | None = None,
                tls_cert: Path | None = None, tls_key: Path | None = None) -> CachedWorld | None:
    """Entry point of ``taskology sim`` (arguments as parsed by :mod:`taskology.cli`). The embedded
    simulator's output folder carries a world record (:mod:`taskology.sim.cache`); its
    :class:`~taskology.sim.cache.CachedWorld` is returned (None for a preview or CARLA). With ``cluster``
    (:func:`checked_cluster`) the sequences are simulated on Dask workers: the same shards (every dataset
    and attribute)."""
    camera_hw, world = checked_request(sequences=sequences, frames=frames, seed=seed, camera=camera,
                                       lidar_beams=lidar_beams, ego_speed=ego_speed)
    placement = checked_cluster(cluster, workers, tls_ca_file, tls_cert, tls_key)
    if preview is not None:
        if placement is not None:
            raise SimError("--preview renders one frame in this process; it takes no --cluster")
        write_preview(Path(preview), seed=seed, camera_hw=camera_hw, lidar_beams=lidar_beams, world=world)
        return None
    out = checked_output(out)
    if backend == "carla" and world != WorldConfig():
        raise SimError("--ego-speed: an option of the embedded simulator; CARLA drives its "
                       "own traffic (nothing was written)")
    if backend == "carla":
        hosts = parse_carla_hosts(carla_host)
        if placement is None and len(hosts) > 1:
            raise SimError(f"--carla-host: {len(hosts)} servers given; without --cluster one server records "
                           f"every sequence: give one HOST:PORT, or --cluster to record on {len(hosts)} workers")
        if out.exists() and not out.is_dir():
            raise SimError(f"--out {out}: expected a directory, found a file")
        try:
            from taskology.sim.carla_backend import generate_carla_shards
        except ImportError as exc:
            raise NotAvailable(f"the CARLA backend is not available ({exc}); install it with pip install 'taskology[carla]'") from exc
        if placement is None:
            generate_carla_shards(out, host=hosts[0], sequences=sequences, frames=frames, seed=seed,
                                  camera_hw=camera_hw, lidar_beams=lidar_beams, lidar_azimuth=LIDAR_AZIMUTH,
                                  frame_rate=FRAME_RATE, say=lambda line: print(f"sim: {line}", flush=True))
        else:
            from taskology.sim.distributed import CarlaSequence

            out.mkdir(parents=True, exist_ok=True)
            job = CarlaSequence(seed=seed, frames=frames, camera_hw=camera_hw, lidar_beams=lidar_beams,
                                lidar_azimuth=LIDAR_AZIMUTH, frame_rate=FRAME_RATE)
            _simulate_on_cluster(placement, job, out, list(range(sequences)), f"{sequences} CARLA sequences",
                                 lambda line: print(f"sim: {line}", flush=True), servers=hosts)
        return None
    if backend != "embedded":
        raise SimError(f"--backend: expected 'embedded' or 'carla', found {backend!r}")
    generator = generator_description(seed=seed, camera_hw=camera_hw, lidar_beams=lidar_beams,
                                      lidar_azimuth=LIDAR_AZIMUTH, frame_rate=FRAME_RATE, frames=frames, world=world)
    check_output_dir(out, generator)
    return simulate_world(out, sequences=sequences, frames=frames, seed=seed, camera_hw=camera_hw,
                          lidar_beams=lidar_beams, world=world, cluster=placement)


def simulate_world(out: Path, *, sequences: int, frames: int, seed: int, camera_hw: tuple[int, int],
                   lidar_beams: int, world: WorldConfig, cluster: ClusterSpec | None = None) -> CachedWorld:
    """Shards ``0..sequences-1`` of run ``seed`` in ``out`` with a world record
    (:func:`taskology.sim.cache.ensure_world`), missing ones simulated with a progress bar, in this
    process or (``cluster``) on the workers of a Dask cluster started or reached only when there is
    something to simulate. Parameters are not checked against shards already there: :func:`sim_command`
    does that first; a cache keyed by its parameters (the demo's) calls this directly, so unreadable or
    changed shards are set aside and made again."""
    from taskology.sim.distributed import EmbeddedSequence

    generator = generator_description(seed=seed, camera_hw=camera_hw, lidar_beams=lidar_beams,
                                      lidar_azimuth=LIDAR_AZIMUTH, frame_rate=FRAME_RATE, frames=frames, world=world)
    job = EmbeddedSequence(seed=seed, frames=frames, camera_hw=(int(camera_hw[0]), int(camera_hw[1])),
                           lidar_beams=lidar_beams, lidar_azimuth=LIDAR_AZIMUTH, frame_rate=FRAME_RATE, world=world)
    names = [job.shard_name(i) for i in range(sequences)]

    def say(line: str) -> None:
        print(f"sim: {line}", flush=True)

    def make_shard(where: Path, index: int) -> Path:
        return job(where, index)

    def make_missing(where: Path, todo: list[int]) -> None:
        remove_partial_shards(where, [names[i] for i in todo], say)
        say(f"simulating {len(todo)} of {sequences} sequences into {where}"
            + (f" ({sequences - len(todo)} already there)" if len(todo) < sequences else ""))
        description = f"{len(todo)} sequences"
        try:
            if cluster is None:
                with progress_bar(description, len(todo) * frames) as update:
                    for n, index in enumerate(todo):
                        job(where, index, progress=lambda f, done=n * frames: update(done + f))
            else:
                _simulate_on_cluster(cluster, job, where, todo, description, say)
        finally:  # a worker that died mid-sequence left its temp file
            remove_partial_shards(where, [names[i] for i in todo], say)

    ready = ensure_world(out, generator, names, make_shard, make_missing=make_missing, say=say)
    if not ready.simulated:
        print(f"sim: all {sequences} sequences already in {out} (world {ready.digest})", flush=True)
    return ready


def _simulate_on_cluster(spec: ClusterSpec, job: Any, where: Path, todo: list[int], description: str,
                         say: Callable[[str], None], servers: list[str] | None = None) -> None:
    """Start or reach the cluster of ``spec``, check its workers see ``where``, simulate ``todo`` there
    (with ``servers``: one sequence per server at a time; a local cluster gets one worker per server)."""
    import dask

    from taskology.cluster.session import describe, open_cluster
    from taskology.sim.distributed import LOCAL_SCHEDULER_CONFIG, check_workers, simulate_on_cluster

    if spec.address == "local" and spec.n_workers is None:
        wanted = len(servers) if servers is not None else os.cpu_count() or 1
        spec = dataclasses.replace(spec, n_workers=max(1, min(wanted, len(todo))))
    with dask.config.set(LOCAL_SCHEDULER_CONFIG), open_cluster(spec) as session:
        say(describe(session))
        check_workers(session.client, where)
        with progress_bar(description, len(todo) * job.frames) as update:
            simulate_on_cluster(session.client, job, where, todo, servers=servers, on_progress=update)


def remove_partial_shards(root: Path, names: list[str], say: Callable[[str], None]) -> list[Path]:
    """Delete the temp files (:func:`taskology.data.writer.temp_path_for`) of shards ``names`` in ``root``:
    what a writer killed mid-sequence leaves; the sequence is simulated again from its first frame.
    Call it only while no writer of these shards runs (the world's lock is held). Returns what was deleted."""
    from taskology.data.writer import stale_temp_files

    prefixes = tuple(f".{name}." for name in names)
    removed = [p for p in stale_temp_files(root) if p.name.startswith(prefixes)]
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        say(f"removed {len(removed)} partial shard file(s) of stopped writers in {root} "
            f"({', '.join(p.name for p in removed[:3])}{', ...' if len(removed) > 3 else ''})")
    return removed


@contextlib.contextmanager
def progress_bar(description: str, total_frames: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over ``total_frames`` frames with frames/s (since the start) and the time
    left; yields ``update(frames_done)``."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn,
                               TimeRemainingColumn)
    from rich.text import Text

    class FramesPerSecond(ProgressColumn):
        def render(self, task: Task) -> Text:
            elapsed = task.finished_time if task.finished else task.elapsed
            rate = task.completed / elapsed if elapsed and task.completed else None
            return Text(f"{rate:.2f} frames/s" if rate is not None else "-.-- frames/s", style="progress.data.speed")

    columns = (TextColumn("[bold]sim[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("frames"), FramesPerSecond(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total_frames)
        yield lambda done: bar.update(task, completed=done)


def write_preview(png: Path, *, seed: int, camera_hw: tuple[int, int], lidar_beams: int, frame: int = 0,
                  world: WorldConfig | None = None) -> Path:
    """Render frame ``frame`` of sequence 0 into a temporary shard and draw it (rgb, depth, normals,
    semantic, LiDAR bird's-eye view with boxes) into ``png``."""
    from taskology.data.preview import render_frame_png

    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="taskology-preview-") as tmp:
        shard = generate_shard(Path(tmp), seed=seed, index=0, frames=frame + 1, camera_hw=camera_hw,
                               lidar_beams=lidar_beams, lidar_azimuth=LIDAR_AZIMUTH, frame_rate=FRAME_RATE,
                               world=world)
        render_frame_png(shard, frame, png)
    return png
