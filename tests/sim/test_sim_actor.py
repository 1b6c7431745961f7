"""SimActor: pure resume/retire decisions, the restart scan on real shard files, and a real Dask
LocalCluster with a worker killed (SIGKILL) in the middle of a shard."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from taskology.data.shard import Shard, stale_temp_files, write_shard
from taskology.errors import SimError
from taskology.sim.actor import (CORRUPT_SUFFIX, LEDGER_NAME, SimActor, indices_to_retire, next_index, plan_resume,
                                 resolve_indices)


def _id(seed: int, index: int) -> str:
    return f"t{seed}-{index:04d}"


# ---------------------------------------------------------------------------------- pure decisions
def test_resolve_indices_any_format_and_start_hint() -> None:
    stems = [_id(3, 7), _id(3, 2), _id(4, 2), "notes"]
    found, unmatched = resolve_indices(stems, lambda i: _id(3, i), limit=100)
    assert found == {2: _id(3, 2), 7: _id(3, 7)} and unmatched == ["notes", _id(4, 2)]
    calls: list[int] = []
    found, _ = resolve_indices([_id(0, 500)], lambda i: calls.append(i) or _id(0, i), start=499)
    assert found == {500: _id(0, 500)} and calls == [499, 500]          # stops as soon as all are found
    found, _ = resolve_indices([_id(0, 3)], lambda i: _id(0, i), start=50, limit=60)
    assert found == {3: _id(0, 3)}                                        # wraps around to below the hint


def test_next_index_never_repeats() -> None:
    assert next_index([], 0) == 0
    assert next_index([0, 1, 2], 3) == 3
    assert next_index([0, 1, 2], 2) == 3          # shard finished, ledger not yet updated (crash between)
    assert next_index([], 12) == 12               # all shards retired: the ledger remembers
    assert next_index([5, 9], 7) == 10
    assert next_index([0, 2], 0) == 3             # a gap (corrupt shard moved aside) is not refilled


def test_indices_to_retire() -> None:
    assert indices_to_retire([3, 1, 2, 0], keep=2) == [0, 1]
    assert indices_to_retire([3, 1], keep=5) == []
    assert indices_to_retire([3, 1], keep=0) == [1, 3]
    assert indices_to_retire([3, 1], keep=None) == []
    with pytest.raises(SimError, match="keep"):
        indices_to_retire([1], keep=-1)


def test_plan_resume_uses_ledger_and_flags_foreign_files() -> None:
    plan = plan_resume([_id(1, 40), _id(1, 41)], lambda i: _id(1, i), ledger_next=41)
    assert plan.indices == {40: _id(1, 40), 41: _id(1, 41)} and plan.next_index == 42 and plan.foreign == []
    plan = plan_resume([_id(2, 0)], lambda i: _id(1, i), ledger_next=0)
    assert plan.foreign == [_id(2, 0)] and plan.indices == {}


# ------------------------------------------------------------------------- restart scan (no cluster)
def _tiny_shard(directory: Path, sid: str) -> Path:
    return write_shard(directory / f"{sid}.h5", {"ego/world_from_ego": np.stack([np.eye(4)] * 2)}, sequence_id=sid,
                       frame_rate=10.0, generator={"backend": "test"})


def test_scan_removes_temps_quarantines_corrupt_and_resumes(tmp_path: Path) -> None:
    for i in range(3):
        _tiny_shard(tmp_path, _id(0, i))
    corrupt = tmp_path / f"{_id(0, 1)}.h5"
    corrupt.write_bytes(corrupt.read_bytes()[:200])                    # truncated: must not stay in the pool
    (tmp_path / f".{_id(0, 3)}.h5.tmp-999-abcd").write_bytes(b"half a shard")   # a dead writer's leftover
    actor = SimActor(tmp_path, seed=0, frames=2)
    actor._scan(_id)
    status = actor.status()
    assert actor.shards() == [str(tmp_path / f"{_id(0, i)}.h5") for i in (0, 2)]
    assert status["next_index"] == 3
    assert status["removed_temp_files"] == [f".{_id(0, 3)}.h5.tmp-999-abcd"] and stale_temp_files(tmp_path) == []
    assert len(status["quarantined"]) == 1 and (tmp_path / f"{_id(0, 1)}.h5{CORRUPT_SUFFIX}").exists()
    assert actor.retire(1) == [str(tmp_path / f"{_id(0, 0)}.h5")]
    assert not (tmp_path / f"{_id(0, 0)}.h5").exists() and actor.shards() == [str(tmp_path / f"{_id(0, 2)}.h5")]


def test_scan_refuses_other_config_and_foreign_shards(tmp_path: Path) -> None:
    actor = SimActor(tmp_path, seed=0, frames=2)
    (tmp_path / LEDGER_NAME).write_text(json.dumps({"config": {**actor._config(), "frames": 9}, "next_index": 4}))
    with pytest.raises(SimError, match="generated with"):
        actor._scan(_id)
    (tmp_path / LEDGER_NAME).unlink()
    _tiny_shard(tmp_path, _id(5, 0))
    with pytest.raises(SimError, match="not sequences of seed 0"):
        actor._scan(_id)


def test_a_varied_world_reaches_the_shards_and_the_ledger(tmp_path: Path) -> None:
    from taskology.data.shard import Shard

    default = SimActor(tmp_path / "d", seed=0, frames=1)
    assert "world" not in default._config()  # a default-world ledger reads as before: such runs resume
    actor = SimActor(tmp_path / "v", seed=0, frames=2, camera_hw=(8, 24), lidar_beams=0, max_shards=1,
                     world={"ego_speed_mps": [2.0, 12.0]})
    assert actor._config()["world"]["ego_speed_mps"] == [2.0, 12.0]
    actor.start()
    try:
        _wait(lambda: actor.status()["phase"] == "finished", "one shard")
    finally:
        actor.stop()
    (path,) = [Path(p) for p in actor.shards()]
    with Shard.open(path) as shard:
        world = shard.generator["config"]["world"]
    assert world["ego_speed_mps"] == [2.0, 12.0]
    ledger = json.loads((tmp_path / "v" / LEDGER_NAME).read_text())
    assert ledger["config"]["world"] == world


def test_one_actor_per_directory(tmp_path: Path) -> None:
    first = SimActor(tmp_path, seed=0, frames=1, max_shards=0)
    first.start()
    try:
        with pytest.raises(SimError, match="another SimActor"):
            SimActor(tmp_path, seed=0, frames=1).start()
    finally:
        first.stop()
    second = SimActor(tmp_path, seed=0, frames=1, max_shards=0)
    second.start()                                                      # lock released by stop()
    second.stop()


def test_bad_arguments() -> None:
    with pytest.raises(SimError, match="frames"):
        SimActor("x", frames=0)
    with pytest.raises(SimError, match="pool_size"):
        SimActor("x", pool_size=0)


# ---------------------------------------------------------------------- real cluster, real generator
SMALL = {"seed": 0, "frames": 6, "camera_hw": (32, 96), "lidar_beams": 8, "lidar_azimuth": 64}


def _wait(predicate, what: str, timeout_s: float = 120.0, every_s: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _indices_on_disk(run_dir: Path) -> list[int]:
    from taskology.sim.generate import sequence_id_for

    found, unmatched = resolve_indices([p.stem for p in run_dir.glob("*.h5")], lambda i: sequence_id_for(0, i),
                                       limit=1000)
    assert unmatched == []
    return sorted(found)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_actor_survives_worker_sigkill_mid_shard(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    from taskology.sim.generate import sequence_id_for

    run_dir = tmp_path / "mediator"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        ((old_address, pid),) = client.run(os.getpid).items()             # asked before: no round trip later
        actor = client.submit(SimActor, str(run_dir), **SMALL, actor=True).result()
        assert actor.start().result()["phase"] in ("scanning", "generating")

        def kill_mid_shard() -> bool:
            # Kill only with frames left to write and the temp file seen on disk, so a slow machine cannot let
            # the shard finish between the check and the kill (nothing but a glob sits between them).
            s = actor.status().result()
            assert not s["errors"], s["errors"]
            part = s["in_progress"]
            if s["shards_done"] < 2 or not part or not 1 <= part["frames_done"] <= part["frames"] - 3:
                return False
            if not stale_temp_files(run_dir):
                return False
            os.kill(pid, signal.SIGKILL)                                  # fault injection: the worker dies
            return True

        _wait(kill_mid_shard, "two shards done and a third one half written", every_s=0.02)
        before = [str(run_dir / f"{sequence_id_for(0, i)}.h5") for i in _indices_on_disk(run_dir)]
        assert len(before) >= 2
        leftovers = [p.name for p in stale_temp_files(run_dir)]
        assert leftovers, "the kill should have caught a shard being written"
        _wait(lambda: [a for a in client.scheduler_info()["workers"] if a != old_address], "the nanny's new worker")
        with pytest.raises(Exception):
            actor.status().result(timeout=10)                              # the old actor is gone with its worker

        actor = client.submit(SimActor, str(run_dir), **SMALL, actor=True).result()
        actor.start()
        _wait(lambda: actor.status().result()["shards_done"] >= 2, "two more shards from the recreated actor")
        status = actor.stop().result()
        after = actor.shards().result()
    assert status["phase"] == "stopped" and status["errors"] == [] and status["quarantined"] == []
    assert status["removed_temp_files"] == leftovers                      # the dead writer's temp file was cleaned
    assert after[:len(before)] == before                                  # old shards kept, new ones appended
    indices = _indices_on_disk(run_dir)
    assert indices == list(range(len(indices))) and len(indices) == len(after) >= len(before) + 2  # no gap, no duplicate
    assert stale_temp_files(run_dir) == []
    for path in after:
        with Shard.open(path) as shard:                                    # every shard opens and validates fully
            shard.verify()
            assert shard.num_frames == SMALL["frames"] and shard.generator["seed"] == 0
    assert json.loads((run_dir / LEDGER_NAME).read_text())["next_index"] == len(indices)


def test_listing_is_the_newest_pool_size_and_the_margin_stays_on_disk(tmp_path: Path) -> None:
    files = []
    for i in range(5):
        files.append(tmp_path / f"s{i}.h5")
        files[-1].write_bytes(b"x")
    actor = SimActor(tmp_path, pool_size=2)           # margin defaults to pool_size
    assert actor.retire_margin == 2
    actor._pool = dict(enumerate(files))
    assert actor.shards() == [str(files[3]), str(files[4])]
    actor.retire(actor.pool_size + actor.retire_margin)
    assert [p.exists() for p in files] == [False, True, True, True, True]
    assert actor.shards() == [str(files[3]), str(files[4])]
    with pytest.raises(SimError, match="retire_margin"):
        SimActor("x", pool_size=2, retire_margin=-1)


@pytest.mark.timeout(120)
def test_back_pressure_waits_for_consumers_and_never_retires_what_they_hold(tmp_path: Path) -> None:
    actor = SimActor(tmp_path, seed=0, frames=2, camera_hw=(16, 48), lidar_beams=0, pool_size=2, max_ahead=2)
    actor.start()
    try:
        deadline = time.time() + 60
        while actor.status()["phase"] != "waiting" and time.time() < deadline:
            time.sleep(0.05)
        first = actor.shards()
        assert len(first) == 2 and actor.status()["phase"] == "waiting"  # two ahead of nothing taken: paused
        time.sleep(0.5)
        assert actor.shards() == first  # still paused
        assert actor.taken(first[-1:]) == 1  # the consumer holds index 1: two more may come
        while len(set(actor.shards()) - set(first)) < 2 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        held = first[-1]
        assert Path(held).exists() and actor.status()["phase"] == "waiting"  # held shard not retired
        assert actor.taken(["not/a/shard.h5"]) == 1
    finally:
        actor.stop()
    with pytest.raises(SimError, match="max_ahead"):
        SimActor(tmp_path / "x", max_ahead=0)


# ------------------------------------------------------------------- CARLA backend, fake server
def _carla_actor(run_dir: Path, **kwargs: object) -> SimActor:
    from taskology.sim.carla_backend import CarlaOptions

    options = CarlaOptions(host="127.0.0.1:2000", vehicles=1, walkers=1, warmup_ticks=1, timeout_s=0.5,
                           reconnect_s=10.0, backoff_s=(0.01, 0.05))
    return SimActor(run_dir, seed=3, frames=3, camera_hw=(8, 12), lidar_beams=4, lidar_azimuth=16, frame_rate=20.0,
                    backend="carla", carla=options, **kwargs)


def test_carla_actor_survives_a_server_restart_and_serves_only_complete_shards(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from fakecarla import FakeCarla

    fake = FakeCarla(normals_camera=True)
    monkeypatch.setitem(sys.modules, "carla", fake.module)
    fake.down_at_tick = 9     # 5 ticks a shard (controllers, warm-up, 3 frames): dies after frame 1 of the second
    fake.back_after = 3       # ... and comes back as a new episode after 3 unanswered requests
    actor = _carla_actor(tmp_path, max_shards=4, pool_size=2)
    listings: list[list[str]] = []
    fake.on_tick = lambda: listings.append(actor.shards())   # what a consumer would get at every tick, mid-shard too
    actor.start()
    try:
        _wait(lambda: actor.status()["phase"] in ("finished", "failed"), "four CARLA shards", timeout_s=60)
        status = actor.status()
    finally:
        actor.stop()
    seen = {path for listing in listings for path in listing}
    for path in sorted(seen):                                  # every shard ever listed was complete and valid
        with Shard.open(path) as shard:
            shard.verify()
            assert shard.num_frames == 3
    assert status["phase"] == "finished" and status["errors"] == [], status
    source = status["source"]
    assert source["backend"] == "carla" and source["connects"] == 2 and source["reconnect_waits_s"] == [0.01, 0.02]
    assert source["normals"] == "camera" and len(source["lost"]) == 1 and source["lost"][0].startswith("index 1: ")
    assert [Path(p).name for p in actor.shards()] == ["carla-seed3-seq00002.h5", "carla-seed3-seq00003.h5"]
    assert len(listings) == 4 * 5 + 4 and [len(x) for x in listings[:6]] == [0] * 5 + [1]  # + the lost attempt's 4
    assert [Path(p).name for p in sorted(seen)] == [f"carla-seed3-seq0000{i}.h5" for i in range(3)]
    assert stale_temp_files(tmp_path) == []
    ledger = json.loads((tmp_path / LEDGER_NAME).read_text())
    assert ledger["next_index"] == 4 and ledger["config"]["backend"] == "carla"
    assert ledger["config"]["carla"] == {"vehicles": 1, "walkers": 1, "warmup_ticks": 1}
    with Shard.open(actor.shards()[-1]) as shard:
        assert shard.generator["config"]["normals"] == "camera" and shard.generator["config"]["walkers"] == 1
    # the restarted server's own settings are back, the traffic manager asynchronous, nothing of ours left
    assert fake.world.settings.synchronous_mode is False and fake.tm_sync is False and fake.world.actors == {}
    # a restarted actor resumes past the ledger against the same server
    again = _carla_actor(tmp_path, max_shards=5)
    again.start()
    try:
        _wait(lambda: again.status()["phase"] == "finished", "one more CARLA shard", timeout_s=60)
    finally:
        again.stop()
    assert again.status()["shards_done"] == 1 and Path(again.shards()[-1]).name == "carla-seed3-seq00004.h5"


def test_carla_actor_refuses_an_old_server_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from fakecarla import FakeCarla

    fake = FakeCarla(version="0.9.14")
    monkeypatch.setitem(sys.modules, "carla", fake.module)
    actor = _carla_actor(tmp_path)
    actor.start()
    try:
        _wait(lambda: actor.status()["phase"] == "failed", "the refusal", timeout_s=30)
    finally:
        actor.stop()
    (error,) = actor.status()["errors"]
    assert error == ("index 0: CarlaVersionError: CARLA server at 127.0.0.1:2000 is version 0.9.14; expected 0.9.16 or "
                     "newer (the instance camera's actor-id encoding read here is CARLA 0.9.16's; older servers "
                     "encode Unreal's own ids)")
    assert list(tmp_path.glob("*.h5")) == [] and fake.world.applied == []


def test_carla_actor_arguments() -> None:
    from taskology.sim.carla_backend import CarlaOptions

    assert SimActor("x").status()["source"] == {"backend": "embedded"}
    assert _carla_actor(Path("x")).status()["source"] == {"backend": "carla"}
    with pytest.raises(SimError, match="belong to the embedded simulator"):
        SimActor("x", backend="carla", world={"ego_speed_mps": [2.0, 12.0]})
    with pytest.raises(SimError, match="CARLA options given with backend 'embedded'"):
        SimActor("x", carla=CarlaOptions())
    with pytest.raises(SimError, match=">= 6.25 Hz"):
        SimActor("x", backend="carla", frame_rate=5.0)
    with pytest.raises(SimError, match="backend must be 'embedded' or 'carla'"):
        SimActor("x", backend="unreal")
    assert "backend" not in SimActor("x")._config()                     # an embedded ledger reads as before


def test_the_live_mediator_of_a_config_uses_its_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    import taskology.config.sections as sections
    from taskology.config import load_config
    from taskology.sim.actor import live_mediator_kwargs
    from taskology.sim.carla_backend import CarlaOptions
    from taskology.sim.generate import live_mediator_seed

    embedded = live_mediator_kwargs(load_config(None, ["sim.seed=5", "sim.ego_speed_mps=[2, 12]"]), "m")
    assert embedded == {"run_dir": "m", "seed": live_mediator_seed(5), "frames": 20, "camera_hw": (64, 208),
                        "lidar_beams": 32, "frame_rate": 10.0, "pool_size": 4, "max_ahead": 4,
                        "world": {"ego_speed_mps": (2.0, 12.0)}, "backend": "embedded", "carla": None}
    monkeypatch.setattr(sections, "_carla_importable", lambda: True)
    cfg = load_config(None, ["sim.backend=carla", "sim.carla_host=carla-1:2000", "sim.carla_walkers=3"])
    kwargs = live_mediator_kwargs(cfg, "m")
    assert kwargs["backend"] == "carla" and kwargs["world"] == {}
    assert kwargs["carla"] == CarlaOptions(host="carla-1:2000", walkers=3)
    actor = SimActor(**kwargs)
    assert actor._config()["backend"] == "carla" and actor._config()["carla"]["walkers"] == 3
