"""``taskology bench consistency``: camera tasks trained alone vs collectively, at 2 %, 10 %, 100 % labels.

For every label fraction and seed, the same preset (``configs/consistency.yaml``) is trained twice with
the in-process engine, equal steps per task: (a) ``alone`` (each task on its labelled frames only) and
(b) ``collective`` (plus the consistency relations on the mediator split). Every run is evaluated on
the held-out test sequences (never used for any choice). Figures: mean and standard deviation over
seeds of depth AbsRel, normals mean angle, segmentation mIoU and ego-motion translation error (plus
the other metrics), the gap recovered ``(alone - collective) / (alone - alone@100%)`` (sign-adjusted
for mIoU), relative improvements, and a PNG of metric vs label fraction for both arms.

``--quick`` shrinks everything (32x96, few sequences and steps): a smoke run of the pipeline, not a
result. The simulated data is cached under ``data.root/<size tag>`` and reused.
"""
from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from taskology.bench import BenchResult, target

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "configs" / "consistency.yaml"
RESULTS = REPO / "benchmarks" / "results"
FRACTIONS = (0.02, 0.10, 1.0)
ARMS = ("alone", "collective")
#: headline metric per task: (metric, higher is better).
HEADLINE: dict[str, tuple[str, bool]] = {
    "depth": ("abs_rel", False),
    "normals": ("mean_angle_deg", False),
    "segmentation": ("miou", True),
    "motion": ("ego_translation_err_m", False),
}
QUICK_OVERRIDES = ["sim.sequences=6", "sim.frames=10", "sim.camera=32x96", "data.camera=32x96",
                   "data.test_sequences=2", "train.steps=20", "train.mediator_batch_size=4",
                   "train.checkpoint_every_steps=0", "train.checkpoint_every_s=0", "train.seeds=[0,1]",
                   "train.device=cpu", "train.consistency_start_step=8", "train.consistency_ramp_steps=4",
                   ] + [f"tasks.{t}.{k}" for t in HEADLINE for k in ("width=4", "batch_size=4")]


def _config(quick: bool, extra: list[str]) -> Any:
    from taskology.config import load_config

    return load_config(PRESET, (QUICK_OVERRIDES if quick else []) + extra)


def ensure_data(config: Any) -> Path:
    """Simulate the preset's sequences into ``data.root/<tag>`` unless they are already there."""
    from taskology.config import parse_camera_hw
    from taskology.sim.generate import generate_shard

    sim = config.sim
    hw = parse_camera_hw(sim.camera)
    root = Path(config.data.root) / f"seed{sim.seed}-{sim.sequences}x{sim.frames}-{hw[0]}x{hw[1]}"
    root.mkdir(parents=True, exist_ok=True)
    for index in range(sim.sequences):
        existing = sorted(root.glob(f"*{index:05d}.h5"))
        if not existing:
            generate_shard(root, seed=sim.seed, index=index, frames=sim.frames, camera_hw=hw, lidar_beams=0,
                           frame_rate=sim.frame_rate)
    return root


def _arm_config(base_overrides: list[str], quick: bool, root: Path, fraction: float, arm: str) -> Any:
    extra = [f"data.root={root}", f"train.mode={arm}"] + [f"tasks.{t}.label_fraction={fraction}" for t in HEADLINE]
    return _config(quick, base_overrides + extra)


def _stats(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": statistics.fmean(finite), "std": statistics.pstdev(finite) if len(finite) > 1 else 0.0,
            "n": len(finite), "values": finite}


def gap_recovered(alone: float, collective: float, alone_full: float, higher_is_better: bool) -> float:
    """Share of the alone-vs-full-labels gap closed by collective training (1 = fully closed).

    Example:
        >>> gap_recovered(0.30, 0.24, 0.10, higher_is_better=False)
        0.3
    """
    gap = (alone_full - alone) if higher_is_better else (alone - alone_full)
    gain = (collective - alone) if higher_is_better else (alone - collective)
    return gain / gap if gap != 0 else float("nan")


