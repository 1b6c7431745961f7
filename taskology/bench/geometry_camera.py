"""Camera/rigid part of ``taskology bench geometry``: our Numba kernels against named references.

Measured in one run, medians of repeated calls after a warm-up (JIT compiled, cache loaded):

- ``points_from_depth`` and ``normals_from_depth`` on a batch of 8 depth maps of 128x416 against
  kornia's ``depth_to_3d`` / ``depth_to_normals`` on CPU (ratio = kornia time / our time, target >= 1);
- ``kabsch_batched`` on 10k groups x 32 points against vectorised NumPy (einsum covariance + batched
  ``np.linalg.svd`` on (G, 3, 3) + determinant fix; ratio = NumPy time / our time, target >= 1);
- first-call JIT cost per kernel in a fresh subprocess with ``NUMBA_CACHE_DIR`` pointing at an empty
  temporary directory (compile), then in a second fresh subprocess with the same directory (cache
  load); target: the cached first calls together at least 3x faster than the compiling ones. The first
  kernel called (``transform_points``) also pays numba's one-time start of its parallel thread pool
  (about 1 s here), which no cache removes.

Both sides get the same threads (numba's and torch's defaults on this machine).

Example:
    >>> figures, table, targets = measure(quick=True)  # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np

from taskology.bench import median_time, target

BATCH, HEIGHT, WIDTH = 8, 128, 416
KABSCH_GROUPS, KABSCH_POINTS = 10_000, 32
INTRINSICS = np.array([[241.7, 0.0, 207.5], [0.0, 246.3, 63.5], [0.0, 0.0, 1.0]])

#: run in a fresh interpreter: time the first call (compile or cache load) of every kernel.
_FIRST_CALL_SCRIPT = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
from taskology.geometry import camera, kabsch, rigid
timings = {"import": time.perf_counter() - t0}
K = np.array([[50.0, 0, 8.0], [0, 50.0, 6.0], [0, 0, 1]])
depth = np.full((12, 16), 2.0, np.float32)
pts = np.random.default_rng(0).normal(size=(3, 10, 3))
calls = {
    "transform_points": lambda: rigid.transform_points(np.eye(4), pts[0]),
    "transform_points_per_object": lambda: rigid.transform_points_per_object(pts[0], np.zeros(10, int), np.eye(4)[None]),
    "points_from_depth": lambda: camera.points_from_depth(depth, K),
    "project_points": lambda: camera.project_points(pts[0] + [0, 0, 5.0], K),
    "normals_from_depth": lambda: camera.normals_from_depth(depth, K),
    "kabsch_batched": lambda: kabsch.kabsch_batched(pts, pts + 1.0),
}
for name, call in calls.items():
    start = time.perf_counter()
    call()
    timings[name] = time.perf_counter() - start
print("FIRST_CALL_JSON " + json.dumps(timings))
"""


