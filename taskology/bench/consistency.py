"""``taskology bench consistency``: camera tasks trained alone vs collectively, at 2 %, 10 %, 100 % labels.

For every label fraction and seed, the same preset (``consistency``, taskology/configs/consistency.yaml) is
trained twice with
the in-process engine, equal steps per task: (a) ``alone`` (each task on its labelled frames only) and
(b) ``collective`` (plus the consistency relations on the mediator split). Every run is evaluated on
the held-out test sequences (never used for any choice). Figures: mean and standard deviation over
seeds of depth AbsRel, normals mean angle, segmentation mIoU and ego-motion translation error (plus
the other metrics), the gap recovered ``(alone - collective) / (alone - alone@100%)`` (sign-adjusted
for mIoU), relative improvements, and a PNG of metric vs label fraction for both arms.

``--quick`` shrinks everything (32x96, few sequences and steps): a smoke run of the pipeline, not a
result. The simulated data is cached under ``data.root/<size tag>`` and reused
(:func:`taskology.experiment.ensure_world`).

``--runs-dir DIR`` keeps every run's directory in ``DIR/<fraction>-<arm>-<seed>`` instead of a temporary
folder, and reuses a run already finished there (its ``metrics.json``): a benchmark stopped part-way goes on
where it stopped. ``--rerun FRACTION/ARM`` (repeatable, e.g. ``0.02/collective``) trains those runs again
even when finished, for a preset change that affects only them (the alone arm never reads the relations);
which arms to rerun is the user's claim, and the result names every reused run. A run is trained in
``DIR/.<name>.partial`` and replaces a finished one only when it finishes itself.
"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from taskology.bench import BenchResult, target
from taskology.errors import ConfigError
from taskology.sim.cache import recorded_world

#: the preset this benchmark trains by default (a shipped preset, taskology/configs/consistency.yaml)
PRESET = "consistency"
RESULTS = Path("benchmarks/results")
FRACTIONS = (0.02, 0.10, 1.0)
ARMS = ("alone", "collective")
#: headline metric per task: (metric, higher is better).
HEADLINE: dict[str, tuple[str, bool]] = {
    "depth": ("abs_rel", False),
    "normals": ("mean_angle_deg", False),
    "segmentation": ("miou", True),
    "motion": ("ego_translation_err_m", False),
}
#: headline metric of the LiDAR tasks, when the preset trains them (the six-task experiment).
LIDAR_HEADLINE: dict[str, tuple[str, bool]] = {
    "detection": ("vehicle/ap_bev@0.5", True),
    "tracking": ("vehicle/motion_error_m", False),
}
#: further figures the six-task experiment has targets for: tracking's MOTA, segmentation's movable classes.
LIDAR_FIGURES: tuple[tuple[str, str, bool], ...] = (
    ("tracking", "vehicle/mota", True), ("segmentation", "iou_vehicle", True), ("segmentation", "iou_pedestrian", True))
QUICK_OVERRIDES = ["sim.sequences=6", "sim.frames=10", "sim.camera=32x96", "data.camera=32x96", "data.val_sequences=1",
                   "data.test_sequences=2", "train.steps=20", "train.mediator_batch_size=4",
                   "train.checkpoint_every_steps=0", "train.checkpoint_every_s=0", "train.seeds=[0,1]",
                   "train.device=cpu", "train.consistency_start_step=8", "train.consistency_ramp_steps=4",
                   ] + [f"tasks.{t}.{k}" for t in HEADLINE for k in ("width=4", "batch_size=4")]


def quick_overrides(tasks: Iterable[str]) -> list[str]:
    """:data:`QUICK_OVERRIDES` plus small LiDAR tasks for a preset that trains ``tasks`` (none is added)."""
    return QUICK_OVERRIDES + [f"tasks.{t}.{k}" for t in LIDAR_HEADLINE if t in tasks
                              for k in ("width=4", "batch_size=2")]


def figure_rows(summary: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(task, metric, higher is better) of the table: the headline metric of every task the summary has, and for a
    preset with the LiDAR tasks :data:`LIDAR_FIGURES`."""
    tasks = summary[f"{FRACTIONS[-1]}"]["alone"]
    rows = [(task, metric, higher) for task, (metric, higher) in {**HEADLINE, **LIDAR_HEADLINE}.items() if task in tasks]
    if "detection" in tasks:
        rows += [row for row in LIDAR_FIGURES if row[0] in tasks]
    return rows


