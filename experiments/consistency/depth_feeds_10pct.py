"""Diagnostic: collective runs of the `consistency` preset at 10 % labels with depth's factor and feeds varied (validation, run dirs kept).
Run: python experiments/consistency/depth_feeds_10pct.py OUT SEED VARIANT [VARIANT ...] [--set KEY=VALUE ...]

VARIANT is one of :data:`VARIANTS` (``preset``, ``depth1``, ``depth1-scalefree``, ``depth1-nophoto``,
``depth1-nodn``). Each run is the benchmark's run (:func:`taskology.experiment.run_arm`), two at a time, one
torch thread each; OUT/<variant>-<seed>/ keeps the run (its checkpoints feed ``depth_scale_diagnosis.py``) and
OUT/<variant>-<seed>.json its validation metrics and seconds. ``--set`` changes the preset for every run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PRESET = "consistency"
DEPTH_1 = "tasks.depth.relation_weight_by_labels=[[0.02,1.0],[0.1,1.0],[1.0,0.0]]"
VARIANTS: dict[str, tuple[str, ...]] = {
    "preset": (),
    "depth1": (DEPTH_1,),
    "depth1-scalefree": (DEPTH_1, "relations.photometric.options.depth_scale_gradient=0"),
    "depth1-nophoto": (DEPTH_1, "relations.photometric.receivers.depth=0"),
    "depth1-nodn": (DEPTH_1, "relations.depth_normals.receivers.depth=0"),
}


def main(argv: list[str] | None = None) -> int:
    from consistency_arm import run_one

    from taskology.bench.parallel import map_in_processes
    from taskology.config import load_config
    from taskology.errors import TaskologyError
    from taskology.experiment import ensure_world

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("seed", type=int)
    parser.add_argument("variants", nargs="+", choices=sorted(VARIANTS), metavar="VARIANT")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        for name in args.variants:  # a bad override fails here, before any training
            load_config(PRESET, [*args.overrides, *VARIANTS[name]])
        root = ensure_world(load_config(PRESET, list(args.overrides)))
    except TaskologyError as exc:
        print(f"depth_feeds_10pct: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = {n: (PRESET, 0.1, "collective", args.seed, str(args.out / f"{n}-{args.seed}"), str(root),
                (*args.overrides, *VARIANTS[n]), "val") for n in args.variants}
    t0 = time.time()
    for name, (tasks, took) in map_in_processes(run_one, jobs, min(2, len(jobs))):
        print(name, args.seed, f"{took:.0f}s ({time.time() - t0:.0f} s elapsed)", json.dumps(tasks), flush=True)
        (args.out / f"{name}-{args.seed}.json").write_text(json.dumps({"tasks": tasks, "seconds": took}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
