"""Does a task's label-exact augmentation help it alone? Trained alone with and without
``tasks.<task>.augment``, at the given label fractions and seeds, evaluated on the **validation** split.

Only the named task is trained (the others are disabled; alone, a task never reads them, so its figures are
those of the benchmark's alone arm). Two runs at a time.

Usage:
    python scripts/augment_val.py configs/consistency-cpu.yaml segmentation OUT.json [--labels 0.02 0.1 1.0]
        [--seeds 0 1]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from taskology.atomic import write_json_atomic
    from taskology.bench.consistency import HEADLINE
    from taskology.bench.receivers import validation_runs
    from taskology.config import load_config
    from taskology.errors import TaskologyError

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("preset", type=Path)
    parser.add_argument("task")
    parser.add_argument("out", type=Path)
    parser.add_argument("--labels", type=float, nargs="+", default=[0.02, 0.1, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args(argv)
    try:
        preset = load_config(args.preset)
        if args.task not in preset.tasks:
            raise TaskologyError(f"{args.preset}: no task {args.task!r}")
        only = tuple(f"tasks.{t}.enabled=false" for t in preset.tasks if t != args.task)
        load_config(args.preset, [*only, f"tasks.{args.task}.augment=true"])  # refused here if it has none
        metric, higher = HEADLINE[args.task]
        results: dict[str, dict[str, dict[str, float]]] = {}
        for seed in args.seeds:
            jobs = [(fr, "alone", name, only + extra) for fr in args.labels
                    for name, extra in (("plain", ()), ("augment", (f"tasks.{args.task}.augment=true",)))]
            _, by_fr, _, _ = validation_runs(args.preset, False, jobs, (f"train.seeds=[{seed}]",))
            results[str(seed)] = {fr: {name: runs[name][args.task] for name in runs} for fr, runs in by_fr.items()}
    except TaskologyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{args.task} {metric} on validation, alone, plain -> augment ({'higher' if higher else 'lower'} is better)")
    for fr in map(str, args.labels):
        cells = []
        for seed in map(str, args.seeds):
            plain, aug = results[seed][fr]["plain"][metric], results[seed][fr]["augment"][metric]
            gain = (aug / plain - 1) * (1 if higher else -1)
            cells.append(f"seed {seed}: {plain:.4f} -> {aug:.4f} ({100 * gain:+.1f} %)")
        print(f"  labels {float(fr):.0%}: " + "; ".join(cells))
    write_json_atomic(args.out, {"preset": str(args.preset), "task": args.task, "split": "val",
                                 "labels": args.labels, "seeds": args.seeds, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
