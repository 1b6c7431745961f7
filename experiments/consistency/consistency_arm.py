"""Train one arm of `taskology bench consistency` at one label fraction, for some seeds, on the test split.
Run: python experiments/consistency/consistency_arm.py PRESET FRACTION ARM OUT_DIR [--seeds 0 1 2] [--split val] [--set KEY=VALUE ...]

PRESET is a shipped preset's name (``consistency``) or a YAML file. Each run is exactly a run of the benchmark
(:func:`taskology.experiment.run_arm`, as many at a time as there are cores, one torch thread each);
OUT_DIR/<fraction>-<arm>-<seed>/ keeps each run and OUT_DIR/results.json their metrics, seconds and world. For
checking a preset change that touches one fraction only, without retraining the benchmark's other 15 runs.
``--split val`` evaluates on the validation sequences instead (for checking a choice before it is adopted);
``--set`` changes the preset for these runs (as ``taskology bench --set``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence


def run_one(preset: str, fraction: float, arm: str, seed: int, run_dir: str, root: str, overrides: Sequence[str],
            split: str, threads: int = 1) -> tuple[dict[str, Any], float]:
    """One run (a worker process's job): :func:`taskology.experiment.run_arm` with positional arguments."""
    from taskology.experiment import run_arm

    return run_arm(preset, fraction, arm, seed=seed, run_dir=run_dir, data_root=Path(root), overrides=overrides,
                   split=split, threads=threads)


def main(argv: list[str] | None = None) -> int:
    from taskology.atomic import write_json_atomic
    from taskology.bench.consistency import ARMS, FRACTIONS, run_name
    from taskology.bench.parallel import map_in_processes
    from taskology.config import load_config
    from taskology.errors import TaskologyError
    from taskology.experiment import ensure_world
    from taskology.sim.cache import recorded_world

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", help="a shipped preset's name (consistency) or a YAML file")
    parser.add_argument("fraction", type=float, choices=FRACTIONS)
    parser.add_argument("arm", choices=ARMS)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the preset's train.seeds")
    parser.add_argument("--split", choices=("test", "val"), default="test", help="where the runs are evaluated")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a preset value for these runs (repeatable)")
    args = parser.parse_args(argv)
    try:
        base = load_config(args.preset, list(args.overrides))
        root = ensure_world(base)
    except TaskologyError as exc:
        print(f"consistency_arm: {exc}", file=sys.stderr)
        return 2
    seeds = args.seeds if args.seeds is not None else list(base.train.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(len(seeds), os.cpu_count() or 1))
    jobs = {s: (str(args.preset), args.fraction, args.arm, s, str(args.out / run_name(args.fraction, args.arm, s)),
                str(root), tuple(args.overrides), args.split) for s in seeds}
    results: dict[str, dict] = {}
    t0 = time.time()
    for seed, (tasks, seconds) in map_in_processes(run_one, jobs, workers):
        results[str(seed)] = {"tasks": tasks, "seconds": seconds, "world": recorded_world(root)}
        print(f"seed {seed}: {seconds:.0f} s ({time.time() - t0:.0f} s elapsed)", flush=True)
        write_json_atomic(args.out / "results.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
