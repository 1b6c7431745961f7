"""Cluster-level faults and how a run ends, on real components: the real TaskRunner on the tiny simulated
shards, real Dask processes on 127.0.0.1.

- a killed driver (SIGKILL mid-run, live SimActor included): ``--resume`` on the same scheduler and workers
  waits for the dead driver's actors to stop (they were released) and finishes the run;
- a lost scheduler (``dask scheduler`` killed mid-run) stops ``taskology train`` within 30 s with one line
  naming the ``--resume`` command, which then finishes the run on a new scheduler;
- an actor whose worker dies over and over ends the run once the restart policy is spent, naming the task
  and its restarts, with every checkpoint readable;
- a finished run prints no traceback and ends with its summary line; a failing one prints one line (the
  traceback only with ``--debug``).

Every process a test starts runs in its own session and is killed with its group at the end.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

import crash_runner
from taskology.data.writer import stale_temp_files
from taskology.engine.checkpoints import checkpoint_steps, load_checkpoint
from taskology.errors import ClusterError

PYTHON = sys.executable
DASK = str(Path(sys.executable).with_name("dask"))
TASKS = ("depth", "normals")
SCHEDULER_LOST_BOUND_S = 30.0  # what taskology.engine.distributed promises: 26 s with its defaults


def overrides(sim_root: Path, steps: int, *extra: str) -> list[str]:
    """Two real tasks (depth, normals, tied by depth_normals), tiny models, a checkpoint every 2 steps."""
    out = [f"data.root={sim_root}", "data.test_sequences=1", "data.mediator_fraction=0.4", f"train.steps={steps}",
           "train.mediator_batch_size=2", "train.log_every=2", "train.eval_every=0", "train.device=cpu",
           "train.checkpoint_every_steps=2", "train.checkpoint_every_s=0", "train.seeds=[0]",
           "tasks.segmentation.enabled=false", "tasks.motion.enabled=false", "exchange.publish_every_steps=1",
           "exchange.refresh_every_s=0.2", "exchange.live_mediator=false", "cluster.dashboard=false"]
    out += [f"tasks.{t}.{k}" for t in TASKS for k in ("width=4", "batch_size=2", "label_fraction=0.5")]
    return out + list(extra)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


class Processes:
    """Processes of one test, each in its own session (so its children go with it); all killed at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[subprocess.Popen] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        with open(self.root / f"{name}.out", "wb") as out, open(self.root / f"{name}.err", "wb") as err:
            proc = subprocess.Popen(args, stdout=out, stderr=err, env=_env(), start_new_session=True)
        self.started.append(proc)
        return proc

    def output(self, name: str) -> tuple[str, str]:
        return ((self.root / f"{name}.out").read_text(errors="replace"),
                (self.root / f"{name}.err").read_text(errors="replace"))

    def scheduler(self, name: str) -> tuple[subprocess.Popen, str]:
        """``dask scheduler`` on 127.0.0.1 (a free port); returns it and its address."""
        address_file = self.root / f"{name}.json"
        proc = self.start(name, [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                 "--scheduler-file", str(address_file)])
        wait_until(lambda: address_file.is_file() and address_file.stat().st_size > 0, 60, f"{name} address")
        return proc, json.loads(address_file.read_text())["address"]

    def workers(self, name: str, address: str, n: int, death_timeout_s: int = 60) -> list[subprocess.Popen]:
        """``n`` single-threaded ``dask worker`` processes without a nanny; one closes once it has had no
        scheduler for ``death_timeout_s`` seconds."""
        return [self.start(f"{name}{i}", [DASK, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                          "--name", f"{name}{i}", "--death-timeout", str(death_timeout_s),
                                          "--local-directory", str(self.root / f"{name}{i}")]) for i in range(n)]

    def close(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.started:
            proc.wait(timeout=30)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"waited {timeout_s:.0f} s for {what}")
        time.sleep(0.1)


