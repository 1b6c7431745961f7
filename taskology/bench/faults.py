"""Benchmark ``taskology bench faults``: a seeded fault campaign on a real collective training run.

What runs: the ``demo`` preset's six tasks (four camera tasks, 3D detection, tracking) with the live SimActor,
shrunk by :func:`bench_overrides` (:data:`FULL`: 60 steps, a checkpoint every 10; ``--quick``: 24 and 4), on a
Dask cluster the bench starts as processes on 127.0.0.1 (``dask scheduler``, ``dask worker`` with nannies, one
worker per actor and a spare), trained by ``taskology train --cluster tcp://...`` as a subprocess.

The fault schedule (:func:`make_schedule`, seeded, recorded in the result): SIGKILL the worker holding a task
actor three times (three tasks, each when it reaches its step), SIGKILL the SimActor's worker once, put NaN into
one publication of one task, make one checkpoint write of one task fail with ENOSPC half-way (the last two fired
inside the worker by :class:`~taskology.bench.fault_injection.FaultPlugin`, once), and last SIGKILL the driver,
truncate the newest checkpoint of one task that has an older one, and run ``taskology train --resume``. The
driver's kill comes last so that a resume that fails leaves the other rows measured.

What is measured, per fault: when (step, seconds since the driver started), how it was detected (the
supervisor's events in ``manifest.json``, the actors' status, the logs of the driver and the workers), how it
was recovered and the steps lost (a killed task: the step it had reached minus the step it resumed from; target
at most one checkpoint interval). At the end: every checkpoint, side file and mediator shard in the run
directory loads whole and no temp file is left (:func:`check_run_files`), and the test metrics
(``taskology eval``) of the faulted run lie within the spread of unfaulted runs of the same seed
(:func:`within_spread`: the engine is asynchronous, so runs of one seed differ; a metric is within when it lies in
``[min - r, max + r]`` of the unfaulted runs, ``r = max - min``).

A fault counts as survived when: a killed actor is back (training or done) within 240 s; after the driver's
kill every actor is training again under the resumed driver; the truncated checkpoint's task resumed from an
older one; after the NaN no task's loss went non-finite (nor, when the run finished, a final metric that every
unfaulted run has finite); after the ENOSPC a later checkpoint of that task was written and no temp file of
the failed one was left.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from taskology.bench import BenchResult, target
from taskology.bench.fault_campaign import IN_WORKER, Campaign, FaultEvent, ProcessCluster, call_with_timeout, steps_lost
from taskology.bench.fault_injection import FaultPlugin, Injection, is_installed, read_markers
from taskology.errors import ConfigError

PRESET = "demo"
SEED = 0            #: the training seed of every run
SCHEDULE_SEED = 1   #: seeds the fault schedule and the choice of the checkpoint to corrupt


@dataclass(frozen=True)
class Sizes:
    """One configuration of the bench: training steps, checkpoint interval (steps), unfaulted runs, the world."""

    steps: int
    checkpoint_every: int
    unfaulted_runs: int
    sequences: int = 8
    frames: int = 12
    camera: str = "32x96"
    timeout_s: float = 1800.0


FULL = Sizes(steps=60, checkpoint_every=10, unfaulted_runs=3)
QUICK = Sizes(steps=24, checkpoint_every=4, unfaulted_runs=2, timeout_s=1200.0)
TASK_KILLS = 3


def bench_overrides(sizes: Sizes, data_root: Path) -> list[str]:
    """Overrides of the ``demo`` preset for the bench's runs: the smaller world, steps and checkpoint interval
    (steps only: no timed checkpoints), relations from one interval on, publications every half interval, the
    live SimActor, the CPU."""
    k = sizes.checkpoint_every
    return [f"data.root={data_root}", f"data.camera={sizes.camera}", f"sim.camera={sizes.camera}",
            f"sim.sequences={sizes.sequences}", f"sim.frames={sizes.frames}", f"train.steps={sizes.steps}",
            f"train.checkpoint_every_steps={k}", "train.checkpoint_every_s=0", f"train.consistency_start_step={k}",
            f"train.consistency_ramp_steps={k}", f"train.log_every={k}", "train.device=cpu",
            f"exchange.publish_every_steps={max(k // 2, 1)}", "exchange.live_mediator=true",
            "exchange.pool_refresh_s=5", "cluster.dashboard=false"]


def make_schedule(seed: int, tasks: Sequence[str], steps: int, checkpoint_every: int, nan_tasks: Sequence[str],
                  nan_from_step: int, task_kills: int = TASK_KILLS) -> list[FaultEvent]:
    """The faults of one campaign, ordered by step: ``task_kills`` kills of distinct tasks, one SimActor kill,
    one NaN publication (of one of ``nan_tasks``, from ``nan_from_step`` on, when peers use it), one ENOSPC
    checkpoint write, and the driver's kill last. Every fault is due at a distinct step in
    ``[k + 1, steps - k - 1]`` (``k = checkpoint_every``: a checkpoint exists before it and the run goes on one
    interval after it); the driver's at ``2k + 1`` or later (its resume finds two checkpoints). A task's kill is
    due when that task reaches its step, the other faults when the median task does (tasks train at
    different speeds; the slowest would find the fast ones finished).

    Example:
        >>> [e.kind for e in make_schedule(0, ["a", "b", "c"], 60, 10, ["a"], 15)][-1]
        'kill_driver'
    """
    k = int(checkpoint_every)
    low, high = k + 1, int(steps) - k - 1
    count = task_kills + 4
    if high - low + 1 < count or high < 2 * k + 1 or not nan_tasks or not tasks:
        raise ConfigError(f"faults: {steps} steps with a checkpoint every {k} leave no room for {count} faults at "
                          f"distinct steps in [{low}, {high}]")
    rng = random.Random(seed)
    for _ in range(10_000):
        picks = sorted(rng.sample(range(low, high + 1), count))
        driver, others = picks[-1], picks[:-1]
        rng.shuffle(others)
        nan_step, enospc_step, sim_step, kills = others[0], others[1], others[2], others[3:]
        if driver < 2 * k + 1 or nan_step < nan_from_step:
            continue
        killed = rng.sample(list(tasks), task_kills) if len(tasks) >= task_kills else rng.choices(list(tasks), k=task_kills)
        events = [FaultEvent("kill_task", s, t) for s, t in zip(kills, killed, strict=True)]
        events += [FaultEvent("kill_sim", sim_step), FaultEvent("nan_publication", nan_step, rng.choice(list(nan_tasks))),
                   FaultEvent("enospc_checkpoint", enospc_step, rng.choice(list(tasks))),
                   FaultEvent("kill_driver", driver)]
        return sorted(events, key=lambda e: e.at_step)
    raise ConfigError(f"faults: no schedule meets the constraints in [{low}, {high}] (NaN from step {nan_from_step})")


def within_spread(value: float, reference: Sequence[float]) -> bool:
    """Whether ``value`` lies in ``[min - r, max + r]`` of the finite ``reference`` values, ``r = max - min``
    (a non-finite value never does).

    Example:
        >>> within_spread(0.31, [0.30, 0.32]), within_spread(0.35, [0.30, 0.32]), within_spread(0.28, [0.30, 0.32])
        (True, False, True)
    """
    finite = [float(v) for v in reference if math.isfinite(float(v))]
    if not finite:
        raise ValueError("within_spread: no finite reference value")
    low, high = min(finite), max(finite)
    return math.isfinite(float(value)) and low - (high - low) <= float(value) <= high + (high - low)


def compare_metrics(faulted: Mapping[str, Mapping[str, float]],
                    unfaulted: Sequence[Mapping[str, Mapping[str, float]]]) -> list[dict[str, Any]]:
    """One row per task metric (``step`` left out): the faulted value, the unfaulted runs' values and whether
    the faulted one is :func:`within_spread` (``None`` when no unfaulted run has a finite value)."""
    rows = []
    for task in sorted({t for run in unfaulted for t in run}):
        for metric in sorted({m for run in unfaulted for m in run.get(task, {})} - {"step"}):
            reference = [float(run[task][metric]) for run in unfaulted if metric in run.get(task, {})]
            value = float(faulted.get(task, {}).get(metric, float("nan")))
            defined = any(math.isfinite(v) for v in reference)
            rows.append({"task": task, "metric": metric, "faulted": value, "unfaulted": reference,
                         "within": within_spread(value, reference) if defined else None})
    return rows


def check_run_files(run_dir: Path, skip: Sequence[Path] = ()) -> dict[str, Any]:
    """Open every checkpoint (``weights_only``), exchange side file, publication and mediator shard under
    ``run_dir`` (but ``skip``); list the ones that do not load, temp files left behind and quarantined shards."""
    import numpy as np

    from taskology.data.shard import Shard
    from taskology.engine.checkpoints import load_checkpoint

    skipped = {Path(p).resolve() for p in skip}
    checked, broken = 0, []
    for path in sorted(Path(run_dir).rglob("*")):
        if not path.is_file() or path.resolve() in skipped or path.name.startswith("."):
            continue
        try:
            if path.suffix == ".pt" and path.parent.parent.name == "checkpoints":
                load_checkpoint(path)
            elif path.name.endswith(".exchange.json"):
                json.loads(path.read_text())
            elif path.name.endswith(".pub.npz"):
                with np.load(path, allow_pickle=False) as z:
                    [z[k] for k in z.files]
            elif path.suffix == ".h5" and path.parent.name == "mediator":
                with Shard.open(path):
                    pass
            else:
                continue
            checked += 1
        except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
            broken.append(f"{path.relative_to(run_dir)}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    temp = sorted(str(p.relative_to(run_dir)) for p in Path(run_dir).rglob(".*") if ".tmp" in p.name and p.is_file())
    quarantined = sorted(str(p.relative_to(run_dir)) for p in Path(run_dir).rglob("*.corrupt"))
    return {"checked": checked, "broken": broken, "temp_files": temp, "quarantined": quarantined}


# ---- the faults fired inside workers: their rows from the markers, the workers' statuses and the logs ------
def log_lines(log_dir: Path, pattern: str) -> list[str]:
    """Lines of every ``*.log`` in ``log_dir`` matching the regular expression ``pattern`` (stripped, shortened),
    the workers' first, then the drivers' (whose end-of-run summary repeats what the workers said)."""
    regex, found = re.compile(pattern), []
    for path in sorted(Path(log_dir).glob("*.log"), key=lambda p: (p.name != "workers.log", p.name)):
        for line in path.read_text(errors="replace").splitlines():
            if regex.search(line):
                found.append(line.strip()[:240])
    return found


def timeline(history: Sequence[tuple[float, Mapping[str, Any]]], task: str, since: float = 0.0,
             until: float = math.inf) -> list[tuple[float, int, dict[str, Any]]]:
    """``(time, pid, status)`` of ``task``'s actor in every snapshot taken in ``[since, until)``."""
    out = []
    for when, snap in history:
        if since <= when < until:
            for worker in snap.values():
                out.extend((when, int(worker["pid"]), e) for e in worker["actors"]
                           if e["kind"] == "task" and e["task"] == task)
    return out


