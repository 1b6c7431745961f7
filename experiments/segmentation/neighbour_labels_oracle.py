"""How much could propagating a labelled frame's segmentation to its neighbours win? An upper bound, on validation.
Run: python experiments/segmentation/neighbour_labels_oracle.py PRESET OUT [--fraction 0.02] [--k 0 1 2 3] [--seeds 0 1] [--set KEY=VALUE ...]

A relation that carries the labels of a labelled frame to the next frames through the peers' depth and
ego-motion (label propagation, e.g. Zhu et al. 2019) can at best give segmentation the *true* labels of
those frames. This trains segmentation alone, with its labelled frames widened by their +-k train
neighbours (true labels, every pixel), and evaluates it on ``--split`` (validation by default; never
make a choice on test).

PRESET is a shipped preset's name (``consistency``) or a YAML file. Each run is the benchmark's own alone run
(:func:`taskology.experiment.run_arm`, one torch thread, two at a time) with the other tasks disabled; only the
segmentation labels of the split manifest change: for ``k`` > 0 the run reads OUT/data-k<k>/, a data root of
links to the world's shards (and its world record) with the widened ``splits.json`` (:func:`widened_root`).
``k = 0`` is the plain alone run, the reference. OUT/seed<s>-k<k>/ keeps each run and OUT/results.json every
run's metrics. Neighbours are train frames only (the mediator block keeps its role).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

TASK = "segmentation"
OTHERS_OFF = ("tasks.depth.enabled=false", "tasks.normals.enabled=false", "tasks.motion.enabled=false")


def with_neighbour_labels(manifest: Any, task: str, k: int) -> Any:
    """``manifest`` with ``task``'s labelled frames widened by their +-``k`` neighbours among the train frames
    of the same sequence (a new manifest; ``k = 0`` returns it unchanged)."""
    if k == 0:
        return manifest
    widened = {}
    for sequence, frames in manifest.labels[task].items():
        train = set(manifest.train[sequence])
        near = {f + d for f in frames for d in range(-k, k + 1)}
        widened[sequence] = tuple(sorted(set(frames) | (near & train)))
    labels = {**manifest.labels, task: widened}
    out = dataclasses.replace(manifest, labels=labels)
    out.check()
    return out


def widened_root(root: Path, config: Any, k: int, dest: Path) -> Path:
    """A data root ``dest`` reading ``root``'s shards and world record through symbolic links, whose
    ``splits.json`` is ``root``'s manifest for ``config`` (:func:`taskology.engine.task_data.manifest_for`) with
    segmentation's labels widened by +-``k`` (:func:`with_neighbour_labels`). ``k = 0``: ``root`` itself."""
    from taskology.engine.task_data import manifest_for
    from taskology.sim.cache import RECORD

    root = Path(root).resolve()
    if k == 0:
        return root
    manifest = with_neighbour_labels(manifest_for(root, config), TASK, k)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in (*manifest.files.values(), RECORD):
        link = dest / name
        if (root / name).exists() and not link.is_symlink():
            link.symlink_to(root / name)
    dataclasses.replace(manifest, root=dest).save()
    return dest


def run_one(preset: str, root: str, fraction: float, seed: int, run_dir: str, split: str,
            overrides: Sequence[str] = ()) -> dict[str, Any]:
    """One alone run of segmentation on data root ``root`` (a worker process's job): its metrics, seconds and
    how many frames it had labelled."""
    from taskology.engine.task_data import manifest_for
    from taskology.experiment import arm_config, run_arm

    extra = (*OTHERS_OFF, *overrides)
    config = arm_config(preset, fraction, "alone", data_root=Path(root), overrides=extra)   # what run_arm trains
    labelled = sum(len(f) for f in manifest_for(Path(root), config).labels[TASK].values())
    tasks, seconds = run_arm(preset, fraction, "alone", seed=seed, run_dir=run_dir, data_root=Path(root),
                             overrides=extra, split=split)
    return {"metrics": tasks[TASK], "seconds": seconds, "labelled_frames": labelled}


def main(argv: list[str] | None = None) -> int:
    from taskology.atomic import write_json_atomic
    from taskology.bench.parallel import map_in_processes
    from taskology.errors import TaskologyError
    from taskology.experiment import arm_config, ensure_world

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", help="a shipped preset's name (consistency) or a YAML file")
    parser.add_argument("out", type=Path)
    parser.add_argument("--fraction", type=float, default=0.02)
    parser.add_argument("--k", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a preset value for every run (repeatable)")
    args = parser.parse_args(argv)
    if not 0.0 < args.fraction <= 1.0:
        print(f"neighbour_labels_oracle: --fraction must be in (0, 1], found {args.fraction}", file=sys.stderr)
        return 2
    if min(args.k) < 0:
        print(f"neighbour_labels_oracle: --k must be >= 0, found {min(args.k)}", file=sys.stderr)
        return 2
    try:
        config = arm_config(args.preset, args.fraction, "alone", overrides=[*OTHERS_OFF, *args.overrides])
        root = ensure_world(config)
        config = arm_config(args.preset, args.fraction, "alone", data_root=root,
                            overrides=[*OTHERS_OFF, *args.overrides])
        roots = {k: widened_root(root, config, k, args.out / f"data-k{k}") for k in sorted(set(args.k))}
    except TaskologyError as exc:
        print(f"neighbour_labels_oracle: {exc}", file=sys.stderr)
        return 2
    jobs = {(seed, k): (str(args.preset), str(roots[k]), args.fraction, seed, str(args.out / f"seed{seed}-k{k}"),
                        args.split, tuple(args.overrides)) for seed in args.seeds for k in args.k}
    results: dict[str, Any] = {}
    t0 = time.time()
    for (seed, k), record in map_in_processes(run_one, jobs, max(1, min(len(jobs), os.cpu_count() or 1))):
        results.setdefault(str(seed), {})[str(k)] = record
        print(f"seed {seed}, +-{k} neighbours ({record['labelled_frames']} labelled frames): "
              f"mIoU {record['metrics']['miou']:.4f} ({time.time() - t0:.0f} s elapsed)", flush=True)
        write_json_atomic(args.out / "results.json", results)
    for seed, by_k in sorted(results.items()):
        base = by_k.get("0", {}).get("metrics", {}).get("miou")
        row = ", ".join(f"+-{k}: {r['metrics']['miou']:.4f}"
                        + (f" ({100 * (r['metrics']['miou'] / base - 1):+.1f} %)" if base and k != "0" else "")
                        for k, r in sorted(by_k.items(), key=lambda kv: int(kv[0])))
        print(f"seed {seed}: {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
