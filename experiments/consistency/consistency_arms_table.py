"""Gain and gap recovered, as a Markdown table, from runs of `consistency_arm.py` (one code version, one world).
Run: python experiments/consistency/consistency_arms_table.py ALONE_DIR COLLECTIVE_DIR ALONE_100_DIR

Runs that recorded their world digest must all name the same one. Each DIR holds the results.json that
consistency_arm.py writes (metrics per seed). An argument may also name the runs of a `taskology bench
consistency` result, ``RESULT.json#FRACTION/ARM`` (e.g.
``experiments/consistency/results/consistency-cpu-27-sequences-one-world.json#0.1/alone``), and several sources
joined by ``+`` pool their seeds (a seed in two sources must have identical metrics there, else it is refused:
the runs are deterministic, so a difference means another code version). Prints a Markdown table per headline
metric: alone, collective and alone at 100 % labels (seed means ± sd over the seeds all three have; sd with
ddof=1, where the bench's own tables use ddof=0), the gain of collective over alone (relative; positive =
better) with each seed's, and the gap recovered = (alone - collective) / (alone - alone at 100 %) in the
metric's better direction ("n/a" where alone at 100 % is not better than alone).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from taskology.bench.consistency import HEADLINE, gap_recovered, relative_gain


def table(alone: dict, collective: dict, full: dict) -> str:
    seeds = sorted(set(alone) & set(collective) & set(full), key=int)
    if not seeds:
        raise SystemExit("no seed is in all three results")
    worlds = {r[s]["world"] for r in (alone, collective, full) for s in seeds if r[s].get("world")}
    if len(worlds) > 1:  # runs recorded on different simulated worlds are not comparable
        raise SystemExit(f"consistency_arms_table: the runs were trained on different worlds ({', '.join(sorted(worlds))})")
    world = f" World {worlds.pop()}." if worlds else ""
    lines = [f"Seeds {', '.join(seeds)}; test split.{world}", "",
             "| task | metric | alone | collective | alone at 100 % | gain | gain per seed | gap recovered |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for task, (metric, higher_is_better) in HEADLINE.items():
        a, c, f = (np.array([r[s]["tasks"][task][metric] for s in seeds]) for r in (alone, collective, full))
        gain = relative_gain(a.mean(), c.mean(), higher_is_better)
        per_seed = [relative_gain(x, y, higher_is_better) for x, y in zip(a, c)]
        share = gap_recovered(a.mean(), c.mean(), f.mean(), higher_is_better)
        gap = "n/a (alone at 100 % is not better)" if np.isnan(share) else f"{100 * share:.0f} %"
        sd = (lambda x: f" ± {x.std(ddof=1):.4g}" if len(x) > 1 else "")
        lines.append(f"| {task} | {metric} | {a.mean():.4g}{sd(a)} | {c.mean():.4g}{sd(c)} | {f.mean():.4g}{sd(f)} | "
                     f"{100 * gain:+.1f} % | {' / '.join(f'{100 * g:+.1f}' for g in per_seed)} | {gap} |")
    return "\n".join(lines)


def load(spec: str) -> dict:
    """seed -> {"tasks", "world"} of the runs ``spec`` names (module docstring: DIR, RESULT.json#F/ARM, ``+``)."""
    pooled: dict = {}
    for part in spec.split("+"):
        path, _, selection = part.partition("#")
        try:
            data = json.loads((Path(path) if selection else Path(path) / "results.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"consistency_arms_table: {part}: not readable ({exc})") from exc
        if selection:
            fraction, _, arm = selection.partition("/")
            try:
                figures = data["figures"]
                runs = {seed: {"tasks": tasks, "world": figures["setup"].get("world")}
                        for seed, tasks in figures["runs"][fraction][arm].items()}
            except (KeyError, TypeError) as exc:
                raise SystemExit(f"consistency_arms_table: {part}: no runs of {selection} in it ({exc})") from exc
        else:
            runs = data
        for seed, run in runs.items():
            if seed in pooled and pooled[seed]["tasks"] != run["tasks"]:
                raise SystemExit(f"consistency_arms_table: seed {seed} differs between the sources of {spec}")
            pooled.setdefault(seed, run)
    return pooled


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 3:
        sys.exit(__doc__)
    records = [load(spec) for spec in args]
    try:
        print(table(*records))
    except (KeyError, TypeError) as exc:
        sys.exit(f"consistency_arms_table: a results.json lacks {exc} (not written by consistency_arm.py?)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