def _largest(points: Sequence[tuple[float, int, dict[str, Any]]], key: str) -> int:
    """The largest value a task reported for counter ``key`` (a counter its checkpoint carries over a restart)."""
    return max((int(entry.get(key) or 0) for _, _, entry in points), default=0)


def nan_row(marker: Mapping[str, Any] | None, history: Sequence[tuple[float, Mapping[str, Any]]],
            tasks: Sequence[str], log_dir: Path, started: float, event: FaultEvent) -> dict[str, Any]:
    """The row of the NaN publication (``survived`` is decided later, from the final metrics)."""
    what = f"NaN in one publication of {event.task}"
    if not marker:
        return {"fault": what, "when": f"due from step {event.at_step}; never fired", "detected": "-",
                "recovered": "-", "steps_lost": None, "survived": False}
    at = float(marker["time"])
    points = {t: timeline(history, t, at) for t in tasks}
    dropped = sum(_largest(p, "dropped_publications") for p in points.values())
    rollbacks = sum(_largest(p, "rollbacks") for p in points.values())
    nonfinite = sorted(t for t, p in points.items()
                       if any(e.get("loss") is not None and not math.isfinite(float(e["loss"])) for _, _, e in p))
    lines = log_lines(log_dir, r"(?i)dropped the publication|non-finite|not finite|\bnan\b")
    detected = [f"{dropped} publication(s) dropped (status dropped_publications)"] if dropped else []
    detected += [f"{rollbacks} rollback(s) (status rollbacks)"] if rollbacks else []
    detected += [f"log: {lines[0]}"] if lines else []
    return {"fault": what, "when": f"{event.task} at step {marker.get('step')}, {at - started:.0f} s",
            "detected": "; ".join(detected) or "not detected (no status counter, no log line)",
            "recovered": (f"non-finite loss seen in {', '.join(nonfinite)}" if nonfinite
                          else "no task's loss went non-finite"),
            "steps_lost": None, "survived": None, "nonfinite_loss_tasks": nonfinite, "dropped_publications": dropped,
            "rollbacks": rollbacks, "marker": dict(marker)}


