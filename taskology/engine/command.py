"""``taskology train`` and ``taskology eval``: thin shells over the in-process run and the distributed engine.

Example:
    $ taskology train demo train.steps=200 --cluster none --run-dir runs/demo
    $ taskology eval runs/demo
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Sequence

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
    if address != "none":
        from taskology.engine.distributed import run_distributed

        return run_distributed(cfg, run_dir, resume is not None, with_sim=bool(cfg.exchange.live_mediator))
    _check_data_root(Path(cfg.data.root))
    records = {}
    for seed, seed_dir in _seed_dirs(run_dir, cfg.train.seeds):
        def show(step: int, scalars: dict[str, dict[str, float]], seed: int = seed) -> None:
            parts = [f"{t} {s['loss/total']:.4f}" for t, s in scalars.items()]
            print(f"seed {seed} step {step}: " + ", ".join(parts), flush=True)

        records[str(seed)] = run_collective(cfg, seed_dir, seed=seed, resume=resume is not None, on_log=show)
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
