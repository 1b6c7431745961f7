"""The in-process run: every task's :class:`TaskRunner` in one process, stepped round-robin.

In mode ``collective`` peers' predictions are fresh (an :class:`InProcessPeerView` runs the peers'
current models on each mediator batch); in mode ``alone`` no relation is used. This is the reference
the distributed engine reproduces with the very same runner code.

Run directory layout::

    config.yaml                     resolved experiment config
    checkpoints/<task>/step_XXXXXXXX.pt   (taskology.engine.checkpoints: the distributed engine's layout)
    logs/<task>.jsonl, tensorboard/<task>/
    metrics.json                    {"seed", "mode", "steps", "split", "world", "tasks": {task: {metric: value}}}
                                    ("world": the data root's world digest, taskology.sim.cache; None
                                    where the root has no world record)
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping

from taskology.atomic import write_json_atomic
from taskology.engine.checkpoints import checkpoint_path, checkpoint_steps, latest_common_step, load_checkpoint
from taskology.engine.logbook import TaskLog
from taskology.engine.peers import InProcessPeerView
from taskology.engine.registry import Registry
from taskology.engine.runner import TaskRunner
from taskology.engine.task_data import TaskData
from taskology.sim.cache import recorded_world


def build_runners(config: Any, run_dir: Path, *, seed: int, device: str, collective: bool,
                  data: Mapping[str, TaskData] | None = None, resume_step: int | None = None,
                  registry: Registry | None = None) -> tuple[dict[str, TaskRunner], InProcessPeerView]:
    """One runner per enabled task, wired to one in-process peer view (peers only when collective)."""
    registry = registry if registry is not None else Registry.current()
    view = InProcessPeerView()
    runners: dict[str, TaskRunner] = {}
    for task in config.enabled_tasks():
        kwargs = dict(task_name=task, config=config, data_root=Path(config.data.root), run_dir=Path(run_dir),
                      peer_view=view, seed=seed, device=device, collective=collective,
                      data=None if data is None else data[task], registry=registry)
        if resume_step is not None:
            runners[task] = TaskRunner.restore(checkpoint_path(run_dir, task, resume_step), **kwargs)
        else:
            runners[task] = TaskRunner(**kwargs)
        if collective:
            view.register(task, runners[task])
    return runners, view


def run_collective(config: Any, run_dir: Path, *, seed: int, resume: bool = False,
                   data: Mapping[str, TaskData] | None = None, tensorboard: bool = True,
                   on_log: Callable[[int, dict[str, dict[str, float]]], None] | None = None,
                   eval_split: str = "test", registry: Registry | None = None) -> dict[str, Any]:
    """Train every enabled task for ``config.train.steps`` steps in this process; evaluate on ``eval_split``.

    Args:
        config: resolved experiment config (``train.mode`` picks alone / collective).
        run_dir: the run directory (see the module docstring).
        seed: seed of every runner (model init, data order).
        resume: continue from the newest step all tasks have a checkpoint for.
        data: per-task datasets instead of opening ``config.data.root`` (tests).
        tensorboard: also write TensorBoard scalars.
        on_log: called with (step, {task: scalars}) every ``train.log_every`` steps.
        eval_split: the split evaluated (periodically and at the end): ``test``, or ``val`` when the
            run is one of several compared to make a choice (the test split stays untouched).
        registry: the tasks and relations (default: :meth:`Registry.current`).

    Returns:
        The ``metrics.json`` record.
    """
    run_dir = Path(run_dir)
    collective = config.train.mode == "collective"
    tasks = config.enabled_tasks()
    start = latest_common_step(run_dir, tasks) if resume else None
    runners, _ = build_runners(config, run_dir, seed=seed, device=config.train.device, collective=collective,
                               data=data, resume_step=start, registry=registry)
    logs = {t: TaskLog(run_dir, t, tensorboard=tensorboard) for t in tasks}
    every_steps = int(config.train.checkpoint_every_steps)
    every_s = float(config.train.checkpoint_every_s)
    last_ckpt_time = time.time()
    step = start or 0
    try:
        while step < int(config.train.steps):
            scalars = {t: runners[t].train_step() for t in tasks}
            step += 1
            if step % int(config.train.log_every) == 0 or step == int(config.train.steps):
                for t in tasks:
                    logs[t].log(step, scalars[t])
                if on_log is not None:
                    on_log(step, scalars)
            if int(config.train.eval_every) and step % int(config.train.eval_every) == 0:
                for t in tasks:
                    logs[t].log(step, {f"eval/{k}": v for k, v in runners[t].evaluate(eval_split).items()})
            due = (every_steps and step % every_steps == 0) or (every_s and time.time() - last_ckpt_time >= every_s)
            if due:
                for t in tasks:
                    runners[t].save_checkpoint(checkpoint_path(run_dir, t, step))
                last_ckpt_time = time.time()
        for t in tasks:
            if not checkpoint_path(run_dir, t, step).exists():
                runners[t].save_checkpoint(checkpoint_path(run_dir, t, step))
        record = {"seed": seed, "mode": config.train.mode, "steps": step, "split": eval_split,
                  "world": None if data is not None else recorded_world(config.data.root),
                  "tasks": with_tracks({t: runners[t].evaluate(eval_split) for t in tasks}, runners, eval_split,
                                       run_dir)}
    finally:
        for log in logs.values():
            log.close()
    write_json_atomic(run_dir / "metrics.json", record)
    return record


def evaluate_run(config: Any, run_dir: Path, *, seed: int, split: str = "test") -> dict[str, dict[str, float]]:
    """Metrics of the newest checkpoint of every enabled task in ``run_dir`` on ``split``."""
    results: dict[str, dict[str, float]] = {}
    runners: dict[str, TaskRunner] = {}
    for task in config.enabled_tasks():
        steps = checkpoint_steps(run_dir, task)
        if not steps:
            continue
        runner = TaskRunner(task_name=task, config=config, data_root=Path(config.data.root), run_dir=Path(run_dir),
                            peer_view=InProcessPeerView(), seed=seed, device=config.train.device, collective=False)
        runner.load_state_dict(load_checkpoint(checkpoint_path(run_dir, task, steps[-1])))
        results[task] = {"step": float(runner.step), **runner.evaluate(split)}
        runners[task] = runner
    return with_tracks(results, runners, split, run_dir)


def with_tracks(results: dict[str, dict[str, float]], runners: Mapping[str, TaskRunner], split: str,
                run_dir: Path) -> dict[str, dict[str, float]]:
    """``results`` plus, when both LiDAR tasks were evaluated, the sequence-level figures of tracking by detection
    (exact AP, MOTA, IDF1, box motion error: :func:`taskology.engine.tracks.track_split`), whose detections and
    tracks are written to ``run_dir/detections/``."""
    if "detection" not in runners or "tracking" not in runners:
        return results
    from taskology.engine.tracks import track_split

    for task, values in track_split(runners["detection"], runners["tracking"], split, run_dir).items():
        results.setdefault(task, {}).update(values)
    return results
