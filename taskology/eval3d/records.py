"""Detections and tracks of a run on disk: one NPZ file per sequence, ``<run_dir>/detections/<sequence_id>.npz``.

The file holds the boxes of all frames of the sequence, one row per box, frame-major (file order is kept within a
frame). Arrays (``np.savez``, no pickled objects; read with ``allow_pickle=False``):

============== ========== ======== ====================================================================
array          shape      dtype    meaning
============== ========== ======== ====================================================================
``frame``      (n,)       int32    frame index of the box, in ``[0, num_frames)``
``box``        (n, 7)     float64  ``(x, y, z, l, w, h, yaw)`` in the ego frame of that frame
                                   (docs/conventions.md); finite, sizes ``l, w, h > 0``
``class_id``   (n,)       int8     index into ``classes``
``classes``    (k,)       unicode  class names, e.g. ``["pedestrian", "vehicle"]`` (sorted on write)
``score``      (n,)       float32  detection confidence, finite (1 for ground truth)
``track_id``   (n,)       int64    track id, ``-1`` = untracked (ids are ``>= 0`` otherwise)
``motion``     (n, 3)     float32  ``(dx, dy, dyaw)`` of the object from this frame to the next, metres /
                                   radians in the ego frame of this frame; ``nan`` where unknown
``num_frames`` ()         int64    number of frames of the sequence (frames may hold no box)
============== ========== ======== ====================================================================

In memory a frame is a :class:`FrameDetections`; its classes are **names** (a unicode array), so frames of
different files or runs compare without a class table. Ground truth uses the same format and dataclass (scores 1,
track ids the object ids, motion the true motion).

Writes are atomic (:func:`taskology.atomic.atomic_path`: a temp file beside the target, then ``os.replace``), so
a failed or killed write leaves the old file. :func:`read_sequence` validates every array and raises
:class:`taskology.errors.DataError` with one line naming the file and the array.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = sequence_path(Path(tempfile.mkdtemp()), "seq0")
    >>> frame = FrameDetections(np.array([[5.0, 1, 0.8, 4, 2, 1.6, 0]]), np.array(["vehicle"]), np.array([0.9]))
    >>> _ = write_sequence(path, [frame, FrameDetections.empty()])
    >>> [len(f) for f in read_sequence(path)], read_sequence(path)[0].classes.tolist(), path.name
    ([1, 0], ['vehicle'], 'seq0.npz')
"""
from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from taskology.atomic import atomic_path
from taskology.errors import DataError

#: The arrays of a sequence file and their dtypes (``classes``: any unicode string dtype).
ARRAY_DTYPES: Mapping[str, np.dtype | None] = MappingProxyType({
    "frame": np.dtype(np.int32), "box": np.dtype(np.float64), "class_id": np.dtype(np.int8), "classes": None,
    "score": np.dtype(np.float32), "track_id": np.dtype(np.int64), "motion": np.dtype(np.float32),
    "num_frames": np.dtype(np.int64),
})


