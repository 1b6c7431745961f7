"""Atomic HDF5 shard writer: a shard appears under its final name only when it is complete.

The writer streams one frame at a time into a temporary file in the destination directory
(``.<name>.tmp-<pid>-<random>``, never matched by ``*.h5``), keeps the ragged offsets in memory,
and on :meth:`ShardWriter.close` writes offsets and root attributes, flushes, fsyncs the file,
links it to its final name (``os.link`` fails if the name exists, so nothing is overwritten
silently; ``overwrite=True`` uses ``os.replace``) and fsyncs the directory. A writer killed at any
point leaves at most a temp file (see :func:`stale_temp_files`); existing shards are never touched.

A full disk is an :class:`taskology.atomic.DiskFullError` (an ``OSError``): one line naming the shard; the
temp file is removed at once, which frees its space, the writer is closed, and finished shards are
untouched. HDF5 cannot recover from a write that finds the disk full (such a file can be neither flushed
nor closed, and the process crashes when it is released), so the writer checks the free space before each
frame and stops while :data:`FREE_SPACE_RESERVE` bytes are still free. Should another process take the
space between check and write, the failed write raises the same error, the temp file is truncated and
unlinked, and the unclosable HDF5 file is kept referenced (released at exit, where HDF5 may still crash).

Every dataset carries HDF5's ``fletcher32`` checksum; per-frame layers are chunked one frame per
chunk and resizable along F. Compression per layer is :data:`COMPRESSION` (chosen by measurement,
see ``taskology bench store``).

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with ShardWriter(d / "s.h5", sequence_id="s", frame_rate=10.0, generator={"backend": "test"},
    ...                  camera_hw=None, lidar=False, objects=False) as w:
    ...     w.append({"ego/world_from_ego": np.eye(4)})
    >>> sorted(p.name for p in d.iterdir())
    ['s.h5']
"""
from __future__ import annotations

import errno
import json
import os
import secrets
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping

import h5py
import numpy as np

from taskology.atomic import DiskFullError, disk_full_error
from taskology.data.schema import GROUPS, LAYERS, SCHEMA_VERSION
from taskology.errors import DataError

#: per-layer HDF5 compression (None = raw). The integer label layers take deflate (``"gzip"`` at
#: :data:`GZIP_LEVEL`): 17-130x smaller on simulated 64x208 frames and LiDAR sweeps, where LZF reached
#: 11-68x, at about LZF's CPU time per chunk (0.06-0.3 ms on 2 cores); float and rgb layers barely compress
#: and are left raw (bench store). Not LZF: h5py's LZF starts from an uninitialised hash table, so a chunk
#: can come out as other bytes depending on what the process did before (seen in Dask workers), while
#: deflate's bytes depend on the data and the level only. Shards written with LZF read as before.
COMPRESSION: dict[str, str | None] = {
    "camera/semantic": "gzip",
    "camera/instance": "gzip",
    "lidar/semantic": "gzip",
    "lidar/instance": "gzip",
}
#: deflate level of ``"gzip"`` layers (1, the fastest: level 4 shrinks label layers 1.25-2x more at
#: 1.5-1.9x the CPU time).
GZIP_LEVEL = 1
#: rows per chunk of ragged layers (lidar points, object rows).
RAGGED_CHUNK_ROWS = {"lidar": 32768, "objects": 1024}
TEMP_MARKER = ".tmp-"
#: bytes a writer leaves free on its device (room for HDF5's dirty chunk caches, 1 MiB per dataset, and
#: metadata when the file is closed); a frame that would leave less is a DiskFullError before it is written
FREE_SPACE_RESERVE = 32 * 2**20
#: HDF5 files whose close failed after a full disk: releasing them crashes the process, so they are kept
_UNCLOSABLE: list[Any] = []

_PER_FRAME = {"camera": ("camera/rgb", "camera/depth", "camera/normals", "camera/semantic", "camera/instance"),
              "ego": ("ego/world_from_ego",)}
_RAGGED = {"lidar": ("lidar/points", "lidar/semantic", "lidar/instance"),
           "objects": ("objects/track_id", "objects/class_id", "objects/box", "objects/velocity")}
_STATIC = {"camera": ("camera/K", "camera/cam_from_ego"), "lidar": ("lidar/lidar_from_ego",)}


