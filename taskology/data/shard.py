"""Shard files: the validating reader :class:`Shard` (and the writer, re-exported from ``writer``).

:meth:`Shard.open` validates the whole structure before anything is read: schema version and root
attributes, the groups present and that each is complete, every dataset's shape and dtype against
:data:`taskology.data.schema.LAYERS`, the ragged offsets (length ``F+1``, from 0, monotone, ending at
``P``/``O``), finiteness of the small float layers (poses, transforms, intrinsics, boxes,
velocities) and box sizes ``l, w, h > 0``. The large float layers (depth, normals, lidar points) are
checked for finiteness chunk by chunk as they are read (only the rows of the frames read), so opening
stays cheap; :meth:`Shard.verify` reads everything (all checksums, all values). Any violation --
including HDF5's own errors on truncated files and fletcher32 checksum failures -- is a
:class:`~taskology.errors.DataError` whose message is one line naming the file, the dataset, what was
expected and what was found. Reads are lazy: nothing but offsets and small layers is held in memory.
A frame with no lidar points (or no objects) is valid: its rows are an empty ``(0, 4)`` (``(0, 7)``) array.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.h5"
    >>> _ = write_shard(p, {"ego/world_from_ego": np.stack([np.eye(4)] * 3)}, sequence_id="s",
    ...                 frame_rate=10.0, generator={"backend": "test"})
    >>> with Shard.open(p) as shard:
    ...     shard.num_frames, shard.groups, shard.read("ego/world_from_ego", 1).shape
    (3, ('ego',), (4, 4))
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from taskology.data.read_kernels import all_finite
from taskology.data.schema import GROUPS, LAYERS, REQUIRED_ATTRS, SCHEMA_VERSION
from taskology.data.writer import ShardWriter, stale_temp_files, write_shard
from taskology.errors import DataError

__all__ = ["LAZY_FINITE_LAYERS", "Shard", "ShardWriter", "shard_paths", "stale_temp_files", "write_shard"]

#: finite layers checked when read (chunk by chunk) rather than at open, because they are large.
LAZY_FINITE_LAYERS = frozenset({"camera/depth", "camera/normals", "lidar/points"})
#: ragged groups and their offsets layer.
_OFFSETS = {"lidar": "lidar/offsets", "objects": "objects/offsets"}

Frames = int | slice | Sequence[int] | np.ndarray | None


def shard_paths(root: Path) -> list[Path]:
    """The complete shards (``*.h5``, not hidden, not temp files) of a directory, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory of shards")
    return sorted(p for p in root.glob("*.h5") if not p.name.startswith(".") and p.is_file())