@dataclass(eq=False)
class FrameDetections:
    """The boxes of one frame (predictions or ground truth), normalised on construction.

    Attributes:
        boxes: (n, 7) float64 ``(x, y, z, l, w, h, yaw)``, ego frame.
        classes: (n,) unicode class names (``"vehicle"``, ``"pedestrian"``, ...).
        scores: (n,) float32 confidences; ``None`` -> ones (ground truth).
        track_ids: (n,) int64, ``-1`` = untracked; ``None`` -> all ``-1``.
        motion: (n, 3) float32 ``(dx, dy, dyaw)`` to the next frame in this frame's ego frame, ``nan`` where
            unknown; ``None`` -> all ``nan``.

    Raises:
        ValueError: on inconsistent shapes.
    """

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray = None  # type: ignore[assignment]
    track_ids: np.ndarray = None  # type: ignore[assignment]
    motion: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.boxes = _rows(self.boxes, np.float64, 7, "boxes")
        n = self.boxes.shape[0]
        classes = np.asarray(self.classes)
        if classes.size and classes.dtype.kind not in "UO":
            raise ValueError(f"FrameDetections: expected class names (strings), found dtype {classes.dtype}")
        self.classes = classes.astype(str).reshape(-1) if classes.size == 0 else classes.astype(str)
        self.scores = np.ones(n, np.float32) if self.scores is None else np.asarray(self.scores, dtype=np.float32)
        self.track_ids = np.full(n, -1, np.int64) if self.track_ids is None \
            else np.asarray(self.track_ids, dtype=np.int64)
        self.motion = np.full((n, 3), np.nan, np.float32) if self.motion is None \
            else _rows(self.motion, np.float32, 3, "motion")
        for name, shape in (("classes", (n,)), ("scores", (n,)), ("track_ids", (n,)), ("motion", (n, 3))):
            if getattr(self, name).shape != shape:
                raise ValueError(f"FrameDetections: expected {name} of shape {shape}, found {getattr(self, name).shape}")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls) -> FrameDetections:
        """A frame without boxes."""
        return cls(np.zeros((0, 7)), np.zeros(0, dtype=str))

    def select(self, mask: np.ndarray) -> FrameDetections:
        """The rows where ``mask`` (a boolean (n,) array, or indices) holds, e.g. ``frame.select(frame.classes == "vehicle")``."""
        return FrameDetections(self.boxes[mask], self.classes[mask], self.scores[mask], self.track_ids[mask],
                               self.motion[mask])


def _rows(values: np.ndarray, dtype: type, width: int, name: str) -> np.ndarray:
    """``values`` as a C-contiguous (n, width) array of ``dtype`` (an empty input becomes (0, width))."""
    arr = np.ascontiguousarray(values, dtype=dtype)
    if arr.size == 0:
        arr = arr.reshape(0, width)
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"FrameDetections: expected {name} of shape (n, {width}), found {arr.shape}")
    return arr


def sequence_path(run_dir: Path, sequence_id: str) -> Path:
    """``<run_dir>/detections/<sequence_id>.npz``."""
    return Path(run_dir) / "detections" / f"{sequence_id}.npz"


def _check(arrays: dict[str, np.ndarray], where: str) -> None:
    """Raise :class:`DataError` (one line: ``where``, the array, expected, found) unless ``arrays`` follow the format."""

    def fail(name: str, message: str) -> None:
        raise DataError(f"{where}: array '{name}': {message}")

    for name, dtype in ARRAY_DTYPES.items():
        if name not in arrays:
            fail(name, "missing")
        found = arrays[name].dtype
        if (dtype is None and found.kind != "U") or (dtype is not None and found != dtype):
            fail(name, f"expected dtype {'unicode' if dtype is None else dtype}, found {found}")
    if arrays["num_frames"].shape != ():
        fail("num_frames", f"expected a scalar, found shape {arrays['num_frames'].shape}")
    num_frames = int(arrays["num_frames"])
    if num_frames < 0:
        fail("num_frames", f"expected >= 0, found {num_frames}")
    if arrays["classes"].ndim != 1:
        fail("classes", f"expected shape (k,), found {arrays['classes'].shape}")
    if arrays["frame"].ndim != 1:
        fail("frame", f"expected shape (n,), found {arrays['frame'].shape}")
    n = arrays["frame"].shape[0]
    for name, width in (("box", 7), ("class_id", None), ("score", None), ("track_id", None), ("motion", 3)):
        if arrays[name].shape != ((n,) if width is None else (n, width)):
            fail(name, f"expected shape {'(n,)' if width is None else f'(n, {width})'} with n = {n} (from 'frame'), "
                       f"found {arrays[name].shape}")
    frame, box, class_id = arrays["frame"], arrays["box"], arrays["class_id"]
    if n and not ((frame >= 0) & (frame < num_frames)).all():
        fail("frame", f"expected values in [0, {num_frames}), found {int(frame.min())}..{int(frame.max())}")
    if not np.isfinite(box).all():
        fail("box", f"expected finite values, found NaN or inf in row {int(np.argwhere(~np.isfinite(box))[0, 0])}")
    if n and not (box[:, 3:6] > 0).all():
        row = int(np.argwhere((box[:, 3:6] <= 0).any(axis=1))[0, 0])
        fail("box", f"expected sizes l, w, h > 0, found {box[row, 3:6].tolist()} in row {row}")
    if n and not ((class_id >= 0) & (class_id < len(arrays["classes"]))).all():
        fail("class_id", f"expected indices in [0, {len(arrays['classes'])}), found {int(class_id.min())}.."
                         f"{int(class_id.max())}")
    if not np.isfinite(arrays["score"]).all():
        fail("score", "expected finite values, found NaN or inf")
    if n and int(arrays["track_id"].min()) < -1:
        fail("track_id", f"expected ids >= -1, found {int(arrays['track_id'].min())}")
    if np.isinf(arrays["motion"]).any():
        fail("motion", "expected finite values or nan, found inf")