def enospc_row(marker: Mapping[str, Any] | None, history: Sequence[tuple[float, Mapping[str, Any]]],
               kills: Sequence[tuple[float, str, str]], log_dir: Path, started: float,
               event: FaultEvent) -> dict[str, Any]:
    """The row of the checkpoint write that failed with ENOSPC: was it reported, did training go on in the
    same process (or was the actor restarted), did a later save succeed, was the temp file removed."""
    what = f"ENOSPC in a checkpoint write of {event.task}"
    if not marker:
        return {"fault": what, "when": f"due from step {event.at_step}; never fired", "detected": "-",
                "recovered": "-", "steps_lost": None, "survived": False}
    at, step, path = float(marker["time"]), int(marker["step"]), Path(marker["path"])
    until = min([t for t, kind, task in kills if t > at and (kind == "kill_driver" or task == event.task)],
                default=math.inf)
    before = timeline(history, event.task, 0.0, at)
    pid = before[-1][1] if before else int(marker.get("pid", -1))
    after = timeline(history, event.task, at, until)
    failed = [e for _, p, e in after if p == pid and e.get("state") == "failed"]
    successor = [(p, e) for _, p, e in after if p != pid]
    saves = [int(e.get("checkpoint_step") or -1) for _, _, e in after if int(e.get("checkpoint_step") or -1) > step]
    # a later checkpoint on disk counts too (written where the bench could not see the actor's status)
    from taskology.engine.checkpoints import CheckpointDir

    saves += [s for s in CheckpointDir(path.parent).steps() if s > step]
    lines = log_lines(log_dir, rf"(?i){re.escape(path.name)}|no space left|ENOSPC|Errno 28")
    detected = [f"log: {lines[0]}"] if lines else []
    detected += [f"status: failed ({failed[0].get('error')})"] if failed else []
    left = sorted(p.name for p in path.parent.glob(f".{path.name}.*")) if path.parent.is_dir() else []
    lost = 0
    if successor:
        resumed = int(successor[-1][1].get("restored_from") or 0)
        lost = steps_lost(step, resumed)
        recovered = f"actor restarted, resumed from step {resumed}"
    else:
        recovered = "training went on in the same process"
    recovered += f"; next checkpoint at step {min(saves)}" if saves else "; no later checkpoint seen"
    recovered += f"; temp file left: {', '.join(left)}" if left else "; no temp file left"
    return {"fault": what, "when": f"{event.task} at step {step}, {at - started:.0f} s",
            "detected": "; ".join(detected) or "not detected (no log line, no status)", "recovered": recovered,
            "steps_lost": lost, "survived": bool(saves) and not left, "marker": dict(marker)}


