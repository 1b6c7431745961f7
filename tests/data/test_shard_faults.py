"""Fault injection: crashed writers, truncated files, flipped bytes and schema violations."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from taskology.data.shard import Shard, shard_paths, stale_temp_files
from taskology.errors import DataError

from .conftest import make_shard

WRITER_SCRIPT = textwrap.dedent("""
    import sys, pathlib, numpy as np
    from taskology.data.shard import ShardWriter
    out = pathlib.Path(sys.argv[1])
    w = ShardWriter(out / "victim.h5", sequence_id="victim", frame_rate=10.0, generator={}, camera_hw=(32, 96),
                    lidar=True, objects=False)
    w.set_static(**{"camera/K": np.eye(3), "camera/cam_from_ego": np.eye(4), "lidar/lidar_from_ego": np.eye(4)})
    rng = np.random.default_rng(0)
    f = 0
    while True:
        w.append({"camera/rgb": rng.integers(0, 255, (32, 96, 3), dtype=np.uint8),
                  "camera/depth": np.ones((32, 96), np.float32), "camera/normals": np.zeros((32, 96, 3), np.float32),
                  "camera/semantic": np.ones((32, 96), np.uint8), "camera/instance": np.zeros((32, 96), np.int32),
                  "ego/world_from_ego": np.eye(4), "lidar/points": np.ones((100, 4), np.float32),
                  "lidar/semantic": np.ones(100, np.uint8), "lidar/instance": np.zeros(100, np.int32)})
        f += 1
        if f == 20:
            (out / "started").write_text("1")
