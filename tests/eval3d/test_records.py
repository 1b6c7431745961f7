"""Sequence files of detections and tracks: round trip, the documented arrays, atomic writes, and every kind of bad
file refused with a one-line DataError naming the file and the array."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from taskology.errors import DataError
from taskology.eval3d import records
from taskology.eval3d.records import FrameDetections, read_sequence, sequence_path, write_sequence


def sample_frames() -> list[FrameDetections]:
    rng = np.random.default_rng(0)

    def boxes(n: int) -> np.ndarray:
        return np.column_stack([rng.normal(0, 20, (n, 3)), rng.uniform(0.5, 5, (n, 3)), rng.uniform(-3, 3, n)])

    return [
        FrameDetections(boxes(3), ["vehicle", "pedestrian", "vehicle"], [0.9, 0.4, 0.7], [4, -1, 2],
                        [[1.0, 0.5, 0.01], [np.nan] * 3, [0.0, 0.0, 0.0]]),
        FrameDetections.empty(),
        FrameDetections(boxes(1), ["pedestrian"], [0.25]),
        FrameDetections.empty(),  # trailing empty frames are kept (num_frames)
    ]


def written(tmp_path: Path) -> Path:
    return write_sequence(sequence_path(tmp_path, "seq-7"), sample_frames())


def test_round_trip_is_exact(tmp_path: Path) -> None:
    path = written(tmp_path)
    assert path == tmp_path / "detections" / "seq-7.npz"
    back = read_sequence(path)
    assert len(back) == 4 and [len(f) for f in back] == [3, 0, 1, 0]
    for a, b in zip(sample_frames(), back):
        for name, dtype in (("boxes", np.float64), ("scores", np.float32), ("track_ids", np.int64),
                            ("motion", np.float32)):
            assert getattr(b, name).dtype == dtype
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert a.classes.tolist() == b.classes.tolist()
    assert back[2].track_ids.tolist() == [-1] and np.isnan(back[2].motion).all()  # defaults survive
    assert write_sequence(path, []) == path and read_sequence(path) == []


def test_the_file_holds_the_documented_arrays(tmp_path: Path) -> None:
    with np.load(written(tmp_path), allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(records.ARRAY_DTYPES)
        assert npz["frame"].tolist() == [0, 0, 0, 2]
        assert npz["classes"].tolist() == ["pedestrian", "vehicle"]
        assert npz["class_id"].tolist() == [1, 0, 1, 0]
        assert int(npz["num_frames"]) == 4
        for name, dtype in records.ARRAY_DTYPES.items():
            assert npz[name].dtype == dtype or (dtype is None and npz[name].dtype.kind == "U")


def test_a_failed_write_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = written(tmp_path)
    before = path.read_bytes()

    def half_then_fail(handle: io.BufferedWriter, **arrays: np.ndarray) -> None:
        handle.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(records.np, "savez", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_sequence(path, sample_frames()[:1])
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["seq-7.npz"]  # no temp file left


def test_invalid_boxes_are_not_written(tmp_path: Path) -> None:
    bad = FrameDetections(np.array([[0.0, 0, 0, 4, 0, 1.5, 0]]), ["vehicle"])  # zero width
    path = tmp_path / "x.npz"
    with pytest.raises(DataError, match=r"x\.npz \(not written\): array 'box': expected sizes"):
        write_sequence(path, [bad])
    assert not path.exists()


def save(path: Path, **changes: np.ndarray | None) -> Path:
    """A valid one-frame file with some arrays replaced (or dropped, for ``None``)."""
    arrays = {"frame": np.zeros(1, np.int32), "box": np.array([[1.0, 2, 0.8, 4, 2, 1.6, 0]]),
              "class_id": np.zeros(1, np.int8), "classes": np.array(["vehicle"]), "score": np.ones(1, np.float32),
              "track_id": np.zeros(1, np.int64), "motion": np.zeros((1, 3), np.float32),
              "num_frames": np.array(1, np.int64)}
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.parametrize("changes, array, message", [
    ({"score": np.ones(1, np.float64)}, "score", "expected dtype float32, found float64"),
    ({"class_id": np.zeros(1, np.int64)}, "class_id", "expected dtype int8"),
    ({"classes": np.array([1])}, "classes", "expected dtype unicode"),
    ({"motion": None}, "motion", "missing"),
    ({"box": np.array([[1.0, 2, 0.8, 4, 2, 1.6]])}, "box", "expected shape (n, 7)"),
    ({"box": np.array([[np.nan, 2, 0.8, 4, 2, 1.6, 0]])}, "box", "expected finite values"),
    ({"box": np.array([[1.0, 2, 0.8, -4, 2, 1.6, 0]])}, "box", "expected sizes l, w, h > 0"),
    ({"frame": np.array([1], np.int32)}, "frame", "expected values in [0, 1)"),
    ({"class_id": np.array([1], np.int8)}, "class_id", "expected indices in [0, 1)"),
    ({"track_id": np.array([-2])}, "track_id", "expected ids >= -1"),
    ({"score": np.array([np.inf], np.float32)}, "score", "expected finite values"),
    ({"num_frames": np.array([1])}, "num_frames", "expected a scalar"),
    ({"track_id": np.array([{"a": 1}], dtype=object)}, "track_id", "unreadable"),  # needs pickle
])
def test_bad_arrays_raise_one_line_naming_file_and_array(tmp_path: Path, changes: dict, array: str,
                                                         message: str) -> None:
    path = save(tmp_path / "bad.npz", **changes)
    with pytest.raises(DataError) as err:
        read_sequence(path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path}: array '{array}'") and message in text, text


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing", "npy"])
def test_corrupt_files_raise_data_error_naming_the_file(tmp_path: Path, damage: str) -> None:
    path = written(tmp_path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(1).bytes(500))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "npy":
        with open(path, "wb") as handle:
            np.save(handle, np.zeros(3))
    else:
        path.unlink()
    with pytest.raises(DataError) as err:
        read_sequence(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value), str(err.value)


def test_a_flipped_byte_inside_an_array_is_caught(tmp_path: Path) -> None:
    path = written(tmp_path)
    data = bytearray(path.read_bytes())
    offset = data.index(b"\x93NUMPY", data.index(b"box.npy")) + 200  # inside the box array's data
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"array 'box'"):
        read_sequence(path)  # the zip CRC check, or the finite/size check, refuses it


def test_frame_detections_validate_their_shapes() -> None:
    frame = FrameDetections(np.zeros((2, 7)), ["vehicle", "pedestrian"])
    assert frame.scores.tolist() == [1.0, 1.0] and frame.track_ids.tolist() == [-1, -1]
    assert len(frame.select(frame.classes == "pedestrian")) == 1
    with pytest.raises(ValueError, match="boxes"):
        FrameDetections(np.zeros((2, 6)), ["vehicle"] * 2)
    with pytest.raises(ValueError, match="scores"):
        FrameDetections(np.zeros((2, 7)), ["vehicle"] * 2, [0.5])
    with pytest.raises(ValueError, match="class names"):
        FrameDetections(np.zeros((2, 7)), np.array([0, 1]))
