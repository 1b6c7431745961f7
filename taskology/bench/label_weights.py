"""``taskology bench label-weights --config PRESET``: how strongly the relations should feed a task, by
its label fraction, chosen on the validation split (never on test).

Relations teach a task what its peers imply. With few labels that is worth more than it costs; with
many labels the peers' targets are worse than what the labels already taught, and the relations pull a
well-trained task towards its weaker peers (docs/consistency.md: collectively, depth and normals were
15-19 % worse than alone at 100 % labels). ``train.relation_weight_by_labels`` scales every relation a
task receives by a factor that depends on that task's label fraction.

This benchmark trains, at each label fraction of the experiment (2 %, 10 %, 100 %), the alone arm and
the collective arm with the relation factor set to each of :data:`FACTORS`, with the preset's first
seed, and evaluates every run on the **validation** sequences. Per fraction it keeps the factor with
the best mean relative gain over alone of the headline metrics of the tasks the relations feed
(:func:`choose`). The result is the ``train.relation_weight_by_labels`` points to write into the preset
by hand (reviewed, not applied silently).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Mapping

from taskology.bench import BenchResult
from taskology.bench.consistency import HEADLINE, PRESET
from taskology.bench.receivers import metric_rows, validation_runs

FRACTIONS = (0.02, 0.10, 1.0)
FACTORS = (1.0, 0.3, 0.1)


def variant(factor: float) -> str:
    """Run name of the collective arm with relation factor ``factor``.

    Example:
        >>> variant(0.3)
        'relations x0.3'
    """
    return f"relations x{factor:g}"


def relative_gain(alone: float, collective: float, higher_is_better: bool) -> float:
    """Relative improvement of ``collective`` over ``alone`` (positive = better).

    Example:
        >>> round(relative_gain(0.20, 0.15, False), 3), round(relative_gain(0.5, 0.4, True), 3)
        (0.25, -0.2)
    """
    return (collective - alone) / alone if higher_is_better else (alone - collective) / alone


def choose(results: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
           fed: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per fraction, the factor whose collective run has the best mean relative gain over the alone
    run across the headline metrics of the tasks in ``fed``; ties keep the larger factor.

    ``results[fraction]`` maps "alone" and :func:`variant` names to {task: {metric: value}}.
    Returns fraction -> {"factor", "gains": {factor: mean gain}}.

    Example:
        >>> r = {"1.0": {"alone": {"depth": {"abs_rel": 0.10}},
        ...              "relations x1": {"depth": {"abs_rel": 0.12}},
        ...              "relations x0.3": {"depth": {"abs_rel": 0.099}},
        ...              "relations x0.1": {"depth": {"abs_rel": 0.10}}}}
        >>> choose(r, ("depth",))["1.0"]["factor"]
        0.3
    """
    out: dict[str, dict[str, Any]] = {}
    for fr, runs in results.items():
        gains = {}
        for factor in FACTORS:
            per_task = [relative_gain(float(runs["alone"][t][HEADLINE[t][0]]),
                                      float(runs[variant(factor)][t][HEADLINE[t][0]]), HEADLINE[t][1])
                        for t in fed]
            gains[factor] = statistics.fmean(per_task)
        best = max(FACTORS, key=lambda f: (gains[f], f))
        out[fr] = {"factor": best, "gains": gains}
    return out


def run(quick: bool, config: Path | None = None, overrides: tuple[str, ...] = ()) -> BenchResult:
    """The alone arm and one collective arm per factor at each fraction, on validation (two at a time)."""
    from taskology.config import load_config
    from taskology.engine.runner import relations_for

    preset = Path(config) if config is not None else PRESET
    jobs = [(fr, "alone", "alone", ()) for fr in FRACTIONS]
    jobs += [(fr, "collective", variant(factor), (f"train.relation_weight_by_labels=[[1.0, {factor}]]",))
             for fr in FRACTIONS for factor in FACTORS]
    wall0 = time.time()
    base, results, seconds, workers = validation_runs(preset, quick, jobs, overrides)
    # the tasks the preset's relations feed (a task fed nothing trains as alone whatever the factor)
    fed = tuple(t for t in HEADLINE if t in base.tasks and base.tasks[t].enabled
                and relations_for(t, load_config(preset, ["train.relation_weight_by_labels=[]"])))
    decisions = choose(results, fed)
    points = [[float(fr), decisions[fr]["factor"]] for fr in sorted(decisions, key=float)]
    lines = metric_rows(results, ("alone", *(variant(f) for f in FACTORS)))
    lines += ["", "| labels | " + " | ".join(f"mean gain x{f:g}" for f in FACTORS) + " | chosen factor |",
              "| --- | " + " | ".join("---" for _ in FACTORS) + " | --- |"]
    for fr in sorted(decisions, key=float):
        d = decisions[fr]
        lines.append(f"| {float(fr):.0%} | " + " | ".join(f"{d['gains'][f]:+.1%}" for f in FACTORS)
                     + f" | {d['factor']:g} |")
    seed = int(base.train.seeds[0])
    notes = (f"Evaluated on the {base.data.val_sequences} validation sequence(s) only, seed {seed}, "
             f"{base.train.steps} steps per task; gain = mean relative improvement over alone of the "
             f"headline metrics of {', '.join(fed)} (the tasks the relations feed); "
             f"{time.time() - wall0:.0f} s wall ({workers} runs at a time). Chosen: "
             f"`train.relation_weight_by_labels: {points}`"
             + (". QUICK RUN: sizes far too small for the choice to mean anything." if quick else "."))
    figures = {"setup": {"preset": str(preset), "seed": seed, "fractions": list(FRACTIONS),
                         "factors": list(FACTORS), "fed": list(fed), "steps": base.train.steps,
                         "val_sequences": base.data.val_sequences},
               "results": results, "decisions": decisions, "chosen_points": points, "seconds": seconds}
    return BenchResult(figures=figures, table="\n".join(lines), targets={}, notes=notes)