def _first_call_times(cache_dir: str) -> dict[str, float]:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    proc = subprocess.run([sys.executable, "-c", _FIRST_CALL_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600, check=True)
    line = next(l for l in proc.stdout.splitlines() if l.startswith("FIRST_CALL_JSON "))
    return json.loads(line.split(" ", 1)[1])


def _kabsch_numpy_reference(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The named reference: vectorised NumPy Kabsch (unweighted) with batched SVD and det fix."""
    cs, cd = src.mean(axis=1), dst.mean(axis=1)
    h = np.einsum("gni,gnj->gij", src - cs[:, None], dst - cd[:, None])
    u, _, vt = np.linalg.svd(h)
    v, ut = np.swapaxes(vt, -1, -2), np.swapaxes(u, -1, -2)
    d = np.sign(np.linalg.det(v @ ut))
    v[:, :, 2] *= d[:, None]
    rot = v @ ut
    out = np.tile(np.eye(4), (len(src), 1, 1))
    out[:, :3, :3] = rot
    out[:, :3, 3] = cd - np.einsum("gij,gj->gi", rot, cs)
    return out


def _smooth_depth(rng: np.random.Generator) -> np.ndarray:
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi, size=(BATCH, 1, 1))
    depth = 8.0 + 3.0 * np.sin(u / 40.0 + phase) + 2.0 * np.cos(v / 25.0) + 0.02 * u
    return depth.astype(np.float32)


def measure(quick: bool) -> tuple[dict[str, Any], str, dict[str, dict[str, Any]]]:
    """Run the camera/rigid measurements; return (figures, Markdown table, targets)."""
    import torch
    from kornia.geometry.depth import depth_to_3d, depth_to_normals

    from taskology.geometry.camera import normals_from_depth, normals_from_depth_torch, points_from_depth
    from taskology.geometry.kabsch import kabsch_batched
    from taskology.geometry.rigid import so3_exp

    repeats = 5 if quick else 21
    rng = np.random.default_rng(0)
    depth = _smooth_depth(rng)
    depth_torch = torch.from_numpy(depth)[:, None]  # (B,1,H,W)
    k_torch = torch.tensor(INTRINSICS, dtype=torch.float32).expand(BATCH, 3, 3).contiguous()

    times: dict[str, float] = {}
    with torch.no_grad():
        times["points_from_depth"] = median_time(lambda: points_from_depth(depth, INTRINSICS), repeats)
        times["kornia.depth_to_3d"] = median_time(lambda: depth_to_3d(depth_torch, k_torch), repeats)
        times["normals_from_depth"] = median_time(lambda: normals_from_depth(depth, INTRINSICS), repeats)
        times["kornia.depth_to_normals"] = median_time(lambda: depth_to_normals(depth_torch, k_torch), repeats)
        times["normals_from_depth_torch"] = median_time(lambda: normals_from_depth_torch(depth_torch, k_torch),
                                                        repeats)

    src = rng.normal(size=(KABSCH_GROUPS, KABSCH_POINTS, 3))
    rot = so3_exp(rng.normal(size=(KABSCH_GROUPS, 3)))
    dst = np.einsum("gij,gnj->gni", rot, src) + rng.normal(size=(KABSCH_GROUPS, 1, 3))
    dst += rng.normal(scale=0.01, size=dst.shape)
    ours, ref = kabsch_batched(src, dst), _kabsch_numpy_reference(src, dst)
    kabsch_agreement = float(np.abs(ours.dst_from_src - ref).max())
    times["kabsch_batched"] = median_time(lambda: kabsch_batched(src, dst), repeats)
    times["numpy_svd_kabsch"] = median_time(lambda: _kabsch_numpy_reference(src, dst), repeats)

    with tempfile.TemporaryDirectory(prefix="taskology-numba-cache-") as cache_dir:
        cold = _first_call_times(cache_dir)
        warm = _first_call_times(cache_dir)
    kernels = [k for k in cold if k != "import"]
    cold_total, warm_total = sum(cold[k] for k in kernels), sum(warm[k] for k in kernels)

    ratios = {
        "points_from_depth_vs_kornia": times["kornia.depth_to_3d"] / times["points_from_depth"],
        "normals_from_depth_vs_kornia": times["kornia.depth_to_normals"] / times["normals_from_depth"],
        "normals_from_depth_torch_vs_kornia": times["kornia.depth_to_normals"] / times["normals_from_depth_torch"],
        "kabsch_batched_vs_numpy_svd": times["numpy_svd_kabsch"] / times["kabsch_batched"],
        "jit_cache_speedup": cold_total / warm_total,
    }
    figures: dict[str, Any] = {
        "sizes": {"depth": [BATCH, HEIGHT, WIDTH], "kabsch": [KABSCH_GROUPS, KABSCH_POINTS]},
        "repeats": repeats,
        "median_seconds": times,
        "ratios": ratios,
        "kabsch_max_abs_difference_vs_numpy": kabsch_agreement,
        "first_call_seconds": {"compile": cold, "cached": warm},
        "threads": {"numba": int(os.environ.get("NUMBA_NUM_THREADS", 0)) or None, "torch": torch.get_num_threads()},
    }
    ms = lambda s: f"{1e3 * s:.2f}"  # noqa: E731
    rows = [
        "| measurement | taskology (ms) | reference | reference (ms) | ratio ref/ours |",
        "| --- | --- | --- | --- | --- |",
        f"| points_from_depth {BATCH}x{HEIGHT}x{WIDTH} | {ms(times['points_from_depth'])} | kornia depth_to_3d | "
        f"{ms(times['kornia.depth_to_3d'])} | {ratios['points_from_depth_vs_kornia']:.2f} |",
        f"| normals_from_depth {BATCH}x{HEIGHT}x{WIDTH} | {ms(times['normals_from_depth'])} | kornia depth_to_normals | "
        f"{ms(times['kornia.depth_to_normals'])} | {ratios['normals_from_depth_vs_kornia']:.2f} |",
        f"| normals_from_depth_torch {BATCH}x{HEIGHT}x{WIDTH} | {ms(times['normals_from_depth_torch'])} | kornia "
        f"depth_to_normals | {ms(times['kornia.depth_to_normals'])} | "
        f"{ratios['normals_from_depth_torch_vs_kornia']:.2f} |",
        f"| kabsch_batched {KABSCH_GROUPS}x{KABSCH_POINTS} | {ms(times['kabsch_batched'])} | NumPy batched SVD | "
        f"{ms(times['numpy_svd_kabsch'])} | {ratios['kabsch_batched_vs_numpy_svd']:.2f} |",
        "",
        "| kernel | first call, compiling (s) | first call, from cache (s) |",
        "| --- | --- | --- |",
    ]
    rows += [f"| {k} | {cold[k]:.2f} | {warm[k]:.3f} |" for k in ["import", *kernels]]
    rows.append(f"| all kernels | {cold_total:.2f} | {warm_total:.3f} |")
    targets = {
        "camera: points_from_depth vs kornia depth_to_3d": target(ratios["points_from_depth_vs_kornia"], 1.0),
        "camera: normals_from_depth vs kornia depth_to_normals": target(ratios["normals_from_depth_vs_kornia"], 1.0),
        "camera: kabsch_batched vs NumPy SVD": target(ratios["kabsch_batched_vs_numpy_svd"], 1.0),
        "camera: JIT cache speed-up of first calls": target(ratios["jit_cache_speedup"], 3.0),
    }
    return figures, "\n".join(rows) + "\n", targets
