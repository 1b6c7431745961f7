"""Actors whose driver is gone stop, and a new driver waits for them (taskology.cluster.release), on a real
in-process Dask cluster (loopback): a real TaskActor (the fake runner) and a real SimActor are created by one
client, that client goes away, and a second client (the resumed driver) finds their threads ended, no
checkpoint written after the release, and the simulator's directory free for a new SimActor."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import fake_runner
from taskology.cluster.release import alive_threads, await_orphans, register
from taskology.engine.actor import TaskActor
from taskology.engine.checkpoints import checkpoint_steps
from taskology.engine.exchange import ExchangePolicy
from taskology.errors import ClusterError
from taskology.sim.actor import SimActor

SIM = {"seed": 0, "frames": 6, "camera_hw": (32, 96), "lidar_beams": 8, "lidar_azimuth": 64}


def _wait(predicate, what: str, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"waited {timeout_s:.0f} s for {what}"
        time.sleep(0.05)


@pytest.mark.timeout(180)
def test_actors_of_a_vanished_driver_stop_without_writing_and_free_the_folder(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    run_dir = tmp_path / "run"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as resumed:
        driver = Client(cluster)
        task = driver.submit(TaskActor, task_name="depth", runner_cls=fake_runner.FakeRunner, run_dir=str(run_dir),
                             runner_kwargs={"task_name": "depth", "step_sleep_s": 0.02, "collective": False},
                             policy=ExchangePolicy(publish_every_steps=10, refresh_every_s=0.2),
                             checkpoint_every_steps=5, checkpoint_every_s=None, log_every=0, actor=True).result()
        sim = driver.submit(SimActor, str(run_dir / "mediator"), **SIM, actor=True).result()
        assert task.start(10**6).result() == "training"
        sim.start().result()
        _wait(lambda: len(checkpoint_steps(run_dir, "depth")) >= 2 and sim.status().result()["phase"] == "generating",
              "two checkpoints and the simulator generating")
        assert sorted(resumed.run(alive_threads, str(run_dir)).values()) == [["SimActor[mediator]",
                                                                              "taskology-train-depth"]]
        driver.close()  # the scheduler releases what the driver held, as when its process is killed
        waited = await_orphans(resumed, run_dir, timeout_s=60)
        assert waited < 30, waited
        steps = checkpoint_steps(run_dir, "depth")
        time.sleep(0.5)
        assert checkpoint_steps(run_dir, "depth") == steps, "a released actor wrote a checkpoint"
        # the directory lock went with the old SimActor: a new one takes the folder over and goes on
        successor = resumed.submit(SimActor, str(run_dir / "mediator"), **SIM, actor=True).result()
        assert successor.start().result()["phase"] in ("scanning", "generating")
        _wait(lambda: successor.status().result()["phase"] == "generating", "the new SimActor generating")
        successor.stop().result()


@pytest.mark.timeout(60)
def test_a_thread_that_outlives_the_wait_is_named_in_one_line(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    gate = threading.Event()
    stuck = threading.Thread(target=gate.wait, name="taskology-train-normals", daemon=True)
    stuck.start()
    register(tmp_path / "run" / "checkpoints", stuck)  # a thread in a folder of the run counts
    try:
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                          dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            (address,) = client.scheduler_info()["workers"]
            assert await_orphans(client, tmp_path / "other", timeout_s=1) < 1  # another run: nothing to wait for
            with pytest.raises(ClusterError) as info:
                await_orphans(client, tmp_path / "run", timeout_s=1, poll_s=0.1)
            message = str(info.value)
            assert "\n" not in message and address in message and "taskology-train-normals" in message
            assert message.startswith(f"{tmp_path / 'run'}: threads of an earlier driver's actors still run")
            gate.set()
            stuck.join()
            assert await_orphans(client, tmp_path / "run", timeout_s=1) < 1
    finally:
        gate.set()


def test_a_worker_that_cannot_answer_is_not_waited_for(tmp_path: Path) -> None:
    """``client.run`` answers an exception for a worker that is closing or unreachable: nothing to wait for
    there; the others are waited for until their threads end."""

    class Client:
        def __init__(self) -> None:
            self.calls = 0

        def run(self, function, *args, on_error: str = "raise"):  # type: ignore[no-untyped-def]
            assert function is alive_threads and on_error == "return"
            self.calls += 1
            return {"tcp://a:1": OSError("Timed out trying to connect"),
                    "tcp://b:2": ["SimActor[mediator]"] if self.calls < 3 else []}

    client = Client()
    assert await_orphans(client, tmp_path, timeout_s=10, poll_s=0.01) < 10 and client.calls == 3


@pytest.mark.timeout(120)
def test_a_finished_simactor_gives_its_folder_back_when_released(tmp_path: Path) -> None:
    """A SimActor whose generator had already ended (``max_shards`` reached) when its driver went away still
    frees the directory lock (nothing else would close it): a new SimActor can take the folder."""
    from distributed import Client, LocalCluster

    from taskology.errors import SimError

    folder = str(tmp_path / "mediator")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as resumed:
        driver = Client(cluster)
        sim = driver.submit(SimActor, folder, **SIM, max_shards=1, actor=True).result()
        sim.start().result()
        _wait(lambda: sim.status().result()["phase"] == "finished", "the one shard")
        driver.close()
        successor = resumed.submit(SimActor, folder, **SIM, max_shards=2, actor=True).result()

        def takes_the_folder() -> bool:
            try:
                successor.start().result()
            except SimError:
                return False  # the old one has not been released yet
            return True

        _wait(takes_the_folder, "the folder's lock back", timeout_s=30)
        _wait(lambda: successor.status().result()["phase"] == "finished", "the second shard")
        assert successor.status().result()["shards_done"] == 1  # it went on at index 1
