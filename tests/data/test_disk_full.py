"""A full disk while writing a shard: one line naming the shard, finished shards untouched, no temp file left,
and the next shard is written normally once space is back."""
from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import taskology.data.writer as writer
from taskology.atomic import DiskFullError
from taskology.data.shard import Shard, stale_temp_files
from taskology.errors import TaskologyError

from .conftest import make_shard

#: what h5py raises when the disk is full (its OSError carries errno 28)
H5_ENOSPC = OSError(errno.ENOSPC, "Can't write data (file write failed: errno = 28, error message = "
                                  "'No space left on device')")


def _fail_dataset_writes_from(monkeypatch: pytest.MonkeyPatch, call: int) -> list[int]:
    """HDF5 dataset writes succeed (really reach the temp file) until the ``call``-th, which raises ENOSPC."""
    real = h5py.Dataset.__setitem__
    calls = [0]

    def write(self: h5py.Dataset, key: Any, value: Any) -> None:
        calls[0] += 1
        if calls[0] >= call:
            raise H5_ENOSPC
        real(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", write)
    return calls


def _fail_flush(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]

    def flush(self: h5py.File) -> None:
        calls[0] += 1
        raise H5_ENOSPC

    monkeypatch.setattr(h5py.File, "flush", flush)
    return calls


def _assert_clean_failure(exc: DiskFullError, folder: Path, victim: Path, finished: Path, before: bytes) -> None:
    message = str(exc)
    assert isinstance(exc, OSError) and isinstance(exc, TaskologyError) and exc.errno == errno.ENOSPC
    assert message.startswith(f"{victim}: no space left on device") and "\n" not in message
    assert exc.filename == str(victim)
    assert finished.read_bytes() == before  # the finished shard's bytes are untouched
    assert not victim.exists() and stale_temp_files(folder) == []
    assert sorted(p.name for p in folder.iterdir()) == [finished.name]  # no temp file of any kind left


@pytest.mark.parametrize("where", ["frame 3 of 6", "closing"])
def test_a_shard_that_finds_the_disk_full_leaves_finished_shards_and_no_temp(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    finished = make_shard(tmp_path, "seq0000", frames=6)
    before = finished.read_bytes()
    with monkeypatch.context() as patch:
        # all groups: 13 dataset writes a frame (10 in frame 2, which has no lidar rows): call 40 is in frame 3
        calls = _fail_dataset_writes_from(patch, 40) if where.startswith("frame") else _fail_flush(patch)
        with pytest.raises(DiskFullError) as info:
            make_shard(tmp_path, "seq0001", frames=6, seed=1)
        assert calls[0] >= 1  # the fault was met (after frames 0-2 were really written, for "frame 3")
    _assert_clean_failure(info.value, tmp_path, tmp_path / "seq0001.h5", finished, before)
    again = make_shard(tmp_path, "seq0001", frames=6, seed=1)  # space is back: the same shard is written
    with Shard.open(again) as shard:
        assert shard.num_frames == 6


def test_the_writer_stops_before_hdf5_meets_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HDF5 cannot close a file after a write found the disk full (and the process crashes when it lets the
    file go), so the writer checks the free space before every frame and stops while the reserve is free."""
    finished = make_shard(tmp_path, "seq0000", frames=6)
    before = finished.read_bytes()
    frame_bytes = []

    def free_bytes(directory: Path) -> int:  # room for three frames, then the reserve only
        frame_bytes.append(directory)
        return writer.FREE_SPACE_RESERVE + (10**8 if len(frame_bytes) <= 3 else 1000)

    monkeypatch.setattr(writer, "_free_bytes", free_bytes)
    with pytest.raises(DiskFullError) as info:
        make_shard(tmp_path, "seq0001", frames=6, seed=1)
    assert len(frame_bytes) == 4 and frame_bytes[-1] == tmp_path
    assert "for frame 3 (32.0 MiB free," in str(info.value)
    _assert_clean_failure(info.value, tmp_path, tmp_path / "seq0001.h5", finished, before)


def test_a_file_hdf5_cannot_close_is_kept_and_its_temp_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a real full disk HDF5 fails to close the file (its flush finds no space) and crashes the process
    if the file object is released; the writer keeps it referenced, truncates and removes the temp file."""
    monkeypatch.setattr(writer, "_UNCLOSABLE", [])
    finished = make_shard(tmp_path, "seq0000", frames=2)
    before = finished.read_bytes()
    w = writer.ShardWriter(tmp_path / "seq0001.h5", sequence_id="seq0001", frame_rate=10.0, generator={},
                           camera_hw=None, lidar=False, objects=False)
    w.append({"ego/world_from_ego": np.eye(4)})
    temp = w.temp_path
    real_close = h5py.File.close
    with monkeypatch.context() as patch:
        _fail_flush(patch)
        patch.setattr(h5py.File, "close", lambda self: (_ for _ in ()).throw(H5_ENOSPC))
        with pytest.raises(DiskFullError) as info:
            w.close()
    try:
        assert not temp.exists() and [f for f, _ in writer._UNCLOSABLE] == [w._file]
        _assert_clean_failure(info.value, tmp_path, tmp_path / "seq0001.h5", finished, before)
    finally:
        for kept, _ in writer._UNCLOSABLE:
            real_close(kept)
