"""Train one arm of `taskology bench consistency` at one label fraction, for some seeds, on the test split.

    python scripts/consistency_arm.py PRESET FRACTION ARM OUT_DIR [--seeds 0 1 2] [--split val] [--set KEY=VALUE ...]

Each run is exactly a run of the benchmark (its own run function, `taskology.bench.consistency._one_run`,
two at a time, one torch thread each); OUT_DIR/<fraction>-<arm>-<seed>/ keeps each run and
OUT_DIR/results.json their test metrics and seconds. For checking a preset change that touches one
fraction only, without retraining the benchmark's other 15 runs (docs/consistency.md, "On the test split").
``--split val`` evaluates on the validation sequences instead (for checking a choice before it is adopted);
``--set`` changes the preset for these runs (as ``taskology bench --set``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from taskology.bench.consistency import ARMS, FRACTIONS, _config, _one_run, ensure_data, run_name
    from taskology.bench.parallel import map_in_processes
    from taskology.atomic import write_json_atomic
    from taskology.errors import TaskologyError
    from taskology.sim.cache import recorded_world

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", type=Path)
    parser.add_argument("fraction", type=float, choices=FRACTIONS)
    parser.add_argument("arm", choices=ARMS)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the preset's train.seeds")
    parser.add_argument("--split", choices=("test", "val"), default="test", help="where the runs are evaluated")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a preset value for these runs (repeatable)")
    args = parser.parse_args(argv)
    if not args.preset.is_file():
        print(f"consistency_arm: no such preset {args.preset}", file=sys.stderr)
        return 2
    try:
        base = _config(False, list(args.overrides), args.preset)
        root = ensure_data(base)
    except TaskologyError as exc:
        print(f"consistency_arm: {exc}", file=sys.stderr)
        return 2
    seeds = args.seeds if args.seeds is not None else list(base.train.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(len(seeds), os.cpu_count() or 1))
    jobs = {s: (str(args.preset), False, str(root), args.fraction, args.arm, s,
                str(args.out / run_name(args.fraction, args.arm, s)), 1, tuple(args.overrides), args.split)
            for s in seeds}
    results: dict[str, dict] = {}
    t0 = time.time()
    for seed, (tasks, seconds) in map_in_processes(_one_run, jobs, workers):
        results[str(seed)] = {"tasks": tasks, "seconds": seconds, "world": recorded_world(root)}
        print(f"seed {seed}: {seconds:.0f} s ({time.time() - t0:.0f} s elapsed)", flush=True)
        write_json_atomic(args.out / "results.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
