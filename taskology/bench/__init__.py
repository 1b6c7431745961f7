"""Benchmarks: ``taskology bench NAME`` writes ``benchmarks/results/NAME.json`` and ``NAME.md``.

A benchmark is a module ``taskology.bench.<name>`` with a function
``run(quick: bool) -> BenchResult``. The harness adds the provenance every result must carry (the
command, date, machine cores, git commit, python/torch/numba versions) and writes both files
atomically. Speed figures are ratios against a named reference measured in the same run.

Example:
    >>> sorted(BENCHMARKS)[:2]
    ['carla-live', 'consistency']
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import importlib.metadata
import inspect
import json
import os
import platform
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from taskology.atomic import write_text_atomic
from taskology.errors import ConfigError

#: benchmark name -> module with ``run(quick, ...) -> BenchResult`` (a plain dict, read by static tools too).
BENCHMARKS: dict[str, str] = {
    "store": "taskology.bench.store",
    "geometry": "taskology.bench.geometry",
    "sim": "taskology.bench.sim",
    "sim-cluster": "taskology.bench.sim_cluster",
    "scaling": "taskology.bench.scaling",
    "exchange": "taskology.bench.exchange",
    "staleness": "taskology.bench.staleness",
    "consistency": "taskology.bench.consistency",
    "device": "taskology.bench.device",
    "lidar": "taskology.bench.lidar",
    "carla-live": "taskology.bench.carla_live",
    "faults": "taskology.bench.faults",
}


@dataclasses.dataclass
class BenchResult:
    """What a benchmark measured.

    Attributes:
        figures: every number, machine-readable (nested dicts of floats/ints/str).
        table: the Markdown table a person reads (copied into the README).
        targets: name -> {"value", "target", "met"} for each acceptance target.
        notes: free text (method, caveats).
    """

    figures: dict[str, Any]
    table: str
    targets: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    notes: str = ""


def target(value: float, goal: float, higher_is_better: bool = True) -> dict[str, Any]:
    """One acceptance target, e.g. ``target(ratio, 0.8)`` -> ``{"value", "target", "met"}``."""
    met = value >= goal if higher_is_better else value <= goal
    return {"value": float(value), "target": f"{'>=' if higher_is_better else '<='} {goal}", "met": bool(met)}


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def provenance(name: str, quick: bool, config: Path | None = None, overrides: Sequence[str] = (),
               steps: int | None = None, runs_dir: Path | None = None, rerun: Sequence[str] = (),
               seeds: int | None = None) -> dict[str, Any]:
    """Command, date, cores, commit and library versions of this run."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).resolve().parent).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, cwd=Path(__file__).resolve().parent).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    versions: dict[str, str] = {"python": platform.python_version()}
    for dist in ("numpy", "torch", "numba", "h5py", "dask", "distributed", "trimesh", "kornia", "shapely"):
        try:  # installed versions, read before the run has imported anything
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "command": f"taskology bench {name}" + (" --quick" if quick else "")
        + (f" --config {config}" if config is not None else "")
        + "".join(f" --set {shlex.quote(o)}" for o in overrides)
        + (f" --steps {steps}" if steps is not None else "")
        + (f" --seeds {seeds}" if seeds is not None else "")
        + (f" --runs-dir {shlex.quote(str(runs_dir))}" if runs_dir is not None else "")
        + "".join(f" --rerun {shlex.quote(r)}" for r in rerun),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "machine": f"{platform.system()} {platform.machine()} {platform.processor() or ''}".strip(),
        "commit": commit + ("+dirty" if dirty else ""),
        "versions": versions,
    }


def _sim_shard(root: str, index: int, hw: tuple[int, int], frames: int) -> int:
    from taskology.sim.generate import generate_shard

    generate_shard(Path(root), seed=0, index=index, frames=frames, camera_hw=hw, lidar_beams=0, overwrite=True)
    return index


