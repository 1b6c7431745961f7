"""CARLA backend: the server session against an in-process fake server (version check, synchronous mode,
settings restored, walkers, normals camera, reconnection, resumable jobs) and the real-server path."""
from __future__ import annotations

import itertools
import math
import os
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from fakecarla import DEPTH_CODE, FakeCarla

from taskology.data.shard import Shard, stale_temp_files
from taskology.errors import SimError, TaskologyError
from taskology.sim import carla_backend as cb
from taskology.sim import carla_convert as cc

SMALL = dict(camera_hw=(8, 12), lidar_beams=4, lidar_azimuth=16, frame_rate=20.0, vehicles=1, walkers=2,
             warmup_ticks=2)


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCarla:
    server = FakeCarla()
    monkeypatch.setitem(sys.modules, "carla", server.module)
    return server


def _session(fake: FakeCarla, **options: object) -> cb.CarlaSession:
    opts = dict(host="127.0.0.1:2000", vehicles=1, walkers=2, warmup_ticks=2, timeout_s=0.2, reconnect_s=5.0,
                backoff_s=(0.01, 0.04))
    opts.update(options)
    return cb.CarlaSession(cb.CarlaOptions(**opts), cc.default_sensor_rig((8, 12), 4, 16), frame_rate=20.0)


# ------------------------------------------------------------------------------ pure decisions
def test_missing_package_error_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "carla", None)                           # makes `import carla` fail
    with pytest.raises(SimError, match=r"pip install 'taskology\[carla\]'") as info:
        cb.connect("127.0.0.1:2000")
    assert isinstance(info.value, TaskologyError) and "\n" not in str(info.value)


@pytest.mark.parametrize("host", ["localhost", "localhost:", ":2000", "host:port", "h:70000"])
def test_bad_host_is_rejected(host: str) -> None:
    with pytest.raises(SimError, match="HOST:PORT"):
        cb.parse_host(host)


def test_version_numbers_and_the_oldest_server_accepted() -> None:
    assert cb.parse_server_version("0.9.16") == (0, 9, 16)
    assert cb.parse_server_version("0.9.16-dirty") == (0, 9, 16)
    assert cb.parse_server_version("0.10.0") == (0, 10, 0)
    assert cb.parse_server_version("") is None
    for ok in ("0.9.16", "0.9.16-3-g1234567", "0.9.17", "0.10.0", "1.0.0"):
        cb.check_server_version(ok, "h:1")
    with pytest.raises(cb.CarlaVersionError) as info:
        cb.check_server_version("0.9.15.2", "h:2000")
    assert str(info.value) == ("CARLA server at h:2000 is version 0.9.15.2; expected 0.9.16 or newer (the instance "
                               "camera's actor-id encoding read here is CARLA 0.9.16's; older servers encode Unreal's "
                               "own ids)")
    with pytest.raises(cb.CarlaVersionError, match="reports version 'dev', which is not a version number"):
        cb.check_server_version("dev", "h:2000")


def test_shards_set_aside_are_named_as_the_sim_actor_names_them() -> None:
    from taskology.sim.actor import CORRUPT_SUFFIX

    assert cb.CORRUPT_SUFFIX == CORRUPT_SUFFIX


def test_physics_substeps_and_backoff() -> None:
    assert [cb.physics_substeps(r) for r in (10.0, 20.0, 30.0, 100.0, 6.25, 7.0)] == [10, 5, 4, 1, 16, 15]
    assert cb.MIN_FRAME_RATE_HZ == 6.25
    with pytest.raises(SimError, match=r">= 6.25 Hz .* found 5"):
        cb.physics_substeps(5.0)
    assert list(itertools.islice(cb.backoff_delays(0.5, 3.0), 6)) == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert list(itertools.islice(cb.backoff_delays(2.0, 2.0), 3)) == [2.0, 2.0, 2.0]
    with pytest.raises(SimError, match="backoff_s"):
        cb.CarlaOptions(backoff_s=(2.0, 1.0))
    with pytest.raises(SimError, match="HOST:PORT"):
        cb.CarlaOptions(host="carla")
    with pytest.raises(SimError, match="walkers"):
        cb.CarlaOptions(walkers=-1)


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_times_out_with_one_line() -> None:
    import time

    pytest.importorskip("carla")
    port = _unused_port()
    start = time.monotonic()
    with pytest.raises(SimError) as info:
        cb.connect(f"127.0.0.1:{port}", timeout_s=1.0)
    assert str(info.value) == f"cannot reach CARLA server at 127.0.0.1:{port} within 1 s"
    assert time.monotonic() - start < 10.0


