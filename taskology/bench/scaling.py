"""``taskology bench scaling``: what the distributed engine costs and buys.

Measured in one run, on tiny simulator shards (generated once into a temp dir, 32x96 unless full):

1. **engine vs bare loop** — one task (depth, ``alone``) trained by a :class:`TaskActor` (background
   thread, status, checkpoint bookkeeping) vs a bare PyTorch loop (forward, supervised loss, backward,
   AdamW step) over an identically seeded runner: same model init, same optimizer, the same batch
   sequence from the same loader (``BatchStream``), same process and thread settings. Chunks of the
   two alternate (bare, engine, bare, ...) so load drifts hit both; the figure is the median of the
   per-round ratios of steps/s (target >= 0.95).
2. **task parallelism** — two tasks (depth, normals, ``alone``: identical work on both sides) trained
   one after the other in one process vs as two actors on two single-threaded worker processes of a
   LocalCluster; ratio of aggregate steps/s (target >= 1.7 on >= 2 free cores). Chunks of the two
   alternate (one process, two workers, one process, ...) and the figure is the median of the per-round
   ratios, as in 1: a single pair of 200-step windows measured 1.63x to 1.84x in six runs on one idle
   machine (2026-11-29), so one pair could not decide a 1.7x target.
3. **exchange** — the same two tasks ``collective`` (depth_normals) on the cluster: time spent on the
   training thread publishing (predict + compact) as a share of step time (target <= 5%), and the
   bytes/s each consumer fetched.

Every process uses one torch thread and the same glibc allocator settings (:func:`taskology.runtime.tune_malloc`;
a Dask nanny's default ``MALLOC_TRIM_THRESHOLD_`` made worker steps 1.6x slower), so the parallel ratio
measures processes, not intra-op threads or allocators:
the driver sets ``torch.set_num_threads(1)``, workers get ``threads_per_worker=1`` (``OMP_NUM_THREADS=1``
and ``torch.set_num_threads(1)`` by the worker plugin); the thread counts actually seen (driver main
thread, a fresh driver thread like the engine's training thread, each worker) are recorded in
``figures.torch_threads``.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from taskology.bench import BenchResult, sim_world, target


def _config(root: Path, steps: int, mode: str) -> Any:
    from taskology.config import load_config

    over = [f"data.root={root}", "data.test_sequences=1", "data.mediator_fraction=0.4", f"train.steps={steps}",
            "train.mediator_batch_size=2", "train.device=cpu", "train.checkpoint_every_steps=0",
            "train.checkpoint_every_s=0", "train.seeds=[0]", f"train.mode={mode}", "train.eval_every=0",
            "tasks.segmentation.enabled=false", "tasks.motion.enabled=false", "exchange.publish_every_steps=10",
            "exchange.refresh_every_s=1.0", "relations.depth_normals.enabled=true"]
    for t in ("depth", "normals"):
        over += [f"tasks.{t}.width=8", f"tasks.{t}.batch_size=4", f"tasks.{t}.label_fraction=1.0"]
    return load_config(None, over)


def _runner(cfg: Any, task: str, run_dir: Path, collective: bool) -> Any:
    from taskology.engine.peers import InProcessPeerView
    from taskology.engine.runner import TaskRunner

    return TaskRunner(task_name=task, config=cfg, data_root=Path(cfg.data.root), run_dir=run_dir,
                      peer_view=InProcessPeerView(), seed=0, device="cpu", collective=collective)


def _torch_threads() -> int:
    """Intra-op torch threads of the calling thread (run on workers by ``client.run``)."""
    return int(torch.get_num_threads())


def _threads_in_new_thread() -> int:
    """Torch threads seen by a fresh Python thread (where the engine's training thread runs)."""
    seen: list[int] = []
    t = threading.Thread(target=lambda: seen.append(_torch_threads()))
    t.start()
    t.join()
    return seen[0]


def _engine_vs_bare(bare_runner: Any, actor: Any, rounds: int, steps: int, warmup: int) -> dict[str, Any]:
    """Alternate ``rounds`` chunks of ``steps`` steps: the bare loop on ``bare_runner``, then the actor
    (both built with the same seed: same initial model, same batch sequence from the same loader);
    each chunk's rate, and the median of the per-round ratios (alternating cancels slow load drifts)."""
    bare_rates, engine_rates = [], []
    _bare_steps_per_s(bare_runner, 1, warmup - 1)
    actor.start(warmup)
    _wait_done(actor)
    target = warmup
    for _ in range(rounds):
        bare_rates.append(_bare_steps_per_s(bare_runner, steps, 0))
        target += steps
        start = time.perf_counter()
        actor.start(target)
        _wait_done(actor)
        engine_rates.append(steps / (time.perf_counter() - start))
    actor.stop()
    ratios = sorted(e / b for e, b in zip(engine_rates, bare_rates))
    return {"bare_steps_per_s": bare_rates, "engine_steps_per_s": engine_rates,
            "ratio_median": ratios[len(ratios) // 2], "ratios": ratios}


def _wait_done(actor: Any) -> None:
    """Block until the actor's training thread ends (a join: polling would quantise short chunks)."""
    actor.join()


def _bare_steps_per_s(runner: Any, steps: int, warmup: int) -> float:
    from taskology.engine.batches import to_device

    model, opt, task = runner.model, runner.optimizer, runner.task
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        batch = to_device(runner.train_stream.next_batch(), runner.device)
        loss = sum(task.supervised_loss(task.forward(model, batch), batch).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - start)


def _cluster_run(session: Any, cfg: Any, run_dir: Path, warmup: int, steps: int, rounds: int = 1,
                 before_each: Callable[[], None] | None = None) -> tuple[list[float], dict[str, Any]]:
    """Aggregate steps/s of the two task actors in each of ``rounds`` windows of ``steps`` steps after
    ``warmup`` (``before_each()`` runs in the driver before each window, the actors idle), and the summary
    of the last window with each actor's exchange share over all of them."""
    from taskology.cluster.supervision import RestartPolicy
    from taskology.engine.actor import TaskActor
    from taskology.engine.distributed import exchange_policy_from_config
    from taskology.engine.supervisor import ActorSlot, Supervisor
    from taskology.engine.runner import TaskRunner

    slots = [ActorSlot(name=t, cls=TaskActor, kwargs=dict(
        task_name=t, runner_cls=TaskRunner, run_dir=str(run_dir), policy=exchange_policy_from_config(cfg.exchange),
        runner_kwargs={"task_name": t, "config": cfg, "data_root": Path(cfg.data.root), "run_dir": run_dir,
                       "seed": 0, "device": "cpu", "collective": cfg.train.mode == "collective"},
        checkpoint_every_steps=None, checkpoint_every_s=None, log_every=0)) for t in ("depth", "normals")]
    sup = Supervisor(session, slots, target_steps=warmup, policy=RestartPolicy(max_restarts=2), run_dir=run_dir)
    sup.start()
    warm = sup.run(timeout_s=600)  # warm-up: both at `warmup`, then stopped
    rates: list[float] = []
    per_task: dict[str, list[float]] = {"depth": [], "normals": []}
    for k in range(rounds):
        if before_each is not None:
            before_each()
        begin, end = warmup + k * steps, warmup + (k + 1) * steps
        sup.target_steps = end
        for slot in sup.slots.values():
            slot.handle.start(end).result()
        summary = sup.run(timeout_s=1200)
        # the training period as the workers saw it (one machine, one clock): from the first start() to the
        # last step of the last actor; the driver's polling and RPC latencies are not part of the throughput
        windows = [summary["actors"][t]["status"]["window"] for t in ("depth", "normals")]
        if any(w["ended"] is None or w["from_step"] != begin for w in windows):
            raise RuntimeError(f"scaling: an actor did not train {begin} -> {end} in one go: {windows}")
        rates.append(2 * steps / (max(w["ended"] for w in windows) - min(w["started"] for w in windows)))
        for t, w in zip(("depth", "normals"), windows):
            per_task[t].append(steps / (w["ended"] - w["started"]))
    # exchange share over the measured windows only (the warm-up's first publication pays one-time costs)
    for t in ("depth", "normals"):
        summary["actors"][t]["window_steps_per_s"] = per_task[t]
        before, after = warm["actors"][t]["status"], summary["actors"][t]["status"]
        summary["actors"][t]["window_share"] = (
            (after["exchange_s_on_training_thread"] - before["exchange_s_on_training_thread"])
            / max(after["train_s"] - before["train_s"], 1e-9))
    return rates, summary


def run(quick: bool) -> BenchResult:
    from taskology.cluster.session import ClusterSpec, open_cluster
    from taskology.engine.actor import TaskActor
    from taskology.engine.exchange import ExchangePolicy

    from taskology.runtime import tune_malloc

    torch.set_num_threads(1)
    tune_malloc()  # what the worker plugin does in each worker: both sides allocate alike
    hw = (32, 96)
    steps, warmup = (20, 3) if quick else (200, 10)
    rounds, chunk = (3, 10) if quick else (7, 30)
    parallel_rounds, parallel_chunk = (2, 10) if quick else (5, 100)
    threads = {"driver_main": _torch_threads(), "driver_new_thread": _threads_in_new_thread()}
    with tempfile.TemporaryDirectory(prefix="taskology-bench-scaling-") as tmp:
        tmp_path = Path(tmp)
        root = sim_world(tmp_path / "sim", hw, 5, 8)
        alone = _config(root, warmup + steps, "alone")

        # 1. engine vs bare loop (one process, one task; same model init, same batches, same loader)
        actor = TaskActor(task_name="depth", runner_cls=type(_runner(alone, "depth", tmp_path / "x", False)),
                          runner_kwargs={"task_name": "depth", "config": alone, "data_root": root,
                                         "run_dir": tmp_path / "engine", "seed": 0, "device": "cpu",
                                         "collective": False},
                          run_dir=str(tmp_path / "engine"), policy=ExchangePolicy(), checkpoint_every_steps=None,
                          checkpoint_every_s=None, log_every=0)
        versus = _engine_vs_bare(_runner(alone, "depth", tmp_path / "bare", False), actor, rounds, chunk, warmup)
        bare, engine = float(np.median(versus["bare_steps_per_s"])), float(np.median(versus["engine_steps_per_s"]))
        engine_over_bare = versus["ratio_median"]

        # 2. two tasks one after the other in one process (2a) and as two actors on two worker processes
        # (2b), in alternating chunks: each 2b window follows a 2a chunk of the same steps
        runners = [_runner(alone, t, tmp_path / "serial", False) for t in ("depth", "normals")]
        for r in runners:
            _bare_steps_per_s(r, 1, warmup - 1)
        serial_rates: list[float] = []

        def serial_chunk() -> None:
            start = time.perf_counter()
            for _ in range(parallel_chunk):
                for r in runners:
                    r.train_step()
            serial_rates.append(2 * parallel_chunk / (time.perf_counter() - start))

        with open_cluster(ClusterSpec(address="local", n_workers=2, threads_per_worker=1, dashboard=False,
                                      spare_workers=0), n_actors=2) as session:
            threads["workers"] = sorted(session.client.run(_torch_threads).values())
            parallel_rates, par_summary = _cluster_run(
                session, _config(root, warmup + parallel_rounds * parallel_chunk, "alone"), tmp_path / "parallel",
                warmup, parallel_chunk, parallel_rounds, serial_chunk)
            per_worker = {t: float(np.median(par_summary["actors"][t]["window_steps_per_s"]))
                          for t in ("depth", "normals")}
            # 3. exchange: one window of `steps` steps, collective
            [collective_rate], summary = _cluster_run(session, _config(root, warmup + steps, "collective"),
                                                      tmp_path / "collective", warmup, steps)
        speedups = sorted(p / s for p, s in zip(parallel_rates, serial_rates))
        speedup = float(np.median(speedups))
        serial, parallel = float(np.median(serial_rates)), float(np.median(parallel_rates))
    statuses = {t: summary["actors"][t]["status"] for t in ("depth", "normals")}
    exchange_share = max(summary["actors"][t]["window_share"] for t in statuses)
    bytes_per_s = {t: s["exchange_bytes_per_s"] for t, s in statuses.items()}
    figures = {"steps": steps, "warmup": warmup, "camera_hw": list(hw), "cores_available": os.cpu_count(),
               "load_average_1min": os.getloadavg()[0],
               "bare_loop_steps_per_s": bare, "engine_steps_per_s": engine, "engine_over_bare": engine_over_bare,
               "engine_vs_bare_rounds": versus, "torch_threads": threads,
               "one_process_two_tasks_steps_per_s": serial, "two_workers_two_tasks_steps_per_s": parallel,
               "parallel_speedup": speedup, "parallel_rounds": {"steps_per_task": parallel_chunk,
                                                                "one_process_steps_per_s": serial_rates,
                                                                "two_workers_steps_per_s": parallel_rates,
                                                                "speedups_sorted": speedups},
               "two_workers_per_task_steps_per_s": per_worker, "collective_two_workers_steps_per_s": collective_rate,
               "exchange_share_of_step_time": exchange_share, "exchange_bytes_per_s": bytes_per_s,
               "staleness": {t: s["staleness"] for t, s in statuses.items()},
               "restarts_in_collective_run": {t: summary["actors"][t]["restarts"] for t in statuses}}
    table = "\n".join([
        "| measurement | value |", "| --- | --- |",
        f"| bare PyTorch loop, depth | {bare:.2f} steps/s |",
        f"| TaskActor (engine), depth | {engine:.2f} steps/s ({engine_over_bare:.3f}x bare, median of {rounds} "
        f"alternating rounds) |",
        f"| 2 tasks, one process | {serial:.2f} steps/s (median of {parallel_rounds} chunks of {parallel_chunk} "
        "steps per task) |",
        f"| 2 tasks, 2 worker processes | {parallel:.2f} steps/s ({speedup:.2f}x, median of {parallel_rounds} "
        f"alternating rounds, range {speedups[0]:.2f}-{speedups[-1]:.2f}x; per worker "
        + ", ".join(f"{t} {r:.1f}" for t, r in per_worker.items()) + ") |",
        f"| 2 tasks collective, 2 workers | {collective_rate:.2f} steps/s |",
        f"| publishing on the training thread | {100 * exchange_share:.2f}% of step time |",
        "| exchange fetched | " + ", ".join(f"{t} {b / 1e3:.1f} kB/s" for t, b in bytes_per_s.items()) + " |"])
    return BenchResult(
        figures=figures, table=table,
        targets={"engine_over_bare": target(engine_over_bare, 0.95),
                 "parallel_speedup": target(speedup, 1.7),
                 "exchange_share_of_step_time": target(exchange_share, 0.05, higher_is_better=False)},
        notes=("Reference numbers are measured in the same run. Timings on a shared machine are noisy: "
               f"1-minute load average at the end was {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
               "the parallel speedup needs two otherwise idle cores."))
