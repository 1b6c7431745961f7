"""Which tasks each relation should feed, chosen on the validation split (never on test): a factorial of feeds.
Run: python experiments/consistency/receivers.py --config consistency [--factor NAME] [--labels F] [--set KEY=VALUE] [--out DIR]

A relation ties several tasks and by default feeds every one of them. Where one side is much weaker it
can pull the stronger side down: at 2 % labels normals differentiated from the depth network are ~10
degrees worse than the normals network's own (experiments/consistency/README.md). This chooser decides, per
*factor* (one receiving task's feed from some relations), whether to keep it:

- ``normals <- depth_normals``: does ``depth_normals`` feed the normals task?
- ``segmentation <- logic``: do ``segmentation_motion`` and ``segmentation_geometry`` feed segmentation
  (with the relations' options in the preset, e.g. their tolerances, and relation factor 1)?
- ``segmentation <- temporal``: does ``segmentation_temporal`` (its own confident frame-t+1 classes,
  carried back to frame t by the peers' depth and motion where the warped colour agrees) feed
  segmentation (relation factor 1)?

(``segmentation <- ground`` went with the ``segmentation_ground`` relation: experiments/segmentation/README.md.)

Each factor is switched on and off explicitly, whatever the preset says. The chooser trains the factorial
design (every combination of the factors on/off; ``--factor NAME`` varies only the named ones and leaves the
others as the preset has them) collectively, plus the alone arm, at the label fractions the targets are about
(2 % and 10 %; ``--labels F``: only these), for **every seed of the preset**, and evaluates each run on the
**validation** sequences (``data.val_sequences`` must be >= 1). Per factor and label fraction, a feed is kept
when its receiving task's headline metric, averaged over the other factors' levels, is better with it than
without **on every seed** (the worst-seed rule of ``label_weights.py``: a single seed moves these numbers by up
to 22 points). The result (``DIR/receivers-<preset>[-<overrides>][-factor-...][-labels-...].{json,md}``,
``DIR`` = experiments/consistency/results by default) lists the decisions per fraction, to be written into the
preset by hand (the choice is reviewed, not applied silently). ``--quick``: tiny sizes, a smoke run only.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from taskology.bench import BenchResult, provenance
from taskology.bench.consistency import HEADLINE, PRESET, QUICK_OVERRIDES
from taskology.errors import ConfigError, TaskologyError

#: where the choosers write their results by default
RESULTS = Path(__file__).resolve().parent / "results"

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
    "segmentation <- temporal": ("segmentation",
                                 ("relations.segmentation_temporal.receivers.segmentation=1",
                                  "tasks.segmentation.relation_weight_by_labels=[]"),
                                 ("relations.segmentation_temporal.receivers.segmentation=0",)),
}


def variants(factors: Sequence[str] = tuple(FACTORS)) -> dict[str, tuple[str, ...]]:
    """Variant name -> overrides, one per combination of ``factors`` on/off (the name lists those off).

    Example:
        >>> len(variants()), variants()["all"][0]
        (8, 'relations.depth_normals.receivers.normals=1')
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


#: runs the jobs of :func:`validation_runs`: ``mapper(fn, {key: args}, workers)`` yields ``(key, fn(*args))``
Mapper = Callable[[Callable[..., Any], Mapping[Any, tuple[Any, ...]], int], Iterator[tuple[Any, Any]]]


def run_one(preset: str, fraction: float, arm: str, seed: int, run_dir: str, root: str, overrides: Sequence[str],
            split: str, threads: int = 1) -> tuple[dict[str, Any], float]:
    """One run (a worker process's job): :func:`taskology.experiment.run_arm` with positional arguments."""
    from taskology.experiment import run_arm

    return run_arm(preset, fraction, arm, seed=seed, run_dir=run_dir, data_root=Path(root), overrides=overrides,
                   split=split, threads=threads)


