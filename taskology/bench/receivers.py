"""``taskology bench receivers --config PRESET``: which tasks each relation should feed, chosen on the
validation split (never on test).

A relation ties several tasks and by default feeds every one of them. Where one side is much weaker it
can pull the stronger side down: at 2 % labels normals differentiated from the depth network are ~10
degrees worse than the normals network's own (docs/consistency.md). This benchmark decides, per
*factor* (one receiving task's feed from some relations), whether to keep it:

- ``normals <- depth_normals``: does ``depth_normals`` feed the normals task?
- ``segmentation <- logic``: do ``segmentation_motion`` and ``segmentation_geometry`` feed segmentation?

It trains the 2x2 factorial design (every combination of the factors on/off) collectively, plus the
alone arm, at the label fractions the targets are about (2 % and 10 %), with the preset's first seed,
and evaluates each run on the **validation** sequences (``data.val_sequences`` must be >= 1). A
factor is kept when its receiving task's headline metric, averaged over the fractions and over the
other factor's levels, is better with it than without. The result lists the chosen ``receivers``
overrides, to be written into the preset by hand (the choice is reviewed, not applied silently).
"""
from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from taskology.bench import BenchResult
from taskology.bench.consistency import HEADLINE, PRESET, _config, _one_run, ensure_data
from taskology.errors import ConfigError

FRACTIONS = (0.02, 0.10)
#: factor -> (receiving task, the overrides that switch the feed off).
FACTORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "normals <- depth_normals": ("normals", ("relations.depth_normals.receivers.normals=0",)),
    "segmentation <- logic": ("segmentation", ("relations.segmentation_motion.receivers.segmentation=0",
                                               "relations.segmentation_geometry.receivers.segmentation=0")),
}


def variants() -> dict[str, tuple[str, ...]]:
    """Variant name -> overrides, one per combination of factors (name lists the factors switched off).

    Example:
        >>> len(variants()), variants()["all"]
        (4, ())
        >>> variants()["no normals <- depth_normals"]
        ('relations.depth_normals.receivers.normals=0',)
    """
    out: dict[str, tuple[str, ...]] = {}
    for off in itertools.product((False, True), repeat=len(FACTORS)):
        names = [name for name, o in zip(FACTORS, off) if o]
        out[", ".join(f"no {n}" for n in names) or "all"] = tuple(
            override for name in names for override in FACTORS[name][1])
    return out


def choose(results: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]]) -> dict[str, dict[str, Any]]:
    """Decide each factor from ``results[fraction][variant][task][metric]`` (collective runs).

    Returns factor -> {"task", "metric", "with", "without", "keep"}: the receiving task's headline
    metric averaged over fractions and the other factors' levels, with and without the feed.

    Example:
        >>> r = {"0.02": {v: {"normals": {"mean_angle_deg": 30.0 if "no normals" in v else 33.0},
        ...                   "segmentation": {"miou": 0.5}} for v in variants()}}
        >>> d = choose(r)
        >>> d["normals <- depth_normals"]["keep"], d["segmentation <- logic"]["keep"]
        (False, True)
    """
    decisions: dict[str, dict[str, Any]] = {}
    for factor, (task, _) in FACTORS.items():
        metric, higher = HEADLINE[task]
        with_, without = [], []
        for by_variant in results.values():
            for variant, tasks in by_variant.items():
                (without if f"no {factor}" in variant else with_).append(float(tasks[task][metric]))
        on, off = statistics.fmean(with_), statistics.fmean(without)
        keep = on >= off if higher else on <= off  # ties keep the relation's default (feed every task)
        decisions[factor] = {"task": task, "metric": metric, "with": on, "without": off, "keep": bool(keep)}
    return decisions