def _one_run(preset: str, root: str, fraction: float, arm: str, seed: int, run_dir: str, threads: int,
             overrides: tuple[str, ...]) -> tuple[dict[str, Any], float]:
    """One (fraction, arm, seed) run on the test split, in a worker process (:func:`taskology.experiment.run_arm`)."""
    from taskology.experiment import run_arm

    return run_arm(preset, fraction, arm, seed=seed, run_dir=run_dir, data_root=Path(root), overrides=overrides,
                   threads=threads)


def run_name(fraction: float, arm: str, seed: int) -> str:
    """Folder name of one run under ``--runs-dir``.

    Example:
        >>> run_name(0.02, "collective", 1)
        '0.02-collective-1'
    """
    return f"{fraction}-{arm}-{seed}"


def parse_rerun(values: Iterable[str]) -> set[tuple[float, str]]:
    """``--rerun FRACTION/ARM`` values -> {(fraction, arm)}, checked against the benchmark's own.

    Example:
        >>> sorted(parse_rerun(["0.02/collective", "0.1/collective"]))
        [(0.02, 'collective'), (0.1, 'collective')]
        >>> parse_rerun(["0.5/alone"])
        Traceback (most recent call last):
        ...
        taskology.errors.ConfigError: --rerun '0.5/alone': expected FRACTION/ARM with FRACTION one of 0.02, 0.1, 1.0 and ARM one of alone, collective
    """
    out: set[tuple[float, str]] = set()
    for value in values:
        fraction, _, arm = str(value).partition("/")
        try:
            fr = next(f for f in FRACTIONS if math.isclose(f, float(fraction)))
        except (ValueError, StopIteration):
            fr = None
        if fr is None or arm not in ARMS:
            raise ConfigError(f"--rerun {value!r}: expected FRACTION/ARM with FRACTION one of "
                              f"{', '.join(map(str, FRACTIONS))} and ARM one of {', '.join(ARMS)}")
        out.add((fr, arm))
    return out


