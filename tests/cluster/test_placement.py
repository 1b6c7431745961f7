"""One GPU per task on a real LocalCluster (loopback) with a faked GPU list: the GPU list's parsing, the
``GPU`` resource local workers advertise, and where task actors land (asked of each actor's process),
at start and after its worker is killed. No GPU needed: a worker "sees" a GPU through its
``CUDA_VISIBLE_DEVICES``, which is what the supervisor and the actor's torch go by."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import fake_runner
from taskology.cluster.session import (ClusterSpec, detect_gpus, local_gpus, open_cluster, parse_gpu_list,
                                       worker_environments)
from taskology.cluster.supervision import RestartPolicy
from taskology.engine.actor import TaskActor
from taskology.engine.supervisor import ActorSlot, Supervisor
from taskology.engine.exchange import ExchangePolicy
from taskology.errors import ClusterError


def test_gpu_lists_parse_or_fail_in_one_line_naming_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_gpu_list("0,1, 3") == (0, 1, 3) and parse_gpu_list(" none ") == () and parse_gpu_list("") == ()
    assert parse_gpu_list("GPU-8f1c2a,MIG-1/2/3") == ("GPU-8f1c2a", "MIG-1/2/3")
    for bad, why in (("0,,1", "'' is not a GPU id"), ("0;1", "'0;1' is not a GPU id"), ("-1", "'-1' is not"),
                     ("1,2,1", "1 is listed twice"), ("cuda:0", "'cuda:0' is not")):
        with pytest.raises(ClusterError) as info:
            parse_gpu_list(bad, "TASKOLOGY_GPUS (environment)")
        message = str(info.value)
        assert message.startswith("TASKOLOGY_GPUS (environment): expected GPU ids separated by commas")
        assert why in message and repr(bad) in message and "\n" not in message
    # where the list comes from: the spec, else the variable, else the GPUs the driver sees
    monkeypatch.setenv("TASKOLOGY_GPUS", "2,0")
    assert local_gpus((5,)) == (5,) and local_gpus(None) == (2, 0)
    monkeypatch.setenv("TASKOLOGY_GPUS", "two")
    with pytest.raises(ClusterError, match=r"^TASKOLOGY_GPUS \(environment\): expected GPU ids"):
        open_cluster(ClusterSpec(address="local"))  # refused before any worker starts
    monkeypatch.delenv("TASKOLOGY_GPUS")
    assert local_gpus(None) == detect_gpus()
    assert [e["CUDA_VISIBLE_DEVICES"] for e in worker_environments(5, 1, (2, 0))] == ["2", "0", "2", "0", "2"]


def _process_and_gpu() -> tuple[int, str]:
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", "unset")


def _gpu_of_actor(session: object, slot: ActorSlot) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` of the process the actor runs in (what CUDA in it would use): asked
    of the process at the actor's worker address, which must be the actor's own (same pid)."""
    pid = slot.handle.status().result(timeout=10)["pid"]
    answers = session.client.run(_process_and_gpu, workers=[slot.worker])  # type: ignore[attr-defined]
    (worker_pid, gpu), = answers.values()
    assert worker_pid == pid, f"{slot.name}: actor in process {pid}, its worker is process {worker_pid}"
    return gpu


def _task_slot(name: str, peer: str, run_dir: Path) -> ActorSlot:
    return ActorSlot(name=name, cls=TaskActor, needs_gpu=True, kwargs=dict(
        task_name=name, runner_cls=fake_runner.FakeRunner, run_dir=str(run_dir),
        runner_kwargs={"task_name": name, "seed": len(name), "peers": (peer,), "step_sleep_s": 0.05},
        policy=ExchangePolicy(publish_every_steps=10, refresh_every_s=0.5, max_staleness_steps=None),
        checkpoint_every_steps=1000, checkpoint_every_s=None, log_every=0))


@pytest.mark.timeout(120)
def test_task_actors_land_one_per_fake_gpu_and_a_restart_waits_for_the_free_gpu(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two tasks, fake GPUs 0 and 1, one spare worker (it sees GPU 0): each task gets its own GPU. When
    the worker of the task on GPU 1 is killed, the spare would put both tasks on GPU 0: the supervisor
    waits for the nanny's restarted worker, which sees GPU 1 again."""
    monkeypatch.setenv("TASKOLOGY_GPUS", "0,1")
    with open_cluster(ClusterSpec(address="local", dashboard=False, spare_workers=1), n_actors=2) as session:
        assert session.gpus == (0, 1)
        workers = session.client.scheduler_info(n_workers=-1)["workers"]
        assert len(workers) == 3 and all(w["resources"] == {"GPU": 1} for w in workers.values())
        sup = Supervisor(session, [_task_slot("a", "b", tmp_path), _task_slot("b", "a", tmp_path)],
                         target_steps=10**6, policy=RestartPolicy(max_restarts=2), run_dir=tmp_path, poll_s=0.2,
                         wait_free_s=60.0)
        try:
            sup.start()
            status = {n: s.handle.status().result(timeout=10) for n, s in sup.slots.items()}
            seen = {n: _gpu_of_actor(session, s) for n, s in sup.slots.items()}
            assert sorted(seen.values()) == ["0", "1"], seen  # one task per GPU, whatever the address order
            summary = sup.summary()["actors"]
            assert {n: summary[n]["gpu"] for n in seen} == {n: f"127.0.0.1/{g}" for n, g in seen.items()}
            on_gpu1 = next(n for n, g in seen.items() if g == "1")
            spare = set(session.worker_addresses()) - {s.worker for s in sup.slots.values()}
            os.kill(status[on_gpu1]["pid"], signal.SIGKILL)
            deadline = time.time() + 90
            while sup.slots[on_gpu1].restarts == 0 and time.time() < deadline:
                time.sleep(0.2)
                sup.poll()
            assert sup.slots[on_gpu1].restarts == 1, sup.events
            moved = sup.slots[on_gpu1]
            assert moved.worker not in spare  # not the spare on GPU 0, although it was free at once
            assert moved.handle.status().result(timeout=10)["pid"] != status[on_gpu1]["pid"]
            assert _gpu_of_actor(session, moved) == "1"
            assert sup.summary()["actors"][on_gpu1]["gpu"] == "127.0.0.1/1"
        finally:
            sup.stop(timeout_s=20)