""")


def test_sigkill_mid_write_leaves_no_shard_and_existing_intact(tmp_path: Path) -> None:
    existing = make_shard(tmp_path, "existing")
    before = existing.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert proc.poll() is None, "writer process died on its own"
            assert time.monotonic() < deadline, "writer did not start in 60 s"
            time.sleep(0.05)
        time.sleep(0.2)  # let it write more frames, then kill it mid-append
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert [p.name for p in shard_paths(tmp_path)] == ["existing.h5"]  # no visible half shard
    assert not (tmp_path / "victim.h5").exists()
    assert existing.read_bytes() == before
    with Shard.open(existing) as shard:
        shard.verify()
    temps = stale_temp_files(tmp_path)
    assert len(temps) == 1
    with pytest.raises(DataError):  # and even the temp file is not a readable shard
        Shard.open(temps[0])


def _corrupt(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    with h5py.File(path, "r+") as f:
        edit(f)


def test_truncated_file(shard_path: Path) -> None:
    data = shard_path.read_bytes()
    shard_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        Shard.open(shard_path)
    assert str(shard_path) in str(err.value) and "truncated" in str(err.value)


def test_flipped_bytes_in_depth_chunk(shard_path: Path) -> None:
    with h5py.File(shard_path, "r") as f:
        info = f["camera/depth"].id.get_chunk_info_by_coord((2, 0, 0))
    with open(shard_path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        byte = fh.read(1)
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with Shard.open(shard_path) as shard:  # structure is intact: open succeeds, the chunk fails on read
        shard.read("camera/depth", 1)
        with pytest.raises(DataError) as err:
            shard.read("camera/depth", 2)
        assert str(shard_path) in str(err.value) and "camera/depth" in str(err.value)
        with pytest.raises(DataError, match="camera/depth"):
            shard.verify()


def test_flipped_bytes_in_small_layer_caught_at_open(shard_path: Path) -> None:
    with h5py.File(shard_path, "r") as f:
        info = f["ego/world_from_ego"].id.get_chunk_info(0)
    with open(shard_path, "r+b") as fh:
        fh.seek(info.byte_offset + 3)
        fh.write(b"\x55\xaa")
    with pytest.raises(DataError) as err:
        Shard.open(shard_path)
    assert str(shard_path) in str(err.value) and "ego/world_from_ego" in str(err.value)


def test_wrong_schema_version(shard_path: Path) -> None:
    _corrupt(shard_path, lambda f: f.attrs.__setitem__("schema_version", 99))
    with pytest.raises(DataError) as err:
        Shard.open(shard_path)
    message = str(err.value)
    assert str(shard_path) in message and "schema_version" in message and "99" in message


def test_missing_dataset(shard_path: Path) -> None:
    _corrupt(shard_path, lambda f: f.__delitem__("camera/normals"))
    with pytest.raises(DataError) as err:
        Shard.open(shard_path)
    assert str(shard_path) in str(err.value) and "camera/normals" in str(err.value)


def test_wrong_dtype(shard_path: Path) -> None:
    def edit(f: h5py.File) -> None:
        data = f["camera/semantic"][()]
        del f["camera/semantic"]
        f.create_dataset("camera/semantic", data=data.astype(np.int16))
    _corrupt(shard_path, edit)
    with pytest.raises(DataError) as err:
        Shard.open(shard_path)
    message = str(err.value)
    assert str(shard_path) in message and "camera/semantic" in message and "uint8" in message and "int16" in message


def test_wrong_shape(shard_path: Path) -> None:
    def edit(f: h5py.File) -> None:
        data = f["camera/depth"][()]
        del f["camera/depth"]
        f.create_dataset("camera/depth", data=data[:, :, :-1])
    _corrupt(shard_path, edit)
    with pytest.raises(DataError, match="camera/depth.*shape"):
        Shard.open(shard_path)


def test_nan_in_depth(shard_path: Path) -> None:
    def edit(f: h5py.File) -> None:
        f["camera/depth"][3, 5, 7] = np.nan  # rewritten with a valid checksum
    _corrupt(shard_path, edit)
    with Shard.open(shard_path) as shard:
        shard.read("camera/depth", 2)
        with pytest.raises(DataError) as err:
            shard.read("camera/depth", 3)
        assert str(shard_path) in str(err.value) and "camera/depth" in str(err.value) and "NaN" in str(err.value)
        with pytest.raises(DataError, match="camera/depth"):
            shard.verify()


@pytest.mark.parametrize(("layer", "index", "value"), [
    ("camera/normals", (1, 31, 95, 2), -np.inf),   # last element of the frame
    ("camera/depth", (1, 0, 0), np.inf),           # first element
    ("lidar/points", (0, 3), np.nan),              # frame 0's rows
])
def test_non_finite_lazy_layer_raises_through_the_dataset(shard_path: Path, layer: str, index: tuple,
                                                          value: float) -> None:
    from taskology.data.datasets import FrameDataset
    from taskology.data.splits import SplitManifest

    _corrupt(shard_path, lambda f: f[layer].__setitem__(index, value))
    manifest = SplitManifest(root=shard_path.parent, seed=0, files={"seq0000": shard_path.name},
                             num_frames={"seq0000": 4}, test=("seq0000",), train={}, mediator={}, labels={},
                             label_fractions={}, mediator_fraction=0.0)
    dataset = FrameDataset(manifest, "test", layers=[layer])
    bad_frame = 0 if layer == "lidar/points" else index[0]  # sample i is frame i (one test shard)
    dataset[3 if bad_frame == 0 else 0]  # a clean frame reads fine
    with pytest.raises(DataError) as err:
        dataset[bad_frame]
    message = str(err.value)
    assert str(shard_path) in message and layer in message and "1 NaN/inf" in message
    dataset.close()


def test_nan_in_box_caught_at_open(shard_path: Path) -> None:
    _corrupt(shard_path, lambda f: f["objects/box"].__setitem__((0, 3), np.inf))
    with pytest.raises(DataError, match="objects/box.*finite"):
        Shard.open(shard_path)


def test_inconsistent_offsets(shard_path: Path) -> None:
    def edit(f: h5py.File) -> None:
        offsets = f["lidar/offsets"][()]
        offsets[1], offsets[2] = offsets[2] + 1, offsets[1]
        f["lidar/offsets"][...] = offsets
    _corrupt(shard_path, edit)
    with pytest.raises(DataError, match="lidar/offsets.*monotone"):
        Shard.open(shard_path)


def test_offsets_not_matching_rows(shard_path: Path) -> None:
    _corrupt(shard_path, lambda f: f["objects/offsets"].__setitem__(-1, 10_000))
    with pytest.raises(DataError, match="objects/offsets"):
        Shard.open(shard_path)
