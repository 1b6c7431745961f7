"""The world record of a cached simulated folder (taskology.sim.cache): a folder made by other simulator
code, or before records, is checked by simulating one shard again; a different world is set aside (never
deleted) and simulated afresh; a shard changed on disk is caught by its digest. Shards here are small
HDF5 files written by a fake simulator whose output the tests control; the last test runs the real one."""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from taskology.errors import DataError
from taskology.sim import cache

NAMES = [f"seq{i}.h5" for i in range(3)]
SPEC = {"seed": 0, "sequences": 3, "camera_hw": (4, 6)}


class FakeSimulator:
    """``make_shard``: writes shard ``i`` as values ``i + offset`` (the 'code version' is ``offset``)."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset, self.made = offset, []

    def __call__(self, folder: Path, index: int) -> Path:
        path = Path(folder) / NAMES[index]
        assert not path.exists(), "the simulator must never overwrite a shard"
        with h5py.File(path, "w") as f:
            f.attrs["sequence_id"] = f"seq{index}"
            f.create_dataset("camera/depth", data=np.full((2, 4, 6), index + self.offset, np.float32))
        self.made.append(index)
        return path


def _ensure(root: Path, sim: FakeSimulator, spec: dict = SPEC, notices: list | None = None) -> cache.CachedWorld:
    return cache.ensure_world(root, spec, NAMES, sim, say=(notices if notices is not None else []).append)


@pytest.fixture()
def code(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Set the simulator fingerprint ('which code made the shards')."""
    def set_code(version: str) -> None:
        monkeypatch.setattr(cache, "simulator_fingerprint", lambda: version)
    set_code("v1")
    return set_code


def test_shard_digest_sees_content_not_layout(tmp_path: Path) -> None:
    def write(name: str, data: np.ndarray, **kwargs) -> Path:  # type: ignore[no-untyped-def]
        with h5py.File(tmp_path / name, "w") as f:
            f.attrs["frame_rate"] = 10.0
            f.create_dataset("camera/rgb", data=data, **kwargs)
        return tmp_path / name

    data = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8)
    plain = cache.shard_digest(write("a.h5", data))
    assert cache.shard_digest(write("b.h5", data, chunks=(1, 8, 8), compression="gzip")) == plain
    changed = data.copy()
    changed[1, 7, 7] ^= 1
    assert cache.shard_digest(write("c.h5", changed)) != plain
    assert cache.shard_digest(write("d.h5", data.astype(np.uint16))) != plain  # same values, another dtype
    with h5py.File(write("e.h5", data), "a") as f:
        f.attrs["frame_rate"] = 20.0
    assert cache.shard_digest(tmp_path / "e.h5") != plain
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="bad.h5"):
        cache.shard_digest(tmp_path / "bad.h5")


def test_a_recorded_world_is_reused_without_simulating(tmp_path: Path, code) -> None:  # type: ignore[no-untyped-def]
    sim = FakeSimulator()
    first = _ensure(tmp_path / "w", sim)
    assert sim.made == [0, 1, 2] and first.simulated == 3
    record = json.loads((tmp_path / "w" / cache.RECORD).read_text())
    assert record["simulator"] == "v1" and sorted(record["shards"]) == NAMES and record["digest"] == first.digest
    again = FakeSimulator()
    second = _ensure(tmp_path / "w", again)
    assert again.made == [] and second == first._replace(simulated=0)
    assert cache.recorded_world(tmp_path / "w") == first.digest and cache.recorded_world(tmp_path / "none") is None


def test_new_code_that_simulates_the_same_world_keeps_the_folder(tmp_path: Path, code) -> None:  # type: ignore[no-untyped-def]
    first = _ensure(tmp_path / "w", FakeSimulator())
    code("v2")
    sim, notices = FakeSimulator(), []
    second = _ensure(tmp_path / "w", sim, notices=notices)
    assert sim.made == [0], "one shard is simulated again, into a scratch folder, to compare"
    assert second.digest == first.digest and second.simulated == 0
    assert json.loads((tmp_path / "w" / cache.RECORD).read_text())["simulator"] == "v2"
    assert "identically" in notices[0] and not list(tmp_path.glob("*.stale-*"))
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == sorted(NAMES + [cache.RECORD])  # scratch gone


def test_new_code_that_simulates_another_world_sets_the_old_one_aside(tmp_path: Path, code) -> None:  # type: ignore[no-untyped-def]
    first = _ensure(tmp_path / "w", FakeSimulator())
    (tmp_path / "w" / "splits.json").write_text("{}")  # what runs add to a data root moves with it
    code("v2")
    sim, notices = FakeSimulator(offset=0.5), []
    second = _ensure(tmp_path / "w", sim, notices=notices)
    assert sim.made == [0, 0, 1, 2] and second.simulated == 3 and second.digest != first.digest
    stale = tmp_path / "w.stale-0"
    assert sorted(p.name for p in stale.iterdir()) == sorted(NAMES + [cache.RECORD, "splits.json"])
    assert cache.recorded_world(stale) == first.digest  # nothing lost
    assert "other simulator code" in notices[0] and str(stale) in notices[0]
    with h5py.File(tmp_path / "w" / NAMES[2]) as f:
        assert f["camera/depth"][0, 0, 0] == 2.5
    assert not (tmp_path / "w" / "splits.json").exists()


