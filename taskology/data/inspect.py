"""``taskology inspect PATH``: summarise a shard or a dataset directory and verify every checksum.

:func:`summarize` does the work and returns plain data (tested); :func:`inspect_command` prints it
with rich tables and, with ``--png``, renders one frame (:func:`taskology.data.preview.render_frame_png`).
A corrupt shard is listed with its error; the command then fails with a DataError naming it.

Example:
    $ taskology inspect data/sim --png frame.png --frame 3
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from taskology.data.schema import LAYERS, SCHEMA_VERSION
from taskology.data.shard import Shard, shard_paths, stale_temp_files
from taskology.data.splits import MANIFEST_NAME, SplitManifest
from taskology.errors import DataError


@dataclass
class ShardSummary:
    """What ``inspect`` knows about one shard (``error`` set when it does not validate/verify)."""

    path: Path
    sequence_id: str = "?"
    num_frames: int = 0
    groups: tuple[str, ...] = ()
    schema_version: int | None = None
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> dtype, shape, chunks, compression
    lidar_points: int = 0
    object_rows: int = 0
    checksums: str = "not checked"
    error: str | None = None


@dataclass
class DatasetSummary:
    """Summary of a shard or a directory: its shards, the splits manifest if any, stale temp files."""

    path: Path
    shards: list[ShardSummary]
    splits: dict[str, Any] | None = None
    stale_temp_files: list[Path] = field(default_factory=list)
    world: str | None = None  #: one line on the folder's world record (taskology.sim.cache), if any

    @property
    def failed(self) -> list[ShardSummary]:
        return [s for s in self.shards if s.error]


def summarize_shard(path: Path, verify: bool = True) -> ShardSummary:
    """Open, validate and (with ``verify``) read every chunk of one shard; errors go in ``error``."""
    summary = ShardSummary(path=Path(path))
    try:
        with Shard.open(path) as shard:
            summary.sequence_id, summary.num_frames = shard.sequence_id, shard.num_frames
            summary.groups, summary.schema_version = shard.groups, int(shard.attrs["schema_version"])
            with h5py.File(path, "r") as raw:
                for name in shard.layers:
                    dset = raw[name]
                    summary.layers[name] = {"dtype": str(dset.dtype), "shape": tuple(dset.shape),
                                            "chunks": dset.chunks, "compression": dset.compression or "none",
                                            "fletcher32": bool(dset.fletcher32)}
            if "lidar" in shard.groups:
                summary.lidar_points = int(shard.offsets("lidar")[-1])
            if "objects" in shard.groups:
                summary.object_rows = int(shard.offsets("objects")[-1])
            if verify:
                shard.verify()
                unprotected = [n for n, v in summary.layers.items() if not v["fletcher32"]]
                summary.checksums = "ok" if not unprotected else f"ok (no checksum on {', '.join(unprotected)})"
    except DataError as exc:
        summary.error = str(exc)
        summary.checksums = "FAILED" if verify else summary.checksums
    return summary


def _splits_summary(root: Path) -> dict[str, Any] | None:
    if not (root / MANIFEST_NAME).exists():
        return None
    try:
        manifest = SplitManifest.load(root)
    except DataError as exc:
        return {"error": str(exc)}
    return {
        "seed": manifest.seed, "test_sequences": list(manifest.test), "val_sequences": list(manifest.val),
        "frames": {split: len(manifest.frames(split)) for split in ("train", "mediator", "val", "test")
                   if split != "val" or manifest.val},
        "mediator_fraction": manifest.mediator_fraction,
        "tasks": {t: {"requested": manifest.label_fractions.get(t, float("nan")),
                      "labeled_frames": len(manifest.labeled_frames(t)), "fraction": manifest.label_fraction(t)}
                  for t in sorted(manifest.labels)},
    }


def summarize(path: Path, verify: bool = True) -> DatasetSummary:
    """Summarise a shard file or a directory of shards (plus its ``splits.json``)."""
    path = Path(path)
    if path.is_file():
        return DatasetSummary(path=path, shards=[summarize_shard(path, verify)])
    if not path.is_dir():
        raise DataError(f"{path}: no such shard file or directory")
    paths = shard_paths(path)
    if not paths:
        raise DataError(f"{path}: expected shard files (*.h5), found none")
    return DatasetSummary(path=path, shards=[summarize_shard(p, verify) for p in paths],
                          splits=_splits_summary(path), stale_temp_files=stale_temp_files(path),
                          world=_world_summary(path))


def _world_summary(root: Path) -> str | None:
    """One line on ``root``'s world record: its digest, how many shards it covers, and whether today's
    simulator is the one that made (or last checked) it."""
    from taskology.sim.cache import RECORD, read_record, simulator_fingerprint

    try:
        record = read_record(root)
    except DataError as exc:
        return f"[red]{exc}[/red]"
    if record is None:
        return None
    same = "today's" if record["simulator"] == simulator_fingerprint() else "other (checked again on next use)"
    return (f"world {record.get('digest')} ({RECORD}: {len(record['shards'])} shard digests, simulator {same})")


def _shape_text(shape: tuple[int, ...], name: str) -> str:
    symbols = LAYERS[name].shape
    return "(" + ", ".join(f"{s}={n}" if isinstance(s, str) else str(n) for s, n in zip(symbols, shape)) + ")"


def inspect_command(path: Path, png: Path | None = None, frame: int = 0) -> None:
    """CLI entry of ``taskology inspect``: print the summary; with ``png`` also render one frame."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 150))
    summary = summarize(Path(path))
    ok = [s for s in summary.shards if not s.error]
    console.print(f"[bold]{summary.path}[/bold]: {len(summary.shards)} shard(s), "
                  f"{sum(s.num_frames for s in ok)} frames, schema version "
                  f"{sorted({s.schema_version for s in ok if s.schema_version is not None}) or '?'} "
                  f"(this build reads {SCHEMA_VERSION})")
    if ok:
        first = ok[0]
        layers = Table(title=f"layers ({first.path.name})")
        for col in ("layer", "dtype", "shape", "chunks", "compression", "checksum"):
            layers.add_column(col, no_wrap=True)
        layers.add_column("units")
        for name, info in first.layers.items():
            layers.add_row(name, info["dtype"], _shape_text(info["shape"], name), str(info["chunks"]),
                           info["compression"], "fletcher32" if info["fletcher32"] else "none", LAYERS[name].units)
        console.print(layers)
    seqs = Table(title="sequences")
    for col in ("file", "sequence", "frames", "groups", "lidar pts", "objects", "checksums"):
        seqs.add_column(col)
    for s in summary.shards:
        status = "[green]ok[/green]" if not s.error else f"[red]{s.error}[/red]"
        seqs.add_row(s.path.name, s.sequence_id, str(s.num_frames), ",".join(s.groups), str(s.lidar_points),
                     str(s.object_rows), status)
    console.print(seqs)
    if summary.splits is not None:
        if "error" in summary.splits:
            console.print(f"[red]splits manifest: {summary.splits['error']}[/red]")
        else:
            sp = summary.splits
            console.print(f"splits ({MANIFEST_NAME}, seed {sp['seed']}): " + ", ".join(
                f"{k} {v} frames" for k, v in sp["frames"].items()) + f"; test sequences {sp['test_sequences']}"
                + (f"; val sequences {sp['val_sequences']}" if sp.get("val_sequences") else ""))
            tasks = Table(title="label fractions (of train frames)")
            for col in ("task", "requested", "labeled frames", "fraction"):
                tasks.add_column(col)
            for task, info in sp["tasks"].items():
                tasks.add_row(task, f"{info['requested']:.3f}", str(info["labeled_frames"]), f"{info['fraction']:.3f}")
            console.print(tasks)
    elif summary.path.is_dir():
        console.print(f"no {MANIFEST_NAME} (create one with taskology.data.splits.make_splits)")
    if summary.world is not None:
        console.print(summary.world)
    if summary.stale_temp_files:
        console.print(f"[yellow]{len(summary.stale_temp_files)} stale temp file(s) of crashed writers: "
                      f"{', '.join(p.name for p in summary.stale_temp_files)}[/yellow]")
    if png is not None:
        from taskology.data.preview import render_frame_png

        if not ok:
            raise DataError(f"{summary.path}: no valid shard to render")
        render_frame_png(ok[0].path, frame, Path(png))
        console.print(f"wrote {png} ({ok[0].path.name}, frame {frame})")
    if summary.failed:
        bad = summary.failed[0]
        raise DataError(f"{len(summary.failed)} of {len(summary.shards)} shard(s) failed validation; first: {bad.error}")
