"""Benchmark ``taskology bench sim``: simulator frames/s against Embree's raw ray rate, and memory.

Measured in one run, on this machine's cores:

1. **Simulator throughput** through the real generate path (:func:`taskology.sim.generate.generate_shard`:
   world update, ray casting incl. shadow rays, shading, labels, HDF5 write) at 128x416 camera (all
   layers) + 32x1024 LiDAR, and at 64x208. Steady frames/s are taken between the first and the last
   frame of a shard (world build and the first frame excluded; reported separately).
2. **Raw Embree rate** (the reference): ``embreex`` ``scene.run`` on exactly one frame's camera + LiDAR
   rays (same origins and directions as the renderer's first frame) against the same scene (static
   town plus the objects at their first-frame poses, one Embree scene), repeated; expressed as
   frames/s = rays/s / rays per frame. Reported for the query the renderer needs (``output=1``: hit
   distance, primitive, normal) and for the cheapest one (primitive id only).
   Target: simulator frames/s >= 50% of the raw rate (``output=1``).
3. **Memory over a long run**: a subprocess generates one long shard and records its peak RSS
   (``ru_maxrss``) and current RSS when it has written 1, N1 and N2 frames (quick: 100 / 1000; full:
   1000 / 10000), at a small size (:data:`MEMORY`) so that 10k frames fit in minutes. Flat memory =
   small RSS growth from N1 to N2. Target: growth <= 64 MiB.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

from taskology.bench import BenchResult, target

MAIN = {"camera_hw": (128, 416), "lidar_beams": 32, "lidar_azimuth": 1024}
SMALL = {"camera_hw": (64, 208), "lidar_beams": 32, "lidar_azimuth": 1024}
#: sizes of the long memory run (small, so 10k frames fit in minutes; the frame loop is what is measured).
MEMORY = {"camera_hw": (32, 96), "lidar_beams": 8, "lidar_azimuth": 256}


def _sim_fps(out_dir: Path, index: int, frames: int, sizes: dict[str, Any]) -> dict[str, float]:
    """Generate one shard; steady frames/s between the first and the last progress call."""
    from taskology.sim.generate import generate_shard

    stamps: list[float] = []
    start = time.perf_counter()
    generate_shard(out_dir, seed=0, index=index, frames=frames, progress=lambda *_: stamps.append(time.perf_counter()),
                   **sizes)
    total = time.perf_counter() - start
    if len(stamps) != frames:
        raise RuntimeError(f"generate_shard reported progress {len(stamps)} times for {frames} frames")
    return {"frames": frames, "first_frame_s": stamps[0] - start, "total_s": total,
            "steady_frames_per_s": (frames - 1) / (stamps[-1] - stamps[0]), "end_to_end_frames_per_s": frames / total}


def _frame_rays(sizes: dict[str, Any]) -> tuple[Any, np.ndarray, np.ndarray, int, int]:
    """The first frame's scene (static + objects posed, one Embree scene) and its camera + LiDAR rays."""
    from embreex import mesh_construction, rtcore_scene

    from taskology.sim import sensors
    from taskology.sim.renderer import EmbeddedRenderer
    from taskology.sim.world import World

    world = World.generate(0)
    state = world.state()
    renderer = EmbeddedRenderer(sizes["camera_hw"], sizes["lidar_beams"], sizes["lidar_azimuth"])
    tris = [state.static.triangles]
    for pose, a in zip(state.world_from_object, state.asset_index):
        t = state.assets[a].triangles
        tris.append(t @ pose[:3, :3].T + pose[:3, 3])
    scene = rtcore_scene.EmbreeScene()
    mesh_construction.TriangleMesh(scene=scene, vertices=np.ascontiguousarray(np.concatenate(tris), np.float32))

    h, w = sizes["camera_hw"]
    cam_dirs, _ = sensors.camera_rays(renderer.K, h, w)
    lidar_dirs = sensors.lidar_rays(sizes["lidar_beams"], sizes["lidar_azimuth"])
    world_from_cam = state.world_from_ego @ np.linalg.inv(renderer.cam_from_ego)
    world_from_lidar = state.world_from_ego @ np.linalg.inv(renderer.lidar_from_ego)
    dirs = np.concatenate([cam_dirs @ world_from_cam[:3, :3].T, lidar_dirs @ world_from_lidar[:3, :3].T])
    origins = np.concatenate([np.broadcast_to(world_from_cam[:3, 3], (len(cam_dirs), 3)),
                              np.broadcast_to(world_from_lidar[:3, 3], (len(lidar_dirs), 3))])
    return scene, origins.astype(np.float32), dirs.astype(np.float32), len(cam_dirs), len(lidar_dirs)


