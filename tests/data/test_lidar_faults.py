"""Bad LiDAR and box input in a shard: ragged offsets that disagree with their rows, non-finite points,
boxes with a size <= 0 -- each one DataError with a one-line message naming the file and the dataset;
and an empty LiDAR sweep, which is valid."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from taskology.data.datasets import FrameDataset, collate_frames
from taskology.data.schema import GROUPS, LAYERS
from taskology.data.shard import Shard, write_shard
from taskology.data.splits import SplitManifest
from taskology.errors import DataError

from .conftest import make_shard, synthetic_layers

FRAMES = 4
#: frames of the default synthetic sequence with no lidar points (conftest: counts[2] = 0).
EMPTY_SWEEP = 2


@pytest.fixture
def small_shard(tmp_path: Path) -> Path:
    """A shard without camera (fast to write): ego, lidar (frame 2 has no points) and objects, 4 frames."""
    return make_shard(tmp_path, "seq0000", frames=FRAMES, camera=False)


def _rewrite(path: Path, data: dict[str, np.ndarray]) -> None:
    """Replace whole datasets by new arrays, written like the writer does (chunked, fletcher32), so the
    checksums stay valid and only the content is wrong."""
    with h5py.File(path, "r+") as f:
        for name, values in data.items():
            old = f[name]
            dtype = old.dtype
            maxshape = (None, *old.shape[1:]) if old.maxshape[0] is None else None  # growable rows stay so
            del f[name]
            f.create_dataset(name, data=np.asarray(values, dtype=dtype), maxshape=maxshape, fletcher32=True)


def _read(path: Path, name: str) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f[name][()]


def _assert_message(err: pytest.ExceptionInfo[DataError], path: Path, dataset: str) -> str:
    message = str(err.value)
    assert type(err.value) is DataError
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{path}: ") and f"'{dataset}'" in message, message
    assert "expected" in message and "found" in message, message
    return message


def _test_dataset(path: Path) -> FrameDataset:
    """The test split of a one-shard directory: sample i is frame i, every layer."""
    manifest = SplitManifest(root=path.parent, seed=0, files={"seq0000": path.name}, num_frames={"seq0000": FRAMES},
                             test=("seq0000",), train={}, mediator={}, labels={}, label_fractions={},
                             mediator_fraction=0.0)
    return FrameDataset(manifest, "test")


# ----------------------------------------------------------------------------- offsets vs rows
#: fault name -> new offsets from (offsets, rows); each breaks one rule of a ragged group's offsets.
OFFSET_FAULTS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "first_not_zero": lambda o, n: np.concatenate([[1], o[1:]]),
    "decreasing": lambda o, n: np.concatenate([o[:2], [o[1] - 1], o[3:]]),
    "last_short_of_rows": lambda o, n: np.concatenate([o[:-1], [n - 1]]),
    "last_past_rows": lambda o, n: np.concatenate([o[:-1], [n + 1]]),
    "one_short": lambda o, n: o[:-1],
    "one_long": lambda o, n: np.concatenate([o, [n]]),
}


@pytest.mark.parametrize("fault", sorted(OFFSET_FAULTS))
@pytest.mark.parametrize("group", ["lidar", "objects"])
def test_offsets_disagreeing_with_rows_fail_at_open(small_shard: Path, group: str, fault: str) -> None:
    name = f"{group}/offsets"
    offsets = _read(small_shard, name)
    rows = int(offsets[-1])
    assert offsets[1] >= 1 and offsets[2] >= offsets[1]  # the faults below rely on a non-empty frame 0
    _rewrite(small_shard, {name: OFFSET_FAULTS[fault](offsets, rows)})
    with pytest.raises(DataError) as err:
        Shard.open(small_shard)
    message = _assert_message(err, small_shard, name)
    if fault in ("one_short", "one_long"):
        assert f"({FRAMES + 1},)" in message and "shape" in message
    else:
        assert f"from 0 to {rows}" in message


@pytest.mark.parametrize("group", ["lidar", "objects"])
def test_rows_dropped_behind_the_offsets_fail_at_open(small_shard: Path, group: str) -> None:
    """The row datasets lose their last row, the offsets still promise it: the offsets are named."""
    names = [n for n in GROUPS[group] if LAYERS[n].shape[0] in ("P", "O")]
    _rewrite(small_shard, {n: _read(small_shard, n)[:-1] for n in names})
    with pytest.raises(DataError) as err:
        Shard.open(small_shard)
    rows = int(_read(small_shard, names[0]).shape[0])
    assert f"from 0 to {rows}" in _assert_message(err, small_shard, f"{group}/offsets")


# ----------------------------------------------------------------------------- non-finite points
@pytest.mark.parametrize(("column", "value"), [(0, np.nan), (2, np.inf), (3, -np.inf)])
def test_non_finite_point_fails_at_the_read_of_its_frame(small_shard: Path, column: int, value: float) -> None:
    offsets = _read(small_shard, "lidar/offsets")
    points = _read(small_shard, "lidar/points")
    points[offsets[1], column] = value  # first point of frame 1
    _rewrite(small_shard, {"lidar/points": points})
    with Shard.open(small_shard) as shard:  # points are checked when read: open stays cheap
        assert shard.read("lidar/points", 0).shape == (offsets[1], 4)
        assert shard.read("lidar/points", 3).shape == (offsets[4] - offsets[3], 4)
        for frames in (1, [0, 1], slice(1, 3), None):
            with pytest.raises(DataError) as err:
                shard.read("lidar/points", frames)
            message = _assert_message(err, small_shard, "lidar/points")
            assert "1 NaN/inf" in message
            if frames == 1:
                assert "frames 1" in message  # names the frame read
        with pytest.raises(DataError) as err:
            shard.verify()
        _assert_message(err, small_shard, "lidar/points")


# ----------------------------------------------------------------------------- box sizes
@pytest.mark.parametrize(("column", "value"), [(3, 0.0), (4, -1.5), (5, -0.0), (5, -1e-9)])
def test_box_with_size_not_positive_fails_at_open(small_shard: Path, column: int, value: float) -> None:
    offsets = _read(small_shard, "objects/offsets")
    boxes = _read(small_shard, "objects/box")
    row = int(offsets[2])  # first box of frame 2
    boxes[row, column] = value
    _rewrite(small_shard, {"objects/box": boxes})
    with pytest.raises(DataError) as err:
        Shard.open(small_shard)
    message = _assert_message(err, small_shard, "objects/box")
    assert "l, w, h > 0" in message and f"row {row} (frame 2)" in message and "1 box(es)" in message


def test_box_sizes_may_be_any_positive_value_and_other_columns_any_sign(small_shard: Path) -> None:
    boxes = _read(small_shard, "objects/box")
    boxes[:, [0, 1, 2, 6]] = -np.abs(boxes[:, [0, 1, 2, 6]])  # centre and yaw may be negative
    boxes[0, 3:6] = 1e-6
    _rewrite(small_shard, {"objects/box": boxes})
    with Shard.open(small_shard) as shard:
        assert np.array_equal(shard.read("objects/box"), boxes)


@pytest.mark.parametrize(("column", "value"), [(3, np.nan), (4, np.inf), (5, -np.inf), (0, np.nan)])
def test_box_not_finite_fails_at_open(small_shard: Path, column: int, value: float) -> None:
    boxes = _read(small_shard, "objects/box")
    boxes[-1, column] = value
    _rewrite(small_shard, {"objects/box": boxes})
    with pytest.raises(DataError) as err:
        Shard.open(small_shard)
    assert "finite values" in _assert_message(err, small_shard, "objects/box")


# ----------------------------------------------------------------------------- empty sweeps
def test_empty_sweep_reads_as_zero_rows(small_shard: Path) -> None:
    offsets = _read(small_shard, "lidar/offsets")
    assert offsets[EMPTY_SWEEP] == offsets[EMPTY_SWEEP + 1]  # the fixture's empty sweep
    with Shard.open(small_shard) as shard:
        shard.verify()
        points = shard.read("lidar/points", EMPTY_SWEEP)
        assert points.shape == (0, 4) and points.dtype == np.float32
        assert shard.read("lidar/points", [EMPTY_SWEEP]).shape == (0, 4)
        assert shard.read("lidar/semantic", EMPTY_SWEEP).shape == (0,)
        assert shard.read("lidar/instance", EMPTY_SWEEP).dtype == np.int32
        frame = shard.frame(EMPTY_SWEEP)
        assert frame["lidar/points"].shape == (0, 4) and frame["lidar/semantic"].dtype == np.uint8


def test_shard_with_only_empty_sweeps(tmp_path: Path) -> None:
    layers = synthetic_layers(FRAMES, camera=False, objects=False)
    layers.update({"lidar/points": np.zeros((0, 4), np.float32), "lidar/semantic": np.zeros(0, np.uint8),
                   "lidar/instance": np.zeros(0, np.int32), "lidar/offsets": np.zeros(FRAMES + 1, np.int64)})
    path = write_shard(tmp_path / "empty.h5", layers, sequence_id="empty", frame_rate=10.0, generator={})
    with Shard.open(path) as shard:
        shard.verify()
        for frames in (0, FRAMES - 1, [0, 1], None):
            points = shard.read("lidar/points", frames)
            assert points.shape == (0, 4) and points.dtype == np.float32


def test_empty_sweep_through_the_dataset(small_shard: Path) -> None:
    dataset = _test_dataset(small_shard)
    try:
        sample = dataset[EMPTY_SWEEP]
        assert sample["lidar_points"].shape == (0, 4) and sample["lidar_points"].dtype == torch.float32
        assert sample["lidar_semantic"].shape == (0,) and sample["lidar_instance"].shape == (0,)
        batch = collate_frames([dataset[0], sample])
        assert [p.shape[0] for p in batch["lidar_points"]] == [len(dataset[0]["lidar_points"]), 0]
    finally:
        dataset.close()


# ----------------------------------------------------------------------------- through the torch dataset
def test_non_finite_point_raises_data_error_through_the_dataset(small_shard: Path) -> None:
    offsets = _read(small_shard, "lidar/offsets")
    points = _read(small_shard, "lidar/points")
    points[offsets[4] - 1, 1] = np.inf  # last point of the last frame
    _rewrite(small_shard, {"lidar/points": points})
    dataset = _test_dataset(small_shard)
    try:
        for clean in range(FRAMES - 1):
            dataset[clean]
        with pytest.raises(DataError) as err:
            dataset[FRAMES - 1]
        assert "frames 3" in _assert_message(err, small_shard, "lidar/points")
    finally:
        dataset.close()


@pytest.mark.parametrize(("name", "edit"), [
    ("lidar/offsets", lambda o: np.concatenate([o[:-1], [o[-1] + 5]])),
    ("objects/offsets", lambda o: o[::-1]),
    ("objects/box", lambda b: np.concatenate([b[:, :5], np.zeros((len(b), 1)), b[:, 6:]], axis=1)),
])
def test_bad_ragged_structure_raises_data_error_through_the_dataset(small_shard: Path, name: str,
                                                                    edit: Callable[[np.ndarray], np.ndarray]) -> None:
    """Caught when the dataset opens the shard (its constructor, or a worker's first sample): never an
    IndexError / shape error from NumPy or torch later."""
    _rewrite(small_shard, {name: edit(_read(small_shard, name))})
    with pytest.raises(DataError) as err:
        _test_dataset(small_shard)[1]
    _assert_message(err, small_shard, name)
