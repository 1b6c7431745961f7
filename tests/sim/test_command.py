"""``taskology sim``: bad input is one clear SimError with nothing written; resume skips identical
shards; shards of another generator or schema are never overwritten; the preview is a PNG."""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import pytest

from taskology.errors import SimError
from taskology.sim.cache import read_record, recorded_world
from taskology.sim.command import sim_command

BASE = dict(sequences=1, frames=2, seed=0, camera="16x48", lidar_beams=4, backend="embedded",
            carla_host="127.0.0.1:2000", preview=None)


def _run(out: Path, **changes) -> None:
    sim_command(out=out, **{**BASE, **changes})


@pytest.mark.parametrize("changes, message", [
    (dict(camera="64by208"), "HxW"),
    (dict(camera="0x208"), "1..4096"),
    (dict(camera="5000x10"), "1..4096"),
    (dict(lidar_beams=129), "0..128"),
    (dict(lidar_beams=-1), "0..128"),
    (dict(frames=0), "frames"),
    (dict(sequences=0), "sequences"),
    (dict(seed=-3), "seed"),
    (dict(ego_speed=(12.0, 2.0)), "--ego-speed: expected MIN MAX"),
    (dict(backend="carla", ego_speed=(2.0, 12.0)), "an option of the embedded simulator"),
])
def test_bad_input_is_a_sim_error_and_writes_nothing(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(SimError, match=message):
        _run(tmp_path / "out", **changes)
    assert not (tmp_path / "out").exists()


def test_rerun_skips_identical_shards_and_adds_missing_ones(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(out)
    first = out / "seed0-seq00000.h5"
    stat = first.stat()
    world = sim_command(out=out, **{**BASE, "sequences": 2})
    assert sorted(p.name for p in out.iterdir()) == ["seed0-seq00000.h5", "seed0-seq00001.h5", "world.json"]
    assert first.stat().st_mtime_ns == stat.st_mtime_ns and first.stat().st_ino == stat.st_ino
    # the folder's world record covers both shards (taskology.sim.cache)
    assert world is not None and world.simulated == 1 and recorded_world(out) == world.digest
    assert sorted(read_record(out)["shards"]) == ["seed0-seq00000.h5", "seed0-seq00001.h5"]
    assert sim_command(out=out, **{**BASE, "sequences": 2}) == world._replace(simulated=0)


def test_other_generator_config_is_refused_and_nothing_is_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(out)
    before = (out / "seed0-seq00000.h5").read_bytes()
    with pytest.raises(SimError, match="config.frames: existing 2, this run 3"):
        _run(out, frames=3)
    with pytest.raises(SimError, match="camera_hw"):
        _run(out, camera="16x32", sequences=2)
    assert (out / "seed0-seq00000.h5").read_bytes() == before and len(list(out.glob("*.h5"))) == 1


def test_other_schema_or_unreadable_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with h5py.File(out / "old.h5", "w") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(SimError, match="schema version 99"):
        _run(out)
    os.remove(out / "old.h5")
    (out / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(SimError, match="not a readable shard"):
        _run(out)
    assert sorted(p.name for p in out.iterdir()) == ["junk.h5"]


def test_out_must_not_be_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(SimError, match="expected a directory"):
        _run(tmp_path / "f")


def test_preview_writes_a_png(tmp_path: Path) -> None:
    png = tmp_path / "p" / "preview.png"
    _run(tmp_path / "unused", preview=png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "unused").exists()


def test_rerun_removes_a_partial_shard_and_simulates_it_again(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    _run(out, sequences=2)
    kept, redone = out / "seed0-seq00000.h5", out / "seed0-seq00001.h5"
    kept_stat, redone_bytes = kept.stat(), redone.read_bytes()
    partial = out / f".{redone.name}.tmp-4242-deadbeef"  # what a writer killed mid-sequence leaves
    os.replace(redone, partial)
    with open(partial, "r+b") as f:
        f.truncate(1000)
    capsys.readouterr()
    world = sim_command(out=out, **{**BASE, "sequences": 2})
    said = capsys.readouterr().out
    assert world is not None and world.simulated == 1 and not partial.exists()
    assert redone.read_bytes() == redone_bytes and kept.stat().st_ino == kept_stat.st_ino
    assert f"removed 1 partial shard file(s) of stopped writers in {out} ({partial.name})" in said
    assert "simulating 1 of 2 sequences" in said and "frames/s" in said
