"""Two variants of one arm of `taskology bench consistency` side by side, per seed (checks a preset change).
Run: python experiments/consistency/compare_arms.py BASE_DIR NEW_DIR FRACTION [--arm collective]

BASE_DIR and NEW_DIR are OUT_DIRs of `experiments/consistency/consistency_arm.py` (the same preset, the second
with a ``--set``); the runs are read from their ``<fraction>-<arm>-<seed>/metrics.json`` (``results.json`` holds
only the last fraction trained into a folder). Prints, per task, the headline metric of both variants for
every seed both have, the relative change (positive = better) per seed and of the seed means, and the sum of
the seed-mean changes over the tasks. Refuses runs evaluated on different splits or trained on different
worlds.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from taskology.bench.consistency import HEADLINE, relative_gain, run_name


def load_runs(folder: Path, fraction: float, arm: str) -> dict[int, dict]:
    """seed -> metrics.json record of the runs of ``fraction`` and ``arm`` in ``folder``."""
    prefix = run_name(fraction, arm, 0)[:-1]                      # "<fraction>-<arm>-"
    runs = {}
    for path in folder.glob(f"{prefix}*/metrics.json"):
        seed = path.parent.name[len(prefix):]
        if seed.isdigit():
            runs[int(seed)] = json.loads(path.read_text())
    return runs


def compare(base: dict[int, dict], new: dict[int, dict]) -> tuple[str, float]:
    """A Markdown table of both variants and the sum of the seed-mean relative changes over the tasks."""
    seeds = sorted(set(base) & set(new))
    if not seeds:
        raise SystemExit("compare_arms: no seed has a finished run in both folders")
    for key in ("split", "world"):
        values = {str(r[s].get(key)) for r in (base, new) for s in seeds}
        if len(values) > 1:
            raise SystemExit(f"compare_arms: the runs differ in {key} ({', '.join(sorted(values))})")
    lines = [f"Seeds {', '.join(map(str, seeds))}; split {base[seeds[0]]['split']}; world {base[seeds[0]].get('world')}.", "",
             "| task | metric | base | new | change of the means | change per seed |",
             "| --- | --- | --- | --- | --- | --- |"]
    total = 0.0
    for task, (metric, higher_is_better) in HEADLINE.items():
        b = np.array([base[s]["tasks"][task][metric] for s in seeds])
        n = np.array([new[s]["tasks"][task][metric] for s in seeds])
        change = relative_gain(b.mean(), n.mean(), higher_is_better)
        total += change
        per_seed = " / ".join(f"{100 * relative_gain(x, y, higher_is_better):+.1f} %" for x, y in zip(b, n))
        lines.append(f"| {task} | {metric} | {b.mean():.4f} | {n.mean():.4f} | {100 * change:+.1f} % | {per_seed} |")
    lines += ["", f"Sum of the changes of the means over the tasks: {100 * total:+.1f} %."]
    return "\n".join(lines), total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("fraction", type=float)
    parser.add_argument("--arm", default="collective")
    args = parser.parse_args(argv)
    text, _ = compare(load_runs(args.base, args.fraction, args.arm), load_runs(args.new, args.fraction, args.arm))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
