"""Pillar part of ``taskology bench geometry``: the BEV pillar kernel against its NumPy and torch twins.

Figures (medians of repeated calls after a warm-up call, all measured in the same run):

- ``sim_sweep``: one LiDAR sweep of the embedded simulator (seed 0, sequence 0, frame 0, 32 beams x 1024
  azimuth steps, about 32 000 points, moved from the LiDAR frame into the ego frame) encoded on the
  default :class:`~taskology.geometry.pillars.BevGrid` (128 x 128 cells of 0.5 m) by
  :func:`~taskology.geometry.pillars.bev_pillars` (Numba, one thread by construction: one scatter pass),
  against :func:`~taskology.geometry.pillars.bev_pillars_reference` (NumPy ``np.add.at`` /
  ``np.maximum.at``, one core) and :func:`~taskology.geometry.pillars.bev_pillars_torch` on CPU with
  ``torch.set_num_threads(1)`` (the like-for-like reference, as in the scaling and staleness benchmarks) and
  with torch's default threads (recorded, not a target). Ratios are reference time / Numba time; the
  canvases are compared (``max_abs_diff``).
- ``uniform_80m``: the same on 32 000 points uniform in x, y in [-80, 80] m, z in [-2, 4] m (most fall
  outside the 64 m grid and are dropped; every kept cell holds one or two points).
- ``augment_sweep_s``: :func:`~taskology.geometry.pillars.augment_sweep` on the simulator sweep and its boxes
  (no reference).
- ``jit``: first call of ``bev_pillars`` in a fresh process with ``NUMBA_CACHE_DIR`` set to an empty
  temporary directory (compile), then in a second fresh process with the same directory (cache load);
  numba's one-time start, which no cache removes, is paid before (by a trivial function) and recorded apart.

Example:
    >>> figures, table, targets = measure(quick=True)  # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from taskology.bench import median_time, target

_JIT_SCRIPT = r"""
import json, time
t0 = time.perf_counter()
import numba
import numpy as np
from taskology.geometry.pillars import BevGrid, bev_pillars
t_import = time.perf_counter() - t0
t = time.perf_counter()
numba.njit(lambda: 0)()  # numba's one-time start (typing and code generation machinery), paid by any first kernel
t_start = time.perf_counter() - t
points = np.array([[0.1, 0.2, 1.0, 0.5], [0.3, 0.1, 2.0, 0.5]], np.float32)
t = time.perf_counter()
bev_pillars(points, BevGrid())
print("PILLARS_JIT_JSON " + json.dumps({"import_s": t_import, "numba_start_s": t_start,
                                        "bev_pillars_s": time.perf_counter() - t}))
"""


def sim_sweep() -> tuple[np.ndarray, np.ndarray]:
    """Frame 0 of the embedded simulator's sequence 0 (seed 0, 32 beams): (points in the ego frame, boxes)."""
    from taskology.data.shard import Shard
    from taskology.geometry.rigid import invert, transform_points
    from taskology.sim.generate import generate_shard

    with tempfile.TemporaryDirectory(prefix="taskology-pillars-") as root:
        path = generate_shard(Path(root), seed=0, index=0, frames=1, camera_hw=(32, 96), lidar_beams=32,
                              lidar_azimuth=1024)
        with Shard.open(path) as shard:
            points = shard.read("lidar/points", 0)
            lidar_from_ego = shard.read("lidar/lidar_from_ego")
            boxes = shard.read("objects/box", 0)
    ego = points.copy()
    ego[:, :3] = transform_points(invert(lidar_from_ego), points[:, :3])
    return ego, boxes


def uniform_cloud(n: int = 32_000) -> np.ndarray:
    """(n, 4) float32: x, y uniform in [-80, 80] m, z in [-2, 4] m, intensity in [0, 1] (seed 0)."""
    rng = np.random.default_rng(0)
    return np.column_stack([rng.uniform(-80, 80, (n, 2)), rng.uniform(-2, 4, n), rng.uniform(0, 1, n)]
                           ).astype(np.float32)