def validation_runs(preset: str | Path, quick: bool, jobs: list[tuple[float, str, str, tuple[str, ...]]],
                    overrides: tuple[str, ...] = (), mapper: Mapper | None = None
                    ) -> tuple[Any, dict[str, dict[str, Any]], dict[str, float], int]:
    """Train ``jobs`` = [(label fraction, arm, name, overrides)] with the preset's first seed and
    evaluate each on the validation split, as many at a time as there are cores. ``overrides``: changes
    to the preset for every run (``--set``); ``quick``: the benchmark's quick sizes with one validation
    sequence; ``mapper``: how the jobs run (default: :func:`taskology.bench.parallel.map_in_processes`).

    Returns (base config, results[fraction][name][task][metric], seconds["fraction/name"], runs at a
    time). Raises ConfigError when the preset has no validation sequences: choices are never made on test.
    """
    from taskology.bench.parallel import map_in_processes
    from taskology.config import load_config
    from taskology.experiment import ensure_world

    extra = (*QUICK_OVERRIDES, "data.val_sequences=1") if quick else ()  # the quick world is too small for 2
    extra += tuple(overrides)
    base = load_config(preset, list(extra))
    if int(base.data.val_sequences) < 1:
        raise ConfigError(f"{preset}: data.val_sequences must be >= 1: choices are made on validation "
                          "sequences, never on test")
    root = ensure_world(base)
    seed = int(base.train.seeds[0])
    cores = os.cpu_count() or 1
    workers = max(1, min(len(jobs), cores))
    results: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    wall0 = time.time()
    with tempfile.TemporaryDirectory(prefix="taskology-val-") as scratch:
        args = {(fr, name): (str(preset), fr, arm, seed, str(Path(scratch) / f"{fr}-{k}"), str(root),
                             extra + tuple(job_overrides), "val", max(cores // workers, 1))
                for k, (fr, arm, name, job_overrides) in enumerate(jobs)}
        for done, ((fr, name), (tasks, took)) in enumerate((mapper or map_in_processes)(run_one, args, workers), 1):
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


def run(quick: bool, config: str | Path | None = None, overrides: tuple[str, ...] = (),
        factors: tuple[str, ...] = (), labels: tuple[float, ...] = (), mapper: Mapper | None = None) -> BenchResult:
    """The factorial runs (see the module docstring) for every seed of the preset, as many at a time as there are
    cores (``labels``: only these of :data:`FRACTIONS`; ``mapper``: as in :func:`validation_runs`)."""
    from taskology.config import load_config
    from taskology.sim.cache import recorded_world

    preset = str(config) if config is not None else PRESET
    factors = tuple(factors) or tuple(FACTORS)
    unknown = [f for f in factors if f not in FACTORS]
    if unknown:
        raise ConfigError(f"--factor {unknown[0]!r}: not a factor; available: {', '.join(map(repr, FACTORS))}")
    wrong = [fr for fr in labels if not any(abs(fr - f) < 1e-12 for f in FRACTIONS)]
    if wrong:
        raise ConfigError(f"--labels {wrong[0]:g}: expected one of {', '.join(f'{f:g}' for f in FRACTIONS)}")
    names = variants(factors)
    fractions = tuple(fr for fr in FRACTIONS if not labels or any(abs(fr - f) < 1e-12 for f in labels))
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
            preset, quick, jobs, tuple(overrides) + (f"train.seeds=[{seed}]",), mapper)
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
    figures = {"setup": {"preset": preset, "seeds": seeds, "fractions": list(fractions), "factors": list(factors),
                         "steps": base.train.steps, "val_sequences": base.data.val_sequences,
                         "world": recorded_world(world_root(base))},
               "results": results, "decisions": decisions, "keep": chosen, "seconds": seconds}
    return BenchResult(figures=figures, table="\n".join(lines), targets={}, notes=notes)


def world_root(config: Any) -> Path:
    """Where ``config``'s world lives (:func:`taskology.experiment.world_root`)."""
    from taskology.experiment import world_root as root_of

    return root_of(config)


def result_stem(name: str, quick: bool, config: str | Path, overrides: Sequence[str] = (),
                factors: Sequence[str] = (), labels: Sequence[float] = ()) -> str:
    """File stem of a chooser's result: its name, the preset, the overrides, ``--factor`` and ``--labels``
    choices (so such a run never replaces the default result), ``-quick``. A stem longer than 160 characters
    keeps its first 140 and a digest of the whole (file names have a length limit).

    Example:
        >>> result_stem("receivers", False, "consistency", ["train.seeds=[0,1]"], ["segmentation <- temporal"])
        'receivers-consistency-train-seeds-0-1-factor-segmentation-temporal'
        >>> result_stem("label-weights", True, "configs/my.yaml", labels=[0.1])
        'label-weights-my-labels-10pct-quick'
        >>> len(result_stem("receivers", False, "consistency", [f"tasks.t{i}.width=4" for i in range(20)]))
        153
    """
    stem = f"{name}-{Path(config).stem}"
    for override in overrides:
        stem += "-" + "-".join(re.findall(r"[A-Za-z0-9_]+", override))
    for factor in factors:
        stem += "-factor-" + "-".join(re.findall(r"[A-Za-z0-9_]+", factor))
    for fraction in labels:
        stem += f"-labels-{fraction * 100:g}pct"
    stem += "-quick" if quick else ""
    if len(stem) > 160:
        import hashlib

        stem = f"{stem[:140]}-{hashlib.sha256(stem.encode()).hexdigest()[:12]}"
    return stem


def run_provenance(name: str, command: str, quick: bool, config: str | Path,
                   overrides: Sequence[str] = ()) -> dict[str, Any]:
    """What every result carries (:func:`taskology.bench.provenance`: date, cores, commit, library versions),
    with the chooser's own ``command``; taken before the run, so the commit is the one whose code ran."""
    prov = provenance(name, quick, Path(config), overrides)
    prov["command"] = command
    return prov


def write_result(name: str, result: BenchResult, out_dir: Path, stem: str, prov: Mapping[str, Any],
                 quick: bool) -> dict[str, Any]:
    """Write ``out_dir/<stem>.json`` and ``.md`` with the provenance ``prov`` (:func:`run_provenance`); returns
    the JSON record."""
    from taskology.atomic import write_text_atomic

    record = {"name": name, **prov, "quick": quick, "figures": result.figures, "targets": result.targets,
              "notes": result.notes}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / f"{stem}.json", json.dumps(record, indent=2, default=float) + "\n")
    lines = [f"# `{name}`", "", f"- command: `{prov['command']}`", f"- date: {prov['date']}",
             f"- cores: {prov['cores']}", f"- commit: {prov['commit']}",
             f"- versions: {', '.join(f'{k} {v}' for k, v in prov['versions'].items())}", "",
             result.table.rstrip(), ""]
    if result.notes:
        lines += [result.notes.rstrip(), ""]
    write_text_atomic(out_dir / f"{stem}.md", "\n".join(lines))
    print("\n".join(lines))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=PRESET, help=f"a shipped preset's name or a YAML file (default {PRESET})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a preset value for every run (repeatable)")
    parser.add_argument("--factor", dest="factors", action="append", default=[], choices=list(FACTORS),
                        metavar="NAME", help="vary only this factor (repeatable): " + ", ".join(map(repr, FACTORS)))
    parser.add_argument("--labels", action="append", type=float, default=[], metavar="FRACTION",
                        help=f"only this label fraction (repeatable): {', '.join(f'{f:g}' for f in FRACTIONS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not a result")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the result goes (default: %(default)s)")
    args = parser.parse_args(argv)
    command = "python experiments/consistency/receivers.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    prov = run_provenance("receivers", command, args.quick, args.config, args.overrides)
    try:
        result = run(args.quick, args.config, tuple(args.overrides), tuple(args.factors), tuple(args.labels))
    except TaskologyError as exc:
        print(f"receivers: {exc}", file=sys.stderr)
        return 2
    stem = result_stem("receivers", args.quick, args.config, args.overrides, args.factors, args.labels)
    write_result("receivers", result, args.out, stem, prov, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
