"""What a report reads from run directories: the arms (alone / collective), their held-out metrics,
logged scalars and staleness.

A report is made for either

- one training run (``RUN_DIR/config.yaml``, the layout of :mod:`taskology.engine.command`): one arm,
  named by its ``train.mode``; or
- a comparison directory holding one run per arm, ``RUN_DIR/alone/`` and ``RUN_DIR/collective/``
  (the layout ``taskology demo`` writes).

Per arm, the files read (all optional; what is missing becomes a note in the report):

- held-out metrics: ``eval_test.json`` (``{seed: {task: {metric: value}}}``, from ``taskology eval``),
  else ``metrics.json`` (``{"tasks": {task: {metric: value}}, "steps": N}``, written by the in-process
  run), else ``seed_<s>/metrics.json`` for multi-seed runs. Several seeds are averaged.
- scalars: ``logs/<task>.jsonl`` (in-process run), else TensorBoard event files in
  ``tensorboard/<task>/`` (the distributed run writes only those).
- ``manifest.json``: written by the distributed supervisor; its presence marks a distributed run.

Example:
    >>> # arms = find_arms(Path("runs/demo")); arms["collective"].metrics["depth"]["abs_rel"]
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taskology.errors import DataError

ARM_NAMES: tuple[str, ...] = ("alone", "collective")

#: a logged scalar series: (steps (N,) int64 ascending, values (N,) float64).
Series = tuple[np.ndarray, np.ndarray]


@dataclass
class Arm:
    """One trained arm of a report.

    Attributes:
        name: ``"alone"`` or ``"collective"`` (the run's ``train.mode``).
        run_dir: the run directory.
        config: the run's resolved experiment config.
        metrics: task -> metric -> value on the held-out test split (seed mean); empty if not evaluated.
        metrics_source: the file(s) the metrics came from (for the report), or ``""``.
        seeds: number of seeds averaged.
        distributed: whether the run was made on a Dask cluster (``manifest.json`` present).
    """

    name: str
    run_dir: Path
    config: Any
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    metrics_source: str = ""
    seeds: int = 0
    distributed: bool = False

    @property
    def tasks(self) -> list[str]:
        return [name for name, entry in self.config.tasks.items() if entry.enabled]

    def seed_dirs(self) -> list[Path]:
        """The run directory of each seed (the run dir itself for one seed)."""
        seeds = list(self.config.train.seeds)
        if len(seeds) == 1:
            return [self.run_dir]
        return [self.run_dir / f"seed_{int(s)}" for s in seeds]


def _load_arm(run_dir: Path) -> Arm:
    from taskology.config import load_config

    config = load_config(run_dir / "config.yaml")
    arm = Arm(name=str(config.train.mode), run_dir=run_dir, config=config,
              distributed=(run_dir / "manifest.json").is_file())
    arm.metrics, arm.metrics_source, arm.seeds = read_test_metrics(arm)
    return arm


def find_arms(run_dir: Path) -> dict[str, Arm]:
    """The arms of ``run_dir`` by name (see the module docstring); DataError if it is not a run dir."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such directory; expected a run directory of `taskology train` or "
                        "`taskology demo`")
    if (run_dir / "config.yaml").is_file():
        arm = _load_arm(run_dir)
        return {arm.name: arm}
    arms: dict[str, Arm] = {}
    for name in ARM_NAMES:
        if (run_dir / name / "config.yaml").is_file():
            arm = _load_arm(run_dir / name)
            if arm.name != name:
                raise DataError(f"{run_dir / name}: its config.yaml has train.mode {arm.name!r}, expected {name!r}")
            arms[name] = arm
    if not arms:
        raise DataError(f"{run_dir}: not a run directory; expected config.yaml (a `taskology train` run) or "
                        "alone/ and collective/ run directories (a `taskology demo` run)")
    return arms


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable JSON ({type(exc).__name__}: {exc})") from None


