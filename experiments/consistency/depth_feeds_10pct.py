"""Diagnostic (validation split, 10 % labels, one seed): collective runs of configs/consistency-cpu.yaml with depth's factor and feeds varied, run dirs kept.

    python scripts/depth_feeds_10pct.py OUT SEED VARIANT [VARIANT ...]   (from the repository root)
"""
import sys, time, json
from pathlib import Path
from taskology.bench.consistency import _config, _one_run, ensure_data
from taskology.bench.parallel import map_in_processes

PRESET = "configs/consistency-cpu.yaml"
VARIANTS = {
    "preset": (),
    "depth1": ("tasks.depth.relation_weight_by_labels=[[0.02,1.0],[0.1,1.0],[1.0,0.0]]",),
    "depth1-scalefree": ("tasks.depth.relation_weight_by_labels=[[0.02,1.0],[0.1,1.0],[1.0,0.0]]",
                         "relations.photometric.options.depth_scale_gradient=0"),
    "depth1-nophoto": ("tasks.depth.relation_weight_by_labels=[[0.02,1.0],[0.1,1.0],[1.0,0.0]]",
                       "relations.photometric.receivers.depth=0"),
    "depth1-nodn": ("tasks.depth.relation_weight_by_labels=[[0.02,1.0],[0.1,1.0],[1.0,0.0]]",
                    "relations.depth_normals.receivers.depth=0"),
}
if __name__ == "__main__":
    out = Path(sys.argv[1]); seed = int(sys.argv[2]); names = sys.argv[3:]
    base = _config(False, [], Path(PRESET)); root = ensure_data(base)
    jobs = {n: (PRESET, False, str(root), 0.1, "collective", seed, str(out / f"{n}-{seed}"), 1, VARIANTS[n], "val")
            for n in names}
    t0 = time.time()
    for name, (tasks, took) in map_in_processes(_one_run, jobs, min(2, len(jobs))):
        print(name, seed, f"{took:.0f}s", json.dumps(tasks), flush=True)
        (out / f"{name}-{seed}.json").write_text(json.dumps({"tasks": tasks, "seconds": took}))
