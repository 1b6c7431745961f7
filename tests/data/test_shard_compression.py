"""Compression of shard layers: deflate on the label layers of new shards and nothing elsewhere; a shard
written with LZF on them (the writer's choice before deflate) reads as one written now."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from taskology.data import writer
from taskology.data.shard import Shard, write_shard

from .conftest import synthetic_layers

LABELS = ("camera/semantic", "camera/instance", "lidar/semantic", "lidar/instance")


def _write(path: Path, layers: dict[str, np.ndarray]) -> Path:
    return write_shard(path, layers, sequence_id="s", frame_rate=10.0, generator={"backend": "test"})


def test_new_shards_deflate_the_label_layers_and_nothing_else(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.h5", synthetic_layers(frames=3, hw=(16, 24)))
    seen: dict[str, tuple[str | None, int | None]] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: seen.update({name: (obj.compression, obj.compression_opts)})
                     if isinstance(obj, h5py.Dataset) else None)
    assert {name: seen[name] for name in LABELS} == {name: ("gzip", 1) for name in LABELS}
    assert writer.GZIP_LEVEL == 1 and sorted(n for n, c in writer.COMPRESSION.items() if c) == sorted(LABELS)
    assert {name: codec for name, codec in seen.items() if name not in LABELS} == {
        name: (None, None) for name in seen if name not in LABELS}


def test_a_shard_written_with_lzf_reads_as_one_written_now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from taskology.sim.cache import shard_digest

    layers = synthetic_layers(frames=3, hw=(16, 24), seed=4)
    now = _write(tmp_path / "now.h5", layers)
    monkeypatch.setattr(writer, "COMPRESSION", {name: "lzf" for name in LABELS})
    before = _write(tmp_path / "before.h5", layers)
    with h5py.File(before, "r") as f:
        assert {f[name].compression for name in LABELS} == {"lzf"}
    assert shard_digest(before) == shard_digest(now)          # every dataset's values and every attribute
    with Shard.open(before) as shard:
        shard.verify()                                        # fletcher32 of every chunk
        np.testing.assert_array_equal(shard.read("camera/semantic"), layers["camera/semantic"])
        np.testing.assert_array_equal(shard.frame(2, ["lidar/instance"])["lidar/instance"],
                                      layers["lidar/instance"][layers["lidar/offsets"][2]:layers["lidar/offsets"][3]])