def sim_world(root: Path, hw: tuple[int, int], sequences: int, frames: int, processes: int = 1) -> Path:
    """Simulate ``sequences`` shards of ``frames`` frames at ``hw`` (seed 0, no LiDAR) into ``root``: the
    small fixed world of the benchmarks with fixed sizes (scaling, staleness, device). ``processes`` > 1
    simulates shards in that many worker processes (callers need a ``__main__`` guard). Returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    jobs = {index: (str(root), index, tuple(hw), frames) for index in range(sequences)}
    if processes > 1:
        from taskology.bench.parallel import map_in_processes

        for _ in map_in_processes(_sim_shard, jobs, processes):
            pass
    else:
        for args in jobs.values():
            _sim_shard(*args)
    return root


def result_stem(name: str, quick: bool, config: str | Path | None, overrides: Sequence[str] = (),
                steps: int | None = None, seeds: int | None = None) -> str:
    """File stem of a result: the benchmark, the preset it ran when not the default, its overrides,
    ``--steps`` and ``--seeds`` choices (so such a run never replaces the default result), ``-quick``.

    Example:
        >>> result_stem("consistency", False, Path("consistency.yaml"))
        'consistency'
        >>> result_stem("consistency", True, Path("my.yaml"))
        'consistency-my-quick'
        >>> result_stem("consistency", False, Path("consistency-gpu"), ["train.seeds=[1]"])
        'consistency-gpu-train-seeds-1'
        >>> result_stem("staleness", False, None, steps=1600)
        'staleness-steps-1600'
        >>> result_stem("staleness", False, None, seeds=12)
        'staleness-seeds-12'
    """
    stem = name
    if config is not None:
        preset = Path(config).stem
        stem = preset if preset.startswith(name) else f"{name}-{preset}"
    for override in overrides:
        stem += "-" + "-".join(re.findall(r"[A-Za-z0-9_]+", override))
    if steps is not None:
        stem += f"-steps-{steps}"
    if seeds is not None:
        stem += f"-seeds-{seeds}"
    return stem + ("-quick" if quick else "")


def run_benchmark(name: str, quick: bool = False, out_dir: Path = Path("benchmarks/results"),
                  config: Path | None = None, overrides: Sequence[str] = (), steps: int | None = None,
                  runs_dir: Path | None = None, rerun: Sequence[str] = (), seeds: int | None = None) -> dict[str, Any]:
    """Run benchmark ``name`` and write ``out_dir/<stem>.json`` and ``.md`` (see :func:`result_stem`);
    return the JSON. ``config``: a preset for benchmarks that train from one (others refuse it);
    ``overrides``: ``KEY=VALUE`` changes to that preset (checked before anything runs); ``steps``: training
    steps per task for benchmarks with fixed sizes that take it (``staleness``); ``runs_dir``/``rerun``: keep
    runs and reuse finished ones (``consistency``; checked before anything runs); ``seeds``: how many seeds
    a benchmark with its own seed list runs (``staleness``)."""
    if name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {name!r}; available: {', '.join(sorted(BENCHMARKS))}")
    module = importlib.import_module(BENCHMARKS[name])
    takes = inspect.signature(module.run).parameters
    if config is not None:
        if "config" not in takes:
            raise ConfigError(f"benchmark {name!r} takes no --config (it has fixed sizes)")
        from taskology.config.loading import config_path

        config_path(config)  # a file or a shipped preset's name; else one line naming both
    if overrides:
        if "overrides" not in takes:
            raise ConfigError(f"benchmark {name!r} takes no --set")
        from taskology.config import load_config

        # a bad key or value fails here, before hours of training
        load_config(config if config is not None else module.PRESET, list(overrides))
    for option, value, parameter in (("--steps", steps, "steps"), ("--seeds", seeds, "seeds")):
        if value is not None and parameter not in takes:
            raise ConfigError(f"benchmark {name!r} takes no {option}")
    if (runs_dir is not None or rerun) and "runs_dir" not in takes:
        raise ConfigError(f"benchmark {name!r} takes no --runs-dir or --rerun")
    if rerun and runs_dir is None:
        raise ConfigError("--rerun needs --runs-dir: it names runs to train again among those kept there")
    if rerun:
        module.parse_rerun(rerun)  # a bad FRACTION/ARM fails here, before hours of training
    out_dir.mkdir(parents=True, exist_ok=True)
    # before the run: the commit whose code runs, not the one after it
    prov = provenance(name, quick, config, overrides, steps, runs_dir, rerun, seeds)
    kwargs: dict[str, Any] = {"quick": quick}
    if config is not None:
        kwargs["config"] = Path(config)
    if overrides:
        kwargs["overrides"] = tuple(overrides)
    if steps is not None:
        kwargs["steps"] = int(steps)
    if seeds is not None:
        kwargs["seeds"] = int(seeds)
    if runs_dir is not None:
        kwargs["runs_dir"] = Path(runs_dir)
    if rerun:
        kwargs["rerun"] = tuple(rerun)
    if "out_dir" in takes:  # benchmarks that also write pictures
        kwargs["out_dir"] = out_dir
    result: BenchResult = module.run(**kwargs)
    record = {"name": name, **prov, "quick": quick, "figures": result.figures, "targets": result.targets,
              "notes": result.notes}
    stem = result_stem(name, quick, config, overrides, steps, seeds)
    write_text_atomic(out_dir / f"{stem}.json", json.dumps(record, indent=2, default=float) + "\n")
    lines = [f"# Benchmark `{name}`", "",
             f"- command: `{prov['command']}`", f"- date: {prov['date']}", f"- cores: {prov['cores']}",
             f"- commit: {prov['commit']}", f"- versions: {', '.join(f'{k} {v}' for k, v in prov['versions'].items())}",
             "", result.table.rstrip(), ""]
    if result.targets:
        lines += ["| target | value | goal | met |", "| --- | --- | --- | --- |"]
        lines += [f"| {k} | {v['value']:.4g} | {v['target']} | {'yes' if v['met'] else '**no**'} |"
                  for k, v in result.targets.items()]
        lines.append("")
    if result.notes:
        lines += [result.notes.rstrip(), ""]
    write_text_atomic(out_dir / f"{stem}.md", "\n".join(lines))
    print("\n".join(lines))
    return record