def jit_times() -> dict[str, Any]:
    """First-call times of ``bev_pillars`` in two fresh processes sharing one empty NUMBA_CACHE_DIR."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="taskology-numba-") as cache_dir:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
        for label in ("cold", "cached"):
            proc = subprocess.run([sys.executable, "-c", _JIT_SCRIPT], env=env, capture_output=True, text=True,
                                  timeout=600, check=True)
            line = next(x for x in proc.stdout.splitlines() if x.startswith("PILLARS_JIT_JSON "))
            out[label] = json.loads(line.split(" ", 1)[1])
    return out


def ms(seconds: float) -> str:
    """Seconds as milliseconds with two decimals."""
    return f"{1e3 * seconds:.2f}"


def _compare(points: np.ndarray, repeats: int) -> dict[str, Any]:
    """Time the three implementations on one cloud and compare their canvases."""
    import torch

    from taskology.geometry.pillars import BevGrid, bev_pillars, bev_pillars_reference, bev_pillars_torch

    grid = BevGrid()
    tensor = torch.from_numpy(points)
    ours = bev_pillars(points, grid)
    diff_numpy = float(np.abs(ours - bev_pillars_reference(points, grid)).max())
    diff_torch = float(np.abs(ours - bev_pillars_torch(tensor, grid).numpy()).max())
    t_ours = median_time(lambda: bev_pillars(points, grid), repeats * 20)  # sub-millisecond: more calls
    t_numpy = median_time(lambda: bev_pillars_reference(points, grid), repeats)
    default_threads = torch.get_num_threads()
    with torch.no_grad():  # torch's own threads last: they keep spinning a while after their work
        torch.set_num_threads(1)
        try:
            t_torch = median_time(lambda: bev_pillars_torch(tensor, grid), repeats)
        finally:
            torch.set_num_threads(default_threads)
        t_torch_default = median_time(lambda: bev_pillars_torch(tensor, grid), repeats)
    return {"points": len(points), "occupied_cells": int((ours[0] > 0).sum()), "grid": [*grid.shape, grid.cell_m],
            "numba_s": t_ours, "numpy_s": t_numpy, "torch_1thread_s": t_torch,
            "torch_default_threads_s": t_torch_default, "torch_default_threads": default_threads,
            "speedup_vs_numpy": t_numpy / t_ours, "speedup_vs_torch": t_torch / t_ours,
            "speedup_vs_torch_default_threads": t_torch_default / t_ours,
            "max_abs_diff_numpy": diff_numpy, "max_abs_diff_torch": diff_torch}


def measure(quick: bool) -> tuple[dict[str, Any], str, dict[str, dict[str, Any]]]:
    """Run the pillar measurements: (figures, Markdown table, targets)."""
    from taskology.geometry.pillars import augment_sweep

    repeats = 5 if quick else 21
    sweep, boxes = sim_sweep()
    figures: dict[str, Any] = {"sim_sweep": _compare(sweep, repeats), "uniform_80m": _compare(uniform_cloud(), repeats)}
    figures["sim_sweep"]["boxes"] = len(boxes)
    figures["augment_sweep_s"] = median_time(lambda: augment_sweep(sweep, boxes, yaw=0.3, flip_y=True, scale=1.02),
                                             repeats)
    jit = jit_times()
    figures["jit"] = jit
    rows = [("| measurement | Numba (ms) | NumPy reference (ms) | torch CPU, 1 thread (ms) | torch, default threads "
             "(ms) | speed-up vs NumPy | speed-up vs torch (1 thread) |"), "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, label in (("sim_sweep", "simulator sweep"), ("uniform_80m", "uniform in +-80 m")):
        f = figures[name]
        rows.append(f"| bev_pillars, {label}: {f['points']} points, {f['occupied_cells']} of {f['grid'][0]}x"
                    f"{f['grid'][1]} cells | {ms(f['numba_s'])} | {ms(f['numpy_s'])} | {ms(f['torch_1thread_s'])} | "
                    f"{ms(f['torch_default_threads_s'])} ({f['torch_default_threads']} threads) | "
                    f"{f['speedup_vs_numpy']:.1f}x | {f['speedup_vs_torch']:.1f}x |")
    cold, cached = jit["cold"]["bev_pillars_s"], jit["cached"]["bev_pillars_s"]
    rows += ["", (f"augment_sweep on the simulator sweep and its {len(boxes)} boxes: "
                  f"{ms(figures['augment_sweep_s'])} ms. First call of bev_pillars in a fresh process: {cold:.2f} s "
                  f"compiling, {cached:.3f} s from the cache (after numba's own start: "
                  f"{jit['cold']['numba_start_s']:.2f} s, {jit['cached']['numba_start_s']:.2f} s).")]
    sim = figures["sim_sweep"]
    agree = max(sim["max_abs_diff_numpy"], sim["max_abs_diff_torch"], figures["uniform_80m"]["max_abs_diff_numpy"],
                figures["uniform_80m"]["max_abs_diff_torch"])
    targets = {"pillars: bev_pillars speed-up vs NumPy": target(sim["speedup_vs_numpy"], 10),
               "pillars: bev_pillars speed-up vs torch (1 thread)": target(sim["speedup_vs_torch"], 1),
               "pillars: max abs difference to the NumPy and torch twins": target(agree, 1e-5, higher_is_better=False),
               "pillars: JIT cold compile / cached load": target(cold / cached, 3)}
    return figures, "\n".join(rows) + "\n", targets


if __name__ == "__main__":
    from taskology.bench import BenchResult

    figures, table, targets = measure(quick="--quick" in sys.argv)
    result = BenchResult(figures=figures, table=table, targets=targets)
    print(result.table)
    print(json.dumps(result.targets, indent=1))
    print(json.dumps(result.figures, indent=1, default=float))
