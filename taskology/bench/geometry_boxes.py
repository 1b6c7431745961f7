"""Box part of ``taskology bench geometry``: rotated IoU vs shapely 2, points-in-boxes vs NumPy, JIT times.

Figures (medians, all measured in the same run):

- ``iou_sparse`` / ``iou_dense``: 500 x 500 pairwise :func:`~taskology.geometry.box_iou.box_iou_bev`
  on car-sized boxes with random yaw, centres uniform in a 50 m (sparse) or 10 m (dense) square,
  against shapely 2 doing the same job from the same (N, 7) arrays: vectorised polygon creation,
  ``STRtree.query(predicate="intersects")`` candidate culling, vectorised ``intersection``/``area``
  on the candidate pairs only. The two IoU matrices are compared (``max_abs_diff``).
- ``points_in_boxes``: 120k points x 50 boxes, against the faster of two vectorised NumPy
  references (all boxes at once by broadcasting; or a loop over boxes, each a vectorised test on
  all points); both return the same first-box index as the kernel (checked).
- Kernel times are also taken with Numba on one thread (``*_1thread_s``): the references use one
  core, and on a machine shared with other jobs the parallel timings are the noisier ones: with
  Numba's OpenMP layer and libgomp's default (active, spinning) wait policy an oversubscribed machine
  can make a 1 ms parallel call take tens of ms; ``OMP_WAIT_POLICY=passive`` (set before the process
  starts) avoids that. The policy in effect is recorded in the figures.
- ``jit``: first-call time (import + compile, or cache load) of every box kernel in a fresh Python
  process with ``NUMBA_CACHE_DIR`` set to an empty temporary directory, then again in a second
  fresh process with the same directory.

Example:
    >>> figures, table, targets = measure(quick=True)  # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numba
import numpy as np

from taskology.bench import BenchResult, median_time, target
from taskology.geometry.box_iou import box_iou_bev
from taskology.geometry.boxes import box_corners, points_in_boxes

_JIT_SCRIPT = """
import json, time
t0 = time.perf_counter()
import numpy as np
from taskology.geometry.box_iou import box_iou_bev, box_iou_3d, nms_bev
from taskology.geometry.boxes import points_in_boxes, points_in_boxes_mask
t_import = time.perf_counter() - t0
boxes = np.array([[0.0, 0, 0, 4, 2, 1.5, 0.1], [1.0, 0.5, 0, 4, 2, 1.5, 0.7]])
points = np.zeros((5, 3))
calls = {"box_iou_bev": lambda: box_iou_bev(boxes, boxes), "box_iou_3d": lambda: box_iou_3d(boxes, boxes),
         "nms_bev": lambda: nms_bev(boxes, np.ones(2), 0.5),
         "points_in_boxes": lambda: points_in_boxes(points, boxes),
         "points_in_boxes_mask": lambda: points_in_boxes_mask(points, boxes)}
out = {"import_s": t_import}
for name, call in calls.items():
    t = time.perf_counter(); call(); out[name + "_s"] = time.perf_counter() - t
out["total_s"] = time.perf_counter() - t0
print(json.dumps(out))
"""


def car_scene(rng: np.random.Generator, n: int, square_m: float) -> np.ndarray:
    """(n, 7) car-sized boxes (l 3.5-5 m, w 1.6-2.1 m, h 1.4-1.8 m), centres uniform in a square, any yaw."""
    boxes = np.empty((n, 7))
    boxes[:, :2] = rng.uniform(-square_m / 2, square_m / 2, (n, 2))
    boxes[:, 2] = rng.uniform(0.6, 1.0, n)
    boxes[:, 3] = rng.uniform(3.5, 5.0, n)
    boxes[:, 4] = rng.uniform(1.6, 2.1, n)
    boxes[:, 5] = rng.uniform(1.4, 1.8, n)
    boxes[:, 6] = rng.uniform(-np.pi, np.pi, n)
    return boxes


def iou_bev_shapely(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reference: shapely 2 pairwise BEV IoU with STRtree culling; (N, 7), (M, 7) -> (N, M)."""
    import shapely

    poly_a = shapely.polygons(box_corners(a)[:, :4, :2])
    poly_b = shapely.polygons(box_corners(b)[:, :4, :2])
    idx_a, idx_b = shapely.STRtree(poly_b).query(poly_a, predicate="intersects")
    inter = shapely.area(shapely.intersection(poly_a[idx_a], poly_b[idx_b]))
    area_a, area_b = shapely.area(poly_a), shapely.area(poly_b)
    out = np.zeros((len(a), len(b)))
    out[idx_a, idx_b] = inter / (area_a[idx_a] + area_b[idx_b] - inter)
    return out


