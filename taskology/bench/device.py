"""``taskology bench device``: the camera tasks' training speed on the CPU and on a CUDA GPU, and whether
both compute the same thing.

Measured in one run, on tiny simulator shards generated into a temp dir, for each camera size (the CPU
preset's 64x208 and the GPU size 128x416; ``--quick``: 32x96), batch 8, network width 16:

1. **agreement** — for each task, a runner built on the CPU and one built on the GPU from the same seed
   (same initial weights, same batch sequence) take one collective round (all four camera tasks, all
   four default relations, fresh peer predictions); the largest relative difference between the two
   devices' logged losses (supervised and consistency terms, before any update). TF32 is switched off
   for this part, so the difference is float32 rounding and reduction order only (target <= 1e-3). The
   photometric term (and each total holding it) is judged apart (target <= 1e-2): its Monodepth2
   auto-mask keeps a pixel when the warped error is below the unwarped one, and near initialisation
   the two are almost equal for most pixels, so rounding flips some pixels in or out of the mask
   (``tests/engine/test_cuda.py``, on identical inputs: the unwarped error map to 1e-5, the mask on >= 99 %
   of pixels, the smoothness term to 1e-5).
2. **speed** — steps/s of each task trained alone (supervised only), and of one collective round (one
   step of each of the four tasks, relations included), on each device; CUDA time is taken after
   ``torch.cuda.synchronize()``. The figure is the GPU/CPU ratio of the same work in the same run. The CPU
   side uses every core torch is given (``torch.get_num_threads()``, recorded).
3. **memory** — peak CUDA memory allocated during the collective round (4 runners on one GPU).

Without CUDA only the CPU side runs and the result says so; the GPU figures come from a machine with
one (each result file records the device name).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from taskology.bench import BenchResult, sim_world, target

TASKS = ("depth", "normals", "segmentation", "motion")


def _config(root: Path, hw: tuple[int, int], mode: str) -> Any:
    from taskology.config import load_config

    over = [f"data.root={root}", f"data.camera={hw[0]}x{hw[1]}", f"sim.camera={hw[0]}x{hw[1]}",
            "data.test_sequences=1", "data.mediator_fraction=0.4", "train.mediator_batch_size=8",
            "train.steps=1000", "train.seeds=[0]", f"train.mode={mode}", "train.eval_every=0",
            "train.checkpoint_every_steps=0", "train.checkpoint_every_s=0"]
    for task in TASKS:
        over += [f"tasks.{task}.batch_size=8", f"tasks.{task}.width=16", f"tasks.{task}.label_fraction=1.0"]
    return load_config(None, over)


def _runners(cfg: Any, run_dir: Path, device: str) -> dict[str, Any]:
    from taskology.engine.collective import build_runners

    runners, _ = build_runners(cfg, run_dir, seed=0, device=device, collective=cfg.train.mode == "collective")
    return runners


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _rate(step: Any, device: str, steps: int, warmup: int) -> float:
    """Calls per second of ``step()`` after ``warmup`` calls (CUDA work finished inside the window)."""
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps / (time.perf_counter() - start)


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """Within the block, CUDA matmuls and convolutions run in full float32 (TF32 off), as the CPU does:
    the setting under which CPU and GPU results are compared (here and in tests/engine/test_cuda.py)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _first_round(cfg: Any, run_dir: Path, device: str) -> dict[str, dict[str, float]]:
    runners = _runners(cfg, run_dir, device)
    return {t: {k: v for k, v in r.train_step().items() if k.startswith(("loss/", "consistency/"))}
            for t, r in runners.items()}


