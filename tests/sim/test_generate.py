"""generate_shard: a valid shard, bit-identical for the same seed, different for another seed."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from taskology.data.shard import Shard
from taskology.errors import DataError, SimError
from taskology.sim.config import WorldConfig
from taskology.sim.generate import generate_shard, sequence_id_for

SMALL = dict(frames=3, camera_hw=(16, 48), lidar_beams=8, lidar_azimuth=256,
             world=WorldConfig(blocks=2, cars=6, pedestrians=6))


def _datasets(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_sequence_ids_are_stable_and_distinct() -> None:
    assert sequence_id_for(0, 3) == "seed0-seq00003"
    assert len({sequence_id_for(s, i) for s in range(3) for i in range(3)}) == 9


def test_shard_is_valid_and_complete(tmp_path: Path) -> None:
    calls: list[int] = []
    path = generate_shard(tmp_path, seed=1, index=0, progress=calls.append, **SMALL)
    assert path == tmp_path / "seed1-seq00000.h5" and calls == [1, 2, 3]
    with Shard.open(path) as shard:
        shard.verify()
        assert shard.num_frames == 3 and shard.camera_hw == (16, 48)
        assert shard.groups == ("camera", "ego", "lidar", "objects")
        assert shard.generator["backend"] == "embedded" and shard.generator["seed"] == 1
        assert shard.generator["config"]["world"]["cars"] == 6
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left


def test_same_seed_gives_bit_identical_shards_other_seed_or_index_differs(tmp_path: Path) -> None:
    a = _datasets(generate_shard(tmp_path / "a", seed=4, index=2, **SMALL))
    b = _datasets(generate_shard(tmp_path / "b", seed=4, index=2, **SMALL))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    c = _datasets(generate_shard(tmp_path / "c", seed=4, index=3, **SMALL))
    d = _datasets(generate_shard(tmp_path / "d", seed=5, index=2, **SMALL))
    for other in (c, d):
        assert not np.array_equal(a["ego/world_from_ego"], other["ego/world_from_ego"])


def test_no_lidar_group_without_beams(tmp_path: Path) -> None:
    path = generate_shard(tmp_path, seed=0, index=0, **{**SMALL, "lidar_beams": 0})
    with Shard.open(path) as shard:
        assert "lidar" not in shard.groups


def test_existing_shard_is_kept_unless_overwrite(tmp_path: Path) -> None:
    path = generate_shard(tmp_path, seed=0, index=0, **SMALL)
    before = path.read_bytes()
    with pytest.raises(DataError, match="exists"):
        generate_shard(tmp_path, seed=0, index=0, **SMALL)
    assert path.read_bytes() == before
    generate_shard(tmp_path, seed=0, index=0, overwrite=True, **SMALL)


@pytest.mark.parametrize("bad", [dict(seed=-1), dict(index=-2), dict(frames=0), dict(camera_hw=(0, 10)),
                                 dict(lidar_beams=129), dict(frame_rate=0.0)])
def test_bad_parameters_raise_sim_error_before_writing(tmp_path: Path, bad: dict) -> None:
    args = {**dict(seed=0, index=0), **SMALL, **bad}
    with pytest.raises(SimError):
        generate_shard(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()