def plan_runs(jobs: Sequence[tuple[float, str, int]], runs_dir: Path, rerun: set[tuple[float, str]], steps: int,
              world: str | None = None
              ) -> tuple[dict[tuple[float, str, int], dict[str, Any]], list[tuple[float, str, int]]]:
    """Split ``jobs`` into runs already finished under ``runs_dir`` (job -> their test metrics) and runs to
    train: those without a ``metrics.json``, or whose (fraction, arm) is in ``rerun``. A record that is not
    this job's run (another arm, seed, split or step count, a headline metric missing, or, where ``world``
    is given, trained on another world: taskology.sim.cache) is refused."""
    reused: dict[tuple[float, str, int], dict[str, Any]] = {}
    todo: list[tuple[float, str, int]] = []
    for job in jobs:
        fraction, arm, seed = job
        path = Path(runs_dir) / run_name(*job) / "metrics.json"
        if (fraction, arm) in rerun or not path.is_file():
            todo.append(job)
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--runs-dir: {path}: not a readable run record ({type(exc).__name__}: {exc})") from exc
        tasks = record.get("tasks") if isinstance(record, dict) else None
        found = {k: record.get(k) for k in ("mode", "seed", "split", "steps")} if isinstance(record, dict) else {}
        wanted = {"mode": arm, "seed": seed, "split": "test", "steps": steps}
        if found != wanted or not isinstance(tasks, dict):
            raise ConfigError(f"--runs-dir: {path}: a different run ({found}) from the one this benchmark needs "
                              f"there ({wanted}); move it away or pick another directory")
        if world is not None and record.get("world") != world:
            raise ConfigError(f"--runs-dir: {path}: trained on world {record.get('world')}, not on the data root's "
                              f"world {world}; pass --rerun {fraction:g}/{arm} or pick another directory")
        missing = [f"{t}.{m}" for t, (m, _) in HEADLINE.items() if not isinstance(tasks.get(t), dict) or m not in tasks[t]]
        if missing:
            raise ConfigError(f"--runs-dir: {path}: no {', '.join(missing)} in the run record")
        reused[job] = tasks
    return reused, todo


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
        >>> gap_recovered(0.06, 0.09, 0.12, higher_is_better=False)  # alone@100% worse: no gap
        nan
    """
    gap = (alone_full - alone) if higher_is_better else (alone - alone_full)
    gain = (collective - alone) if higher_is_better else (alone - collective)
    return gain / gap if gap > 0 else float("nan")  # no gap (full labels not better): nothing to recover


def relative_gain(alone: float, collective: float, higher_is_better: bool) -> float:
    """How much better collective is than alone, as a fraction of alone (negative: worse)."""
    gain = (collective - alone) if higher_is_better else (alone - collective)
    return gain / abs(alone) if alone else float("nan")


def derive(summary: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[str]]:
    """Gains, gaps recovered, the acceptance targets and the table rows from the per-arm seed statistics."""
    targets: dict[str, dict[str, Any]] = {}
    derived: dict[str, Any] = {}
    full = summary[f"{FRACTIONS[-1]}"]["alone"]
    rows = figure_rows(summary)
    lidar = "detection" in full
    for task, metric, higher in rows:
        alone_full = full[task][metric]["mean"]
        for fr in FRACTIONS:
            alone = summary[f"{fr}"]["alone"][task][metric]["mean"]
            coll = summary[f"{fr}"]["collective"][task][metric]["mean"]
            entry = {"alone": alone, "collective": coll, "relative_gain": relative_gain(alone, coll, higher)}
            if fr != FRACTIONS[-1]:
                entry["gap_recovered"] = gap_recovered(alone, coll, alone_full, higher)
            derived.setdefault(task, {}).setdefault(metric, {})[f"{fr}"] = entry
        targets[f"{task} {metric} @100%: collective not >2% worse"] = target(
            derived[task][metric][f"{FRACTIONS[-1]}"]["relative_gain"], -0.02)
    gap, gain = "gap recovered", "collective better by"
    wanted = ([(t, m, f, gap, 0.30) for t, m, _ in rows if t in HEADLINE for f in FRACTIONS[:-1]]
              + [(t, HEADLINE[t][0], FRACTIONS[0], gain, 0.15) for t in ("depth", "normals") if t in full])
    if lidar:  # the six-task experiment's own targets
        wanted = ([(t, HEADLINE[t][0], f, gap, 0.30) for t in ("depth", "normals") if t in full for f in FRACTIONS[:-1]]
                  + [("detection", LIDAR_HEADLINE["detection"][0], 0.1, gap, 0.30),
                     ("detection", LIDAR_HEADLINE["detection"][0], 0.02, gain, 0.15)]
                  + [("tracking", m, 0.1, gap, 0.30) for m in (LIDAR_HEADLINE["tracking"][0], "vehicle/mota")]
                  + [("motion", HEADLINE["motion"][0], f, gain, 0.30) for f in FRACTIONS[:-1] if "motion" in full]
                  + [("segmentation", m, f, gap, 0.30) for m in ("iou_vehicle", "iou_pedestrian")
                     for f in FRACTIONS[:-1] if "segmentation" in full])
    for task, metric, fr, kind, goal in wanted:
        if task not in derived or metric not in derived[task]:
            continue
        entry = derived[task][metric][f"{fr}"]
        if kind == gap:
            targets[f"{task} {metric} gap recovered @{fr:.0%}"] = target(entry["gap_recovered"], goal)
        else:
            targets[f"{task} {metric} @{fr:.0%}: collective >={goal:.0%} better"] = target(entry["relative_gain"], goal)
    for task in ("depth", "normals"):
        if task not in full or lidar:
            continue
        metric, higher = HEADLINE[task]
        starved = -relative_gain(full[task][metric]["mean"], summary[f"{FRACTIONS[0]}"]["alone"][task][metric]["mean"],
                                 higher)
        targets[f"{task} {metric}: alone@2% worse than alone@100% (label starvation)"] = target(starved, 0.25)

    lines = ["| task | metric | labels | alone (mean ± std) | collective (mean ± std) | gain | gap recovered |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for task, metric, _ in rows:
        for fr in FRACTIONS:
            a = summary[f"{fr}"]["alone"][task][metric]
            c = summary[f"{fr}"]["collective"][task][metric]
            d = derived[task][metric][f"{fr}"]
            gap = "–" if "gap_recovered" not in d else (
                "n/a (no gap)" if math.isnan(d["gap_recovered"]) else f"{100 * d['gap_recovered']:.0f} %")
            lines.append(f"| {task} | {metric} | {fr:.0%} | {a['mean']:.4g} ± {a['std']:.2g} | "
                         f"{c['mean']:.4g} ± {c['std']:.2g} | {100 * d['relative_gain']:+.1f} % | {gap} |")
    return derived, targets, lines


def rerender(json_path: Path) -> None:
    """Recompute the derived figures, targets and table of a saved result (same runs) and rewrite its
    ``.json``, ``.md`` and ``.png``; the note says so. For corrections of the derivation, never of the runs."""
    import json

    from taskology.atomic import write_text_atomic

    record = json.loads(Path(json_path).read_text())
    derived, targets, lines = derive(record["figures"]["summary"])
    record["figures"]["derived"], record["targets"] = derived, targets
    note = ("Derived figures recomputed from this run's per-seed metrics by "
            f"`python -m taskology.bench.consistency --rerender {json_path}` (a gap recovered is n/a where "
            "alone at 100 % labels is not better than alone at that fraction: there is no gap to recover).")
    if note not in record["notes"]:
        record["notes"] = record["notes"].rstrip() + " " + note
    write_text_atomic(Path(json_path), json.dumps(record, indent=2, default=float) + "\n")
    _plot(record["figures"]["summary"], Path(json_path).with_suffix(".png"))
    md = Path(json_path).with_suffix(".md")
    head = md.read_text().split("\n| task | metric |")[0].rstrip("\n")
    out = [head, "", *lines, "", "| target | value | goal | met |", "| --- | --- | --- | --- |"]
    out += [f"| {k} | {v['value']:.4g} | {v['target']} | {'yes' if v['met'] else '**no**'} |" for k, v in targets.items()]
    out += ["", record["notes"].rstrip(), ""]
    write_text_atomic(md, "\n".join(out))


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = figure_rows(summary)
    columns = min(len(rows), 4)
    lines = -(-len(rows) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4 * columns, 3.4 * lines), squeeze=False)
    for ax in axes.flat[len(rows):]:
        ax.axis("off")
    axes = axes.flat
    for ax, (task, metric, higher) in zip(axes, rows):
        for arm, style in zip(ARMS, ("o--", "s-")):
            means = [summary[f"{fr}"][arm][task][metric]["mean"] for fr in FRACTIONS]
            stds = [summary[f"{fr}"][arm][task][metric]["std"] for fr in FRACTIONS]
            ax.errorbar([100 * f for f in FRACTIONS], means, yerr=stds, fmt=style, capsize=3, label=arm)
        ax.set_xscale("log")
        ax.set_xticks([100 * f for f in FRACTIONS], [f"{100 * f:g}" for f in FRACTIONS])
        ax.minorticks_off()
        ax.set_xlabel("labelled frames (%)")
        ax.set_title(f"{task}: {metric} ({'higher' if higher else 'lower'} is better)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    from taskology.atomic import save_figure_atomic

    save_figure_atomic(fig, path, dpi=110)


def run(quick: bool, config: Path | None = None, out_dir: Path = RESULTS,
        overrides: tuple[str, ...] = (), runs_dir: Path | None = None, rerun: tuple[str, ...] = ()) -> BenchResult:
    """All (fraction, arm, seed) runs, as many at a time as there are cores (one process each, the
    cores split between them; on a GPU machine they share the GPU). ``runs_dir``/``rerun``: keep the runs
    and reuse finished ones (module docstring)."""
    import os

    from taskology.bench.parallel import map_in_processes
    from taskology.config import load_config
    from taskology.experiment import ensure_world

    if rerun and runs_dir is None:
        raise ConfigError("--rerun needs --runs-dir: it names runs to train again among those kept there")
    again = parse_rerun(rerun)
    user_overrides = tuple(overrides)
    preset = str(config) if config is not None else PRESET
    overrides = tuple((quick_overrides(load_config(preset, list(overrides)).enabled_tasks()) if quick else [])
                      + list(overrides))
    base = load_config(preset, overrides)
    seeds = list(base.train.seeds)
    jobs = [(fraction, arm, seed) for fraction in FRACTIONS for arm in ARMS for seed in seeds]
    started = time.time()
    root = ensure_world(base)
    sim_s = time.time() - started
    world = recorded_world(root)
    reused, todo = (plan_runs(jobs, runs_dir, again, int(base.train.steps), world) if runs_dir is not None
                    else ({}, jobs))
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    timings: dict[str, float] = {}
    for (fraction, arm, seed), tasks in reused.items():
        runs.setdefault(f"{fraction}", {}).setdefault(arm, {})[str(seed)] = tasks
    cores = os.cpu_count() or 1
    workers = max(1, min(len(todo), cores))
    wall0 = time.time()
    with contextlib.ExitStack() as stack:
        if runs_dir is None:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="taskology-consistency-")))
        else:
            scratch = Path(runs_dir)
            scratch.mkdir(parents=True, exist_ok=True)
        for job in todo:  # a killed run's leftovers; its finished predecessor, if any, stays until replaced
            shutil.rmtree(scratch / f".{run_name(*job)}.partial", ignore_errors=True)
        args = {(fraction, arm, seed): (preset, str(root), fraction, arm, seed,
                                        str(scratch / f".{run_name(fraction, arm, seed)}.partial"),
                                        max(cores // workers, 1), overrides)
                for fraction, arm, seed in todo}
        for done, ((fraction, arm, seed), (tasks, seconds)) in enumerate(map_in_processes(_one_run, args, workers), 1):
            final = scratch / run_name(fraction, arm, seed)
            replaced = scratch / f".{final.name}.replaced"  # renames only: a crash here leaves one of them whole
            shutil.rmtree(replaced, ignore_errors=True)
            if final.exists():
                final.rename(replaced)
            (scratch / f".{final.name}.partial").rename(final)
            shutil.rmtree(replaced, ignore_errors=True)
            timings[f"{fraction}/{arm}/{seed}"] = seconds
            runs.setdefault(f"{fraction}", {}).setdefault(arm, {})[str(seed)] = tasks
            print(f"[{done}/{len(todo)}] labels {fraction:.0%} {arm} seed {seed}: {seconds:.0f} s "
                  f"({time.time() - wall0:.0f} s elapsed)", flush=True)
    runs = {f"{fr}": {arm: dict(sorted(runs[f"{fr}"][arm].items())) for arm in ARMS} for fr in FRACTIONS}
    summary: dict[str, Any] = {}
    for fr, arms in runs.items():
        for arm, by_seed in arms.items():
            tasks = next(iter(by_seed.values()))
            summary.setdefault(fr, {})[arm] = {
                task: {m: _stats([by_seed[s][task][m] for s in by_seed]) for m in tasks[task]} for task in tasks}
    derived, targets, lines = derive(summary)
    from taskology.bench import result_stem

    png = Path(out_dir) / f"{result_stem('consistency', quick, config, user_overrides)}.png"
    _plot(summary, png)
    cfg_note = (f"{base.sim.sequences} sequences x {base.sim.frames} frames at {base.sim.camera} (world {world}), "
                f"{base.data.test_sequences} held-out test sequences, {base.train.steps} steps per task, "
                f"seeds {seeds}, device {base.train.device}")
    notes = (f"Setup: {cfg_note}. Equal steps per task in both arms; test split used only for the final "
             f"evaluation. Plot: {png}. Simulation took {sim_s:.0f} s (0 when cached); "
             f"training + evaluation {sum(timings.values()):.0f} s of run time, {time.time() - wall0:.0f} s wall "
             f"({workers} runs at a time)."
             + (f" Reused {len(reused)} finished run(s) from {runs_dir} (not trained by this command): "
                f"{', '.join(run_name(*job) for job in reused)}." if reused else "")
             + (" QUICK RUN: sizes far too small for the targets to be meaningful." if quick else ""))
    figures = {"setup": {"preset": preset, "overrides": list(user_overrides),
                         "data_root": str(root), "world": world, "fractions": list(FRACTIONS), "seeds": seeds,
                         "steps": base.train.steps, "camera": base.sim.camera, "sequences": base.sim.sequences,
                         "frames": base.sim.frames},
               "summary": summary, "derived": derived, "runs": runs, "seconds": timings, "plot": str(png),
               "reused_runs": [run_name(*job) for job in reused]}
    return BenchResult(figures=figures, table="\n".join(lines), targets=targets, notes=notes)


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--rerender":
        try:
            rerender(Path(sys.argv[2]))
        except (OSError, ValueError, KeyError) as exc:
            sys.exit(f"taskology: error: --rerender {sys.argv[2]}: not a readable consistency result "
                     f"({type(exc).__name__}: {exc})")
    else:
        sys.exit("usage: python -m taskology.bench.consistency --rerender RESULT.json")