def _mean_over_seeds(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    tasks = sorted({t for record in per_seed for t in record})
    for task in tasks:
        names = sorted({m for record in per_seed for m in record.get(task, {})})
        out[task] = {}
        for name in names:
            values = [float(r[task][name]) for r in per_seed if name in r.get(task, {})
                      and r[task][name] is not None]
            out[task][name] = float(np.mean(values)) if values else float("nan")
    return out


def read_test_metrics(arm: Arm) -> tuple[dict[str, dict[str, float]], str, int]:
    """(task -> metric -> seed-mean value, source description, seeds) of ``arm``'s held-out test metrics."""
    evaluated = arm.run_dir / "eval_test.json"
    if evaluated.is_file():
        record = _read_json(evaluated)
        per_seed = [v for v in record.values() if isinstance(v, dict)]
        return _mean_over_seeds(per_seed), evaluated.name, len(per_seed)
    per_seed = []
    for seed_dir in arm.seed_dirs():
        path = seed_dir / "metrics.json"
        if path.is_file():
            record = _read_json(path)
            tasks = {t: {**m, "step": float(record.get("steps", math.nan))} for t, m in record.get("tasks", {}).items()}
            per_seed.append(tasks)
    if per_seed:
        return _mean_over_seeds(per_seed), "metrics.json", len(per_seed)
    return {}, "", 0


def _deduplicated(records: list[tuple[int, dict[str, Any]]]) -> dict[str, Series]:
    """Series per tag; a step logged twice (a resumed run) keeps its last value."""
    by_tag: dict[str, dict[int, float]] = {}
    for step, scalars in records:
        for tag, value in scalars.items():
            if tag in ("step", "time") or value is None:
                continue
            by_tag.setdefault(tag, {})[int(step)] = float(value)
    out: dict[str, Series] = {}
    for tag, points in by_tag.items():
        steps = np.array(sorted(points), dtype=np.int64)
        out[tag] = (steps, np.array([points[int(s)] for s in steps], dtype=np.float64))
    return out


def read_tensorboard_scalars(folder: Path) -> dict[str, Series]:
    """Every scalar tag of the TensorBoard event files in ``folder`` (empty if there are none)."""
    if not folder.is_dir() or not any(folder.glob("events.out.tfevents.*")):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    records: list[tuple[int, dict[str, Any]]] = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            records += [(e.step, {tag: e.value}) for e in accumulator.Scalars(tag)]
    return _deduplicated(records)


def read_task_scalars(run_dir: Path, task: str) -> dict[str, Series]:
    """Logged scalars of ``task`` in ``run_dir``: ``logs/<task>.jsonl``, else TensorBoard events."""
    from taskology.engine.logbook import read_log

    jsonl = Path(run_dir) / "logs" / f"{task}.jsonl"
    if jsonl.is_file():
        return _deduplicated([(int(r["step"]), r) for r in read_log(jsonl) if "step" in r])
    return read_tensorboard_scalars(Path(run_dir) / "tensorboard" / task)


def staleness_samples(scalars: dict[str, Series]) -> tuple[np.ndarray, np.ndarray]:
    """Per-step mean staleness of the peer predictions a task used, at its logged steps.

    Returns ``(steps_behind (N,), seconds_old (N,))`` from the runner's ``staleness/steps_mean`` and
    ``staleness/seconds_mean`` scalars, keeping logged steps where the task used any peer prediction
    (a step that used none logs 0 for both and says nothing about freshness).
    """
    steps = scalars.get("staleness/steps_mean")
    seconds = scalars.get("staleness/seconds_mean")
    if steps is None or seconds is None:
        return np.zeros(0), np.zeros(0)
    common = np.intersect1d(steps[0], seconds[0])
    s = steps[1][np.searchsorted(steps[0], common)]
    t = seconds[1][np.searchsorted(seconds[0], common)]
    used = (s > 0) | (t > 0)
    return s[used], t[used]


def relation_usage(scalars: dict[str, Series]) -> dict[str, tuple[int, int]]:
    """Per relation, ``(used, skipped)``: logged steps at which the task evaluated the relation
    (``consistency/<name>``) or skipped it for lack of a peer prediction (``skipped/<name>``).

    Example:
        >>> s = {"consistency/photometric": (np.array([10, 20]), np.array([0.1, 0.2])),
        ...      "skipped/photometric": (np.array([30]), np.array([1.0])), "consistency/scale": (np.array([10]), np.array([1.0]))}
        >>> relation_usage(s)
        {'photometric': (2, 1)}
    """
    names = {k.split("/", 1)[1] for k in scalars if k.startswith(("consistency/", "skipped/"))} - {"scale"}
    return {name: (len(scalars.get(f"consistency/{name}", ((),))[0]), len(scalars.get(f"skipped/{name}", ((),))[0]))
            for name in sorted(names)}

