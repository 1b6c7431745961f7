"""Trace how depth and normals predictions move in the staleness benchmark: fresh peers and peers refreshed every 25 % of the run.
Run: python experiments/staleness/staleness_oscillation.py [--seed 0] [--steps 1600] [--every 100] [--out DIR]   (or --replot RESULT.json)

Two runs of `taskology bench staleness --steps STEPS` arms (same world, config and seed, two at a time, one
torch thread each; about 20-40 min on 2 cores at 1600 steps): fresh peers (interval 1) and peers refreshed
every STEPS/4 steps on the product's schedule (publications in turn: task i of n publishes i/n of an interval
out of phase), each recording both live models' predictions on a fixed probe of 32 mediator samples every
EVERY steps (``staleness_trace.py``). Writes DIR/staleness-oscillation-in-turn[-seedN].{json,md,png}
(DIR: experiments/staleness/results by default; -seedN for seeds other than 0): each task's drift matrix (how
far apart its predictions at two steps are), the swing (drift one refresh apart against two apart) and the
test metrics of each run. ``--replot`` draws the PNG of a result again.

The historical traces in results/ (``staleness-oscillation*.md`` without ``-in-turn``) ran the schedule the
product no longer has (publications together) and the dropped mitigations (mean of the last two snapshots,
the anchor); they are rerun at commit 05b8e3d (experiments/staleness/README.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: where results go by default
RESULTS = Path(__file__).resolve().parent / "results"
#: the world of the benchmark's full run: camera, sequences, frames
WORLD = ((32, 96), 10, 40)


def stem_for(out: Path, seed: int) -> Path:
    """The result's path without extension.

    Example:
        >>> stem_for(Path("out"), 0).as_posix(), stem_for(Path("out"), 2).name
        ('out/staleness-oscillation-in-turn', 'staleness-oscillation-in-turn-seed2')
    """
    return Path(out) / ("staleness-oscillation-in-turn" + (f"-seed{seed}" if seed else ""))


def swings(runs: Mapping[str, Mapping[str, Any]], interval: int, start: int) -> dict[str, dict[str, dict[str, float]]]:
    """arm -> task -> {"one", "two"}: :func:`staleness_trace.refresh_swing` of every run's drift matrices."""
    from staleness_trace import refresh_swing

    return {a: {t: refresh_swing(r["drift"][t]["steps"], r["drift"][t]["matrix"], interval, start)
                for t in r["drift"]} for a, r in runs.items()}


def report_lines(record: Mapping[str, Any]) -> list[str]:
    """The Markdown report of a result record (the JSON this script writes)."""
    from taskology.bench.staleness import HEADLINE

    runs, swing, every = record["runs"], record["swing"], record["every"]
    start, quarter = record["relations_start"], record["interval"]
    stem = stem_for(Path("."), record["seed"]).name
    lines = [f"# Staleness: how the predictions move, publications in turn (seed {record['seed']})", "",
             f"- command: `{record['command']}`", f"- date: {record['date']}", f"- cores: {record['cores']}",
             f"- commit: {record['commit']}", "", f"![drift matrices]({stem}.png)", "",
             f"Drift between recorded steps one refresh interval ({quarter} steps) apart and two apart, from "
             f"step {start} on (normals: mean angle, degrees; depth: mean |log ratio|). Smooth training: two "
             "apart >= one apart. A model swapping between two states at every refresh: two apart < one apart.",
             "", "| arm | " + " | ".join(f"{t} {m}" for t, m in HEADLINE.items())
             + " | normals drift one / two apart | depth drift one / two apart |",
             "| --- | " + " | ".join("---" for _ in HEADLINE) + " | --- | --- |"]
    for a, r in runs.items():
        lines.append(f"| {a} | " + " | ".join(f"{r['metrics'][t][m]:.4f}" for t, m in HEADLINE.items())
                     + f" | {swing[a]['normals']['one']:.1f} / {swing[a]['normals']['two']:.1f}"
                     + f" | {swing[a]['depth']['one']:.3f} / {swing[a]['depth']['two']:.3f} |")
    for task in ("normals", "depth"):
        for a, r in runs.items():
            steps, matrix = r["drift"][task]["steps"], r["drift"][task]["matrix"]
            shown = [i for i, s in enumerate(steps) if s % (2 * every) == 0 and s >= start - 2 * every]
            lines += ["", f"{task} drift, arm `{a}`:", "", "| step | " + " | ".join(str(steps[i]) for i in shown) + " |",
                      "| --- | " + " | ".join("---" for _ in shown) + " |"]
            lines += [f"| {steps[i]} | " + " | ".join(f"{matrix[i][j]:.{1 if task == 'normals' else 3}f}"
                                                        for j in shown) + " |" for i in shown]
    return lines