def assert_checkpoints_load(run_dir: Path, task: str) -> list[int]:
    """Every checkpoint of ``task`` loads and holds the step its name says; returns the steps."""
    steps = checkpoint_steps(run_dir, task)
    assert steps, f"{task}: no checkpoint"
    for step in steps:
        assert int(load_checkpoint(run_dir / "checkpoints" / task / f"step_{step:08d}.pt")["step"]) == step
    return steps


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("taskology: error: "), stderr
    assert "Traceback" not in stderr and "CommClosedError" not in stderr
    return lines[0]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_lost_scheduler_stops_the_driver_with_the_resume_command_and_resume_finishes_on_a_new_one(
        sim_root: Path, tmp_path: Path) -> None:
    steps = 16
    # lockstep (each step waits for the peer's publication of the previous one, fetched every 0.25 s) paces
    # the steps, so the scheduler dies mid-run on a fast machine too
    args = overrides(sim_root, steps, "exchange.lockstep_lag_steps=0", "exchange.refresh_every_s=0.25")
    run_dir = tmp_path / "run"
    procs = Processes(tmp_path)
    try:
        scheduler, address = procs.scheduler("scheduler")
        old_workers = procs.workers("old", address, 2, death_timeout_s=10)
        driver = procs.start("train", [PYTHON, "-m", "taskology", "train", *args, "--cluster", address,
                                       "--run-dir", str(run_dir)])
        wait_until(lambda: driver.poll() is not None or all(checkpoint_steps(run_dir, t) for t in TASKS), 300,
                   "the first checkpoints")
        assert driver.poll() is None, procs.output("train")
        scheduler.send_signal(signal.SIGKILL)
        killed = time.time()
        code = driver.wait(timeout=120)
        stopped_after = time.time() - killed
        out, err = procs.output("train")
        line = one_error_line(err)
        assert code == 2 and stopped_after <= SCHEDULER_LOST_BOUND_S, (code, stopped_after)
        assert line.startswith(f"taskology: error: scheduler {address} was lost (no answer for "), line
        command = re.search(r"resume with `([^`]+)`", line)
        assert command is not None and command.group(1) == f"taskology train --resume {run_dir} --cluster {address}"
        assert "train done" not in out
        kept = {t: assert_checkpoints_load(run_dir, t)[-1] for t in TASKS}
        assert all(step < steps for step in kept.values()), kept  # it did stop mid-run
        assert json.loads((run_dir / "manifest.json").read_text())["state"] == "scheduler_lost"
        for worker in old_workers:  # a worker closes 10 s after its scheduler: no old actor writes on
            worker.wait(timeout=90)

        _scheduler, new_address = procs.scheduler("new-scheduler")
        procs.workers("new", new_address, 2)
        resume = shlex.split(command.group(1).replace(address, new_address))
        resumed = procs.start("resume", [PYTHON, "-m", "taskology", *resume[1:]])
        assert resumed.wait(timeout=300) == 0, procs.output("resume")
        out, err = procs.output("resume")
        assert "Traceback" not in out + err
        assert out.strip().splitlines()[-1].startswith(f"train done: depth {steps}/{steps} steps, "
                                                       f"normals {steps}/{steps} steps; faults seen: 0 restarts")
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["state"] == "done" and manifest["cluster"] == new_address
        for task in TASKS:
            status = manifest["actors"][task]["status"]
            assert status["state"] == "done" and status["step"] == steps
            assert status["restored_from"] >= kept[task]  # continued from what the first run left
            assert assert_checkpoints_load(run_dir, task)[-1] == steps
    finally:
        procs.close()


