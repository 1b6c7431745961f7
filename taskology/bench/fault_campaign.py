"""One faulted (or unfaulted) training run of ``taskology bench faults``: a Dask cluster of the bench's own
processes on 127.0.0.1 (:class:`ProcessCluster`: ``dask scheduler`` and ``dask worker`` with nannies as
process groups of their own, killed on exit whatever happens, and by the kernel if this process dies:
``PR_SET_PDEATHSIG``), and the :class:`Campaign` that runs ``taskology train`` as a subprocess on it, executes
the kill events of a schedule and watches every worker. The faults fired inside workers:
:mod:`taskology.bench.fault_injection`.
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from taskology.bench.fault_injection import Injection, worker_snapshot


# ---- processes ---------------------------------------------------------------------------------------
def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def start_process(args: Sequence[str], log: Path, env: dict[str, str] | None = None,
                  cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``args`` in a process group (session) of its own, stdout and stderr into ``log``; the kernel
    kills it if this process dies."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(list(args), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, cwd=cwd,
                                preexec_fn=_die_with_parent)


def stop_process(process: subprocess.Popen[bytes] | None, timeout_s: float = 20.0) -> None:
    """SIGTERM ``process``'s whole group, wait up to ``timeout_s`` for its leader, then SIGKILL whatever is
    left of the group."""
    if process is None:
        return
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            pass


#: environment of the bench's worker processes: one compute thread each, no GPU
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


class ProcessCluster:
    """A scheduler and ``n_workers`` nanny-managed single-threaded workers on 127.0.0.1, each a process of the
    ``dask`` command, logs in ``log_dir``. ``with ProcessCluster(...) as cluster: cluster.address``."""

    def __init__(self, n_workers: int, log_dir: Path, start_timeout_s: float = 60.0) -> None:
        self.n_workers = int(n_workers)
        self.log_dir = Path(log_dir)
        self.start_timeout_s = start_timeout_s
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: subprocess.Popen[bytes] | None = None
        self.address = ""

    def __enter__(self) -> ProcessCluster:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _start(self) -> None:
        dask = str(Path(sys.executable).with_name("dask"))
        file = self.log_dir / "scheduler.json"
        file.unlink(missing_ok=True)
        self.scheduler = start_process([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                        "--scheduler-file", str(file)], self.log_dir / "scheduler.log")
        deadline = time.time() + self.start_timeout_s
        while not self.address:
            if self.scheduler.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the Dask scheduler did not start (log: {self.log_dir / 'scheduler.log'})")
            try:
                self.address = json.loads(file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.2)
        self.workers = start_process([dask, "worker", self.address, "--nworkers", str(self.n_workers), "--nthreads",
                                      "1", "--memory-limit", "0", "--no-dashboard", "--host", "127.0.0.1",
                                      "--death-timeout", "60"], self.log_dir / "workers.log", env=WORKER_ENV)

    def close(self) -> None:
        stop_process(self.workers)
        stop_process(self.scheduler)


def call_with_timeout(fn: Callable[[], Any], timeout_s: float) -> Any:
    """``fn()``, or TimeoutError after ``timeout_s`` (the call goes on in a daemon thread)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="taskology-bench-call")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"call did not return within {timeout_s:.0f} s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


# ---- one training run with faults ------------------------------------------------------------------
@dataclass(frozen=True)
class FaultEvent:
    """One scheduled fault: ``kind`` (``kill_task``, ``kill_sim``, ``kill_driver`` executed by the bench;
    ``nan_publication``, ``enospc_checkpoint`` fired inside a worker), the step at which it is due (of
    ``task`` when it names one, else of the slowest task) and the task it hits."""

    kind: str
    at_step: int
    task: str = ""


IN_WORKER = ("nan_publication", "enospc_checkpoint")


