"""``taskology bench receivers --config PRESET``: which tasks each relation should feed, chosen on the
validation split (never on test).

A relation ties several tasks and by default feeds every one of them. Where one side is much weaker it
can pull the stronger side down: at 2 % labels normals differentiated from the depth network are ~10
degrees worse than the normals network's own (docs/consistency.md). This benchmark decides, per
*factor* (one receiving task's feed from some relations), whether to keep it:

- ``normals <- depth_normals``: does ``depth_normals`` feed the normals task?
- ``segmentation <- logic``: do ``segmentation_motion`` and ``segmentation_geometry`` feed segmentation
  (with the relations' options in the preset, e.g. their tolerances, and relation factor 1)?
- ``segmentation <- ground``: does ``segmentation_ground`` (positive evidence: a level surface at ground
  height is road, sidewalk, road line or terrain) feed segmentation (relation factor 1)?
- ``segmentation <- temporal``: does ``segmentation_temporal`` (its own confident frame-t+1 classes,
  carried back to frame t by the peers' depth and motion where the warped colour agrees) feed
  segmentation (relation factor 1)?

Each factor is switched on and off explicitly, whatever the preset says. The benchmark trains the
factorial design (every combination of the factors on/off; ``--factor NAME`` varies only the named
ones and leaves the others as the preset has them) collectively, plus the alone arm, at the label
fractions the targets are about (2 % and 10 %), for **every seed of the preset**, and evaluates each
run on the **validation** sequences (``data.val_sequences`` must be >= 1). Per factor and label
fraction, a feed is kept when its receiving task's headline metric, averaged over the other factors'
levels, is better with it than without **on every seed** (the worst-seed rule of ``bench
label-weights``: a single seed moves these numbers by up to 22 points). The result lists the decisions
per fraction, to be written into the preset by hand (the choice is reviewed, not applied silently).
"""
from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from taskology.bench import BenchResult
from taskology.bench.consistency import HEADLINE, PRESET, _config, _one_run, data_root, ensure_data
from taskology.sim.cache import recorded_world
from taskology.errors import ConfigError

FRACTIONS = (0.02, 0.10)
#: factor -> (receiving task, overrides that switch the feed on, overrides that switch it off).
FACTORS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "normals <- depth_normals": ("normals", ("relations.depth_normals.receivers.normals=1",),
                                 ("relations.depth_normals.receivers.normals=0",)),
    "segmentation <- logic": ("segmentation",
                              ("relations.segmentation_motion.receivers.segmentation=1",
                               "relations.segmentation_geometry.receivers.segmentation=1",
                               "tasks.segmentation.relation_weight_by_labels=[]"),
                              ("relations.segmentation_motion.receivers.segmentation=0",
                               "relations.segmentation_geometry.receivers.segmentation=0")),
    "segmentation <- ground": ("segmentation",
                               ("relations.segmentation_ground.receivers.segmentation=1",
                                "tasks.segmentation.relation_weight_by_labels=[]"),
                               ("relations.segmentation_ground.receivers.segmentation=0",)),
    "segmentation <- temporal": ("segmentation",
                                 ("relations.segmentation_temporal.receivers.segmentation=1",
                                  "tasks.segmentation.relation_weight_by_labels=[]"),
                                 ("relations.segmentation_temporal.receivers.segmentation=0",)),
}


def variants(factors: Sequence[str] = tuple(FACTORS)) -> dict[str, tuple[str, ...]]:
    """Variant name -> overrides, one per combination of ``factors`` on/off (the name lists those off).

    Example:
        >>> len(variants()), variants()["all"][0]
        (16, 'relations.depth_normals.receivers.normals=1')
        >>> variants(["normals <- depth_normals"])["no normals <- depth_normals"]
        ('relations.depth_normals.receivers.normals=0',)
    """
    out: dict[str, tuple[str, ...]] = {}
    for off in itertools.product((False, True), repeat=len(factors)):
        names = [name for name, o in zip(factors, off) if o]
        out[", ".join(f"no {n}" for n in names) or "all"] = tuple(
            override for name, o in zip(factors, off) for override in FACTORS[name][2 if o else 1])
    return out