@pytest.mark.carla
def test_real_server_records_a_valid_shard_and_skips_it_on_a_rerun(tmp_path: Path) -> None:
    host = os.environ["TASKOLOGY_CARLA_HOST"]
    args = dict(host=host, sequences=1, frames=3, seed=0, camera_hw=(32, 96), lidar_beams=8, frame_rate=10.0,
                vehicles=5, walkers=5)
    (path,) = cb.generate_carla_shards(tmp_path, **args)
    with Shard.open(path) as shard:
        shard.verify()
        assert shard.num_frames == 3
        generator = shard.generator
        frame = shard.frame(0)
    assert cb.parse_server_version(generator["config"]["server_version"]) >= cb.MIN_SERVER_VERSION
    normals = frame["camera/normals"]
    assert np.isin(np.round(np.linalg.norm(normals, axis=-1), 3), [0.0, 1.0]).all()
    if generator["config"]["normals"] == "camera":   # the camera's decoding agrees with normals from depth on the road
        from taskology.geometry.camera import normals_from_depth

        from_depth = normals_from_depth(frame["camera/depth"], cc.default_sensor_rig((32, 96), 8, 1024).K)
        road = (frame["camera/semantic"] == 1) & (np.linalg.norm(from_depth, axis=-1) > 0.5)
        assert road.sum() > 50 and np.median((normals * from_depth).sum(-1)[road]) > 0.95
    mtime = path.stat().st_mtime_ns
    lines: list[str] = []
    cb.generate_carla_shards(tmp_path, **args, say=lines.append)
    assert lines == [f"{path.name}: complete, identical (skipped)"] and path.stat().st_mtime_ns == mtime


