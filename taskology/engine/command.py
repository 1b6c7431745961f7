"""``taskology train`` and ``taskology eval``: thin shells over the in-process run and the distributed engine.

Example:
    $ taskology train demo train.steps=200 --cluster none --run-dir runs/demo
    $ taskology eval runs/demo
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Mapping, Sequence

from taskology.engine.collective import evaluate_run, run_collective
from taskology.atomic import write_json_atomic
from taskology.errors import ConfigError, DataError

CONFIG_NAME = "config.yaml"


def _seed_dirs(run_dir: Path, seeds: Sequence[int]) -> list[tuple[int, Path]]:
    """One seed trains into the run dir itself; several into ``seed_<s>/`` subdirectories."""
    if len(seeds) == 1:
        return [(int(seeds[0]), run_dir)]
    return [(int(s), run_dir / f"seed_{int(s)}") for s in seeds]


def _check_data_root(root: Path) -> None:
    if not root.is_dir() or not any(root.glob("*.h5")):
        raise DataError(f"data.root {root}: no HDF5 shards found; expected simulated sequences "
                        f"(make them with `taskology sim --out {root}`)")


def _counted(count: int, noun: str, per_actor: Mapping[str, int]) -> str:
    """``"2 restarts (depth 2)"``: a count, its noun in the right number, and who contributed."""
    text = f"{count} {noun}{'' if count == 1 else 's'}"
    named = [f"{name} {n}" for name, n in per_actor.items() if n]
    return text + (f" ({', '.join(named)})" if named else "")


def run_summary_line(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """The last line of a distributed ``taskology train``: steps per task (per seed when there are several)
    and the faults seen: the driver's restarts of lost actors, peer publications dropped on receipt and
    rollbacks after a non-finite loss (``dropped_publications`` / ``rollbacks`` of each actor's status).

    Args:
        summaries: seed -> the supervisor's summary (``target_steps``, ``actors``: name -> ``kind``,
            ``restarts``, ``status``), as :func:`~taskology.engine.distributed.run_distributed` returns.

    Example:
        >>> actors = {"depth": {"kind": "task", "restarts": 1, "status": {"step": 6, "dropped_publications": 2}},
        ...           "normals": {"kind": "task", "restarts": 0, "status": {"step": 6}},
        ...           "sim": {"kind": "sim", "restarts": 0, "status": {}}}
        >>> print(run_summary_line({"0": {"target_steps": 6, "actors": actors}}).replace("; ", ";\\n"))
        train done: depth 6/6 steps, normals 6/6 steps;
        faults seen: 1 restart (depth 1), 2 dropped publications (depth 2), 0 rollbacks
    """
    steps: list[str] = []
    faults: dict[str, dict[str, int]] = {"restart": {}, "dropped publication": {}, "rollback": {}}
    for seed, summary in summaries.items():
        actors = summary.get("actors", {})
        tasks = ", ".join(f"{name} {int(a.get('status', {}).get('step', 0) or 0)}/{summary.get('target_steps')} steps"
                          for name, a in actors.items() if a.get("kind", "task") == "task")
        steps.append(f"seed {seed}: {tasks}" if len(summaries) > 1 else tasks)
        for name, actor in actors.items():
            status = actor.get("status") or {}
            for noun, count in (("restart", actor.get("restarts", 0)),
                                ("dropped publication", status.get("dropped_publications", 0)),
                                ("rollback", status.get("rollbacks", 0))):
                faults[noun][name] = faults[noun].get(name, 0) + int(count or 0)
    seen = ", ".join(_counted(sum(per.values()), noun, per) for noun, per in faults.items())
    return f"train done: {'; '.join(steps)}; faults seen: {seen}"


def train_command(config: Path | None = None, overrides: Sequence[str] = (), cluster: str | None = None,
                  run_dir: Path | None = None, resume: Path | None = None) -> dict[str, Any]:
    """Train the experiment ``config`` (+ dotted ``overrides``); ``resume`` continues a run directory."""
    from taskology.config import apply_overrides, load_config, save_config

    if resume is not None:
        resume = Path(resume)
        saved = resume / CONFIG_NAME
        if not saved.is_file():
            raise ConfigError(f"--resume {resume}: no {CONFIG_NAME} there; "
                              "expected a run directory of `taskology train`")
        if run_dir is not None and Path(run_dir) != resume:
            raise ConfigError(f"--run-dir {run_dir} and --resume {resume} disagree; give one of them")
        cfg = load_config(saved, list(overrides))
        run_dir = resume
    else:
        cfg = load_config(Path(config) if config is not None else None, list(overrides))
        if run_dir is None:
            run_dir = Path("runs") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(run_dir)
    if cluster is not None:
        cfg = apply_overrides(cfg, [f"cluster.address={cluster}"])
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / CONFIG_NAME)
    address = cfg.cluster.address
    if address in ("none", "local"):  # the data this machine reads (remote workers read their own mount)
        _check_data_root(Path(cfg.data.root))
    if address != "none":
        from taskology.engine.distributed import run_distributed

        summaries = run_distributed(cfg, run_dir, resume is not None, with_sim=bool(cfg.exchange.live_mediator))
        print(run_summary_line(summaries), flush=True)
        return summaries
    records = {}
    for seed, seed_dir in _seed_dirs(run_dir, cfg.train.seeds):
        def show(step: int, scalars: dict[str, dict[str, float]], seed: int = seed) -> None:
            parts = [f"{t} {s['loss/total']:.4f}" for t, s in scalars.items()]
            print(f"seed {seed} step {step}: " + ", ".join(parts), flush=True)

        records[str(seed)] = run_collective(cfg, seed_dir, seed=seed, resume=resume is not None, on_log=show)
    steps = "; ".join((f"seed {seed}: " if len(records) > 1 else "")
                      + ", ".join(f"{task} {record['steps']}/{cfg.train.steps} steps" for task in record["tasks"])
                      for seed, record in records.items())
    print(f"train done: {steps} (in-process: no actors, no exchange)", flush=True)
    return records


def eval_command(run_dir: Path, split: str = "test") -> dict[str, Any]:
    """Evaluate the newest checkpoints of ``run_dir`` on ``split``; print and write ``eval_<split>.json``."""
    from taskology.config import load_config

    run_dir = Path(run_dir)
    saved = run_dir / CONFIG_NAME
    if not saved.is_file():
        raise ConfigError(f"{run_dir}: no {CONFIG_NAME}; expected a run directory of `taskology train`")
    cfg = load_config(saved)
    results: dict[str, Any] = {}
    for seed, seed_dir in _seed_dirs(run_dir, cfg.train.seeds):
        metrics = evaluate_run(cfg, seed_dir, seed=seed, split=split)
        if not metrics:
            raise DataError(f"{seed_dir}: no checkpoints found under checkpoints/<task>/")
        results[str(seed)] = metrics
        for task, values in metrics.items():
            print(f"seed {seed} {task}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()), flush=True)
    write_json_atomic(run_dir / f"eval_{split}.json", results)
    return results