class Campaign:
    """One ``taskology train`` run (the driver a subprocess) on a running cluster, the bench executing the kill
    events of a schedule and watching every worker (:func:`worker_snapshot` about once a second).

    Args:
        client: a Client of the cluster's scheduler.
        run_dir, log_dir: the run directory; where the drivers' logs go (the cluster's are there too).
        tasks, target_steps: the run's tasks and steps.
        corrupt_seed: seeds the choice of the task whose newest checkpoint is corrupted before the resume.
        recover_s: the longest wait for an actor to come back after a kill.
        marker_dir: where the in-worker faults leave their markers (the driver's kill waits for them).
        deadline: wall time (``time.time()``) by which everything must be over.
    """

    def __init__(self, client: Any, *, run_dir: Path, log_dir: Path, tasks: Sequence[str], target_steps: int,
                 corrupt_seed: int, recover_s: float, deadline: float, marker_dir: Path | None = None) -> None:
        self.client, self.run_dir, self.log_dir = client, Path(run_dir), Path(log_dir)
        self.marker_dir = marker_dir
        self.tasks, self.target_steps = list(tasks), int(target_steps)
        self.corrupt_seed, self.recover_s, self.deadline = corrupt_seed, recover_s, deadline
        self.driver: subprocess.Popen[bytes] | None = None
        self.drivers: list[dict[str, Any]] = []
        self.latest: dict[str, dict[str, Any]] = {}
        self.history: list[tuple[float, dict[str, dict[str, Any]]]] = []
        self.kills: list[tuple[float, str, str]] = []  # (time, kind, task)
        self.started = time.time()
        self._calls: dict[str, futures.Future[Any]] = {}
        self._pool = futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="taskology-bench-snapshot")
        self._stop = threading.Event()
        self._monitor = threading.Thread(target=self._watch, name="taskology-bench-monitor", daemon=True)

    # ---- processes and observation ----------------------------------------------------------------
    def start_driver(self, args: Sequence[str]) -> None:
        """Start ``taskology ARGS`` (the first one starts the clock of the run)."""
        if not self.drivers:
            self.started = time.time()
        log = self.log_dir / f"driver-{len(self.drivers)}.log"
        self.driver = start_process([sys.executable, "-m", "taskology", *args], log)
        self.drivers.append({"args": list(args), "log": str(log), "started": time.time(), "returncode": None})
        if not self._monitor.is_alive():
            self._monitor.start()

    def driver_alive(self) -> bool:
        return self.driver is not None and self.driver.poll() is None

    def wait_driver(self) -> int | None:
        """The driver's exit status (None: still running at the deadline)."""
        assert self.driver is not None
        try:
            code = self.driver.wait(timeout=max(self.deadline - time.time(), 1.0))
        except subprocess.TimeoutExpired:
            code = None
        self.drivers[-1]["returncode"] = code
        return code

    def close(self) -> None:
        self._stop.set()
        stop_process(self.driver)
        if self.drivers and self.drivers[-1]["returncode"] is None and self.driver is not None:
            self.drivers[-1]["returncode"] = self.driver.poll()
        if self._monitor.is_alive():
            self._monitor.join(timeout=30)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def snapshot(self, workers: Sequence[str] | None = None, timeout_s: float = 4.0) -> dict[str, dict[str, Any]]:
        """:func:`worker_snapshot` of every worker (or of ``workers``) that answers within ``timeout_s``. One call
        per worker, so a worker that just died (a call to it can hang until the scheduler gives up on it) delays
        none of the others; a worker whose call from an earlier round still hangs is left out."""
        if workers is None:
            workers = list(call_with_timeout(lambda: self.client.scheduler_info(n_workers=-1)["workers"], 10))
        for address in workers:
            if address not in self._calls or self._calls[address].done():
                self._calls[address] = self._pool.submit(self.client.run, worker_snapshot, workers=[address],
                                                         on_error="return")
        futures.wait([self._calls[a] for a in workers], timeout=timeout_s)
        out = {}
        for address in workers:
            call = self._calls[address]
            if call.done() and call.exception() is None and isinstance(call.result().get(address), dict):
                out[address] = call.result()[address]
        return out

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                snap = self.snapshot()
                self.latest = snap
                self.history.append((time.time(), snap))
            except Exception:  # noqa: BLE001 - a worker dying mid-call; the next round sees the new state
                pass
            self._stop.wait(1.0)

    def holder(self, kind: str, task: str = "", snap: dict[str, dict[str, Any]] | None = None
               ) -> tuple[str, int, dict[str, Any]] | None:
        """(worker address, pid, status) of the actor of ``kind`` (and ``task``) in ``snap`` (default: latest)."""
        for address, worker in (self.latest if snap is None else snap).items():
            for entry in worker["actors"]:
                if entry["kind"] == kind and (kind != "task" or entry["task"] == task):
                    return address, int(worker["pid"]), entry
        return None

    def steps(self) -> dict[str, int]:
        """Current step of every task whose actor is held."""
        return {t: int(h[2].get("step") or 0) for t in self.tasks if (h := self.holder("task", t)) is not None}

    def wait_for(self, condition: Callable[[], bool], timeout_s: float | None = None, driver: bool = True) -> bool:
        """Poll ``condition`` until it holds (True), or the driver exits, the timeout or the deadline (False)."""
        end = min(self.deadline, time.time() + (timeout_s if timeout_s is not None else 1e9))
        while time.time() < end:
            if condition():
                return True
            if driver and not self.driver_alive():
                return bool(condition())
            time.sleep(0.3)
        return False

    def manifest_events(self, *needles: str) -> list[str]:
        try:
            events = json.loads((self.run_dir / "manifest.json").read_text()).get("events", [])
        except (OSError, ValueError):
            return []
        return [e for e in events if all(n in e for n in needles)]

    def _event_line(self, *needles: str, wait_s: float = 15.0) -> str:
        found: list[str] = []
        self.wait_for(lambda: bool(found.extend(self.manifest_events(*needles)) or found), wait_s)
        return found[-1] if found else ""

    # ---- kills ------------------------------------------------------------------------------------
    def run_schedule(self, events: Sequence[FaultEvent]) -> list[dict[str, Any]]:
        """Execute the kills of ``events``, each as soon as it is due (several may be recovering at once), then
        the driver's kill and resume; returns the rows of the fault table."""
        pending = [e for e in events if e.kind in ("kill_task", "kill_sim")]
        watching: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        while (pending or watching) and time.time() < self.deadline and self.driver_alive():
            for event in [e for e in pending if self._due(e)]:
                pending.remove(event)
                watch = self._kill(event)
                if watch is None:
                    rows.append(not_reached(_describe(event), event, self.steps()))
                else:
                    watching.append(watch)
            for watch in list(watching):
                row = self._recovery_row(watch)
                if row is not None:
                    watching.remove(watch)
                    rows.append(row)
            time.sleep(0.3)
        rows += [r for w in watching if (r := self._recovery_row(w, final=True)) is not None]
        rows += [not_reached(_describe(e), e, self.steps()) for e in pending]
        for event in (e for e in events if e.kind == "kill_driver"):
            self._wait_in_worker_faults(events)
            rows += self._kill_driver(event)
        return rows

    def _wait_in_worker_faults(self, events: Sequence[FaultEvent]) -> None:
        """Before the driver's kill, give the faults fired inside workers (at most ``recover_s``) the time to
        fire under this driver: a task set back by a kill reaches its step later than the median task."""
        waiting = [e for e in events if e.kind in IN_WORKER]

        def fired_or_past() -> bool:
            steps = self.steps()
            return all((self.marker_dir / Injection(e.kind, e.task, e.at_step).marker_name).exists()
                       or steps.get(e.task, 0) >= self.target_steps for e in waiting)
        if waiting and self.marker_dir is not None:
            self.wait_for(fired_or_past, self.recover_s)

    def _due(self, event: FaultEvent) -> bool:
        steps = self.steps()
        if event.kind == "kill_task":
            return steps.get(event.task, -1) >= event.at_step
        return len(steps) == len(self.tasks) and self._median() >= event.at_step

    def _kill(self, event: FaultEvent) -> dict[str, Any] | None:
        kind = "task" if event.kind == "kill_task" else "sim"
        held = self.holder(kind, event.task)
        if held is None:
            return None
        address, pid, entry = held
        try:
            snap = self.snapshot([address])
        except Exception:  # noqa: BLE001 - the latest snapshot serves
            snap = {}
        entry = (self.holder(kind, event.task, snap) or held)[2]
        others = [e.get("task", "sim") for w in snap.values() for e in w["actors"] if e is not entry]
        os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        self.kills.append((killed_at, event.kind, event.task))
        print(f"faults: killed {event.task or 'the SimActor'}'s worker (pid {pid}) at "
              f"{'step ' + str(entry.get('step')) if kind == 'task' else 'shard ' + str(entry.get('next_index'))}",
              flush=True)
        return {"event": event, "kind": kind, "name": event.task or "sim", "pid": pid, "entry": entry,
                "killed_at": killed_at, "others": others, "median": self._median()}

    def _recovery_row(self, watch: dict[str, Any], final: bool = False) -> dict[str, Any] | None:
        """The row of a kill once its actor is back (or ``recover_s`` passed, or ``final``); None meanwhile."""
        kind, name, pid, entry, killed_at = (watch[k] for k in ("kind", "name", "pid", "entry", "killed_at"))
        new = self.holder(kind, watch["event"].task)
        back = new is not None and new[1] != pid and (
            new[2].get("state") in ("training", "done") if kind == "task"
            else new[2].get("phase") not in (None, "idle", "scanning"))
        if not back and not final and time.time() - killed_at < self.recover_s:
            return None
        lost = self._event_line(f"{name}: lost", wait_s=5.0)
        reached = int(entry.get("step") or 0) if kind == "task" else None
        row: dict[str, Any] = {
            "fault": _describe(watch["event"]),
            "when": (f"{name} at step {reached}" if kind == "task" else f"median task at step {watch['median']}")
                    + f", {killed_at - self.started:.0f} s",
            "detected": f"supervisor: {_strip_time(lost)}" if lost else "no supervisor event",
            "steps_lost": None, "survived": bool(back), "killed_at": killed_at, "pid": pid,
            "also_on_that_worker": watch["others"]}
        if not back:
            row["recovered"] = f"not back within {time.time() - killed_at:.0f} s"
            return row
        assert new is not None
        seconds = time.time() - killed_at
        restarted = _strip_time(self._event_line(f"{name}: restarted", wait_s=5.0)) or "no restart event"
        if kind == "task":
            resumed = int(new[2].get("restored_from") or 0)
            row.update(steps_lost=steps_lost(reached or 0, resumed), reached=reached, resumed=resumed,
                       recovered=f"recreated in {seconds:.0f} s, resumed from its checkpoint of step {resumed} "
                                 f"({restarted})")
        else:
            writing = (entry.get("in_progress") or {}).get("index")
            row["recovered"] = (f"recreated in {seconds:.0f} s ({restarted}); "
                                + (f"it was writing shard {writing}, " if writing is not None else "")
                                + f"the new one went on at shard index {new[2].get('next_index')}")
        if watch["others"]:
            row["recovered"] += f"; also lost with that worker: {', '.join(watch['others'])}"
        return row

    def _median(self) -> int:
        """The median task's step (the lower middle one): tasks train at different speeds, and a fault due
        at the slowest task's step would find the fast ones finished."""
        return self._median_of(self.steps())

    @staticmethod
    def _median_of(steps: dict[str, int]) -> int:
        values = sorted(steps.values())
        return values[(len(values) - 1) // 2] if values else 0

    def _kill_driver(self, event: FaultEvent) -> list[dict[str, Any]]:
        from taskology.engine.checkpoints import CheckpointDir

        what = "SIGKILL the driver, then `taskology train --resume`"
        if not self.wait_for(lambda: self._due(event)):
            return [not_reached(what, event, self.steps()), not_reached("corrupt newest checkpoint before resume",
                                                                        event, self.steps())]
        assert self.driver is not None
        reached = {t: int(h[2].get("step") or 0) for t in self.tasks if (h := self.holder("task", t, self.snapshot()))}
        os.kill(self.driver.pid, signal.SIGKILL)
        killed_at = time.time()
        self.kills.append((killed_at, event.kind, ""))
        code = self.wait_driver()
        time.sleep(3.0)  # the scheduler drops the dead client's actors
        after = self.snapshot()
        orphans = sorted(t for w in after.values() for t in w["threads"])
        held = sorted(e.get("task", "sim") for w in after.values() for e in w["actors"])
        # corrupt the newest checkpoint of one task that has an older one to fall back to
        import random

        candidates = [t for t in self.tasks if len(CheckpointDir(self.run_dir / "checkpoints" / t).steps()) >= 2]
        corrupt: dict[str, Any] = {}
        if candidates:
            task = random.Random(self.corrupt_seed).choice(candidates)
            ckpts = CheckpointDir(self.run_dir / "checkpoints" / task)
            steps = ckpts.steps()
            path = ckpts.path(steps[-1])
            size = path.stat().st_size
            os.truncate(path, size // 2)
            corrupt = {"task": task, "step": steps[-1], "previous": steps[-2], "path": str(path), "bytes": size,
                       "at": time.time()}
        self.start_driver(["train", "--resume", str(self.run_dir), "--cluster", self.client.scheduler.address])
        resumed_at = time.time()

        def all_back() -> bool:
            snap = self.latest
            if not any(e["kind"] == "task" for w in snap.values() for e in w["actors"]):
                return False
            return all((h := self.holder("task", t, snap)) is not None and h[2].get("state") in ("training", "done")
                       for t in self.tasks)
        back = self.wait_for(all_back, self.recover_s + 60)
        resumed = {t: int(h[2].get("restored_from") or 0) for t in self.tasks if (h := self.holder("task", t))}
        lost = {t: steps_lost(reached[t], resumed[t]) for t in reached if t in resumed}
        threads_now = sorted(t for w in self.latest.values() for t in w["threads"])
        duplicated = sorted({t for t in threads_now if threads_now.count(t) > 1})
        if back:
            recovered = (f"resumed in {time.time() - resumed_at:.0f} s from checkpoints of steps "
                         + ", ".join(f"{t} {resumed[t]}" for t in sorted(resumed)))
        elif not self.driver_alive():
            recovered = (f"the resumed driver exited with status {self.driver.poll()} after "
                         f"{time.time() - resumed_at:.0f} s: {_last_line(Path(self.drivers[-1]['log']))}")
        else:
            recovered = f"not every actor training {time.time() - resumed_at:.0f} s after the resume"
        if orphans:
            recovered += (f"; threads of the dead driver's actors still running on the workers 3 s after its death: "
                          f"{', '.join(orphans)}" + (f" (running twice now: {', '.join(duplicated)})" if duplicated
                                                     else ""))
        row = {"fault": what, "when": f"median task at step {self._median_of(reached)}, "
                                      f"{killed_at - self.started:.0f} s",
               "detected": f"driver exit status {code}; actors left on the workers: {', '.join(held) or 'none'}",
               "recovered": recovered, "steps_lost": max(lost.values()) if lost else None, "survived": back,
               "killed_at": killed_at, "reached": reached, "resumed": resumed, "steps_lost_by_task": lost,
               "orphan_threads": orphans, "tasks_trained_twice": duplicated}
        rows = [row]
        if corrupt:
            task = corrupt["task"]
            got = resumed.get(task)
            fell_back = got is not None and got < corrupt["step"]
            exercised = got is not None or self.driver_alive()
            rows.append({"fault": f"truncate {task}'s newest checkpoint (step {corrupt['step']}) before the resume",
                         "when": f"{corrupt['at'] - self.started:.0f} s", "detected": "(from the logs, below)",
                         "recovered": (f"resumed from step {got} (the previous checkpoint: {corrupt['previous']})"
                                       if fell_back else f"resumed from step {got}" if got is not None
                                       else "the task did not resume" if exercised
                                       else "not exercised: the resumed driver stopped before creating the actor"),
                         "steps_lost": steps_lost(corrupt["step"], got) if got is not None else None,
                         "survived": bool(back and fell_back) if exercised else None, "corrupt": corrupt})
        else:
            rows.append(not_reached("corrupt newest checkpoint before resume (no task had two checkpoints)", event,
                                    reached))
        return rows


def steps_lost(reached: int, resumed: int | None) -> int:
    """Optimizer steps a task must train again: the step it had reached minus the step it resumed from
    (negative when it resumed from a newer checkpoint than the step seen at the fault).

    Example:
        >>> steps_lost(37, 30), steps_lost(12, None)
        (7, 12)
    """
    return int(reached) - int(resumed or 0)


def not_reached(what: str, event: FaultEvent, steps: dict[str, int]) -> dict[str, Any]:
    """The row of a fault whose moment never came (the run ended or failed before)."""
    return {"fault": what, "when": f"due at step {event.at_step}; not reached (steps: "
                                   + ", ".join(f"{t} {s}" for t, s in sorted(steps.items())) + ")",
            "detected": "-", "recovered": "-", "steps_lost": None, "survived": False}


def _describe(event: FaultEvent) -> str:
    return f"SIGKILL the worker of task {event.task}" if event.kind == "kill_task" else "SIGKILL the SimActor's worker"


def _strip_time(event: str) -> str:
    return re.sub(r"^\d\d:\d\d:\d\d ", "", event)


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


__all__ = ["Campaign", "FaultEvent", "IN_WORKER", "ProcessCluster", "call_with_timeout", "not_reached", "start_process",
           "steps_lost", "stop_process"]