def choose(results: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]]],
           factors: Sequence[str] = tuple(FACTORS)) -> dict[str, dict[str, dict[str, Any]]]:
    """Decide each factor per label fraction from ``results[seed][fraction][variant][task][metric]``
    (collective runs).

    Returns factor -> fraction -> {"task", "metric", "with", "without" (seed -> the receiving task's
    headline metric averaged over the other factors' levels), "gain" (seed -> relative improvement
    with the feed), "keep"}: kept when the gain is > 0 on every seed.

    Example:
        >>> def runs(angle_with):
        ...     return {"0.02": {v: {"normals": {"mean_angle_deg": 30.0 if "no normals" in v else angle_with},
        ...                          "segmentation": {"miou": 0.5}} for v in variants()}}
        >>> d = choose({"0": runs(27.0), "1": runs(31.0)})["normals <- depth_normals"]["0.02"]
        >>> d["gain"], d["keep"]
        ({'0': 0.1, '1': -0.0333...}, False)
        >>> choose({"0": runs(27.0), "1": runs(29.0)})["normals <- depth_normals"]["0.02"]["keep"]
        True
    """
    decisions: dict[str, dict[str, dict[str, Any]]] = {}
    for factor in factors:
        task = FACTORS[factor][0]
        metric, higher = HEADLINE[task]
        by_fraction: dict[str, dict[str, Any]] = {}
        for seed, by_fr in results.items():
            for fr, by_variant in by_fr.items():
                with_ = [float(t[task][metric]) for v, t in by_variant.items() if f"no {factor}" not in v]
                without = [float(t[task][metric]) for v, t in by_variant.items() if f"no {factor}" in v]
                on, off = statistics.fmean(with_), statistics.fmean(without)
                d = by_fraction.setdefault(fr, {"task": task, "metric": metric, "with": {}, "without": {}, "gain": {}})
                d["with"][seed], d["without"][seed] = on, off
                d["gain"][seed] = (on - off) / abs(off) * (1 if higher else -1) if off else 0.0
        for d in by_fraction.values():
            d["keep"] = bool(min(d["gain"].values()) > 0)
        decisions[factor] = by_fraction
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


def run(quick: bool, config: Path | None = None, overrides: tuple[str, ...] = (),
        factors: tuple[str, ...] = (), labels: tuple[float, ...] = ()) -> BenchResult:
    """The factorial runs (see the module docstring) for every seed of the preset, two at a time
    (``labels``: only these of :data:`FRACTIONS`)."""
    from taskology.config import load_config

    preset = Path(config) if config is not None else PRESET
    factors = tuple(factors) or tuple(FACTORS)
    unknown = [f for f in factors if f not in FACTORS]
    if unknown:
        raise ConfigError(f"--factor {unknown[0]!r}: not a factor; available: {', '.join(map(repr, FACTORS))}")
    names = variants(factors)
    fractions = tuple(fr for fr in FRACTIONS if not labels or fr in labels)
    seeds = [int(s) for s in load_config(preset, list(overrides)).train.seeds]
    if quick:
        seeds = seeds[:1]
    wall0 = time.time()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    seconds: dict[str, float] = {}
    for seed in seeds:
        jobs = [(fr, "alone", "alone", ()) for fr in fractions]
        jobs += [(fr, "collective", name, o) for fr in fractions for name, o in names.items()]
        base, results[f"{seed}"], took, workers = validation_runs(
            preset, quick, jobs, tuple(overrides) + (f"train.seeds=[{seed}]",))
        seconds.update({f"{seed}/{k}": v for k, v in took.items()})
    collective = {seed: {fr: {v: r[v] for v in names} for fr, r in by_fr.items()} for seed, by_fr in results.items()}
    decisions = choose(collective, factors)
    lines: list[str] = []
    for seed, by_fr in results.items():
        lines += [f"Seed {seed}:", "", *metric_rows(by_fr, ("alone", *names)), ""]
    lines += ["| factor | labels | receiving metric | with, by seed | without, by seed | gain, by seed | decision |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for factor, by_fr in decisions.items():
        for fr in sorted(by_fr, key=float):
            d = by_fr[fr]
            lines.append(f"| {factor} | {float(fr):.0%} | {d['task']} {d['metric']} | "
                         + " / ".join(f"{d['with'][s]:.4g}" for s in d["with"]) + " | "
                         + " / ".join(f"{d['without'][s]:.4g}" for s in d["without"]) + " | "
                         + " / ".join(f"{100 * d['gain'][s]:+.1f} %" for s in d["gain"]) + " | "
                         + ("keep" if d["keep"] else "drop") + " |")
    chosen = {factor: {fr: d["keep"] for fr, d in by_fr.items()} for factor, by_fr in decisions.items()}
    notes = (f"Evaluated on the {base.data.val_sequences} validation sequence(s) only, seeds "
             f"{', '.join(map(str, seeds))}, {base.train.steps} steps per task, labels "
             f"{', '.join(f'{f:.0%}' for f in fractions)}; factors varied: {', '.join(factors)}; "
             f"{time.time() - wall0:.0f} s wall ({workers} runs at a time). A feed is kept at a label fraction "
             "when it improved its receiving task's metric on every seed."
             + (" QUICK RUN: sizes far too small for the choice to mean anything." if quick else ""))
    figures = {"setup": {"preset": str(preset), "seeds": seeds, "fractions": list(fractions), "factors": list(factors),
                         "steps": base.train.steps, "val_sequences": base.data.val_sequences,
                         "world": recorded_world(data_root(base))},
               "results": results, "decisions": decisions, "keep": chosen, "seconds": seconds}
    return BenchResult(figures=figures, table="\n".join(lines), targets={}, notes=notes)