def corrupt_detection(row: dict[str, Any], log_dir: Path) -> None:
    """Fill the corrupted checkpoint's ``detected`` from the logs (the line naming its file); when the bench did
    not see the task's new actor (the resumed driver stopped first), a logged ``resuming from step N`` for that
    file tells whether the actor fell back to the previous checkpoint."""
    corrupt = row["corrupt"]
    name = Path(corrupt["path"]).name
    lines = log_lines(log_dir, re.escape(name))
    lines = [line for line in lines if re.search(r"(?i)unreadable|corrupt", line)] + lines
    row["detected"] = f"log: {lines[0]}" if lines else "-" if row["survived"] is None else "no log line names it"
    resumed = [int(m.group(1)) for line in lines if (m := re.search(rf"resuming from step (\d+): {re.escape(name)}", line))]
    if row["survived"] is None and resumed:
        row["steps_lost"] = steps_lost(corrupt["step"], resumed[0])
        row["survived"] = resumed[0] < corrupt["step"]
        row["recovered"] = (f"its new actor resumed from step {resumed[0]} (the previous checkpoint: "
                            f"{corrupt['previous']}; from the log: the bench saw no status before the resumed "
                            f"driver stopped)")


# ---- tables ----------------------------------------------------------------------------------------------
def _cell(text: Any) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def render_fault_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The Markdown table of the faults: fault, when, detected how, recovered how, steps lost, survived.

    Example:
        >>> print(render_fault_table([{"fault": "kill", "when": "step 3", "detected": "d", "recovered": "r",
        ...                            "steps_lost": 2, "survived": True}]).splitlines()[2])
        | kill | step 3 | d | r | 2 | yes |
    """
    lines = ["| fault | when | detected how | recovered how | steps lost | survived |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        survived = {True: "yes", False: "**no**", None: "not exercised"}[r.get("survived")]
        lost = "-" if r.get("steps_lost") is None else str(r["steps_lost"])
        lines.append(f"| {_cell(r['fault'])} | {_cell(r['when'])} | {_cell(r['detected'])} | {_cell(r['recovered'])} "
                     f"| {lost} | {survived} |")
    return "\n".join(lines)


def render_metric_table(comparison: Sequence[Mapping[str, Any]]) -> str:
    """The Markdown table of the final test metrics, one row per task: how many of its metrics lie within the
    unfaulted spread, and each one outside it (faulted value; unfaulted values). Metrics with no finite
    unfaulted value are counted apart (undefined).

    Example:
        >>> print(render_metric_table([{"task": "depth", "metric": "abs_rel", "faulted": 0.36,
        ...                             "unfaulted": [0.3, 0.32], "within": False}]).splitlines()[2])
        | depth | 0 of 1 | abs_rel 0.36 (0.3, 0.32) |
    """
    lines = ["| task | metrics within the spread | outside it: faulted (unfaulted runs) |", "| --- | --- | --- |"]
    for task in sorted({r["task"] for r in comparison}):
        rows = [r for r in comparison if r["task"] == task]
        defined = [r for r in rows if r["within"] is not None]
        outside = [f"{r['metric']} {r['faulted']:.4g} ({', '.join(f'{v:.4g}' for v in r['unfaulted'])})"
                   for r in defined if not r["within"]]
        undefined = len(rows) - len(defined)
        lines.append(f"| {task} | {sum(bool(r['within']) for r in defined)} of {len(defined)}"
                     + (f" ({undefined} undefined in every run)" if undefined else "")
                     + f" | {'; '.join(outside) or '-'} |")
    return "\n".join(lines)


# ---- the runs ----------------------------------------------------------------------------------------------
class _Say:
    def print(self, text: str) -> None:
        print(re.sub(r"\[/?[a-z ]+\]", "", str(text)), flush=True)


def publishers_read_by_peers(config: Any) -> list[str]:
    """Tasks whose publications some peer reads through an enabled relation (where a NaN matters)."""
    from taskology.engine.protocol import peers_needed
    from taskology.engine.registry import Registry

    registry, read = Registry.current(), set()
    for task in config.enabled_tasks():
        read |= peers_needed([(r.name, r.tasks) for r, _ in registry.relations_for(task, config)], task)
    return sorted(read)


def train_and_evaluate(run_dir: Path, overrides: Sequence[str], tasks: Sequence[str], sizes: Sizes,
                       schedule: Sequence[FaultEvent] = ()) -> dict[str, Any]:
    """One run on a cluster of its own (``len(tasks) + 2`` workers: the SimActor and a spare), the schedule
    executed, the files checked and the test metrics measured (``taskology eval``)."""
    from distributed import Client

    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"{run_dir}: already holds a run; give the bench an empty --runs-dir")
    log_dir = run_dir.with_name(run_dir.name + "-logs")
    markers = log_dir / "markers"
    markers.mkdir(parents=True, exist_ok=True)
    n_workers = len(tasks) + 2
    deadline = time.time() + sizes.timeout_s
    rows: list[dict[str, Any]] = []
    print(f"faults: {run_dir.name}: {n_workers} workers, {len(schedule)} faults", flush=True)
    with ProcessCluster(n_workers, log_dir) as cluster:
        client = Client(cluster.address, timeout=30)
        campaign = Campaign(client, run_dir=run_dir, log_dir=log_dir, tasks=tasks, target_steps=sizes.steps,
                            corrupt_seed=SCHEDULE_SEED, recover_s=240.0, deadline=deadline, marker_dir=markers)
        try:
            client.wait_for_workers(n_workers, timeout=300)
            injections = [Injection(e.kind, e.task, e.at_step) for e in schedule if e.kind in IN_WORKER]
            if injections:
                client.register_plugin(FaultPlugin(markers, injections))
                kinds = sorted({i.kind for i in injections})
                campaign.wait_for(lambda: all(all(call_with_timeout(lambda k=k: client.run(is_installed, k), 60)
                                                  .values()) for k in kinds), 180, driver=False)
            campaign.start_driver(["train", PRESET, *overrides, "--cluster", cluster.address, "--run-dir", str(run_dir)])
            rows = campaign.run_schedule(schedule)
            code = campaign.wait_driver()
        finally:
            campaign.close()
            client.close(timeout=20)
    wall = time.time() - campaign.started
    fired = read_markers(markers)
    for event in schedule:
        marker = fired.get(Injection(event.kind, event.task, event.at_step).marker_name)
        if event.kind == "nan_publication":
            rows.append(nan_row(marker, campaign.history, tasks, log_dir, campaign.started, event))
        elif event.kind == "enospc_checkpoint":
            rows.append(enospc_row(marker, campaign.history, campaign.kills, log_dir, campaign.started, event))
    skip = []  # the checkpoint the bench truncated, while it is still the bench's half (not written again)
    for row in rows:
        if "corrupt" in row:
            corrupt_detection(row, log_dir)
            path = Path(row["corrupt"]["path"])
            row["corrupt"]["left_as_truncated"] = path.is_file() and path.stat().st_size == row["corrupt"]["bytes"] // 2
            if row["corrupt"]["left_as_truncated"]:
                skip.append(path)
    files = check_run_files(run_dir, skip) if run_dir.is_dir() else {"checked": 0, "broken": [], "temp_files": [],
                                                                      "quarantined": []}
    metrics: dict[str, Any] = {}
    if code == 0:
        try:
            with open(log_dir / "eval.out", "wb") as out:
                subprocess.run([sys.executable, "-m", "taskology", "eval", str(run_dir)], check=True, timeout=900,
                               stdout=out, stderr=subprocess.STDOUT)
            metrics = next(iter(json.loads((run_dir / "eval_test.json").read_text()).values()))
        except (subprocess.SubprocessError, OSError, ValueError, StopIteration) as exc:
            print(f"faults: eval of {run_dir} failed: {exc}", flush=True)
    summary = _tail(Path(campaign.drivers[-1]["log"])) if campaign.drivers else []
    return {"run_dir": str(run_dir), "returncode": code, "wall_s": wall, "rows": rows, "files": files,
            "metrics": metrics, "drivers": campaign.drivers, "driver_tail": summary, "markers": fired,
            "snapshots": len(campaign.history)}


def _tail(path: Path, lines: int = 4) -> list[str]:
    try:
        text = [line.strip()[:300] for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return []
    return text[-lines:]


def run(quick: bool, runs_dir: Path | None = None) -> BenchResult:
    from taskology.config import load_config
    from taskology.demo import CACHE_ENV, DEFAULT_CACHE, ensure_sim_data

    sizes = QUICK if quick else FULL
    k = sizes.checkpoint_every
    world = ensure_sim_data(load_config(PRESET, bench_overrides(sizes, Path("unused"))),
                            Path(os.environ.get(CACHE_ENV, DEFAULT_CACHE)), _Say())
    overrides = bench_overrides(sizes, Path(world.root).resolve())
    config = load_config(PRESET, overrides)
    tasks = list(config.enabled_tasks())
    nan_from = int(config.train.consistency_start_step) + int(config.exchange.publish_every_steps)
    schedule = make_schedule(SCHEDULE_SEED, tasks, sizes.steps, k, publishers_read_by_peers(config), nan_from)
    work = Path(runs_dir) if runs_dir is not None else Path(tempfile.mkdtemp(prefix="taskology-bench-faults-"))
    load_before = os.getloadavg()[0]
    try:
        unfaulted = [train_and_evaluate(work / f"unfaulted-{i}", overrides, tasks, sizes)
                     for i in range(sizes.unfaulted_runs)]
        faulted = train_and_evaluate(work / "faulted", overrides, tasks, sizes, schedule)
    finally:
        if runs_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()[0]
    finished = faulted["returncode"] == 0 and bool(faulted["metrics"])
    reference = [u["metrics"] for u in unfaulted if u["returncode"] == 0 and u["metrics"]]
    comparison = compare_metrics(faulted["metrics"], reference) if len(reference) >= 2 and finished else []
    # a metric every unfaulted run has finite must be finite in the faulted run
    finite = finished and all(math.isfinite(c["faulted"]) for c in comparison
                              if all(math.isfinite(v) for v in c["unfaulted"]))
    rows = faulted["rows"]
    for row in rows:
        if row["survived"] is None and "nonfinite_loss_tasks" in row:  # the NaN publication: no task's loss went non-finite, no final metric either
            row["survived"] = not row.get("nonfinite_loss_tasks") and (finite or not finished)
    defined = [c for c in comparison if c["within"] is not None]
    within = sum(bool(c["within"]) for c in defined) / len(defined) if defined and finished else 0.0
    # a fault not exercised (its moment never came under a working driver) counts as not survived
    survived = sum(bool(r["survived"]) for r in rows) / max(len(rows), 1)
    lost = [int(r["steps_lost"]) for r in rows if r.get("steps_lost") is not None]
    broken = len(faulted["files"]["broken"]) + sum(len(u["files"]["broken"]) for u in unfaulted)
    files = faulted["files"]
    status = "finished" if finished else f"did **not** finish (driver exit status {faulted['returncode']})"
    walls = ", ".join(f"{u['wall_s']:.0f}" for u in unfaulted)
    opened = (f"Files: {files['checked']} checkpoints, side files and mediator shards of the faulted run opened, "
              f"{len(files['broken'])} did not load" + "".join(f"; {b}" for b in files["broken"])
              + f"; temp files left (by killed writers; never a file's own name): {len(files['temp_files'])}; "
              f"set aside as *.corrupt: {len(files['quarantined'])}.")
    table = [(f"Faulted run: {sizes.steps} steps per task, a checkpoint every {k} steps, {status} in "
              f"{faulted['wall_s']:.0f} s (unfaulted: {walls} s)."), "", render_fault_table(rows), "", opened, ""]
    if comparison:
        table += [(f"Test metrics, faulted run against {len(reference)} unfaulted runs of the same seed (within: in "
                   f"[min - r, max + r] of the unfaulted runs, r = max - min):"), "", render_metric_table(comparison)]
    else:
        table += [(f"Test metrics not compared: {len(reference)} unfaulted run(s) finished, the faulted run "
                   f"{'finished' if finished else 'did not'}.")]
    targets = {
        f"faults survived (of {len(rows)})": target(survived, 1.0),
        f"most steps lost by one fault (checkpoint interval {k})": target(max(lost) if lost else float("nan"), k,
                                                                          higher_is_better=False),
        "files that do not load (every run)": target(broken, 0, higher_is_better=False),
        "test metrics within the unfaulted spread": target(within, 1.0)}
    figures = {"preset": PRESET, "seed": SEED, "schedule_seed": SCHEDULE_SEED, "sizes": asdict(sizes),
               "overrides": [o for o in overrides if not o.startswith("data.root=")], "world": world.digest,
               "schedule": [asdict(e) for e in schedule], "faults": rows, "files": files,
               "faulted": {k2: v for k2, v in faulted.items() if k2 not in ("rows", "files")},
               "unfaulted": unfaulted, "metrics": comparison,
               "spread_rule": "within when min - r <= value <= max + r over the unfaulted runs, r = max - min",
               "load_average_1min": {"before": load_before, "after": load_after}}
    notes = (f"Cluster: `dask scheduler` and `dask worker --nworkers {len(tasks) + 2} --nthreads 1` (nannies restart "
             f"a killed worker) on 127.0.0.1, started by the bench for each run; the driver `taskology train "
             f"{PRESET} ... --cluster tcp://...` is a subprocess; {sizes.unfaulted_runs} unfaulted runs, then the "
             f"faulted one, same seed {SEED}, on {os.cpu_count()} cores shared with other jobs (1-minute load "
             f"{load_before:.1f} before, {load_after:.1f} after). Steps lost: the step a task had reached at the "
             f"fault minus the step it resumed from. NaN and ENOSPC are fired inside the worker by a WorkerPlugin "
             f"of the bench, once (marker file); the driver's last lines: "
             + " / ".join(f"`{line}`" for line in faulted["driver_tail"][-2:]))
    return BenchResult(figures=figures, table="\n".join(table), targets=targets, notes=notes)