# ------------------------------------------------------------------- recording against the fake
def test_recording_loop_against_a_fake_server(tmp_path: Path, fake: FakeCarla) -> None:
    paths = cb.generate_carla_shards(tmp_path, host="127.0.0.1:2000", sequences=1, frames=3, seed=4, **SMALL)
    assert [p.name for p in paths] == ["carla-seed4-seq00000.h5"]
    with Shard.open(paths[0]) as shard:
        shard.verify()
        assert shard.num_frames == 3 and shard.generator["backend"] == "carla"
        config = shard.generator["config"]
        frame = shard.frame(2)
    assert config == {"index": 0, "frames": 3, "camera_hw": [8, 12], "lidar_beams": 4, "lidar_azimuth": 16,
                      "frame_rate": 20.0, "vehicles": 1, "walkers": 2, "warmup_ticks": 2,
                      "map": "Carla/Maps/FakeTown", "server_version": "0.9.16", "normals": "depth"}
    world = fake.world
    by_type = {t: [a for a in world.spawned if a.type_id.startswith(t)] for t in ("vehicle.", "walker.", "controller.")}
    (ego, npc), walkers, controllers = by_type["vehicle."], by_type["walker."], by_type["controller."]
    assert ego.autopilot == (True, 8000) and npc.autopilot == (True, 8000)
    npc_in_ego = np.linalg.inv(np.array(ego.transform.get_matrix())) @ np.array(npc.transform.get_matrix())
    want_yaw = -math.atan2(npc_in_ego[1, 0], npc_in_ego[0, 0])
    assert frame["objects/track_id"].tolist() == [npc.id, *(w.id for w in walkers)]
    assert frame["objects/class_id"].tolist() == [14, 12, 12]
    np.testing.assert_allclose(frame["objects/box"][0, [0, 1, 3, 4, 5, 6]],
                               [npc_in_ego[0, 3], -npc_in_ego[1, 3], 4.0, 2.0, 1.5, want_yaw], atol=1e-9)
    walker_in_ego = np.linalg.inv(np.array(ego.transform.get_matrix())) @ np.array(walkers[0].transform.get_matrix())
    np.testing.assert_allclose(frame["objects/box"][1, :6], [walker_in_ego[0, 3], -walker_in_ego[1, 3], 0.9, 0.6, 0.6, 1.8],
                               atol=1e-9)
    assert frame["camera/instance"][0, 0] == npc.id
    assert frame["lidar/instance"].tolist() == [npc.id, -1, -1] and frame["lidar/points"][0, 1] == -1.0
    np.testing.assert_allclose(frame["objects/velocity"], [[2.0, -1.0, 0.0]] * 3)   # Unreal y right -> ours y left
    assert frame["camera/depth"][4, 4] == np.float32(1000.0 * DEPTH_CODE / (256**3 - 1))
    # walkers: spawned at navigation points, not invincible, each with an AI controller started towards a
    # random point at a walking speed, stopped and destroyed at the end
    assert len(walkers) == 2 and all(w.bp.attributes["is_invincible"] == "false" for w in walkers)
    assert [c.parent for c in controllers] == walkers
    for c in controllers:
        names = [name for name, _ in c.calls]
        assert names == ["start", "go_to_location", "set_max_speed", "stop"]
        assert 1.0 <= dict(c.calls)["set_max_speed"] <= 2.0
    assert fake.pedestrian_seeds == [4 * 1_000_003]
    lidar_bp = [a for a in world.spawned if a.type_id == "sensor.lidar.ray_cast_semantic"][0].bp
    assert lidar_bp.attributes["channels"] == "4" and lidar_bp.attributes["points_per_second"] == str(4 * 16 * 20)
    # synchronous mode with substeps covering the tick, then the server's settings back; everything destroyed
    sync = world.applied[0]
    assert (sync.synchronous_mode, sync.fixed_delta_seconds, sync.max_substep_delta_time, sync.max_substeps) == \
        (True, 0.05, 0.01, 5)
    assert world.settings.synchronous_mode is False and world.settings.fixed_delta_seconds is None
    assert world.settings.max_substeps == 10
    assert fake.tm_sync is False and fake.tm_seeds == [4 * 100_003]
    assert sorted(fake.destroyed) == sorted(a.id for a in world.spawned) and world.actors == {}


def test_an_actor_missing_from_the_tick_snapshot_is_left_out(tmp_path: Path, fake: FakeCarla) -> None:
    fake.unseen = {70002}                                     # the first walker: spawned, not in the snapshots
    (path,) = cb.generate_carla_shards(tmp_path, host="127.0.0.1:2000", sequences=1, frames=1, seed=4, **SMALL)
    with Shard.open(path) as shard:
        assert shard.frame(0)["objects/track_id"].tolist() == [70001, 70003]