def relative_gain(alone: float, collective: float, higher_is_better: bool) -> float:
    """How much better collective is than alone, as a fraction of alone (negative: worse)."""
    gain = (collective - alone) if higher_is_better else (alone - collective)
    return gain / abs(alone) if alone else float("nan")


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(HEADLINE), figsize=(4 * len(HEADLINE), 3.4))
    for ax, (task, (metric, higher)) in zip(axes, HEADLINE.items()):
        for arm, style in zip(ARMS, ("o--", "s-")):
            means = [summary[f"{fr}"][arm][task][metric]["mean"] for fr in FRACTIONS]
            stds = [summary[f"{fr}"][arm][task][metric]["std"] for fr in FRACTIONS]
            ax.errorbar([100 * f for f in FRACTIONS], means, yerr=stds, fmt=style, capsize=3, label=arm)
        ax.set_xscale("log")
        ax.set_xlabel("labelled frames (%)")
        ax.set_title(f"{task}: {metric} ({'higher' if higher else 'lower'} is better)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def run(quick: bool) -> BenchResult:
    from taskology.engine.collective import run_collective

    base = _config(quick, [])
    started = time.time()
    root = ensure_data(base)
    sim_s = time.time() - started
    seeds = list(base.train.seeds)
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="taskology-consistency-") as scratch:
        for fraction in FRACTIONS:
            for arm in ARMS:
                cfg = _arm_config([], quick, root, fraction, arm)
                for seed in seeds:
                    t0 = time.time()
                    record = run_collective(cfg, Path(scratch) / f"{fraction}-{arm}-{seed}", seed=seed,
                                            tensorboard=False)
                    timings[f"{fraction}/{arm}/{seed}"] = time.time() - t0
                    runs.setdefault(f"{fraction}", {}).setdefault(arm, {})[str(seed)] = record["tasks"]
    summary: dict[str, Any] = {}
    for fr, arms in runs.items():
        for arm, by_seed in arms.items():
            tasks = next(iter(by_seed.values()))
            summary.setdefault(fr, {})[arm] = {
                task: {m: _stats([by_seed[s][task][m] for s in by_seed]) for m in tasks[task]} for task in tasks}
    targets: dict[str, dict[str, Any]] = {}
    derived: dict[str, Any] = {}
    full = summary[f"{FRACTIONS[-1]}"]["alone"]
    for task, (metric, higher) in HEADLINE.items():
        alone_full = full[task][metric]["mean"]
        for fr in FRACTIONS:
            alone = summary[f"{fr}"]["alone"][task][metric]["mean"]
            coll = summary[f"{fr}"]["collective"][task][metric]["mean"]
            entry = {"alone": alone, "collective": coll, "relative_gain": relative_gain(alone, coll, higher)}
            if fr != FRACTIONS[-1]:
                entry["gap_recovered"] = gap_recovered(alone, coll, alone_full, higher)
                targets[f"{task} {metric} gap recovered @{fr:.0%}"] = target(entry["gap_recovered"], 0.30)
            derived.setdefault(task, {})[f"{fr}"] = entry
        targets[f"{task} {metric} @100%: collective not >2% worse"] = target(
            derived[task][f"{FRACTIONS[-1]}"]["relative_gain"], -0.02)
    for task in ("depth", "normals"):
        metric, higher = HEADLINE[task]
        targets[f"{task} {metric} @2%: collective >=15% better"] = target(
            derived[task][f"{FRACTIONS[0]}"]["relative_gain"], 0.15)
        starved = -relative_gain(full[task][metric]["mean"], summary[f"{FRACTIONS[0]}"]["alone"][task][metric]["mean"],
                                 higher)
        targets[f"{task} {metric}: alone@2% worse than alone@100% (label starvation)"] = target(starved, 0.25)

    lines = ["| task | metric | labels | alone (mean ± std) | collective (mean ± std) | gain | gap recovered |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for task, (metric, _) in HEADLINE.items():
        for fr in FRACTIONS:
            a = summary[f"{fr}"]["alone"][task][metric]
            c = summary[f"{fr}"]["collective"][task][metric]
            d = derived[task][f"{fr}"]
            gap = f"{100 * d['gap_recovered']:.0f} %" if "gap_recovered" in d else "–"
            lines.append(f"| {task} | {metric} | {fr:.0%} | {a['mean']:.4g} ± {a['std']:.2g} | "
                         f"{c['mean']:.4g} ± {c['std']:.2g} | {100 * d['relative_gain']:+.1f} % | {gap} |")
    png = RESULTS / ("consistency-quick.png" if quick else "consistency.png")
    _plot(summary, png)
    cfg_note = (f"{base.sim.sequences} sequences x {base.sim.frames} frames at {base.sim.camera}, "
                f"{base.data.test_sequences} held-out test sequences, {base.train.steps} steps per task, "
                f"seeds {seeds}, device {base.train.device}")
    notes = (f"Setup: {cfg_note}. Equal steps per task in both arms; test split used only for the final "
             f"evaluation. Plot: {png.relative_to(REPO)}. Simulation took {sim_s:.0f} s (0 when cached); "
             f"training + evaluation {sum(timings.values()):.0f} s in total."
             + (" QUICK RUN: sizes far too small for the targets to be meaningful." if quick else ""))
    figures = {"setup": {"data_root": str(root), "fractions": list(FRACTIONS), "seeds": seeds,
                         "steps": base.train.steps, "camera": base.sim.camera, "sequences": base.sim.sequences,
                         "frames": base.sim.frames},
               "summary": summary, "derived": derived, "runs": runs, "seconds": timings, "plot": str(png)}
    return BenchResult(figures=figures, table="\n".join(lines), targets=targets, notes=notes)
