"""Round trips and validation of shard files (writer + validating reader)."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from taskology.data.schema import LAYERS, SCHEMA_VERSION
from taskology.data.shard import Shard, ShardWriter, shard_paths, stale_temp_files, write_shard
from taskology.errors import DataError

from .conftest import make_shard, synthetic_layers


def test_round_trip_every_layer_bit_exact(tmp_path: Path) -> None:
    layers = synthetic_layers(frames=5, seed=3)
    path = write_shard(tmp_path / "s.h5", layers, sequence_id="s", frame_rate=12.5,
                       generator={"backend": "synthetic", "seed": 3})
    assert set(layers) == set(LAYERS)  # the fixture covers every layer type
    with Shard.open(path) as shard:
        assert shard.num_frames == 5 and shard.sequence_id == "s" and shard.frame_rate == 12.5
        assert shard.generator == {"backend": "synthetic", "seed": 3}
        assert shard.groups == ("camera", "ego", "lidar", "objects") and shard.camera_hw == (32, 96)
        assert int(shard.attrs["schema_version"]) == SCHEMA_VERSION
        for name, expected in layers.items():
            got = shard.read(name)
            assert got.dtype == LAYERS[name].dtype, name
            assert got.shape == expected.shape and got.tobytes() == expected.tobytes(), name
        # per-frame and ragged slicing agree with the whole arrays
        lo = layers["lidar/offsets"]
        for f in range(5):
            frame = shard.frame(f)
            assert np.array_equal(frame["camera/depth"], layers["camera/depth"][f])
            assert np.array_equal(frame["lidar/points"], layers["lidar/points"][lo[f]:lo[f + 1]])
            assert "lidar/offsets" not in frame
        assert shard.read("lidar/points", 2).shape == (0, 4)  # empty frame stays (0, 4)
        assert np.array_equal(shard.read("camera/rgb", [3, 1]), layers["camera/rgb"][[3, 1]])
        assert np.array_equal(shard.read("objects/box", [0, 1]),
                              layers["objects/box"][: layers["objects/offsets"][2]])


def test_streaming_writer_equals_write_shard_and_checksums(tmp_path: Path) -> None:
    layers = synthetic_layers(frames=3, seed=1)
    lo, oo = layers["lidar/offsets"], layers["objects/offsets"]
    with ShardWriter(tmp_path / "a.h5", sequence_id="a", frame_rate=10.0, generator={}, camera_hw=(32, 96),
                     lidar=True, objects=True) as writer:
        writer.set_static(**{k: layers[k] for k in ("camera/K", "camera/cam_from_ego", "lidar/lidar_from_ego")})
        for f in range(3):
            frame = {k: v[f] for k, v in layers.items() if LAYERS[k].per_frame}
            frame.update({k: v[lo[f]:lo[f + 1]] for k, v in layers.items() if k.startswith("lidar/")
                          and LAYERS[k].shape[0] == "P"})
            frame.update({k: v[oo[f]:oo[f + 1]] for k, v in layers.items() if k.startswith("objects/")
                          and LAYERS[k].shape[0] == "O"})
            writer.append(frame)
        assert writer.temp_path.exists() and not (tmp_path / "a.h5").exists()  # invisible until closed
    with Shard.open(tmp_path / "a.h5") as shard:
        for name in layers:
            assert np.array_equal(shard.read(name), layers[name]), name
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert f["camera/depth"].fletcher32 and f["lidar/points"].fletcher32 and f["camera/K"].fletcher32
        assert f["camera/rgb"].chunks == (1, 32, 96, 3)  # one frame per chunk
        assert f["camera/rgb"].maxshape[0] is None


def test_camera_only_shard_is_valid(tmp_path: Path) -> None:
    layers = synthetic_layers(frames=2, lidar=False, objects=False)
    del layers["ego/world_from_ego"]
    path = write_shard(tmp_path / "c.h5", layers, sequence_id="c", frame_rate=10.0, generator={})
    with Shard.open(path) as shard:
        assert shard.groups == ("camera",)
        with pytest.raises(DataError, match="lidar/points"):
            shard.read("lidar/points", 0)


def test_never_overwrites_silently(tmp_path: Path) -> None:
    path = make_shard(tmp_path, "s", seed=0)
    before = path.read_bytes()
    with pytest.raises(DataError, match="exists"):
        make_shard(tmp_path, "s", seed=1)
    assert path.read_bytes() == before
    layers = synthetic_layers(seed=1)
    write_shard(path, layers, sequence_id="s", frame_rate=10.0, generator={}, overwrite=True)
    with Shard.open(path) as shard:
        assert np.array_equal(shard.read("camera/rgb"), layers["camera/rgb"])
    assert stale_temp_files(tmp_path) == []


def test_exception_inside_writer_aborts(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "x.h5", sequence_id="x", frame_rate=10.0, generator={}, camera_hw=None,
                         lidar=False, objects=False) as writer:
            writer.append({"ego/world_from_ego": np.eye(4)})
            raise RuntimeError("simulated failure")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad, match", [
    ({"camera/depth": np.full((32, 96), np.nan, np.float32)}, "finite"),
    ({"camera/rgb": np.zeros((32, 95, 3), np.uint8)}, "expected shape"),
    ({"camera/rgb": np.full((32, 96, 3), 300)}, "do not fit"),
    ({"camera/semantic": np.zeros((32, 96), np.float32)}, "dtype"),
])
def test_writer_rejects_bad_frames(tmp_path: Path, bad: dict, match: str) -> None:
    layers = synthetic_layers(frames=1, lidar=False, objects=False)
    frame = {k: v[0] for k, v in layers.items() if LAYERS[k].per_frame}
    frame.update(bad)
    with ShardWriter(tmp_path / "b.h5", sequence_id="b", frame_rate=10.0, generator={}, camera_hw=(32, 96),
                     lidar=False, objects=False) as writer:
        with pytest.raises(DataError, match=match):
            writer.append(frame)
        with pytest.raises(DataError, match="missing"):
            writer.append({"camera/rgb": frame["camera/rgb"]})
        writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_writer_requires_static_layers(tmp_path: Path) -> None:
    layers = synthetic_layers(frames=1, lidar=False, objects=False)
    writer = ShardWriter(tmp_path / "b.h5", sequence_id="b", frame_rate=10.0, generator={}, camera_hw=(32, 96),
                         lidar=False, objects=False)
    writer.append({k: v[0] for k, v in layers.items() if LAYERS[k].per_frame})
    with pytest.raises(DataError, match="camera/K"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_shard_paths_skips_temp_files(tmp_path: Path) -> None:
    make_shard(tmp_path, "b")
    make_shard(tmp_path, "a")
    (tmp_path / ".c.h5.tmp-1-abcd").write_bytes(b"partial")
    assert [p.name for p in shard_paths(tmp_path)] == ["a.h5", "b.h5"]
    assert [p.name for p in stale_temp_files(tmp_path)] == [".c.h5.tmp-1-abcd"]
