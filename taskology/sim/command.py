"""``taskology sim``: validate the request, check the output directory, generate shards with a
progress bar (resuming: identical existing shards are skipped), or write a one-frame preview PNG. The
output folder carries a world record (:mod:`taskology.sim.cache`): shards left there by other simulator
code are kept only if today's code simulates them identically.

Example:
    $ taskology sim --out data/sim --sequences 2 --frames 10 --camera 64x208
    $ taskology sim --camera 128x416 --preview docs/images/sim_preview.png
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import h5py

from taskology.config import flatten_dotted
from taskology.data.schema import SCHEMA_VERSION
from taskology.errors import NotAvailable, SimError
from taskology.sim.cache import CachedWorld, ensure_world
from taskology.sim.config import WorldConfig
from taskology.sim.generate import (generate_shard, generator_description, sequence_id_for, validate_parameters)

LIDAR_AZIMUTH = 1024
FRAME_RATE = 10.0


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


def sim_command(out: Path, sequences: int, frames: int, seed: int, camera: str, lidar_beams: int, backend: str,
                carla_host: str, preview: Path | None, ego_speed: tuple[float, float] = (5.0, 9.0)
                ) -> CachedWorld | None:
    """Entry point of ``taskology sim`` (arguments as parsed by :mod:`taskology.cli`). The embedded
    simulator's output folder carries a world record (:mod:`taskology.sim.cache`); its
    :class:`~taskology.sim.cache.CachedWorld` is returned (None for a preview or CARLA)."""
    camera_hw, world = checked_request(sequences=sequences, frames=frames, seed=seed, camera=camera,
                                       lidar_beams=lidar_beams, ego_speed=ego_speed)
    if preview is not None:
        write_preview(Path(preview), seed=seed, camera_hw=camera_hw, lidar_beams=lidar_beams, world=world)
        return None
    out = Path(out)
    if backend == "carla" and world != WorldConfig():
        raise SimError("--ego-speed: an option of the embedded simulator; CARLA drives its "
                       "own traffic (nothing was written)")
    if backend == "carla":
        try:
            from taskology.sim.carla_backend import generate_carla_shards
        except ImportError as exc:
            raise NotAvailable(f"the CARLA backend is not available ({exc}); install it with pip install 'taskology[carla]'") from exc
        generate_carla_shards(out, host=carla_host, sequences=sequences, frames=frames, seed=seed,
                              camera_hw=camera_hw, lidar_beams=lidar_beams, lidar_azimuth=LIDAR_AZIMUTH,
                              frame_rate=FRAME_RATE)
        return None
    if backend != "embedded":
        raise SimError(f"--backend: expected 'embedded' or 'carla', found {backend!r}")
    generator = generator_description(seed=seed, camera_hw=camera_hw, lidar_beams=lidar_beams,
                                      lidar_azimuth=LIDAR_AZIMUTH, frame_rate=FRAME_RATE, frames=frames, world=world)
    check_output_dir(out, generator)
    return simulate_world(out, sequences=sequences, frames=frames, seed=seed, camera_hw=camera_hw,
                          lidar_beams=lidar_beams, world=world)


def simulate_world(out: Path, *, sequences: int, frames: int, seed: int, camera_hw: tuple[int, int],
                   lidar_beams: int, world: WorldConfig) -> CachedWorld:
    """Shards ``0..sequences-1`` of run ``seed`` in ``out`` with a world record
    (:func:`taskology.sim.cache.ensure_world`), missing ones simulated with a progress bar. Parameters are
    not checked against shards already there: :func:`sim_command` does that first; a cache keyed by its
    parameters (the demo's) calls this directly, so unreadable or changed shards are set aside and made again."""
    generator = generator_description(seed=seed, camera_hw=camera_hw, lidar_beams=lidar_beams,
                                      lidar_azimuth=LIDAR_AZIMUTH, frame_rate=FRAME_RATE, frames=frames, world=world)

    def make_shard(where: Path, index: int) -> Path:
        return generate_shard(where, seed=seed, index=index, frames=frames, camera_hw=camera_hw,
                              lidar_beams=lidar_beams, lidar_azimuth=LIDAR_AZIMUTH, frame_rate=FRAME_RATE, world=world)

    def make_missing(where: Path, todo: list[int]) -> None:
        _generate_with_progress(where, todo, sequences, seed=seed, frames=frames, camera_hw=camera_hw,
                                lidar_beams=lidar_beams, world=world)

    names = [f"{sequence_id_for(seed, i)}.h5" for i in range(sequences)]
    ready = ensure_world(out, generator, names, make_shard, make_missing=make_missing,
                         say=lambda line: print(f"sim: {line}", flush=True))
    if not ready.simulated:
        print(f"sim: all {sequences} sequences already in {out} (world {ready.digest})", flush=True)
    return ready


def _generate_with_progress(out: Path, todo: list[int], sequences: int, *, seed: int, frames: int,
                            camera_hw: tuple[int, int], lidar_beams: int, world: WorldConfig) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    skipped = sequences - len(todo)
    columns = (TextColumn("[bold]sim[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("frames"), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(f"{len(todo)} sequences ({skipped} already done) -> {out}", total=len(todo) * frames)
        for n, index in enumerate(todo):
            done = n * frames
            generate_shard(out, seed=seed, index=index, frames=frames, camera_hw=camera_hw, lidar_beams=lidar_beams,
                           lidar_azimuth=LIDAR_AZIMUTH, frame_rate=FRAME_RATE, world=world,
                           progress=lambda f, done=done: bar.update(task, completed=done + f))


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