def test_normals_camera_is_used_when_the_server_offers_it(tmp_path: Path, fake: FakeCarla) -> None:
    from taskology.geometry.camera import normals_from_depth

    (without,) = cb.generate_carla_shards(tmp_path / "a", host="127.0.0.1:2000", sequences=1, frames=1, seed=0, **SMALL)
    fake.normals_camera = True
    fake.restart()
    (with_camera,) = cb.generate_carla_shards(tmp_path / "b", host="127.0.0.1:2000", sequences=1, frames=1, seed=0,
                                              **SMALL)
    assert any(a.type_id == "sensor.camera.normals" for a in fake.world.spawned)
    rig = cc.default_sensor_rig((8, 12), 4, 16)
    with Shard.open(without) as a, Shard.open(with_camera) as b:
        assert a.generator["config"]["normals"] == "depth" and b.generator["config"]["normals"] == "camera"
        fa, fb = a.frame(0), b.frame(0)
        ego_lh = cc.FLIP_Y @ fb["ego/world_from_ego"] @ cc.FLIP_Y
    assert np.array_equal(fa["camera/normals"], normals_from_depth(fa["camera/depth"], rig.K))
    # the camera's world +z, in the camera frame, facing the camera pixel by pixel
    cam_from_world = rig.cam_from_ego @ np.linalg.inv(cc.right_handed_from_unreal(ego_lh))
    up = cam_from_world[:3, :3] @ np.array([0.0, 0.0, 1.0])
    rays = np.stack([*np.meshgrid(np.arange(12.0), np.arange(8.0)), np.ones((8, 12))], -1) @ np.linalg.inv(rig.K).T
    want = np.where((rays @ up)[..., None] > 0, -up, up)
    np.testing.assert_allclose(fb["camera/normals"], want, atol=0.01)
    assert not np.allclose(fa["camera/normals"], fb["camera/normals"], atol=0.1)


def test_an_old_server_is_refused_with_one_line(tmp_path: Path, fake: FakeCarla) -> None:
    fake.version = "0.9.15"
    with pytest.raises(cb.CarlaVersionError) as info:
        cb.generate_carla_shards(tmp_path, host="127.0.0.1:2000", sequences=1, frames=1, seed=0, **SMALL)
    assert str(info.value).startswith("CARLA server at 127.0.0.1:2000 is version 0.9.15; expected 0.9.16 or newer")
    assert fake.world.applied == [] and list(tmp_path.iterdir()) == []        # nothing set, nothing written


def test_rerun_skips_complete_identical_shards_and_redoes_partial_ones(tmp_path: Path, fake: FakeCarla) -> None:
    args = dict(host="127.0.0.1:2000", sequences=3, frames=2, seed=1, **SMALL)
    paths = cb.generate_carla_shards(tmp_path, **args)
    kept = paths[0].stat()
    paths[1].write_bytes(paths[1].read_bytes()[:300])                      # truncated: invalid
    paths[2].unlink()                                                        # ... and a writer that died mid-shard
    (tmp_path / f".{paths[2].name}.tmp-999-abcd").write_bytes(b"half a shard")
    lines: list[str] = []
    assert cb.generate_carla_shards(tmp_path, **args, say=lines.append) == paths
    assert lines[0] == f"{paths[0].name}: complete, identical (skipped)"
    assert lines[1].startswith(f"{paths[1].name}: invalid (") and lines[2] == f"{paths[1].name}: recorded (2 frames)"
    assert lines[3:] == [f"{paths[2].name}: recorded (2 frames)"]
    assert (paths[0].stat().st_ino, paths[0].stat().st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
    assert (tmp_path / f"{paths[1].name}.corrupt").exists() and stale_temp_files(tmp_path) == []
    for path in paths:
        with Shard.open(path) as shard:
            shard.verify()
    # another server address does not make a shard different; other parameters do, and nothing is written
    before = sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.iterdir())
    lines.clear()
    cb.generate_carla_shards(tmp_path, **{**args, "host": "10.0.0.2:2000"}, say=lines.append)
    assert all(line.endswith("(skipped)") for line in lines) and len(lines) == 3
    with pytest.raises(SimError) as info:
        cb.generate_carla_shards(tmp_path, **{**args, "sequences": 4, "walkers": 3})
    assert "\n" not in str(info.value) and "config.walkers: existing 2, this run 3" in str(info.value)
    assert str(info.value).startswith(f"{paths[0]}: existing shard was made with another generator config")
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.iterdir()) == before


