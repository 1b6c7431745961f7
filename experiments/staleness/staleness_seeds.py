"""More seeds for `taskology bench staleness` (its default 800-step run), for a machine with many cores; pools results.
Run: python experiments/staleness/staleness_seeds.py run OUT PROCESSES SEEDS ARMS  |  ... combine RESULT.json [RESULT.json ...]

The bench runs 4 seeds; its paired changes carry standard errors of about 2 %, as large as the 3 % target
they are judged against. This script runs chosen arms of the same bench (same world, sizes and arm code:
taskology.bench.staleness) for more seeds, one single-threaded process per run, and keeps every finished
run in OUT/results.json (rewritten atomically after each run, so a run stopped at its time limit keeps
what finished). Jobs are queued seed by seed, so complete seeds (every arm, for pairing) finish first.

    python experiments/staleness/staleness_seeds.py run OUT PROCESSES SEEDS ARMS      e.g.
    python experiments/staleness/staleness_seeds.py run out 15 4-9 '1;50;200'

An arm is a key of the bench (taskology.bench.staleness.arm_settings): an interval in steps (peers refreshed
on the product's schedule, publications in turn), ``1, float32`` (the noise floor) or ``alone``. The arms of
the dropped mitigations (``200, mean of last 2``, ``half-life``, ``anchor``, ``staggered``, publications
together) ran at commit 05b8e3d, where this script was ``scripts/staleness_seeds.py``.

    python experiments/staleness/staleness_seeds.py combine benchmarks/results/staleness.json OUT/results.json [...]

`combine` pools the runs of the bench's own result and of any results.json (historical ones included, whatever
their arms), arm by arm: a run (arm, seed) counts once, from the first file that has it, so a file that adds new
arms on seeds already run pairs with the earlier files' fresh runs. It prints, per arm, the paired relative
change vs the fresh arm (interval 1) of each headline metric (mean ± standard error over the seeds that ran
both) and the relative change of the seed means (the bench's own target measure); then how many runs more
than one file holds and whether they agree (the runs are deterministic: a disagreement means another code
version or world, named there).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from taskology.bench import sim_world
from taskology.bench.staleness import DEFAULT_STEPS, FULL_SIZES, HEADLINE, LABEL_FRACTION

HW, SEQUENCES, TEST_SEQUENCES, FRAMES, WIDTH, BATCH, _ = FULL_SIZES  # the bench's full run


def arm_key(text: str) -> int | str:
    """An ARMS entry as the bench keys it.

    Example:
        >>> arm_key(" 50"), arm_key("1, float32")
        (50, '1, float32')
    """
    return int(text) if text.strip().isdigit() else text.strip()


def parse_seeds(text: str) -> list[int]:
    """SEEDS: comma-separated seeds and inclusive ranges.

    Example:
        >>> parse_seeds("0-3,7,10-11")
        [0, 1, 2, 3, 7, 10, 11]
    """
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def run_one(root: Path, steps: int, width: int, batch: int, test_sequences: int, run_dir: Path, seed: int,
            arm: int | str, fraction: float) -> dict:
    """One (arm, seed) run of the bench in a worker process (one torch thread): the bench's own
    :func:`taskology.bench.staleness.run_arm`."""
    from taskology.bench.staleness import run_arm

    return run_arm(root, steps, width, batch, test_sequences, run_dir, seed, arm, fraction)


def run(out: Path, processes: int, seeds: list[int], arms: list[int | str]) -> None:
    from taskology.atomic import write_json_atomic
    from taskology.bench.parallel import map_in_processes

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    record: dict = {"steps": DEFAULT_STEPS, "seeds": seeds, "arms": [str(a) for a in arms], "cores": os.cpu_count(),
                    "processes": processes, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": {}}
    with tempfile.TemporaryDirectory(prefix="staleness-seeds-") as tmp:
        root = sim_world(Path(tmp) / "sim", HW, SEQUENCES, FRAMES, processes)  # the bench's world
        print(f"world: {time.time() - t0:.0f} s", flush=True)
        jobs = {(arm, s): (root, DEFAULT_STEPS, WIDTH, BATCH, TEST_SEQUENCES, Path(tmp) / f"arm{k}_s{s}", s, arm,
                           LABEL_FRACTION) for s in seeds for k, arm in enumerate(arms)}
        for done, ((arm, seed), result) in enumerate(map_in_processes(run_one, jobs, processes), 1):
            record["runs"].setdefault(str(arm), {})[str(seed)] = result
            record["wall_s"] = time.time() - t0
            write_json_atomic(out / "results.json", record)
            print(f"[{done}/{len(jobs)}] arm '{arm}' seed {seed}: {result['train_s']:.0f} s training "
                  f"({time.time() - t0:.0f} s elapsed)", flush=True)


def combine(paths: list[Path]) -> str:
    runs: dict[str, dict[str, dict]] = {}
    source: dict[tuple[str, str], Path] = {}
    repeated, differing = 0, []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"staleness_seeds: {path}: not a readable result ({exc})") from exc
        data = data.get("figures", data)  # the bench's result keeps its runs under figures
        if not isinstance(data.get("runs"), dict):
            raise SystemExit(f"staleness_seeds: {path}: no 'runs' (not a staleness result or results.json)")
        if int(data.get("steps", DEFAULT_STEPS)) != DEFAULT_STEPS:
            raise SystemExit(f"staleness_seeds: {path}: steps {data.get('steps')} is not the default run's {DEFAULT_STEPS}")
        for arm, by_seed in data["runs"].items():
            for seed, result in by_seed.items():
                kept = runs.setdefault(arm, {}).get(seed)
                if kept is None:
                    runs[arm][seed], source[arm, seed] = result, path
                    continue
                repeated += 1
                if kept["metrics"] != result["metrics"]:
                    differing.append(f"arm '{arm}' seed {seed}: {path} differs from {source[arm, seed]}")
    if "1" not in runs:
        raise SystemExit("staleness_seeds: no fresh arm (interval 1) in these files; changes are measured against it")
    fresh = runs["1"]
    lines = ["| arm | seeds | " + " | ".join(f"{t} paired change ± s.e." for t in HEADLINE) + " | "
             + " | ".join(f"{t} change of seed means" for t in HEADLINE) + " |",
             "| --- | --- | " + " | ".join("---" for _ in 2 * tuple(HEADLINE)) + " |"]
    for arm, by_seed in sorted(runs.items(), key=lambda kv: kv[0] != "1"):  # fresh first
        seeds = sorted((s for s in by_seed if s in fresh), key=int)
        cells, of_means = [], []
        for task, metric in HEADLINE.items():
            arm_mean = np.mean([by_seed[s]["metrics"][task][metric] for s in seeds])
            fresh_mean = np.mean([fresh[s]["metrics"][task][metric] for s in seeds])
            of_means.append(f"{100 * (arm_mean - fresh_mean) / abs(fresh_mean):+.1f}%")
            change = np.array([(by_seed[s]["metrics"][task][metric] - fresh[s]["metrics"][task][metric])
                               / abs(fresh[s]["metrics"][task][metric]) for s in seeds])
            se = change.std(ddof=1) / np.sqrt(len(change)) if len(change) > 1 else float("nan")
            cells.append(f"{100 * change.mean():+.1f} ± {100 * se:.1f}%")
        lines.append(f"| {arm} | {len(seeds)} | " + " | ".join(cells + of_means) + " |")
    lines += ["", f"Runs held by more than one file: {repeated}, identical: {repeated - len(differing)}"
              + (" (the first file's run is used)." if repeated else ".")]
    lines += [f"- {line}" for line in differing]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) >= 5 and args[0] == "run":
        from taskology.bench.staleness import arm_settings
        from taskology.errors import ConfigError

        arms = [arm_key(a) for a in args[4].split(";")]
        try:
            for arm in arms:
                arm_settings(arm)  # every arm key understood before anything is simulated
        except ConfigError as exc:
            sys.exit(f"staleness_seeds: {exc} (the dropped mitigations' arms ran at commit 05b8e3d)")
        run(Path(args[1]), int(args[2]), parse_seeds(args[3]), arms)
    elif len(args) >= 2 and args[0] == "combine":
        print(combine([Path(p) for p in args[1:]]))
    else:
        sys.exit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