def points_in_boxes_broadcast(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """NumPy reference, all boxes at once: (P, 3), (N, 7) -> (P,) first containing box or -1."""
    d = points[None, :, :] - boxes[:, None, :3]  # (N, P, 3)
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    inside = (np.abs(c * d[..., 0] + s * d[..., 1]) <= boxes[:, 3:4] / 2) \
        & (np.abs(c * d[..., 1] - s * d[..., 0]) <= boxes[:, 4:5] / 2) & (np.abs(d[..., 2]) <= boxes[:, 5:6] / 2)
    return np.where(inside.any(axis=0), inside.argmax(axis=0), -1)


def points_in_boxes_loop(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """NumPy reference, one vectorised test per box (last box first so the lowest index wins)."""
    out = np.full(len(points), -1, dtype=np.int64)
    for j in range(len(boxes) - 1, -1, -1):
        x, y, z, l, w, h, yaw = boxes[j]
        dx, dy = points[:, 0] - x, points[:, 1] - y
        c, s = np.cos(yaw), np.sin(yaw)
        inside = (np.abs(c * dx + s * dy) <= l / 2) & (np.abs(c * dy - s * dx) <= w / 2) \
            & (np.abs(points[:, 2] - z) <= h / 2)
        out[inside] = j
    return out


def lidar_like_points(rng: np.random.Generator, boxes: np.ndarray, n: int) -> np.ndarray:
    """(n, 3): 80% uniform in a 100 m square (z -2..3 m), 20% inside random boxes."""
    n_in = n // 5
    points = np.column_stack([rng.uniform(-50, 50, (n - n_in, 2)), rng.uniform(-2, 3, n - n_in)])
    owner = boxes[rng.integers(0, len(boxes), n_in)]
    local = rng.uniform(-0.5, 0.5, (n_in, 3)) * owner[:, 3:6]
    c, s = np.cos(owner[:, 6]), np.sin(owner[:, 6])
    inside = np.column_stack([c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1], local[:, 2]])
    return np.concatenate([points, inside + owner[:, :3]])


def _single_thread_time(fn: Any, repeats: int) -> float:
    """Median time of ``fn()`` with Numba limited to one thread (shapely and NumPy use one core too)."""
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return median_time(fn, repeats=repeats)
    finally:
        numba.set_num_threads(previous)


def jit_times() -> dict[str, Any]:
    """First-call times of the box kernels in two fresh processes sharing one empty NUMBA_CACHE_DIR."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="taskology-numba-") as cache_dir:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
        for label in ("cold", "cached"):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", _JIT_SCRIPT], env=env, capture_output=True, text=True,
                                  check=True)
            out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
            out[label]["process_s"] = time.perf_counter() - start
    return out


def measure(quick: bool) -> tuple[dict[str, Any], str, dict[str, dict[str, Any]]]:
    """Run the box measurements: (figures, Markdown table, targets)."""
    rng = np.random.default_rng(0)
    repeats = 3 if quick else 9
    figures: dict[str, Any] = {"numba_threads": numba.get_num_threads(),
                               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset")}
    rows = [f"| measurement | taskology ({numba.get_num_threads()} Numba threads) | reference | reference time | "
            "speed-up (1 thread) |", "| --- | --- | --- | --- | --- |"]
    targets: dict[str, dict[str, Any]] = {}
    for scene, square in (("sparse", 50.0), ("dense", 10.0)):
        a, b = car_scene(rng, 500, square), car_scene(rng, 500, square)
        ours, ref = box_iou_bev(a, b), iou_bev_shapely(a, b)
        t_ours = median_time(lambda: box_iou_bev(a, b), repeats=repeats * 5)
        t_one = _single_thread_time(lambda: box_iou_bev(a, b), repeats=repeats * 5)
        t_ref = median_time(lambda: iou_bev_shapely(a, b), repeats=1 if (quick and scene == "dense") else repeats)
        figures[f"iou_{scene}"] = {"pairs": 250_000, "square_m": square, "overlapping_pairs": int((ours > 0).sum()),
                                   "taskology_s": t_ours, "taskology_1thread_s": t_one, "shapely_strtree_s": t_ref,
                                   "speedup": t_ref / t_ours, "speedup_1thread": t_ref / t_one,
                                   "max_abs_diff": float(np.abs(ours - ref).max())}
        rows.append(f"| box_iou_bev 500x500, {scene} ({square:g} m square, {int((ours > 0).sum())} overlapping) | "
                    f"{t_ours * 1e3:.2f} ms ({t_one * 1e3:.2f} ms on 1 thread) | shapely 2 STRtree + vectorised "
                    f"intersection | {t_ref * 1e3:.1f} ms | {t_ref / t_ours:.0f}x ({t_ref / t_one:.0f}x) |")
        targets[f"box_iou_bev {scene} speed-up vs shapely"] = target(t_ref / t_ours, 50)
    boxes = car_scene(rng, 50, 50.0)
    points = lidar_like_points(rng, boxes, 120_000)
    ours_idx = points_in_boxes(points, boxes)
    ref_fns = {"broadcast": points_in_boxes_broadcast, "loop": points_in_boxes_loop}
    agree = all(bool(np.array_equal(fn(points, boxes), ours_idx)) for fn in ref_fns.values())
    t_ours = median_time(lambda: points_in_boxes(points, boxes), repeats=repeats * 3)
    t_one = _single_thread_time(lambda: points_in_boxes(points, boxes), repeats=repeats * 3)
    t_refs = {name: median_time(lambda fn=fn: fn(points, boxes), repeats=repeats) for name, fn in ref_fns.items()}
    best = min(t_refs, key=lambda k: t_refs[k])
    figures["points_in_boxes"] = {"points": len(points), "boxes": len(boxes), "inside": int((ours_idx >= 0).sum()),
                                  "taskology_s": t_ours, "taskology_1thread_s": t_one,
                                  **{f"numpy_{k}_s": v for k, v in t_refs.items()}, "reference": f"numpy_{best}",
                                  "speedup": t_refs[best] / t_ours, "speedup_1thread": t_refs[best] / t_one,
                                  "agrees_with_references": agree}
    rows.append(f"| points_in_boxes 120k points x 50 boxes | {t_ours * 1e3:.2f} ms ({t_one * 1e3:.2f} ms on 1 thread) "
                f"| NumPy vectorised ({best}; other {min(v for k, v in t_refs.items() if k != best) * 1e3:.1f} ms) | "
                f"{t_refs[best] * 1e3:.1f} ms | {t_refs[best] / t_ours:.0f}x ({t_refs[best] / t_one:.0f}x) |")
    targets["points_in_boxes speed-up vs NumPy"] = target(t_refs[best] / t_ours, 10)
    targets["points_in_boxes agrees with NumPy"] = target(float(agree), 1)
    figures["numba_threading_layer"] = numba.threading_layer()
    jit = jit_times()
    figures["jit"] = jit
    cold, cached = jit["cold"]["total_s"], jit["cached"]["total_s"]
    rows.append(f"| JIT first call of all box kernels (import + 5 kernels), fresh process | cached: {cached:.2f} s | "
                f"empty NUMBA_CACHE_DIR (compile) | {cold:.2f} s | {cold / cached:.0f}x |")
    targets["box kernels: cold compile / cached load"] = target(cold / cached, 3)
    return figures, "\n".join(rows) + "\n", targets


def run(quick: bool) -> BenchResult:
    """Standalone run of this part (the registered benchmark is ``geometry``, which combines parts)."""
    figures, table, targets = measure(quick)
    return BenchResult(figures=figures, table=table, targets=targets)


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    print(result.table)
    print(json.dumps(result.targets, indent=1))
    print(json.dumps(result.figures, indent=1, default=float))