def test_the_sim_command_resumes_a_carla_folder(tmp_path: Path, fake: FakeCarla) -> None:
    from click.testing import CliRunner

    from taskology.cli import cli

    def args(frames: int) -> list[str]:
        return ["sim", "--backend", "carla", "--carla-host", "127.0.0.1:2000", "--out", str(tmp_path), "--sequences",
                "2", "--frames", str(frames), "--camera", "8x12", "--lidar-beams", "0"]

    first = CliRunner().invoke(cli, args(2), prog_name="taskology")
    assert first.exit_code == 0, first.output
    shards = sorted(tmp_path.glob("*.h5"))
    assert [p.name for p in shards] == ["carla-seed0-seq00000.h5", "carla-seed0-seq00001.h5"]
    kept = shards[0].stat().st_mtime_ns
    shards[1].unlink()
    ticks = fake.world.ticks
    second = CliRunner().invoke(cli, args(2), prog_name="taskology")   # an existing shard used to be a DataError
    assert second.exit_code == 0, second.output
    assert shards[0].stat().st_mtime_ns == kept and shards[1].exists()
    assert fake.world.ticks - ticks == 20 + 1 + 2                      # one sequence: warm-up, walkers, frames
    third = CliRunner().invoke(cli, args(3), prog_name="taskology")
    assert third.exit_code != 0 and "config.frames: existing 2, this run 3" in third.output
    assert shards[0].stat().st_mtime_ns == kept


def test_one_sequence_per_job(tmp_path: Path, fake: FakeCarla) -> None:
    args = dict(host="127.0.0.1:2000", seed=2, frames=2, camera_hw=(8, 12), lidar_beams=0, vehicles=1, walkers=1,
                warmup_ticks=0, frame_rate=10.0)
    path = cb.generate_carla_sequence(tmp_path / "out", index=7, **args)
    assert path == tmp_path / "out" / "carla-seed2-seq00007.h5" and sorted(os.listdir(tmp_path / "out")) == [path.name]
    with Shard.open(path) as shard:
        assert shard.num_frames == 2 and shard.generator["config"]["index"] == 7 and "lidar" not in shard.groups
    ticks = fake.world.ticks
    assert cb.generate_carla_sequence(tmp_path / "out", index=7, **args) == path and fake.world.ticks == ticks
    assert fake.world.settings.synchronous_mode is False                     # restored after each job
    with pytest.raises(SimError, match="index and seed must be >= 0"):
        cb.generate_carla_sequence(tmp_path / "out", index=-1, **args)


# ------------------------------------------------------------------------------ reconnection
def test_a_server_restart_mid_shard_is_survived(tmp_path: Path, fake: FakeCarla) -> None:
    session = _session(fake)
    session.ensure_connected(patient=False)
    first_episode = fake.world
    fake.down_at_tick = 6          # ticks 1-3: walkers' controllers and warm-up; frames 1 and 2 written, then it dies
    fake.back_after = 4            # ... answers nothing to 4 requests, then comes back as a new episode
    done: list[int] = []
    path = session.write_shard(tmp_path, seed=0, index=0, frames=4, progress=done.append)
    assert done == [1, 2, 1, 2, 3, 4]                                       # recorded again from the first frame
    assert fake.world is not first_episode and session.connects == 2
    assert session.waits_s == [0.01, 0.02, 0.04] and len(session.lost) == 1 and "RuntimeError" in session.lost[0]
    with Shard.open(path) as shard:
        shard.verify()
        assert shard.num_frames == 4
    assert stale_temp_files(tmp_path) == [] and sorted(os.listdir(tmp_path)) == [path.name]
    assert fake.world.settings.synchronous_mode is True and fake.world.settings.fixed_delta_seconds == 0.05
    session.close()
    assert fake.world.settings.synchronous_mode is False and fake.tm_sync is False   # the new episode's own settings


def test_a_server_restart_between_shards_sets_the_new_episode_up(tmp_path: Path, fake: FakeCarla) -> None:
    session = _session(fake, walkers=0)
    session.write_shard(tmp_path, seed=0, index=0, frames=1)
    fake.restart()                                           # a fresh episode: asynchronous, our world object expired
    assert fake.world.settings.synchronous_mode is False
    path = session.write_shard(tmp_path, seed=0, index=1, frames=1)
    assert session.connects == 2 and session.waits_s == [] and session.lost[0].startswith("before index 1: ")
    assert fake.world.applied[0].synchronous_mode is True and fake.world.applied[0].fixed_delta_seconds == 0.05
    with Shard.open(path) as shard:
        shard.verify()
    session.close()
    assert fake.world.settings.synchronous_mode is False


