"""Trace how depth and normals predictions move in the staleness benchmark: fresh peers, peers refreshed
every 25 % of the run, and the same with a mitigation: the mean of the last two snapshots (``mean``) or a
pull toward the consumer's own last publication (``anchor``, exchange.anchor_weight = W, default 0.1).

    python scripts/staleness_oscillation.py [--seed 0] [--steps 1600] [--every 100] [--out benchmarks/results]
                                            [--mitigation mean|anchor] [--anchor-weight W] [--reuse EARLIER.json]
    python scripts/staleness_oscillation.py --replot benchmarks/results/staleness-oscillation.json

Three runs of `taskology bench staleness --steps STEPS` arms (same world, config and seed, two at a time,
one torch thread each; 16-36 min on 2 cores at 1600 steps, by load), each recording both live models' predictions
on a fixed probe of 32 mediator samples every EVERY steps (taskology.bench.staleness_trace). Writes
OUT/staleness-oscillation[-anchorW][-seedN].{json,md,png} (-seedN for seeds other than 0): each task's drift
matrix (how far apart its predictions at two steps are) and the test metrics of each run. ``--reuse`` takes the
fresh and plain arms from an earlier result of this script for the same seed, steps and recording interval
(the runs are deterministic) and runs only the mitigation; the result says which arms came from where.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from taskology.bench import provenance, sim_world
    from taskology.bench.parallel import map_in_processes
    from taskology.bench.staleness import ANCHOR, HEADLINE, LONG_MIN_STEPS, anchored_arm, averaged_arm
    from taskology.bench.staleness_trace import refresh_swing, trace_run, write_figure
    from taskology.atomic import write_json_atomic, write_text_atomic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--every", type=int, default=100, help="record the probe every this many steps")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--replot", type=Path, default=None, metavar="JSON",
                        help="only draw the PNG again from a result JSON of this script (beside it)")
    parser.add_argument("--mitigation", choices=("mean", "anchor"), default="mean",
                        help="the third arm: mean of the last two snapshots, or the pull toward the own publication")
    parser.add_argument("--anchor-weight", type=float, default=ANCHOR, help="exchange.anchor_weight of the anchor arm")
    parser.add_argument("--reuse", type=Path, default=None, metavar="JSON",
                        help="take the fresh and plain arms from this earlier result (same seed, steps, every)")
    args = parser.parse_args(argv)
    if args.replot is not None:
        import json

        try:
            record = json.loads(args.replot.read_text())
            write_figure(args.replot.with_name(args.replot.stem + ".png"), record["runs"], _title(record["seed"], record["steps"],
                                                                                record["relations_start"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"staleness_oscillation: cannot replot {args.replot}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {args.replot.with_name(args.replot.stem + '.png')}")
        return 0
    if args.steps < LONG_MIN_STEPS or args.every < 1 or args.steps % 4 or (args.steps // 4) % args.every:
        print(f"staleness_oscillation: need --steps >= {LONG_MIN_STEPS}, divisible by 4, and --every >= 1 "
              f"dividing steps/4 (got --steps {args.steps} --every {args.every})", file=sys.stderr)
        return 2
    if not args.out.is_dir():
        print(f"staleness_oscillation: no such directory {args.out}", file=sys.stderr)
        return 2
    quarter = args.steps // 4
    if not args.anchor_weight > 0:
        print(f"staleness_oscillation: --anchor-weight must be > 0, got {args.anchor_weight}", file=sys.stderr)
        return 2
    third = averaged_arm(quarter) if args.mitigation == "mean" else anchored_arm(quarter, args.anchor_weight)
    arms: list[int | str] = [1, quarter, third]
    reused: dict[str, dict] = {}
    if args.reuse is not None:
        try:
            import json

            earlier = json.loads(args.reuse.read_text())
            same = {k: earlier[k] for k in ("seed", "steps", "every")}
            reused = {str(a): earlier["runs"][str(a)] for a in arms[:2]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"staleness_oscillation: cannot reuse {args.reuse}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        if same != {"seed": args.seed, "steps": args.steps, "every": args.every}:
            print(f"staleness_oscillation: cannot reuse {args.reuse}: it was run with {same}", file=sys.stderr)
            return 2
    prov = provenance("staleness", False)
    prov["command"] = "python scripts/staleness_oscillation.py " + " ".join(
        [f"--seed {args.seed}", f"--steps {args.steps}", f"--every {args.every}", f"--mitigation {args.mitigation}"]
        + ([f"--anchor-weight {args.anchor_weight:g}"] if args.mitigation == "anchor" else [])
        + ([f"--reuse {args.reuse}"] if args.reuse is not None else []))
    t0 = time.time()
    runs: dict[str, dict] = dict(reused)
    with tempfile.TemporaryDirectory(prefix="taskology-staleness-trace-") as tmp:
        root = sim_world(Path(tmp) / "sim", (32, 96), 10, 40)
        jobs = {str(arm): (root, args.steps, arm, args.seed, args.every, Path(tmp) / f"arm{k}")
                for k, arm in enumerate(arms) if str(arm) not in reused}
        for key, result in map_in_processes(trace_run, jobs, max(1, min(2, os.cpu_count() or 1))):
            runs[key] = result
            print(f"arm '{key}': {result['train_s']:.0f} s training ({time.time() - t0:.0f} s elapsed)", flush=True)
    runs = {str(a): runs[str(a)] for a in arms}
    start = quarter  # the relations' start in the benchmark's recipe
    swing = {a: {t: refresh_swing(r["drift"][t]["steps"], r["drift"][t]["matrix"], quarter, start)
                 for t in r["drift"]} for a, r in runs.items()}
    record = {**prov, "seed": args.seed, "steps": args.steps, "every": args.every, "interval": quarter,
              "relations_start": start, "wall_s": time.time() - t0, "swing": swing,
              "reused": {a: str(args.reuse) for a in reused},
              "runs": {a: {"metrics": r["metrics"], "drift": r["drift"], "staleness": r["staleness"]}
                       for a, r in runs.items()}}
    anchor_tag = f"-anchor{args.anchor_weight:g}" if args.mitigation == "anchor" else ""
    stem = args.out / ("staleness-oscillation" + anchor_tag
                       + (f"-seed{args.seed}" if args.seed else ""))
    def beside(ext: str) -> Path:  # not with_suffix: "-anchor0.1" would lose its ".1"
        return stem.with_name(stem.name + ext)

    write_json_atomic(beside(".json"), record)
    write_figure(beside(".png"), runs, _title(args.seed, args.steps, start))
    lines = [f"# Staleness: how the predictions move (seed {args.seed})", "",
             f"- command: `{prov['command']}`", f"- date: {prov['date']}", f"- cores: {prov['cores']}",
             f"- commit: {prov['commit']}"]
    if reused:
        lines.append(f"- arms {', '.join(f'`{a}`' for a in reused)} taken from `{args.reuse}` (commit "
                     f"{earlier.get('commit', '?')}, {earlier.get('date', '?')}): the runs are deterministic")
    lines += ["", f"![drift matrices]({stem.name}.png)", "",
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
            shown = [i for i, s in enumerate(steps) if s % (2 * args.every) == 0 and s >= start - 2 * args.every]
            lines += ["", f"{task} drift, arm `{a}`:", "", "| step | " + " | ".join(str(steps[i]) for i in shown) + " |",
                      "| --- | " + " | ".join("---" for _ in shown) + " |"]
            lines += [f"| {steps[i]} | " + " | ".join(f"{matrix[i][j]:.{1 if task == 'normals' else 3}f}"
                                                        for j in shown) + " |" for i in shown]
    write_text_atomic(beside(".md"), "\n".join(lines) + "\n")
    print(f"wrote {stem}.{{json,md,png}}")
    return 0


def _title(seed: int, steps: int, start: int) -> str:
    return (f"Drift of each model's predictions between two steps (seed {seed}, {steps} steps; relations from "
            f"step {start}; step 0 left out)")


if __name__ == "__main__":
    sys.exit(main())
