"""How much could propagating a labelled frame's segmentation to its neighbours win? An upper bound.

A relation that carries the labels of a labelled frame to the next frames through the peers' depth and
ego-motion (label propagation, e.g. Zhu et al. 2019) can at best give segmentation the *true* labels of
those frames. This trains segmentation alone, with its labelled frames widened by their +-k train
neighbours (true labels, every pixel), and evaluates it on ``--split`` (validation by default; never
make a choice on test):

    python scripts/neighbour_labels_oracle.py PRESET OUT [--fraction 0.02] [--k 0 1 2 3] [--seeds 0 1]

Each run is the benchmark's own alone run (``taskology.bench.consistency._one_run``, one torch thread,
two at a time) with the other tasks disabled; only the split manifest's segmentation labels change, in
the worker process. ``k = 0`` is the plain alone run, the reference. OUT/results.json keeps every run's
metrics. Neighbours are train frames only (the mediator block keeps its role).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

TASK = "segmentation"
OTHERS_OFF = ("tasks.depth.enabled=false", "tasks.normals.enabled=false", "tasks.motion.enabled=false")
_PLAIN: dict[str, Any] = {}


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


def _run(preset: str, root: str, fraction: float, seed: int, k: int, run_dir: str, split: str) -> dict[str, Any]:
    import taskology.engine.store_data as store_data
    from taskology.bench.consistency import _arm_config, _one_run

    # a pool process runs several jobs: widen the unpatched manifest, never the previous job's widened one
    plain = _PLAIN.setdefault("manifest_for", store_data.manifest_for)
    store_data.manifest_for = lambda data_root, config: with_neighbour_labels(plain(data_root, config), TASK, k)
    config = _arm_config(list(OTHERS_OFF), False, Path(root), fraction, "alone", Path(preset))   # what _one_run trains
    labelled = sum(len(f) for f in store_data.manifest_for(Path(root), config).labels[TASK].values())
    tasks, seconds = _one_run(preset, False, root, fraction, "alone", seed, run_dir, 1, OTHERS_OFF, split)
    return {"metrics": tasks[TASK], "seconds": seconds, "labelled_frames": labelled}


def _config_for(preset: str) -> Any:
    from taskology.bench.consistency import _config
    return _config(False, list(OTHERS_OFF), Path(preset))


def main(argv: list[str] | None = None) -> int:
    from taskology.atomic import write_json_atomic
    from taskology.bench.consistency import ensure_data
    from taskology.bench.parallel import map_in_processes
    from taskology.errors import TaskologyError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--fraction", type=float, default=0.02)
    parser.add_argument("--k", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--split", choices=("val", "test"), default="val")
    args = parser.parse_args(argv)
    if not args.preset.is_file():
        print(f"neighbour_labels_oracle: no such preset {args.preset}", file=sys.stderr)
        return 2
    if not 0.0 < args.fraction <= 1.0:
        print(f"neighbour_labels_oracle: --fraction must be in (0, 1], found {args.fraction}", file=sys.stderr)
        return 2
    if min(args.k) < 0:
        print(f"neighbour_labels_oracle: --k must be >= 0, found {min(args.k)}", file=sys.stderr)
        return 2
    try:
        root = ensure_data(_config_for(str(args.preset)))
    except TaskologyError as exc:
        print(f"neighbour_labels_oracle: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = {(seed, k): (str(args.preset), str(root), args.fraction, seed, k, str(args.out / f"seed{seed}-k{k}"),
                        args.split) for seed in args.seeds for k in args.k}
    results: dict[str, Any] = {}
    t0 = time.time()
    for (seed, k), record in map_in_processes(_run, jobs, max(1, min(len(jobs), os.cpu_count() or 1))):
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