def test_a_server_that_restarts_at_every_shard_is_given_up(tmp_path: Path, fake: FakeCarla) -> None:
    session = _session(fake, walkers=0)
    fake.on_tick = fake.restart                              # every tick request finds a new episode
    with pytest.raises(SimError) as info:
        session.write_shard(tmp_path, seed=0, index=3, frames=1)
    assert str(info.value).startswith("CARLA server at 127.0.0.1:2000: lost 5 times while recording sequence 3 (")
    assert len(session.lost) == 5 and list(tmp_path.iterdir()) == []


def test_a_server_left_synchronous_by_a_dead_client_is_cleaned_and_given_back(tmp_path: Path, fake: FakeCarla) -> None:
    world = fake.world
    world.settings.synchronous_mode, world.settings.fixed_delta_seconds = True, 0.1    # a client of ours died ...
    left = [world.spawn_actor(cb._ours(fake.Blueprint(n)), fake.Transform()) for n in ("vehicle.a", "walker.pedestrian.0001")]
    controller = world.spawn_actor(fake.Blueprint("controller.ai.walker"), fake.Transform(), attach_to=left[1])
    hero = world.spawn_actor(fake.Blueprint("vehicle.b"), fake.Transform())             # ... someone else's stays
    hero.attributes["role_name"] = "hero"
    with _session(fake) as session:
        session.write_shard(tmp_path, seed=0, index=0, frames=1)
        status = session.status()
    assert status["found_synchronous"] is True and status["leftovers_destroyed"] == 3
    assert {left[0].id, left[1].id, controller.id} <= set(fake.destroyed) and hero.id in world.actors
    assert world.settings.synchronous_mode is False and world.settings.fixed_delta_seconds is None
    spawned_now = [a for a in world.spawned[4:] if not a.type_id.startswith("controller.")]
    assert len(spawned_now) >= 8 and all(a.attributes["role_name"] == "taskology" for a in spawned_now)
    with _session(fake) as session:                                          # found asynchronous: left as it was
        session.ensure_connected()
        assert session.status()["found_synchronous"] is False and session.status()["leftovers_destroyed"] == 0
    assert world.settings.synchronous_mode is False and hero.id in world.actors


def test_a_failure_with_the_server_alive_is_raised_not_retried(tmp_path: Path, fake: FakeCarla) -> None:
    fake.mute = "sensor.camera.depth"
    session = _session(fake, timeout_s=0.05)
    with pytest.raises(SimError, match="CARLA sensor 'depth' sent no data for frame"):
        session.write_shard(tmp_path, seed=0, index=0, frames=2)
    assert session.connects == 1 and session.lost == [] and stale_temp_files(tmp_path) == []
    assert list(tmp_path.iterdir()) == [] and fake.world.actors == {}       # everything destroyed
    session.close()


def test_a_server_that_stays_away_is_given_up_with_one_line(tmp_path: Path, fake: FakeCarla) -> None:
    session = _session(fake, reconnect_s=0.1)
    session.ensure_connected(patient=False)
    fake.down = True
    with pytest.raises(SimError) as info:
        session.write_shard(tmp_path, seed=0, index=0, frames=2)
    assert str(info.value).startswith("CARLA server at 127.0.0.1:2000 did not come back within 0.1 s (cannot reach")
    assert 2 <= len(session.waits_s) <= 5 and sum(session.waits_s) <= 0.1
    session.close()                                        # nothing to restore on a server that is gone: no error
    stop = threading.Event()
    stop.set()
    waiting = cb.CarlaSession(session.options, session.rig, frame_rate=20.0, stop=stop)
    with pytest.raises(cb.SessionStopped):
        waiting.ensure_connected()
