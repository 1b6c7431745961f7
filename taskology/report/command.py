"""``taskology report RUN_DIR``: write ``RUN_DIR/report/`` (metric table, loss curves, staleness, gallery).

``RUN_DIR`` is a training run (``config.yaml``) or a comparison directory with ``alone/`` and
``collective/`` runs (what ``taskology demo`` writes); see :mod:`taskology.report.runs` for what is read.
The report directory holds:

- ``report.md``: the held-out test metric table alone vs collective (relative change), the loss curves,
  the staleness summary and the gallery, plus one note per missing piece;
- ``metrics.json``: the table as data (``{"rows": [{"task", "metric", "alone", "collective",
  "change_pct", "verdict"}], "arms": {...}}``);
- ``loss_<task>.png``, ``staleness.png`` (distributed collective runs only), ``gallery.png``;
- with the LiDAR tasks (``detections/*.npz`` in an arm, :mod:`taskology.report.detections`):
  ``bev_<sequence>_<frame>.png`` (a handful of held-out frames from above: LiDAR points, true boxes, detected
  boxes coloured by track id) and ``track_<sequence>_<id>.png`` (one long-lived track over consecutive frames: camera and BEV crops).

The directory is built next to its destination and renamed into place, so a crash or Ctrl-C never
leaves a half-written report (an older report stays until the new one is complete).

Example:
    $ taskology report runs/demo
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from taskology.atomic import write_json_atomic
from taskology.report.runs import (ARM_NAMES, Arm, find_arms, read_task_scalars, relation_usage,
                                   staleness_samples)
from taskology.report.tables import metric_rows, metric_table_markdown

REPORT_DIR = "report"
GALLERY_SAMPLES = 3


def _describe_arm(arm: Arm) -> str:
    steps = sorted({int(m["step"]) for m in arm.metrics.values() if "step" in m})
    where = "distributed (Dask actors)" if arm.distributed else "in-process"
    step_text = f", evaluated at step {'/'.join(map(str, steps))}" if steps else ""
    seeds = f", mean of {arm.seeds} seeds" if arm.seeds > 1 else ""
    return (f"- **{arm.name}**: `{arm.run_dir}` ({where}, {int(arm.config.train.steps)} steps configured"
            f"{step_text}{seeds}; metrics from {arm.metrics_source or 'nowhere: not evaluated'})")


def _metric_section(arms: dict[str, Arm], notes: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    for name in ARM_NAMES:
        if name not in arms:
            notes.append(f"no {name} arm: the table shows only "
                         f"{', '.join(arms)}; train one with `taskology train CONFIG train.mode={name}` "
                         "(or run `taskology demo`, which trains both)")
        elif not arms[name].metrics:
            notes.append(f"{name} arm {arms[name].run_dir} has no held-out metrics (no eval_test.json or "
                         f"metrics.json); evaluate it with `taskology eval {arms[name].run_dir}`")
    rows = metric_rows(arms["alone"].metrics if "alone" in arms else None,
                       arms["collective"].metrics if "collective" in arms else None)
    lines = ["## Held-out test metrics", ""]
    if rows:
        lines += ["Test split: held-out sequences, every label. ↑ higher is better, ↓ lower is better; "
                  "change = (collective − alone) / |alone|.", "", metric_table_markdown(rows), ""]
    else:
        lines += ["_No metrics to show (see the notes)._", ""]
    data = [{"task": r.task, "metric": r.metric, "alone": r.alone, "collective": r.collective,
             "change_pct": r.change_pct, "verdict": r.verdict} for r in rows]
    return lines, data


def _loss_section(arms: dict[str, Arm], out: Path, notes: list[str]) -> list[str]:
    from taskology.report.plots import plot_loss_curves

    lines = ["## Loss curves", "", "Solid: collective, dashed: alone; faint: logged values, bold: moving average.", ""]
    tasks = list(dict.fromkeys(t for arm in arms.values() for t in arm.tasks))
    for task in tasks:
        scalars = {name: read_task_scalars(arm.seed_dirs()[0], task) for name, arm in arms.items()
                   if task in arm.tasks}
        scalars = {name: s for name, s in scalars.items() if s}
        if not scalars:
            notes.append(f"no logged scalars of {task} (looked for logs/{task}.jsonl and tensorboard/{task}/)")
            continue
        plot_loss_curves(task, scalars, out / f"loss_{task}.png")
        lines += [f"![loss curves of {task}](loss_{task}.png)", ""]
    return lines


def _staleness_section(arms: dict[str, Arm], out: Path, notes: list[str]) -> list[str]:
    import numpy as np

    from taskology.report.plots import plot_staleness_histogram

    lines = ["## Staleness of peer predictions", ""]
    arm = arms.get("collective")
    if arm is None:
        return lines + ["_No collective arm: no peer predictions were used._", ""]
    lines += _relation_usage_lines(arm, notes)
    if not arm.distributed:
        return lines + ["In-process run: predictions fresh (every peer prediction is computed by the peer's "
                        "current model at the step it is used; staleness 0 steps, 0 s).", ""]
    samples = {task: staleness_samples(read_task_scalars(arm.seed_dirs()[0], task)) for task in arm.tasks}
    samples = {task: s for task, s in samples.items() if s[0].size}
    if not samples:
        notes.append(f"distributed collective run {arm.run_dir} logged no staleness (staleness/steps_mean) scalars")
        return lines + ["_Distributed run, but no staleness was logged._", ""]
    plot_staleness_histogram(samples, out / "staleness.png")
    lines += ["Mean staleness of the peer predictions used, per logged step of each consumer task.", "",
              "| consumer | logged steps | median steps | max steps | median s | max s |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for task, (steps, seconds) in samples.items():
        lines.append(f"| {task} | {steps.size} | {np.median(steps):.1f} | {steps.max():.1f} | "
                     f"{np.median(seconds):.1f} | {seconds.max():.1f} |")
    return lines + ["", "![staleness histogram](staleness.png)", ""]


def _relation_usage_lines(arm: Arm, notes: list[str]) -> list[str]:
    """Table of relation terms evaluated vs skipped (no peer prediction) per consumer task, at the
    logged steps after the warm-up; a note when most were skipped (the arm hardly trained collectively)."""
    usage = {task: relation_usage(read_task_scalars(arm.seed_dirs()[0], task)) for task in arm.tasks}
    usage = {task: u for task, u in usage.items() if u}
    if not usage:
        return []
    lines = ["Relation terms at the logged steps: evaluated / skipped because no peer prediction covered the "
             "mediator samples.", "", "| consumer | relation | evaluated | skipped |", "| --- | --- | ---: | ---: |"]
    for task, relations in usage.items():
        used = sum(u for u, _ in relations.values())
        skipped = sum(k for _, k in relations.values())
        for name, (u, k) in relations.items():
            lines.append(f"| {task} | {name} | {u} | {k} |")
        if skipped > used:
            notes.append(f"collective arm: {task} skipped {skipped} of {used + skipped} logged relation terms "
                         "(no peer prediction for its mediator samples): it hardly trained collectively")
    return lines + [""]


def _gallery_section(arms: dict[str, Arm], out: Path, notes: list[str]) -> list[str]:
    from taskology.report.gallery import draw_gallery
    from taskology.report.predictions import gallery_rows

    lines = ["## Gallery (held-out test samples)", "",
             "Columns: rgb | ground truth | alone | collective. Depth: magma (near bright) over a shared range "
             "per row; normals: (n + 1) / 2 as RGB; segmentation: CARLA palette; motion: object-translation "
             "magnitude (viridis, metres) with the ego translation in the caption.", ""]
    inputs = gallery_rows(arms, samples_per_task=GALLERY_SAMPLES)
    notes.extend(inputs.notes)
    if not inputs.rows:
        return lines + ["_No gallery (see the notes)._", ""]
    draw_gallery(inputs.rows, out / "gallery.png")
    return lines + ["![gallery](gallery.png)", ""]


def _detections_section(arms: dict[str, Arm], out: Path, notes: list[str]) -> list[str]:
    from taskology.report.detections import detections_section

    return detections_section(arms, out, notes)


def build_report(run_dir: Path, out: Path) -> Path:
    """Write every report file of ``run_dir`` into the existing directory ``out``; returns ``out/report.md``."""
    arms = find_arms(run_dir)
    notes: list[str] = []
    lines = [f"# Taskology report: `{run_dir}`", "", "Arms:", ""]
    lines += [_describe_arm(arm) for arm in arms.values()] + [""]
    metric_lines, metric_data = _metric_section(arms, notes)
    lines += metric_lines
    lines += _loss_section(arms, out, notes)
    lines += _staleness_section(arms, out, notes)
    lines += _gallery_section(arms, out, notes)
    lines += _detections_section(arms, out, notes)
    lines += ["## Notes", ""] + ([f"- {n}" for n in notes] if notes else ["- nothing missing"]) + [""]
    write_json_atomic(out / "metrics.json", {
        "rows": metric_data, "notes": notes,
        "arms": {a.name: {"run_dir": str(a.run_dir), "distributed": a.distributed, "seeds": a.seeds,
                          "metrics_source": a.metrics_source} for a in arms.values()}})
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"


def write_report(run_dir: Path) -> Path:
    """Build ``run_dir/report/`` atomically (temp dir + rename); returns the report directory."""
    run_dir = Path(run_dir)
    find_arms(run_dir)  # a bad run dir fails here, before anything is written
    final = run_dir / REPORT_DIR
    tmp = Path(tempfile.mkdtemp(prefix=f".{REPORT_DIR}.tmp", dir=run_dir))
    try:
        build_report(run_dir, tmp)
        os.chmod(tmp, 0o755)
        old = None
        if final.exists():
            old = run_dir / f".{REPORT_DIR}.old{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def report_command(run_dir: Path) -> Path:
    """Entry point of ``taskology report``: write the report and print where it is."""
    final = write_report(Path(run_dir))
    print(f"report written to {final / 'report.md'}", flush=True)
    return final