class Shard:
    """A validated, lazily read shard. Open with :meth:`Shard.open`; close or use as a context manager.

    Attributes:
        path: the shard file.
        num_frames: F.
        sequence_id: the sequence's id.
        frame_rate: Hz.
        generator: the generator description (dict, from the JSON attribute).
        groups: present groups, in schema order.
        camera_hw: (H, W) of the camera layers, or None.
    """

    def __init__(self, path: Path, file: h5py.File) -> None:
        self.path = Path(path)
        self._file = file
        self._datasets: dict[str, h5py.Dataset] = {}
        self._offsets: dict[str, np.ndarray] = {}
        self._per_frame: frozenset[str] = frozenset()
        try:
            self._validate()
        except BaseException:
            file.close()
            raise

    @classmethod
    def open(cls, path: Path | str) -> Shard:
        """Open and validate ``path``; raise DataError on anything that does not follow the schema."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: shard file not found")
        try:
            file = h5py.File(path, "r")
        except OSError as exc:
            raise DataError(_one_line(f"{path}: dataset (whole file): expected a readable HDF5 shard, found a "
                                      f"truncated or corrupt file ({exc})")) from exc
        return cls(path, file)

    # ------------------------------------------------------------------ validation
    def _fail(self, dataset: str, expected: str, found: Any) -> DataError:
        return DataError(_one_line(f"{self.path}: dataset {dataset!r}: expected {expected}, found {found}"))

    def _validate(self) -> None:
        try:
            attrs = {k: self._file.attrs[k] for k in self._file.attrs}
        except OSError as exc:
            raise self._fail("/ (root attributes)", "readable attributes", exc) from exc
        missing = [k for k in REQUIRED_ATTRS if k not in attrs]
        if missing:
            raise self._fail("/ (root attributes)", f"attributes {list(REQUIRED_ATTRS)}", f"{missing} missing")
        version = attrs["schema_version"]
        if not np.issubdtype(np.asarray(version).dtype, np.integer) or int(version) != SCHEMA_VERSION:
            raise self._fail("/ (attribute schema_version)", f"schema version {SCHEMA_VERSION}", version)
        num_frames = attrs["num_frames"]
        if not np.issubdtype(np.asarray(num_frames).dtype, np.integer) or int(num_frames) < 1:
            raise self._fail("/ (attribute num_frames)", "an integer >= 1", num_frames)
        try:
            self.generator: dict = json.loads(attrs["generator"])
        except (TypeError, ValueError) as exc:
            raise self._fail("/ (attribute generator)", "a JSON object", attrs["generator"]) from exc
        self.num_frames = int(num_frames)
        self.sequence_id = str(attrs["sequence_id"])
        self.frame_rate = float(attrs["frame_rate"])
        if not self.frame_rate > 0:
            raise self._fail("/ (attribute frame_rate)", "a rate > 0 Hz", self.frame_rate)
        self.attrs = attrs
        unknown = sorted(set(self._file.keys()) - set(GROUPS))
        if unknown:
            raise self._fail(f"/{unknown[0]}", f"only the groups {sorted(GROUPS)}", f"group(s) {unknown}")
        self.groups = tuple(g for g in GROUPS if g in self._file)
        if not self.groups:
            raise self._fail("/", f"at least one of the groups {sorted(GROUPS)}", "none")
        sizes: dict[str, int] = {"F": self.num_frames, "F+1": self.num_frames + 1}
        for group in self.groups:
            for name in GROUPS[group]:
                self._check_dataset(name, sizes)
        self.camera_hw = (sizes["H"], sizes["W"]) if "camera" in self.groups else None
        #: per-frame layers present (one chunk per frame): the hot path of :meth:`read`.
        self._per_frame = frozenset(n for n in self._datasets if LAYERS[n].per_frame)
        for group, name in _OFFSETS.items():
            if group in self.groups:
                self._offsets[group] = self._check_offsets(name, sizes["P" if group == "lidar" else "O"])
        for group in self.groups:
            for name in GROUPS[group]:
                layer = LAYERS[name]
                if layer.finite and layer.dtype.kind == "f" and name not in LAZY_FINITE_LAYERS:
                    values = self._read_raw(name, ())
                    self._check_finite(name, values, "all rows")
                    if name == "objects/box":
                        self._check_box_sizes(values)

    def _check_dataset(self, name: str, sizes: dict[str, int]) -> None:
        layer = LAYERS[name]
        try:
            obj = self._file.get(name)
        except (OSError, KeyError) as exc:
            raise self._fail(name, "a readable dataset", exc) from exc
        if not isinstance(obj, h5py.Dataset):
            raise self._fail(name, f"a dataset {layer.dtype} {layer.shape} (group {layer.group!r} is present "
                             "and must be complete)", "nothing" if obj is None else type(obj).__name__)
        if obj.dtype != layer.dtype:
            raise self._fail(name, f"dtype {layer.dtype}", f"dtype {obj.dtype}")
        if len(obj.shape) != len(layer.shape):
            raise self._fail(name, f"shape {layer.shape}", f"shape {obj.shape}")
        for symbol, size in zip(layer.shape, obj.shape):
            if isinstance(symbol, int):
                ok = symbol == size
            else:
                ok = sizes.setdefault(symbol, size) == size
            if not ok:
                want = tuple(sizes.get(s, s) if isinstance(s, str) else s for s in layer.shape)
                raise self._fail(name, f"shape {layer.shape} = {want}", f"shape {obj.shape}")
        self._datasets[name] = obj

    def _check_offsets(self, name: str, rows: int) -> np.ndarray:
        offsets = self._read_raw(name, ())
        if offsets[0] != 0 or offsets[-1] != rows or np.any(np.diff(offsets) < 0):
            raise self._fail(name, f"monotone offsets from 0 to {rows} (rows of the group)",
                             f"first {offsets[0]}, last {offsets[-1]}, "
                             f"{int(np.sum(np.diff(offsets) < 0))} decreasing steps")
        return offsets

    def _check_box_sizes(self, boxes: np.ndarray) -> None:
        """DataError naming the first box (row and frame) whose size ``l, w, h`` (columns 3..5) is not > 0.
        Runs at open on the (already finite-checked) whole ``objects/box``, which is small."""
        bad_rows = np.flatnonzero(~np.all(boxes[:, 3:6] > 0, axis=1))
        if not bad_rows.size:
            return
        row = int(bad_rows[0])
        frame = int(np.searchsorted(self._offsets["objects"], row, side="right")) - 1
        lwh = ", ".join(f"{float(v):g}" for v in boxes[row, 3:6])
        raise self._fail("objects/box", "box sizes l, w, h > 0 (columns 3..5)",
                         f"{bad_rows.size} box(es) with a size <= 0, the first at row {row} (frame {frame}): "
                         f"l, w, h = {lwh}")

    def _check_finite(self, name: str, values: np.ndarray, where: str | Callable[[], str]) -> None:
        """DataError naming the file, dataset and ``where`` (a string, or built only on failure) if any
        value is NaN/inf. One exact vectorised pass (:func:`all_finite`), cheap enough for every read."""
        if all_finite(values):
            return
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise self._fail(name, f"finite values ({where if isinstance(where, str) else where()})",
                         f"{bad} NaN/inf values")

    def _read_raw(self, name: str, index: Any) -> np.ndarray:
        try:
            return self._datasets[name][index]
        except OSError as exc:
            raise self._fail(name, f"intact data at {index!r} (fletcher32 checksums match)",
                             f"a read error, the file is corrupt or truncated: {exc}") from exc

    # ------------------------------------------------------------------ reading
    @property
    def layers(self) -> tuple[str, ...]:
        """Names of the datasets present, schema order."""
        return tuple(n for g in self.groups for n in GROUPS[g])

    def offsets(self, group: str) -> np.ndarray:
        """``(F+1,) int64`` offsets of a ragged group (``"lidar"`` or ``"objects"``)."""
        if group not in self._offsets:
            raise DataError(f"{self.path}: no ragged group {group!r} in this shard (groups: {self.groups})")
        return self._offsets[group]

    def read(self, name: str, frames: Frames = None) -> np.ndarray:
        """Read layer ``name``: per-frame layers sliced by ``frames`` (int: no F axis; slice/sequence:
        with it), ragged layers as the rows of those frames (concatenated), static layers whole."""
        if type(frames) is int and name in self._per_frame:  # hot path: one frame (torch Dataset)
            if not 0 <= frames < self.num_frames:
                raise DataError(f"{self.path}: frame {frames} out of range 0..{self.num_frames - 1}")
            values = self._read_raw(name, frames)
            if name in LAZY_FINITE_LAYERS:
                self._check_finite(name, values, lambda: f"frames {frames}")
            return values
        if name not in self._datasets:
            raise DataError(f"{self.path}: dataset {name!r}: expected one of {list(self.layers)}, found none "
                            f"(groups present: {self.groups})")
        layer = LAYERS[name]
        if layer.per_frame:
            values = self._read_frames(name, frames)
        elif layer.shape[0] in ("P", "O"):
            values = self._read_rows(name, frames)
        else:
            if frames is not None:
                raise DataError(f"{self.path}: dataset {name!r} is static (no frame axis); pass frames=None")
            values = self._read_raw(name, ())
        if name in LAZY_FINITE_LAYERS:
            self._check_finite(name, values, lambda: f"frames {frames if frames is not None else 'all'}")
        return values

    def _frame_indices(self, frames: Frames) -> np.ndarray:
        if isinstance(frames, slice):
            return np.arange(self.num_frames)[frames]
        idx = np.asarray(frames, dtype=np.int64).reshape(-1)
        bad = idx[(idx < 0) | (idx >= self.num_frames)]
        if bad.size:
            raise DataError(f"{self.path}: frame {int(bad[0])} out of range 0..{self.num_frames - 1}")
        return idx

    def _read_frames(self, name: str, frames: Frames) -> np.ndarray:
        if frames is None:
            return self._read_raw(name, ())
        if isinstance(frames, (int, np.integer)):
            if not 0 <= frames < self.num_frames:
                raise DataError(f"{self.path}: frame {frames} out of range 0..{self.num_frames - 1}")
            return self._read_raw(name, int(frames))
        idx = self._frame_indices(frames)
        if idx.size and np.all(np.diff(idx) == 1):
            return self._read_raw(name, slice(int(idx[0]), int(idx[-1]) + 1))
        dset = self._datasets[name]
        out = np.empty((idx.size, *dset.shape[1:]), dtype=dset.dtype)
        for k, f in enumerate(idx):
            out[k] = self._read_raw(name, int(f))
        return out

    def _read_rows(self, name: str, frames: Frames) -> np.ndarray:
        if frames is None:
            return self._read_raw(name, ())
        offsets = self._offsets[LAYERS[name].group]
        idx = self._frame_indices(frames)
        parts = [self._read_raw(name, slice(int(offsets[f]), int(offsets[f + 1]))) for f in idx]
        if len(parts) == 1:
            return parts[0]
        dset = self._datasets[name]
        return np.concatenate(parts) if parts else np.empty((0, *dset.shape[1:]), dtype=dset.dtype)

    def frame(self, index: int, layers: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """All (or the named) layers of one frame: per-frame layers without F axis, ragged layers as
        that frame's rows, static layers whole. Offsets are not included."""
        names = [n for n in self.layers if not n.endswith("/offsets")] if layers is None else list(layers)
        return {name: self.read(name, None if _is_static(name) else index) for name in names}

    def verify(self) -> None:
        """Read every dataset chunk by chunk: all checksums and all finiteness rules. DataError on failure."""
        for name in self.layers:
            layer = LAYERS[name]
            dset = self._datasets[name]
            if layer.per_frame:
                steps = [slice(f, f + 1) for f in range(self.num_frames)]
            elif dset.chunks is not None and dset.ndim and dset.shape[0] > dset.chunks[0]:
                rows = dset.chunks[0]
                steps = [slice(s, s + rows) for s in range(0, dset.shape[0], rows)]
            else:
                steps = [slice(None)]
            for step in steps:
                values = self._read_raw(name, step)
                if layer.finite and layer.dtype.kind == "f":
                    self._check_finite(name, values, f"rows {step.start}..{step.stop}")

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> Shard:  # noqa: PYI034 - typing.Self needs Python 3.11, the package supports 3.10
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Shard({str(self.path)!r}, sequence_id={self.sequence_id!r}, frames={self.num_frames}, groups={self.groups})"


def _one_line(message: str) -> str:
    """``message`` on one line (embedded reprs and HDF5 error texts may span several)."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def _is_static(name: str) -> bool:
    layer = LAYERS[name]
    return not layer.per_frame and layer.shape[0] not in ("P", "O")