def title(seed: int, steps: int, start: int) -> str:
    return (f"Drift of each model's predictions between two steps (seed {seed}, {steps} steps)\n"
            f"publications in turn; relations from step {start}; step 0 left out")


def main(argv: list[str] | None = None) -> int:
    from staleness_trace import trace_run, write_figure

    from taskology.atomic import write_json_atomic, write_text_atomic
    from taskology.bench import provenance, sim_world
    from taskology.bench.parallel import map_in_processes
    from taskology.bench.staleness import LONG_MIN_STEPS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--every", type=int, default=100, help="record the probe every this many steps")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the result goes (default: %(default)s)")
    parser.add_argument("--replot", type=Path, default=None, metavar="JSON",
                        help="only draw the PNG again from a result JSON of this script (beside it)")
    args = parser.parse_args(argv)
    if args.replot is not None:
        png = args.replot.with_name(args.replot.stem + ".png")
        try:
            record = json.loads(args.replot.read_text())
            write_figure(png, record["runs"], title(record["seed"], record["steps"], record["relations_start"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"staleness_oscillation: cannot replot {args.replot}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {png}")
        return 0
    if args.steps < LONG_MIN_STEPS or args.every < 1 or args.steps % 4 or (args.steps // 4) % args.every:
        print(f"staleness_oscillation: need --steps >= {LONG_MIN_STEPS}, divisible by 4, and --every >= 1 "
              f"dividing steps/4 (got --steps {args.steps} --every {args.every})", file=sys.stderr)
        return 2
    if not args.out.is_dir():
        print(f"staleness_oscillation: no such directory {args.out}", file=sys.stderr)
        return 2
    quarter = args.steps // 4
    arms: list[int] = [1, quarter]
    prov = provenance("staleness", False)
    prov["command"] = ("python experiments/staleness/staleness_oscillation.py "
                       f"--seed {args.seed} --steps {args.steps} --every {args.every}")
    t0 = time.time()
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="taskology-staleness-trace-") as tmp:
        root = sim_world(Path(tmp) / "sim", *WORLD)
        jobs = {str(arm): (root, args.steps, arm, args.seed, args.every, Path(tmp) / f"arm{k}")
                for k, arm in enumerate(arms)}
        for key, result in map_in_processes(trace_run, jobs, max(1, min(2, os.cpu_count() or 1))):
            runs[key] = result
            print(f"arm '{key}': {result['train_s']:.0f} s training ({time.time() - t0:.0f} s elapsed)", flush=True)
    runs = {str(a): runs[str(a)] for a in arms}
    start = quarter  # the relations' start in the benchmark's recipe
    record = {**prov, "seed": args.seed, "steps": args.steps, "every": args.every, "interval": quarter,
              "relations_start": start, "schedule": "publications in turn", "wall_s": time.time() - t0,
              "swing": swings(runs, quarter, start),
              "runs": {a: {"metrics": r["metrics"], "drift": r["drift"], "staleness": r["staleness"]}
                       for a, r in runs.items()}}
    stem = stem_for(args.out, args.seed)
    write_json_atomic(stem.with_name(stem.name + ".json"), record)
    write_figure(stem.with_name(stem.name + ".png"), runs, title(args.seed, args.steps, start))
    write_text_atomic(stem.with_name(stem.name + ".md"), "\n".join(report_lines(record)) + "\n")
    print(f"wrote {stem}.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