def _raw_embree(sizes: dict[str, Any], repeats: int) -> dict[str, float]:
    scene, origins, dirs, n_cam, n_lidar = _frame_rays(sizes)
    out: dict[str, float] = {"rays_per_frame": n_cam + n_lidar, "camera_rays": n_cam, "lidar_rays": n_lidar}
    hit = scene.run(origins, dirs, output=1)
    out["hit_fraction"] = float(np.mean(hit["primID"] >= 0))
    for label, kwargs in (("distance_normal", {"output": 1}), ("primitive_only", {})):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            scene.run(origins, dirs, **kwargs)
            times.append(time.perf_counter() - t0)
        best = float(np.median(times))
        out[f"{label}_rays_per_s"] = len(origins) / best
        out[f"{label}_frames_per_s"] = 1.0 / best
    return out


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    import psutil
    from taskology.sim.generate import generate_shard
    out, n1, n2, h, w, beams, az = Path(sys.argv[1]), *map(int, sys.argv[2:])
    proc, count, marks = psutil.Process(), [0], {}
    def progress(*_):
        count[0] += 1
        if count[0] in (1, n1, n2):
            marks[count[0]] = {"rss_bytes": proc.memory_info().rss,
                               "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                               "t": time.perf_counter()}
    generate_shard(out, seed=1, index=0, frames=n2, camera_hw=(h, w), lidar_beams=beams, lidar_azimuth=az,
                   progress=progress)
    print(json.dumps({"marks": marks, "shard_bytes": sum(p.stat().st_size for p in out.glob("*.h5"))}))
""")


def _memory(n1: int, n2: int, sizes: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    args = [str(out_dir), str(n1), str(n2), *map(str, sizes["camera_hw"]), str(sizes["lidar_beams"]),
            str(sizes["lidar_azimuth"])]
    proc = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, *args],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory subprocess failed: {proc.stderr[-2000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    marks = {int(k): v for k, v in data["marks"].items()}
    mib = 2.0**20
    return {"camera_hw": list(sizes["camera_hw"]), "lidar": [sizes["lidar_beams"], sizes["lidar_azimuth"]],
            "frames": [n1, n2],
            "peak_rss_mib": {n: marks[n]["peak_rss_bytes"] / mib for n in (1, n1, n2)},
            "rss_mib": {n: marks[n]["rss_bytes"] / mib for n in (1, n1, n2)},
            "peak_rss_growth_mib": (marks[n2]["peak_rss_bytes"] - marks[n1]["peak_rss_bytes"]) / mib,
            "rss_growth_mib": (marks[n2]["rss_bytes"] - marks[n1]["rss_bytes"]) / mib,
            "frames_per_s": (n2 - 1) / (marks[n2]["t"] - marks[1]["t"]),
            "shard_mib": data["shard_bytes"] / mib}


def run(quick: bool) -> BenchResult:
    frames_main, frames_small, repeats = (8, 12, 5) if quick else (60, 120, 20)
    n1, n2 = (100, 1000) if quick else (1000, 10000)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="taskology-bench-sim-") as tmp:
        out = Path(tmp)
        for sub in ("warm", "main", "small", "memory"):
            (out / sub).mkdir()
        _sim_fps(out / "warm", 0, 2, SMALL)  # compile the Numba kernels outside the measurement
        main = _sim_fps(out / "main", 0, frames_main, MAIN)
        small = _sim_fps(out / "small", 0, frames_small, SMALL)
        raw_main = _raw_embree(MAIN, repeats)
        raw_small = _raw_embree(SMALL, repeats)
        memory = _memory(n1, n2, MEMORY, out / "memory")
    ratio = main["steady_frames_per_s"] / raw_main["distance_normal_frames_per_s"]
    figures = {"sim_128x416": main, "sim_64x208": small, "raw_embree_128x416": raw_main,
               "raw_embree_64x208": raw_small, "sim_vs_raw_128x416": ratio,
               "sim_vs_raw_64x208": small["steady_frames_per_s"] / raw_small["distance_normal_frames_per_s"],
               "memory": memory, "threads": {"numba": int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1))},
               "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]}}
    rows = [
        "| measurement | 128x416 + 32x1024 LiDAR | 64x208 + 32x1024 LiDAR |",
        "| --- | --- | --- |",
        f"| simulator, steady frames/s | {main['steady_frames_per_s']:.2f} | {small['steady_frames_per_s']:.2f} |",
        f"| simulator, end-to-end frames/s (incl. world build) | {main['end_to_end_frames_per_s']:.2f} | "
        f"{small['end_to_end_frames_per_s']:.2f} |",
        f"| rays per frame (camera + LiDAR) | {raw_main['rays_per_frame']:.0f} | {raw_small['rays_per_frame']:.0f} |",
        f"| raw Embree, distance+normal: Mrays/s (frames/s) | {raw_main['distance_normal_rays_per_s'] / 1e6:.2f} "
        f"({raw_main['distance_normal_frames_per_s']:.1f}) | {raw_small['distance_normal_rays_per_s'] / 1e6:.2f} "
        f"({raw_small['distance_normal_frames_per_s']:.1f}) |",
        f"| raw Embree, primitive only: Mrays/s (frames/s) | {raw_main['primitive_only_rays_per_s'] / 1e6:.2f} "
        f"({raw_main['primitive_only_frames_per_s']:.1f}) | {raw_small['primitive_only_rays_per_s'] / 1e6:.2f} "
        f"({raw_small['primitive_only_frames_per_s']:.1f}) |",
        f"| simulator / raw Embree (distance+normal) | {ratio:.3f} | {figures['sim_vs_raw_64x208']:.3f} |",
        "",
        f"| memory run ({memory['camera_hw'][0]}x{memory['camera_hw'][1]} + {memory['lidar'][0]}x{memory['lidar'][1]} "
        f"LiDAR, one shard) | frame 1 | frame {n1} | "
        f"frame {n2} |",
        "| --- | --- | --- | --- |",
        "| peak RSS, MiB | " + " | ".join(f"{memory['peak_rss_mib'][n]:.1f}" for n in (1, n1, n2)) + " |",
        "| current RSS, MiB | " + " | ".join(f"{memory['rss_mib'][n]:.1f}" for n in (1, n1, n2)) + " |",
    ]
    targets = {"sim_fps_vs_raw_embree_128x416": target(ratio, 0.5),
               f"rss_growth_mib_{n1}_to_{n2}_frames": target(memory["rss_growth_mib"], 64.0, higher_is_better=False)}
    notes = (f"Simulator frames/s are steady-state (between the first and last frame of one shard of "
             f"{frames_main} / {frames_small} frames; world build + first frame: {main['first_frame_s']:.2f} s at "
             f"128x416). The simulator casts more rays per frame than the reference: static + dynamic scene for "
             f"every camera and LiDAR ray, plus shadow rays for camera pixels (static + dynamic), and rebuilds the "
             f"dynamic Embree scene each frame; the reference casts each ray once against one prebuilt scene. "
             f"Memory run at 32x96 camera + 8x256 LiDAR ({n2} frames in one shard, {memory['shard_mib']:.0f} MiB written, "
             f"{memory['frames_per_s']:.1f} frames/s), small to keep the run short. The machine is shared: "
             f"1-minute load average {load_before[0]:.1f} before and {figures['load_average_1min']['after']:.1f} after "
             f"the run on {os.cpu_count()} cores, so absolute timings are pessimistic; the ratio is measured under "
             f"the same load.")
    return BenchResult(figures=figures, table="\n".join(rows), targets=targets, notes=notes)