def write_sequence(path: Path, frames: Sequence[FrameDetections]) -> Path:
    """Write the frames of one sequence (``frames[f]`` = frame ``f``) to ``path`` atomically; returns ``path``.

    Raises:
        DataError: if the boxes break the format (non-finite values, sizes <= 0, ...); nothing is written.
    """
    path = Path(path)
    names = sorted({str(c) for f in frames for c in f.classes})
    lookup = {c: i for i, c in enumerate(names)}
    if len(names) > np.iinfo(np.int8).max + 1:
        raise DataError(f"{path}: array 'classes': expected at most 128 classes, found {len(names)}")
    frames = list(frames)
    arrays = {
        "frame": np.concatenate([np.full(len(f), i, np.int32) for i, f in enumerate(frames)] + [np.zeros(0, np.int32)]),
        "box": np.concatenate([f.boxes for f in frames] + [np.zeros((0, 7))]).astype(np.float64),
        "class_id": np.array([lookup[str(c)] for f in frames for c in f.classes], dtype=np.int8),
        "classes": np.array(names, dtype=str) if names else np.zeros(0, dtype="<U1"),
        "score": np.concatenate([f.scores for f in frames] + [np.zeros(0, np.float32)]).astype(np.float32),
        "track_id": np.concatenate([f.track_ids for f in frames] + [np.zeros(0, np.int64)]).astype(np.int64),
        "motion": np.concatenate([f.motion for f in frames] + [np.zeros((0, 3), np.float32)]).astype(np.float32),
        "num_frames": np.array(len(frames), dtype=np.int64),
    }
    _check(arrays, f"{path} (not written)")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def read_sequence(path: Path) -> list[FrameDetections]:
    """Read and validate a sequence file; returns one :class:`FrameDetections` per frame (``num_frames`` of them).

    Raises:
        DataError: the file is missing, not an NPZ file, truncated or corrupt, or an array is missing or has the
            wrong dtype, shape or values (the message names the file and the array).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such detections file")
    arrays: dict[str, np.ndarray] = {}
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: not an NPZ file (found a single {type(loaded).__name__})")
        with loaded as npz:
            for name in ARRAY_DTYPES:
                if name not in npz.files:
                    raise DataError(f"{path}: array '{name}': missing (found {sorted(npz.files)})")
                try:
                    arrays[name] = npz[name]
                except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
                    raise DataError(f"{path}: array '{name}': unreadable ({type(err).__name__}: "
                                    f"{str(err).splitlines()[0] if str(err) else 'corrupt'})") from err
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable NPZ file ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else 'corrupt'})") from err
    _check(arrays, str(path))
    num_frames = int(arrays["num_frames"])
    order = np.argsort(arrays["frame"], kind="stable")
    bounds = np.searchsorted(arrays["frame"][order], np.arange(num_frames + 1))
    names = arrays["classes"][arrays["class_id"]]
    out = []
    for f in range(num_frames):
        rows = order[bounds[f]:bounds[f + 1]]
        out.append(FrameDetections(arrays["box"][rows], names[rows], arrays["score"][rows], arrays["track_id"][rows],
                                   arrays["motion"][rows]))
    return out


__all__ = ["ARRAY_DTYPES", "FrameDetections", "read_sequence", "sequence_path", "write_sequence"]