def temp_path_for(path: Path) -> Path:
    """Temporary name used while writing ``path`` (same directory, hidden, not ``*.h5``)."""
    return path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}")


def stale_temp_files(directory: Path) -> list[Path]:
    """Temp files left in ``directory`` by writers that died (any pid); safe to delete when no
    writer is running there."""
    return sorted(p for p in Path(directory).glob(f".*.h5{TEMP_MARKER}*") if p.is_file())


def _filter_options(codec: str | None) -> dict[str, Any]:
    """h5py's keyword arguments for a layer compressed with ``codec``: ``"gzip"`` (deflate at
    :data:`GZIP_LEVEL`), ``"lzf"`` or None (raw)."""
    return {"compression": codec, "compression_opts": GZIP_LEVEL if codec == "gzip" else None}


def _expected_shape(name: str, hw: tuple[int, int] | None) -> tuple[int, ...]:
    """Shape of one frame (per-frame layers), one row (ragged) or the whole static array."""
    layer = LAYERS[name]
    dims = layer.shape[1:] if (layer.per_frame or layer.shape[0] in ("P", "O")) else layer.shape
    out = []
    for d in dims:
        if d == "H":
            out.append(hw[0] if hw else -1)
        elif d == "W":
            out.append(hw[1] if hw else -1)
        else:
            out.append(int(d))
    return tuple(out)


def _coerce(name: str, value: Any, shape: tuple[int, ...], where: Path, ragged: bool) -> np.ndarray:
    """Check ``value`` against layer ``name`` (``shape`` per frame/row) and cast it to the schema dtype."""
    layer = LAYERS[name]
    arr = np.asarray(value)
    if arr.dtype != layer.dtype:
        int_to_int = arr.dtype.kind in "iu" and layer.dtype.kind in "iu"
        if not int_to_int and not np.can_cast(arr.dtype, layer.dtype, casting="same_kind"):
            raise DataError(f"{where}: layer {name!r}: expected dtype {layer.dtype}, found {arr.dtype}")
        cast = arr.astype(layer.dtype)
        if layer.dtype.kind in "iu" and not np.array_equal(cast, arr):
            raise DataError(f"{where}: layer {name!r}: values do not fit dtype {layer.dtype} "
                            f"(range {arr.min()}..{arr.max()})")
        arr = cast
    got = arr.shape[1:] if ragged else arr.shape
    if ragged and arr.ndim != len(shape) + 1 or not ragged and arr.ndim != len(shape) or any(
            e != -1 and e != g for e, g in zip(shape, got)):
        want = ("(n, " + ", ".join(map(str, shape)) + ")") if ragged else str(shape)
        raise DataError(f"{where}: layer {name!r}: expected shape {want}, found {arr.shape}")
    if layer.finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DataError(f"{where}: layer {name!r}: expected finite values, found NaN or inf")
    return np.ascontiguousarray(arr)