def _agreement(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """Largest relative difference of the first collective round's losses, CPU vs CUDA: of the terms
    continuous in the network outputs, and of the photometric term (whose auto-mask is a hard comparison,
    see the module docstring) with the totals that include it."""
    with no_tf32():
        cpu = _first_round(cfg, run_dir / "cpu", "cpu")
        gpu = _first_round(cfg, run_dir / "cuda", "cuda")
    worst = {"continuous": (0.0, ""), "photometric": (0.0, "")}
    for task, scalars in cpu.items():
        if set(scalars) != set(gpu[task]):
            raise RuntimeError(f"device bench: {task} logged {sorted(scalars)} on cpu, {sorted(gpu[task])} on cuda")
        for key, value in scalars.items():
            kind = "photometric" if "photometric" in key or key == "loss/total" else "continuous"
            diff = abs(gpu[task][key] - value) / max(abs(value), 1e-6)
            if diff > worst[kind][0]:
                worst[kind] = (diff, f"{task} {key}")
    return {"max_relative_difference": worst["continuous"][0], "where": worst["continuous"][1],
            "photometric_max_relative_difference": worst["photometric"][0], "photometric_where": worst["photometric"][1],
            "cpu": cpu, "cuda": gpu}


def _speeds(cfg_alone: Any, cfg_collective: Any, run_dir: Path, device: str, steps: int, warmup: int
            ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task, runner in _runners(cfg_alone, run_dir / f"alone-{device}", device).items():
        out[f"{task}_alone_steps_per_s"] = _rate(runner.train_step, device, steps, warmup)
    runners = _runners(cfg_collective, run_dir / f"collective-{device}", device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out["collective_rounds_per_s"] = _rate(lambda: [r.train_step() for r in runners.values()], device,
                                           steps, warmup)
    if device == "cuda":
        out["collective_peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


def run(quick: bool) -> BenchResult:
    has_cuda = torch.cuda.is_available()
    sizes = [(32, 96)] if quick else [(64, 208), (128, 416)]
    cpu_steps, gpu_steps, warmup = (3, 10, 2) if quick else (3, 30, 2)
    figures: dict[str, Any] = {
        "cores_available": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if has_cuda else None,
        "cuda_version": torch.version.cuda if has_cuda else None,
        "steps_timed": {"cpu": cpu_steps, "cuda": gpu_steps}, "warmup": warmup, "batch_size": 8, "width": 16,
        "sizes": {}}
    rows = ["| camera | measurement | CPU | GPU | GPU / CPU |", "| --- | --- | --- | --- | --- |"]
    targets: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="taskology-bench-device-") as tmp:
        for hw in sizes:
            name = f"{hw[0]}x{hw[1]}"
            root = sim_world(Path(tmp) / f"sim-{name}", hw, 4, 10)
            alone, collective = _config(root, hw, "alone"), _config(root, hw, "collective")
            size: dict[str, Any] = {"cpu": _speeds(alone, collective, Path(tmp) / name, "cpu", cpu_steps, warmup)}
            if has_cuda:
                size["cuda"] = _speeds(alone, collective, Path(tmp) / name, "cuda", gpu_steps, warmup)
                size["agreement"] = _agreement(collective, Path(tmp) / f"agree-{name}")
                targets[f"cpu_cuda_agreement_{name}"] = target(size["agreement"]["max_relative_difference"],
                                                               1e-3, higher_is_better=False)
                targets[f"cpu_cuda_agreement_photometric_{name}"] = target(
                    size["agreement"]["photometric_max_relative_difference"], 1e-2, higher_is_better=False)
            figures["sizes"][name] = size
            print(f"bench device: {name} done", flush=True)
            for key in [f"{t}_alone_steps_per_s" for t in TASKS] + ["collective_rounds_per_s"]:
                cpu = size["cpu"][key]
                gpu = size["cuda"][key] if has_cuda else None
                label = key.replace("_steps_per_s", " steps/s").replace("_rounds_per_s", " rounds/s (4 tasks)")
                rows.append(f"| {name} | {label.replace('_', ' ')} | {cpu:.2f} | "
                            + (f"{gpu:.1f} | {gpu / cpu:.1f}x |" if gpu is not None else "- | - |"))
            if has_cuda:
                rows.append(f"| {name} | peak GPU memory, collective round | - | "
                            f"{size['cuda']['collective_peak_memory_mib']:.0f} MiB | - |")
                agree = size["agreement"]
                rows.append(f"| {name} | largest CPU/GPU loss difference (TF32 off) | - | "
                            f"{agree['max_relative_difference']:.1e} ({agree['where']}) | - |")
                rows.append(f"| {name} | largest CPU/GPU photometric difference (auto-mask) | - | "
                            f"{agree['photometric_max_relative_difference']:.1e} ({agree['photometric_where']}) | - |")
    device = figures["cuda_device"] or "no CUDA device (CPU only)"
    notes = (f"CPU: {os.cpu_count()} cores, {figures['torch_threads']} torch threads. GPU: {device}. "
             "Each rate is steps (or collective rounds) per second after a warm-up, in the same run; "
             "one collective round is one optimizer step of each of the four tasks with the relations.")
    return BenchResult(figures=figures, table="\n".join(rows), targets=targets, notes=notes)