def validation_runs(preset: Path, quick: bool, jobs: list[tuple[float, str, str, tuple[str, ...]]],
                    overrides: tuple[str, ...] = ()) -> tuple[Any, dict[str, dict[str, Any]], dict[str, float], int]:
    """Train ``jobs`` = [(label fraction, arm, name, overrides)] with the preset's first seed and
    evaluate each on the validation split, as many at a time as there are cores. ``overrides``: changes
    to the preset for every run (``taskology bench --set``).

    Returns (base config, results[fraction][name][task][metric], seconds["fraction/name"], runs at a
    time). Raises ConfigError when the preset has no validation sequences: choices are never made on test.
    """
    import os

    from taskology.bench.parallel import map_in_processes

    extra = ("data.val_sequences=1",) if quick else ()  # the quick world is too small for the preset's 2
    extra += tuple(overrides)
    base = _config(quick, list(extra), preset)
    if int(base.data.val_sequences) < 1:
        raise ConfigError(f"{preset}: data.val_sequences must be >= 1: choices are made on validation "
                          "sequences, never on test")
    root = ensure_data(base)
    seed = int(base.train.seeds[0])
    cores = os.cpu_count() or 1
    workers = max(1, min(len(jobs), cores))
    results: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    wall0 = time.time()
    with tempfile.TemporaryDirectory(prefix="taskology-val-") as scratch:
        args = {(fr, name): (str(preset), quick, str(root), fr, arm, seed, str(Path(scratch) / f"{fr}-{k}"),
                             max(cores // workers, 1), extra + tuple(overrides), "val")
                for k, (fr, arm, name, overrides) in enumerate(jobs)}
        for done, ((fr, name), (tasks, took)) in enumerate(map_in_processes(_one_run, args, workers), 1):
            results.setdefault(f"{fr}", {})[name] = tasks
            seconds[f"{fr}/{name}"] = took
            print(f"[{done}/{len(jobs)}] labels {fr:.0%} {name}: {took:.0f} s ({time.time() - wall0:.0f} s elapsed)",
                  flush=True)
    return base, results, seconds, workers


def metric_rows(results: Mapping[str, Mapping[str, Any]], names: tuple[str, ...]) -> list[str]:
    """A Markdown table of the headline metrics, one row per (fraction, run name)."""
    lines = ["| labels | variant | " + " | ".join(f"{t} {m}" for t, (m, _) in HEADLINE.items()) + " |",
             "| --- | --- | " + " | ".join("---" for _ in HEADLINE) + " |"]
    for fr in sorted(results, key=float):
        for name in names:
            row = results[fr][name]
            lines.append(f"| {float(fr):.0%} | {name} | "
                         + " | ".join(f"{row[t][m]:.4g}" for t, (m, _) in HEADLINE.items()) + " |")
    return lines


def run(quick: bool, config: Path | None = None, overrides: tuple[str, ...] = ()) -> BenchResult:
    """The factorial runs (see the module docstring), two at a time on separate cores."""
    preset = Path(config) if config is not None else PRESET
    jobs = [(fr, "alone", "alone", ()) for fr in FRACTIONS]
    jobs += [(fr, "collective", name, overrides) for fr in FRACTIONS for name, overrides in variants().items()]
    wall0 = time.time()
    base, results, seconds, workers = validation_runs(preset, quick, jobs, overrides)
    seed = int(base.train.seeds[0])
    collective = {fr: {v: r[v] for v in variants()} for fr, r in results.items()}
    decisions = choose(collective)
    lines = metric_rows(results, ("alone", *variants()))
    lines += ["", "| factor | receiving metric | with (mean) | without (mean) | decision |", "| --- | --- | --- | --- | --- |"]
    for factor, d in decisions.items():
        lines.append(f"| {factor} | {d['task']} {d['metric']} | {d['with']:.4g} | {d['without']:.4g} | "
                     f"{'keep' if d['keep'] else 'drop'} |")
    chosen = [o for factor, d in decisions.items() if not d["keep"] for o in FACTORS[factor][1]]
    notes = (f"Evaluated on the {base.data.val_sequences} validation sequence(s) only, seed {seed}, "
             f"{base.train.steps} steps per task, labels {', '.join(f'{f:.0%}' for f in FRACTIONS)}; "
             f"{time.time() - wall0:.0f} s wall ({workers} runs at a time). Chosen overrides: "
             + (", ".join(f"`{o}`" for o in chosen) if chosen else "none (every relation feeds every task)")
             + (". QUICK RUN: sizes far too small for the choice to mean anything." if quick else "."))
    figures = {"setup": {"preset": str(preset), "seed": seed, "fractions": list(FRACTIONS),
                         "steps": base.train.steps, "val_sequences": base.data.val_sequences},
               "results": results, "decisions": decisions, "chosen_overrides": chosen, "seconds": seconds}
    return BenchResult(figures=figures, table="\n".join(lines), targets={}, notes=notes)