class ShardWriter:
    """Stream the frames of one sequence into a new shard, atomically.

    Args:
        path: final shard path, ``<dir>/<sequence_id>.h5``; its directory must exist.
        sequence_id: stable id of the sequence (root attribute).
        frame_rate: frames per second, Hz.
        generator: JSON-serialisable description ``{"backend", "seed", "config"}``.
        camera_hw: ``(H, W)`` of the camera layers, or ``None`` for a shard without a camera group.
        lidar: whether the shard has a lidar group (points, semantic, instance per frame).
        objects: whether the shard has an objects group (track_id, class_id, box, velocity).
        overwrite: replace an existing shard at ``path`` (otherwise that is a DataError).
        ego: whether the shard has the ego group (``ego/world_from_ego`` per frame).
        compression: layer -> HDF5 filter (``"lzf"``, ``"gzip"`` or None); default :data:`COMPRESSION`.

    Every :meth:`append` must carry exactly the per-frame layers of the present groups; static layers
    (``camera/K``, ``camera/cam_from_ego``, ``lidar/lidar_from_ego``) are given once by
    :meth:`set_static`. Used as a context manager it closes on success and aborts on exception.
    """

    def __init__(self, path: Path, *, sequence_id: str, frame_rate: float, generator: dict,
                 camera_hw: tuple[int, int] | None, lidar: bool, objects: bool, overwrite: bool = False,
                 ego: bool = True, compression: Mapping[str, str | None] | None = None) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        if not self.path.parent.is_dir():
            raise DataError(f"{self.path}: output directory does not exist")
        if self.path.exists() and not overwrite:
            raise DataError(f"{self.path}: shard exists; pass overwrite=True to replace it")
        if camera_hw is not None and (len(camera_hw) != 2 or min(camera_hw) <= 0):
            raise DataError(f"{self.path}: camera_hw must be (H, W) > 0, found {camera_hw}")
        if not frame_rate > 0:
            raise DataError(f"{self.path}: frame_rate must be > 0 Hz, found {frame_rate}")
        self.groups = tuple(g for g, on in (("camera", camera_hw is not None), ("ego", ego), ("lidar", lidar),
                                            ("objects", objects)) if on)
        if not self.groups:
            raise DataError(f"{self.path}: a shard needs at least one group")
        self.camera_hw = tuple(camera_hw) if camera_hw is not None else None
        self._attrs = {"schema_version": SCHEMA_VERSION, "sequence_id": str(sequence_id),
                       "frame_rate": float(frame_rate), "generator": json.dumps(generator, sort_keys=True)}
        self._per_frame = [n for g in self.groups for n in _PER_FRAME.get(g, ())]
        self._ragged = [n for g in self.groups for n in _RAGGED.get(g, ())]
        self._static_needed = {n for g in self.groups for n in _STATIC.get(g, ())}
        self._offsets: dict[str, list[int]] = {g: [0] for g in self.groups if g in _RAGGED}
        self._frames = 0
        self._closed = False
        codecs = COMPRESSION if compression is None else compression
        self.temp_path = temp_path_for(self.path)
        try:
            self._file = h5py.File(self.temp_path, "w", libver="latest")
        except OSError as exc:
            self._raise_if_disk_full(exc)
            raise DataError(f"{self.temp_path}: cannot create temp shard: {exc}") from exc
        try:
            self._create_datasets(codecs)
        except BaseException as exc:
            self._raise_if_disk_full(exc)
            self.abort()
            raise

    def _create_datasets(self, codecs: Mapping[str, str | None]) -> None:
        for group in self.groups:
            self._file.create_group(group)
        # Dataset handles are kept (h5py reopens a dataset by path on every ``file[name]``) and grown
        # by doubling (one resize per frame costs as much as the write); close() trims to the rows written.
        self._dsets: dict[str, h5py.Dataset] = {}
        for name in self._per_frame:
            shape = _expected_shape(name, self.camera_hw)
            self._dsets[name] = self._file.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), chunks=(1, *shape),
                                      dtype=LAYERS[name].dtype, fletcher32=True, **_filter_options(codecs.get(name)))
        for name in self._ragged:
            shape = _expected_shape(name, None)
            rows = RAGGED_CHUNK_ROWS[LAYERS[name].group]
            self._dsets[name] = self._file.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), chunks=(rows, *shape),
                                      dtype=LAYERS[name].dtype, fletcher32=True, **_filter_options(codecs.get(name)))

    # ------------------------------------------------------------------ writing
    def set_static(self, **layers: np.ndarray) -> None:
        """Write the static layers, e.g. ``set_static(**{"camera/K": K, "camera/cam_from_ego": T})``."""
        self._check_open()
        for name, value in layers.items():
            if name not in self._static_needed:
                raise DataError(f"{self.path}: {name!r} is not a static layer of this shard; "
                                f"expected one of {sorted(self._static_needed)}")
            arr = _coerce(name, value, _expected_shape(name, self.camera_hw), self.path, ragged=False)
            try:
                if name in self._file:
                    del self._file[name]
                self._write_whole(name, arr)
            except OSError as exc:
                self._raise_if_disk_full(exc)
                raise

    def append(self, frame: Mapping[str, np.ndarray]) -> None:
        """Append one frame: per-frame layers without the F axis, ragged layers as this frame's rows.

        Example keys: ``"camera/rgb": (H, W, 3) uint8``, ``"ego/world_from_ego": (4, 4) float64``,
        ``"lidar/points": (p, 4) float32``, ``"objects/box": (o, 7) float64``. No offsets.
        """
        self._check_open()
        expected = set(self._per_frame) | set(self._ragged)
        missing, unknown = expected - set(frame), set(frame) - expected
        if missing or unknown:
            raise DataError(f"{self.path}: frame {self._frames}: expected layers {sorted(expected)}, "
                            f"missing {sorted(missing)}, unexpected {sorted(unknown)}")
        where = self.path
        arrays = {n: _coerce(n, frame[n], _expected_shape(n, self.camera_hw), where, ragged=False)
                  for n in self._per_frame}
        rows: dict[str, int] = {}
        for name in self._ragged:
            arr = _coerce(name, frame[name], _expected_shape(name, None), where, ragged=True)
            group = LAYERS[name].group
            if rows.setdefault(group, len(arr)) != len(arr):
                raise DataError(f"{self.path}: frame {self._frames}: layer {name!r} has {len(arr)} rows, "
                                f"expected {rows[group]} like the rest of group {group!r}")
            arrays[name] = arr
        self._ensure_space(sum(a.nbytes for a in arrays.values()), f"frame {self._frames}")
        try:
            self._write_frame(arrays, rows)
        except OSError as exc:
            self._raise_if_disk_full(exc)
            raise
        for group, n in rows.items():
            self._offsets[group].append(self._offsets[group][-1] + n)
        self._frames += 1

    def _write_frame(self, arrays: Mapping[str, np.ndarray], rows: Mapping[str, int]) -> None:
        f = self._frames
        for name in self._per_frame:
            self._reserve(name, f + 1)[f] = arrays[name]
        for name in self._ragged:
            group = LAYERS[name].group
            start = self._offsets[group][-1]
            dset = self._reserve(name, start + rows[group])
            if rows[group]:
                dset[start:start + rows[group]] = arrays[name]

    def _ensure_space(self, nbytes: int, what: str) -> None:
        """Abort with a DiskFullError unless ``nbytes`` plus :data:`FREE_SPACE_RESERVE` are free on the device."""
        free = _free_bytes(self.path.parent)
        if free is None or free >= nbytes + FREE_SPACE_RESERVE:
            return
        self.abort()
        raise DiskFullError(errno.ENOSPC, f"{self.path}: no space left on device for {what} ({free / 2**20:.1f} MiB "
                            f"free, {(nbytes + FREE_SPACE_RESERVE) / 2**20:.1f} MiB needed with the writer's reserve); "
                            "the shard was not created and its temp file was removed", str(self.path))

    def _raise_if_disk_full(self, exc: BaseException) -> None:
        """On a full disk: drop the temp file now (it holds the space) and raise DiskFullError naming the shard."""
        full = disk_full_error(self.path, exc)
        if full is not None:
            self.abort()
            raise full from (None if full is exc else exc)

    def _write_whole(self, name: str, data: np.ndarray) -> None:
        """Write dataset ``name`` whole (``fletcher32``) and flush it at once, so that its chunk takes its
        place in the file now. HDF5 places a chunk when it leaves the dataset's chunk cache, at the latest
        when the dataset closes, and the handle h5py returns can outlive this call (a sampling profiler such
        as a Dask worker's holds the running frames for a moment; the cyclic garbage collector runs when it
        likes): placed at close, the chunk would land after whatever was written meanwhile, and the same
        shard would come out as other bytes."""
        self._file.create_dataset(name, data=data, fletcher32=True).flush()

    def _reserve(self, name: str, rows: int) -> h5py.Dataset:
        """The dataset ``name`` with room for at least ``rows`` rows along axis 0 (grown by doubling)."""
        dset = self._dsets[name]
        if rows > dset.shape[0]:
            dset.resize(max(rows, 2 * dset.shape[0], 8), axis=0)
        return dset

    # ------------------------------------------------------------------ finishing
    def close(self) -> Path:
        """Finish the shard: offsets and attributes, flush, fsync, atomic rename; returns the final path."""
        self._check_open()
        try:
            if self._frames == 0:
                raise DataError(f"{self.path}: no frames appended; a shard needs at least one frame")
            missing = self._static_needed - {n for n in self._static_needed if n in self._file}
            if missing:
                raise DataError(f"{self.path}: static layers not set: {sorted(missing)} (call set_static)")
            for name in self._per_frame:
                self._dsets[name].resize(self._frames, axis=0)
            for name in self._ragged:
                self._dsets[name].resize(self._offsets[LAYERS[name].group][-1], axis=0)
            self._ensure_space(sum(8 * len(o) for o in self._offsets.values()), "closing it")
            for group, offsets in self._offsets.items():
                self._write_whole(f"{group}/offsets", np.asarray(offsets, dtype=np.int64))
            for key, value in self._attrs.items():
                self._file.attrs[key] = value
            self._file.attrs["num_frames"] = self._frames
            self._file.flush()
            self._file.close()
            _fsync_file(self.temp_path)
            if self.overwrite:
                os.replace(self.temp_path, self.path)
            else:
                try:
                    os.link(self.temp_path, self.path)
                except FileExistsError as exc:
                    raise DataError(f"{self.path}: shard appeared while writing; not overwritten") from exc
                except OSError:  # file system without hard links: check-then-rename (small race)
                    if self.path.exists():
                        raise DataError(f"{self.path}: shard appeared while writing; not overwritten") from None
                    os.replace(self.temp_path, self.path)
                else:
                    os.unlink(self.temp_path)
            _fsync_dir(self.path.parent)
        except BaseException as exc:
            self._raise_if_disk_full(exc)
            self.abort()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop the temp file; the final path is untouched. Idempotent."""
        if getattr(self, "_file", None) is not None and self._file.id.valid:
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 - a write found the disk full: HDF5 can no longer close this file
                _UNCLOSABLE.append((self._file, getattr(self, "_dsets", None)))
                try:
                    os.truncate(self.temp_path, 0)  # HDF5 keeps the descriptor open: free the space now
                except OSError:
                    pass
        self._closed = True
        try:
            self.temp_path.unlink()
        except FileNotFoundError:
            pass

    @property
    def num_frames(self) -> int:
        return self._frames

    def _check_open(self) -> None:
        if self._closed:
            raise DataError(f"{self.path}: writer is already closed")

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._closed:
            return
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _free_bytes(directory: Path) -> int | None:
    """Bytes an unprivileged process may still write on ``directory``'s device; None where it is not reported."""
    try:
        st = os.statvfs(directory)
    except OSError:  # pragma: no cover - platforms without statvfs
        return None
    return st.f_bavail * st.f_frsize if st.f_blocks else None


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_shard(path: Path, layers: Mapping[str, np.ndarray], *, sequence_id: str, frame_rate: float,
                generator: dict, overwrite: bool = False) -> Path:
    """Write whole arrays (schema names, with the F axis and the ``*/offsets``) as one shard.

    Groups are those present in ``layers``; each must be complete. Returns the final path.
    """
    present = {name.split("/", 1)[0] for name in layers}
    unknown = sorted(set(layers) - set(LAYERS))
    if unknown:
        raise DataError(f"{path}: unknown layers {unknown}; schema layers are {sorted(LAYERS)}")
    for group in present:
        missing = sorted(set(GROUPS[group]) - set(layers))
        if missing:
            raise DataError(f"{path}: group {group!r} is incomplete: missing {missing}")
    per_frame = [n for g in ("camera", "ego") if g in present for n in _PER_FRAME[g]]
    counts = {n: len(layers[n]) for n in per_frame}
    offsets = {g: np.asarray(layers[f"{g}/offsets"]) for g in ("lidar", "objects") if g in present}
    counts.update({f"{g}/offsets": len(o) - 1 for g, o in offsets.items()})
    if len(set(counts.values())) != 1:
        raise DataError(f"{path}: layers disagree on the number of frames: {counts}")
    frames = next(iter(counts.values()))
    for group, o in offsets.items():
        n_rows = len(layers[_RAGGED[group][0]])
        if o.ndim != 1 or o[0] != 0 or o[-1] != n_rows or np.any(np.diff(o) < 0):
            raise DataError(f"{path}: layer '{group}/offsets': expected monotone offsets from 0 to {n_rows}, "
                            f"found {o[:3]}...{o[-3:]}")
    hw = tuple(np.shape(layers["camera/rgb"])[1:3]) if "camera" in present else None
    with ShardWriter(path, sequence_id=sequence_id, frame_rate=frame_rate, generator=generator, camera_hw=hw,
                     lidar="lidar" in present, objects="objects" in present, overwrite=overwrite,
                     ego="ego" in present) as writer:
        static = {n: layers[n] for g in present for n in _STATIC.get(g, ())}
        if static:
            writer.set_static(**static)
        for f in range(frames):
            frame = {n: layers[n][f] for n in per_frame}
            for group, o in offsets.items():
                frame.update({n: layers[n][o[f]:o[f + 1]] for n in _RAGGED[group]})
            writer.append(frame)
    return Path(path)
