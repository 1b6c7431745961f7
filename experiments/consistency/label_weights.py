"""How strongly the relations should feed a task, by its label fraction, chosen on the validation split (never on test).
Run: python experiments/consistency/label_weights.py --config consistency [--labels F] [--set KEY=VALUE] [--out DIR]  |  --combine A.json B.json ...

Relations teach a task what its peers imply. With few labels that is worth more than it costs; with
many labels the peers' targets are worse than what the labels already taught, and the relations pull a
well-trained task towards its weaker peers (experiments/consistency/README.md: collectively, depth and normals
were 15-19 % worse than alone at 100 % labels). ``train.relation_weight_by_labels`` scales every relation a
task receives by a factor that depends on that task's label fraction.

This chooser trains, at each label fraction of the experiment (2 %, 10 %, 100 %; ``--labels F``: only these),
the alone arm and the collective arm with the relation factor set to each of :data:`FACTORS` for every task,
with the preset's first seed, and evaluates every run on the **validation** sequences. Per fraction it keeps
the factor with the best mean relative gain over alone of the headline metrics of the tasks the relations
feed (:func:`choose`). The result (``DIR/label-weights-<preset>[-<overrides>][-labels-...].{json,md}``,
``DIR`` = experiments/consistency/results by default) gives the ``train.relation_weight_by_labels`` points to
write into the preset by hand (reviewed, not applied silently).

One factor for every task is a compromise: on validation at 100 % labels depth wanted none of its
peers' teaching while normals still gained. :func:`choose_per_task` keeps, per task and fraction, the
factor (0, i.e. the task trains as alone, or one of :data:`FACTORS`) whose worst seed gains most, so a
relation is adopted only where it helped that task on every seed (``--rule mean``: the best mean over
seeds); the points go to ``tasks.<t>.relation_weight_by_labels``. It is greedy: each task's gain
was measured with every task at the same factor, so the combination is checked on its own afterwards.
Several seeds (one run per seed, ``--set 'train.seeds=[1]'``) combine with
``python experiments/consistency/label_weights.py --combine RESULT.json [RESULT.json ...] [--rule worst-seed|mean]``.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from receivers import (RESULTS, Mapper, metric_rows, result_stem, run_provenance, validation_runs, world_root,
                       write_result)

from taskology.bench import BenchResult
from taskology.bench.consistency import HEADLINE, PRESET, relative_gain
from taskology.errors import ConfigError, TaskologyError

FRACTIONS = (0.02, 0.10, 1.0)
FACTORS = (1.0, 0.3, 0.1)


def variant(factor: float) -> str:
    """Run name of the collective arm with relation factor ``factor``.

    Example:
        >>> variant(0.3)
        'relations x0.3'
    """
    return f"relations x{factor:g}"


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
    per_task = choose_per_task([results], fed)
    out: dict[str, dict[str, Any]] = {}
    for fr in results:
        gains = {f: statistics.fmean(per_task[t][fr]["gains"][f] for t in fed) for f in FACTORS}
        best = max(FACTORS, key=lambda f: (gains[f], f))
        out[fr] = {"factor": best, "gains": gains}
    return out


#: how :func:`choose_per_task` ranks a factor from its per-seed gains.
RULES = ("worst-seed", "mean")


def choose_per_task(results_by_seed: list[Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]]],
                    fed: tuple[str, ...], rule: str = "worst-seed") -> dict[str, dict[str, dict[str, Any]]]:
    """Per task in ``fed`` and fraction, the factor among 0 (fed nothing: trains exactly as alone, gain 0)
    and :data:`FACTORS` with the best relative gain over alone of that task's headline metric across the
    seeds' results (each as in :func:`choose`); ties keep the smaller factor (the task's own labels).

    ``rule`` ranks a factor by its gain on the worst seed (``"worst-seed"``, the default: a relation is
    adopted only where it helped on every seed, so factor 0 wins unless some factor gains on each) or by
    the mean over seeds (``"mean"``). With one seed both agree.

    Returns task -> fraction -> {"factor", "rule", "by_rule": {rule: factor}, "gains": {factor: mean gain},
    "worst": {factor: worst seed's gain}, "per_seed": {factor: [gains]}}.

    Example:
        >>> one = {"1.0": {"alone": {"depth": {"abs_rel": 0.10}, "normals": {"mean_angle_deg": 20.0}},
        ...                "relations x1": {"depth": {"abs_rel": 0.12}, "normals": {"mean_angle_deg": 18.0}},
        ...                "relations x0.3": {"depth": {"abs_rel": 0.11}, "normals": {"mean_angle_deg": 19.0}},
        ...                "relations x0.1": {"depth": {"abs_rel": 0.105}, "normals": {"mean_angle_deg": 19.5}}}}
        >>> d = choose_per_task([one], ("depth", "normals"))
        >>> d["depth"]["1.0"]["factor"], d["normals"]["1.0"]["factor"]
        (0.0, 1.0)
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for task in fed:
        metric, higher = HEADLINE[task]
        for fr in sorted({fr for results in results_by_seed for fr in results}, key=float):
            per_seed: dict[float, list[float]] = {0.0: [0.0] * len(results_by_seed)}
            for factor in FACTORS:
                per_seed[factor] = [relative_gain(float(r[fr]["alone"][task][metric]),
                                                  float(r[fr][variant(factor)][task][metric]), higher)
                                    for r in results_by_seed]
            gains = {f: statistics.fmean(g) for f, g in per_seed.items()}
            worst = {f: min(g) for f, g in per_seed.items()}
            by_rule = {r: max(score, key=lambda f, score=score: (score[f], -f))
                       for r, score in (("worst-seed", worst), ("mean", gains))}
            out.setdefault(task, {})[fr] = {"factor": by_rule[rule], "rule": rule, "by_rule": by_rule,
                                            "gains": gains, "worst": worst, "per_seed": per_seed}
    return out


def per_task_table(decisions: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """Markdown rows of :func:`choose_per_task`'s gains and choices, then the points per task."""
    seeds = max((len(d["per_seed"][0.0]) for by_fr in decisions.values() for d in by_fr.values()), default=1)
    rule = next((d.get("rule", "mean") for by_fr in decisions.values() for d in by_fr.values()), "mean")
    extra = seeds > 1 and rule != "mean"
    lines = ["| task | labels | " + " | ".join(f"gain x{f:g}" for f in FACTORS) + " | chosen factor |"
             + (" by the mean rule |" if extra else ""),
             "| --- | --- | " + " | ".join("---" for _ in FACTORS) + " | --- |" + (" --- |" if extra else "")]
    for task, by_fr in decisions.items():
        for fr, d in by_fr.items():
            cells = [f"{d['gains'][f]:+.1%}" + (f" ({', '.join(f'{g:+.0%}' for g in d['per_seed'][f])})"
                                                 if len(d["per_seed"][f]) > 1 else "") for f in FACTORS]
            lines.append(f"| {task} | {float(fr):.0%} | " + " | ".join(cells) + f" | {d['factor']:g} |"
                         + (f" {d['by_rule']['mean']:g} |" if extra else ""))
    lines += ["", "Per-task points (`tasks.<t>.relation_weight_by_labels`):", ""]
    for task, by_fr in decisions.items():
        points = [[float(fr), by_fr[fr]["factor"]] for fr in sorted(by_fr, key=float)]
        lines.append(f"- {task}: `{points}`")
    return lines


def jobs_for(preset: str | Path, fractions: Sequence[float]) -> list[tuple[float, str, str, tuple[str, ...]]]:
    """The runs of :func:`run`: per fraction the alone arm and one collective arm per factor of :data:`FACTORS`,
    with every task at that factor (the preset's own points, train's and each task's, replaced).

    Example:
        >>> [(fr, arm, name) for fr, arm, name, _ in jobs_for("consistency", [0.1])]
        [(0.1, 'alone', 'alone'), (0.1, 'collective', 'relations x1'),
         (0.1, 'collective', 'relations x0.3'), (0.1, 'collective', 'relations x0.1')]
    """
    from taskology.config import load_config

    own_points_off = tuple(f"tasks.{t}.relation_weight_by_labels=null" for t in load_config(preset).tasks)
    jobs = [(fr, "alone", "alone", ()) for fr in fractions]
    jobs += [(fr, "collective", variant(factor),
              (f"train.relation_weight_by_labels=[[1.0, {factor}]]", *own_points_off))
             for fr in fractions for factor in FACTORS]
    return jobs


def fed_tasks(preset: str | Path, overrides: Sequence[str] = ()) -> tuple[str, ...]:
    """The tasks the preset's relations feed at factor 1 (a task fed nothing trains as alone whatever the factor)."""
    from taskology.config import load_config
    from taskology.engine.registry import Registry

    own_points_off = [f"tasks.{t}.relation_weight_by_labels=null" for t in load_config(preset).tasks]
    unscaled = load_config(preset, ["train.relation_weight_by_labels=[]", *own_points_off, *overrides])
    registry = Registry.current()
    return tuple(t for t in HEADLINE if t in unscaled.enabled_tasks() and registry.relations_for(t, unscaled))


def run(quick: bool, config: str | Path | None = None, overrides: tuple[str, ...] = (),
        labels: tuple[float, ...] = (), mapper: Mapper | None = None) -> BenchResult:
    """The alone arm and one collective arm per factor at each fraction (``labels``: only these of
    :data:`FRACTIONS`), on validation, as many at a time as there are cores (``mapper``: as in
    :func:`receivers.validation_runs`)."""
    from taskology.sim.cache import recorded_world

    preset = str(config) if config is not None else PRESET
    wrong = [fr for fr in labels if not any(abs(fr - f) < 1e-12 for f in FRACTIONS)]
    if wrong:
        raise ConfigError(f"--labels {wrong[0]:g}: expected one of {', '.join(f'{f:g}' for f in FRACTIONS)}")
    fractions = tuple(fr for fr in FRACTIONS if not labels or any(abs(fr - f) < 1e-12 for f in labels))
    wall0 = time.time()
    base, results, seconds, workers = validation_runs(preset, quick, jobs_for(preset, fractions), overrides, mapper)
    fed = fed_tasks(preset, overrides)
    decisions = choose(results, fed)
    points = [[float(fr), decisions[fr]["factor"]] for fr in sorted(decisions, key=float)]
    lines = metric_rows(results, ("alone", *(variant(f) for f in FACTORS)))
    lines += ["", "| labels | " + " | ".join(f"mean gain x{f:g}" for f in FACTORS) + " | chosen factor |",
              "| --- | " + " | ".join("---" for _ in FACTORS) + " | --- |"]
    for fr in sorted(decisions, key=float):
        d = decisions[fr]
        lines.append(f"| {float(fr):.0%} | " + " | ".join(f"{d['gains'][f]:+.1%}" for f in FACTORS)
                     + f" | {d['factor']:g} |")
    per_task = choose_per_task([results], fed)
    lines += ["", "Per task (factor 0: fed nothing, gain 0 by definition):", "", *per_task_table(per_task)]
    seed = int(base.train.seeds[0])
    notes = (f"Evaluated on the {base.data.val_sequences} validation sequence(s) only, seed {seed}, "
             f"{base.train.steps} steps per task; gain = mean relative improvement over alone of the "
             f"headline metrics of {', '.join(fed)} (the tasks the relations feed); "
             f"{time.time() - wall0:.0f} s wall ({workers} runs at a time). Chosen: "
             f"`train.relation_weight_by_labels: {points}`"
             + (". QUICK RUN: sizes far too small for the choice to mean anything." if quick else "."))
    figures = {"setup": {"preset": preset, "seed": seed, "fractions": list(fractions),
                         "factors": list(FACTORS), "fed": list(fed), "steps": base.train.steps,
                         "val_sequences": base.data.val_sequences, "world": recorded_world(world_root(base))},
               "results": results, "decisions": decisions, "chosen_points": points,
               "per_task": per_task, "seconds": seconds}
    return BenchResult(figures=figures, table="\n".join(lines), targets={}, notes=notes)


def combine(paths: list[Path], rule: str = "worst-seed") -> str:
    """Markdown of :func:`choose_per_task` (with ``rule``) over the seeds of several label-weights result
    files (one seed each, same preset, steps and fractions); raises ConfigError when they differ or repeat
    a seed."""
    records = []
    for path in paths:
        try:
            records.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable label-weights result ({exc})") from exc
    setups = []
    for path, record in zip(paths, records):
        if record.get("name") != "label-weights" or "results" not in record.get("figures", {}):
            raise ConfigError(f"{path}: not a label-weights result")
        setups.append(record["figures"]["setup"])
    keys = ("preset", "fractions", "factors", "fed", "steps", "val_sequences")
    for path, setup in zip(paths[1:], setups[1:]):
        diff = [k for k in keys if setup.get(k) != setups[0].get(k)]
        if setup.get("world") and setups[0].get("world") and setup["world"] != setups[0]["world"]:
            diff.append("world")  # runs on different simulated worlds (results from before records have none)
        if diff:
            raise ConfigError(f"{path}: {', '.join(diff)} differ from {paths[0]}'s")
    seeds = [s["seed"] for s in setups]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds repeat across the files: {seeds}")
    decisions = choose_per_task([r["figures"]["results"] for r in records], tuple(setups[0]["fed"]), rule)
    how = ("the factor whose worst seed gains most; factor 0 (gain 0 on every seed) unless some factor "
           "gained on every seed" if rule == "worst-seed" else "the factor with the best mean gain")
    head = [f"Per-task relation factors from {len(paths)} validation run(s), seeds {seeds}, preset "
            f"{setups[0]['preset']}: gain = relative improvement of the task's headline metric over alone "
            f"(mean over seeds; per seed in brackets). Rule `{rule}`: {how}.", "",
            "- sources: " + ", ".join(f"`{p}` (commit {str(r.get('commit', '?'))[:7]}, {r.get('date', '?')})"
                                      for p, r in zip(paths, records)), ""]
    return "\n".join(head + per_task_table(decisions)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=PRESET, help=f"a shipped preset's name or a YAML file (default {PRESET})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a preset value for every run (repeatable)")
    parser.add_argument("--labels", action="append", type=float, default=[], metavar="FRACTION",
                        help=f"only this label fraction (repeatable): {', '.join(f'{f:g}' for f in FRACTIONS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not a result")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the result goes (default: %(default)s)")
    parser.add_argument("--combine", nargs="+", type=Path, metavar="RESULT.json", default=None,
                        help="only pool the seeds of these label-weights results (one seed each) per task")
    parser.add_argument("--rule", choices=RULES, default="worst-seed",
                        help="--combine: rank a factor by its worst seed's gain (default) or by the mean over seeds")
    args = parser.parse_args(argv)
    command = "python experiments/consistency/label_weights.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        if args.combine is not None:
            print(combine(args.combine, args.rule), end="")
            return 0
        prov = run_provenance("label-weights", command, args.quick, args.config, args.overrides)
        result = run(args.quick, args.config, tuple(args.overrides), tuple(args.labels))
    except TaskologyError as exc:
        print(f"label_weights: {exc}", file=sys.stderr)
        return 2
    stem = result_stem("label-weights", args.quick, args.config, args.overrides, labels=args.labels)
    write_result("label-weights", result, args.out, stem, prov, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