def _train_threads(address: str, run_dir: Path) -> dict[str, list[str]]:
    """The registered actor threads of ``run_dir`` alive on each worker of the scheduler at ``address``."""
    from distributed import Client

    from taskology.cluster.release import alive_threads

    with Client(address, timeout=30) as client:
        return client.run(alive_threads, str(run_dir))


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_killed_driver_is_resumed_on_the_same_workers_after_its_actors_stop(sim_root: Path, tmp_path: Path) -> None:
    steps = 30
    args = overrides(sim_root, steps, "exchange.lockstep_lag_steps=0", "exchange.refresh_every_s=0.25",
                     "exchange.live_mediator=true", "exchange.mediator_pool_shards=2", "exchange.pool_refresh_s=0.3",
                     "sim.frames=4", "sim.camera=32x96", "sim.lidar_beams=0")
    run_dir = tmp_path / "run"
    procs = Processes(tmp_path)
    try:
        _scheduler, address = procs.scheduler("scheduler")
        procs.workers("worker", address, 3)  # depth, normals, the SimActor; they outlive the driver
        driver = procs.start("train", [PYTHON, "-m", "taskology", "train", *args, "--cluster", address,
                                       "--run-dir", str(run_dir)])
        wait_until(lambda: driver.poll() is not None or all(len(checkpoint_steps(run_dir, t)) >= 2 for t in TASKS),
                   300, "two checkpoints of each task")
        assert driver.poll() is None, procs.output("train")
        running = _train_threads(address, run_dir)
        assert sorted(name for names in running.values() for name in names) == [
            "SimActor[mediator]", "taskology-train-depth", "taskology-train-normals"], running
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and nothing else: the workers are other sessions
        driver.wait(timeout=30)
        resumed = procs.start("resume", [PYTHON, "-m", "taskology", "train", "--resume", str(run_dir),
                                         "--cluster", address])
        assert resumed.wait(timeout=300) == 0, procs.output("resume")
        out, err = procs.output("resume")
        assert "Traceback" not in out + err
        assert out.strip().splitlines()[-1].startswith(f"train done: depth {steps}/{steps} steps, "
                                                       f"normals {steps}/{steps} steps")
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["state"] == "done"
        for task in TASKS:
            status = manifest["actors"][task]["status"]
            assert status["state"] == "done" and status["step"] == steps and status["restored_from"] >= 2
            assert assert_checkpoints_load(run_dir, task)[-1] == steps
        assert _train_threads(address, run_dir) == {a: [] for a in running}  # every actor thread has ended
        assert not stale_temp_files(run_dir / "mediator") and not list((run_dir / "mediator").glob("*.corrupt"))
    finally:
        procs.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_actor_lost_more_often_than_the_policy_allows_ends_the_run_with_checkpoints_intact(
        sim_root: Path, tmp_path: Path) -> None:
    from taskology.config import load_config
    from taskology.engine.distributed import run_distributed

    cfg = load_config(None, overrides(sim_root, 40, "cluster.max_restarts=1"))  # the key a user sets
    start = time.time()
    with pytest.raises(ClusterError) as info:
        run_distributed(cfg, tmp_path, resume=False, live=False, timeout_s=240, runner_cls=crash_runner.CrashingRunner)
    message = str(info.value)
    assert "\n" not in message and time.time() - start < 240
    assert message.startswith("task depth was lost 2 times (max_restarts=1), after 1 restart; last loss: "), message
    assert f"continue with `taskology train --resume {tmp_path} --cluster local`" in message
    # the crash comes at step CRASH_STEP, after the checkpoint of that step: every incarnation left it whole
    assert assert_checkpoints_load(tmp_path, "depth")[-1] == crash_runner.CRASH_STEP
    assert assert_checkpoints_load(tmp_path, "normals")  # the peer stopped at a final, readable checkpoint
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["state"] == "failed" and manifest["error"].startswith("task depth was lost 2 times")
    assert manifest["actors"]["depth"]["restarts"] == 1 and manifest["actors"]["normals"]["restarts"] == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_finished_run_prints_no_traceback_and_ends_with_its_summary(sim_root: Path, tmp_path: Path) -> None:
    procs = Processes(tmp_path)
    try:
        train = procs.start("train", [PYTHON, "-m", "taskology", "train", *overrides(sim_root, 4), "--cluster",
                                      "local", "--run-dir", str(tmp_path / "run")])
        code = train.wait(timeout=240)
    finally:
        procs.close()
    out, err = procs.output("train")
    assert code == 0, (out, err)
    for noise in ("Traceback", "CommClosedError", "ERROR"):
        assert noise not in out + err, (noise, out, err)
    assert out.strip().splitlines()[-1] == ("train done: depth 4/4 steps, normals 4/4 steps; faults seen: "
                                            "0 restarts, 0 dropped publications, 0 rollbacks")


def test_a_failing_run_prints_one_line_and_the_traceback_only_with_debug(tmp_path: Path) -> None:
    from taskology.cli import cli

    missing = tmp_path / "no-data"
    args = ["train", f"data.root={missing}", "--cluster", "local", "--run-dir", str(tmp_path / "run")]
    plain = CliRunner().invoke(cli, args, prog_name="taskology")
    assert plain.exit_code == 2
    line = one_error_line(plain.stderr)
    assert line == (f"taskology: error: data.root {missing}: no HDF5 shards found; expected simulated sequences "
                    f"(make them with `taskology sim --out {missing}`)")
    debug = CliRunner().invoke(cli, ["--debug", *args], prog_name="taskology")
    assert debug.exit_code == 2
    assert "Traceback (most recent call last)" in debug.stderr and debug.stderr.strip().splitlines()[-1] == line