@pytest.mark.parametrize("offset, kept", [(0.0, True), (0.5, False)])
def test_a_folder_from_before_records_is_checked(tmp_path: Path, code, offset: float, kept: bool) -> None:  # type: ignore[no-untyped-def]
    legacy = tmp_path / "w"
    legacy.mkdir()
    for i in (1, 2):  # shard 0 missing: the probe is the lowest shard there
        FakeSimulator()(legacy, i)
    sim, notices = FakeSimulator(offset), []
    world = _ensure(legacy, sim, notices=notices)
    assert "before world records" in notices[0]
    if kept:
        assert sim.made == [1, 0] and world.simulated == 1 and not (tmp_path / "w.stale-0").exists()
    else:
        assert sim.made == [1, 0, 1, 2] and world.simulated == 3
        assert sorted(p.name for p in (tmp_path / "w.stale-0").iterdir()) == NAMES[1:]


def test_a_shard_changed_on_disk_is_set_aside_and_simulated_again(tmp_path: Path, code) -> None:  # type: ignore[no-untyped-def]
    first = _ensure(tmp_path / "w", FakeSimulator())
    shard = tmp_path / "w" / NAMES[1]
    os.utime(shard, ns=(1, 1))  # touched, content the same: re-digested, kept
    sim = FakeSimulator()
    assert _ensure(tmp_path / "w", sim) == first._replace(simulated=0) and sim.made == []
    with h5py.File(shard, "a") as f:
        f["camera/depth"][0, 0, 0] = -1.0
    sim, notices = FakeSimulator(), []
    world = _ensure(tmp_path / "w", sim, notices=notices)
    assert sim.made == [1] and world.digest == first.digest
    assert (tmp_path / "w" / f"{NAMES[1]}.stale-0").is_file() and "content differs" in notices[0]


def test_a_folder_of_another_world_is_set_aside(tmp_path: Path, code) -> None:  # type: ignore[no-untyped-def]
    _ensure(tmp_path / "w", FakeSimulator())
    notices: list[str] = []
    _ensure(tmp_path / "w", FakeSimulator(), spec={**SPEC, "seed": 1}, notices=notices)
    assert "its seed differ" in notices[0] and (tmp_path / "w.stale-0" / cache.RECORD).is_file()
    assert json.loads((tmp_path / "w" / cache.RECORD).read_text())["spec"]["seed"] == 1


def test_an_unreadable_record_is_one_clear_error(tmp_path: Path, code) -> None:  # type: ignore[no-untyped-def]
    _ensure(tmp_path / "w", FakeSimulator())
    for text in ("{broken", json.dumps({"version": 99})):
        (tmp_path / "w" / cache.RECORD).write_text(text)
        with pytest.raises(DataError, match=f"{tmp_path / 'w' / cache.RECORD}: .*delete it") as info:
            _ensure(tmp_path / "w", FakeSimulator())
        assert "\n" not in str(info.value)
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == sorted(NAMES + [cache.RECORD])


def test_fingerprint_follows_the_simulator_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache.simulator_fingerprint() == cache.simulator_fingerprint()
    before = cache.simulator_fingerprint()
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes",
                        lambda self: real(self) + (b"# edit" if self.name == "renderer.py" else b""))
    assert cache.simulator_fingerprint() != before


def test_runs_ensuring_one_folder_at_once_take_turns(tmp_path: Path, code) -> None:  # type: ignore[no-untyped-def]
    import threading
    import time

    class Slow(FakeSimulator):
        def __call__(self, folder: Path, index: int) -> Path:
            time.sleep(0.05)  # long enough for the other thread to arrive while shards are missing
            return super().__call__(folder, index)

    sims, worlds, errors = [Slow(), Slow()], [], []

    def ensure(sim: FakeSimulator) -> None:
        try:
            worlds.append(_ensure(tmp_path / "w", sim))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ensure, args=(sim,)) for sim in sims]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors and len(worlds) == 2 and worlds[0].digest == worlds[1].digest
    assert sorted(len(sim.made) for sim in sims) == [0, 3], "one simulates, the other finds the world ready"


def test_inspect_names_the_world_and_whether_todays_simulator_made_it(tmp_path: Path, code) -> None:  # type: ignore[no-untyped-def]
    from taskology.data.inspect import _world_summary

    world = _ensure(tmp_path / "w", FakeSimulator())
    assert _world_summary(tmp_path / "w") == f"world {world.digest} (world.json: 3 shard digests, simulator today's)"
    code("v2")
    assert "simulator other (checked again on next use)" in _world_summary(tmp_path / "w")
    assert _world_summary(tmp_path) is None


def test_a_run_stopped_while_simulating_keeps_its_shards(tmp_path: Path, code) -> None:  # type: ignore[no-untyped-def]
    class Dies(FakeSimulator):
        def __call__(self, folder: Path, index: int) -> Path:
            if index == 2:
                raise KeyboardInterrupt
            return super().__call__(folder, index)

    with pytest.raises(KeyboardInterrupt):
        _ensure(tmp_path / "w", Dies())
    assert sorted(json.loads((tmp_path / "w" / cache.RECORD).read_text())["shards"]) == NAMES[:2]
    sim = FakeSimulator()
    world = _ensure(tmp_path / "w", sim)
    assert sim.made == [2] and world.simulated == 1
    assert world.digest == _ensure(tmp_path / "fresh", FakeSimulator()).digest
