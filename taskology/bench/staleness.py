"""``taskology bench staleness``: final metrics vs how old the peers' predictions are.

Two tasks (depth, normals, tied by ``depth_normals``) train collectively in-process; every consumer reads
its peer through a :class:`StalePeerView` that serves predictions of a *snapshot* of the peer model,
refreshed every ``N`` peer steps on the engine's publication schedule (task ``i`` of ``n`` takes its turn
``i / n`` of an interval out of phase: :func:`~taskology.engine.exchange.publication_phase`): ``N = 1``
(fresh: identical to the in-process reference), 50, and 25 % of the run. Final test metrics are compared to
the fresh run (relative difference of seed means); target: within 3 % up to ``N`` = 25 % of the run.

Why a snapshot view measures what the distributed exchange does: a distributed consumer uses rows a peer
published at its last publication step, i.e. the predictions of the peer model as it was up to
``publish_every_steps`` steps (plus the fetch delay) ago, rounded to the float16 payload. The snapshot
view gives exactly such predictions (the peer model as of its last refresh, float16-rounded), with a
deterministic refresh schedule instead of one perturbed by two processes competing for two loaded cores,
so the interval, not the machine load, is what varies between arms. The staleness actually observed
(steps and seconds since the snapshot, p50/p95 over every row used) is reported per arm.

Resolution: a collective run is chaotic, so any perturbation of the peers' predictions moves the final
metrics; the benchmark can only call a change "within 3 %" when unrelated perturbations move them much
less. A *noise-floor* arm measures exactly that: fresh peers (``N = 1``) served in float32 instead of
float16, i.e. a change of the peers' outputs by rounding alone. A test split of 3 sequences and a cosine
learning-rate decay keep that floor near 1 % (experiments/staleness/README.md).

What the relations are worth: an *alone* arm trains each task on its labels only. Staleness matters
only where the relations help, so the share of their gain a stale arm loses, (arm - fresh) / (alone -
fresh), is reported beside the relative change. Both tasks see :data:`LABEL_FRACTION` = 10 % of their
frames labeled, the regime the relations are for.

Full: 32x96, 10 sequences x 40 frames (3 test), width 8, batch 4, 800 steps per task, cosine decay
(relations from step 200, ramped over 100: the collective recipe, so no snapshot is a random
initialisation), 4 seeds, intervals 1/50/200 (= 25 %) plus the noise-floor and alone arms: 20 runs of
~2 min CPU each, two at a time in single-threaded worker processes. ``--seeds N`` runs seeds 0..N-1
(4 seeds give paired standard errors of 2-3 %, as large as the target; 12 resolve it).

``--quick``: 40 steps, intervals 1/5/10 (= 25 %), one seed: a smoke run of the pipeline, not a result.

``--steps N`` (N >= 800): a longer run keeps the default run's stalest age (200 steps) and adds 25 % of
its own length, so the cost of a fixed age and of a fixed share of the run can be told apart.
"""
from __future__ import annotations

import copy
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np
import torch

from taskology.bench import BenchResult, sim_world, target
from taskology.engine.exchange import publication_due, publication_phase
from taskology.engine.protocol import PeerOutputs
from taskology.errors import ConfigError

#: headline metric per task (lower is better for both).
HEADLINE = {"depth": "abs_rel", "normals": "mean_angle_deg"}
TASKS = tuple(HEADLINE)


class StalePeerView:
    """:class:`~taskology.engine.protocol.PeerView` serving peers' predictions from model snapshots.

    A peer's snapshot (a deep copy of its model) is taken when first asked for and again whenever the
    peer's step plus its publication phase reaches a new multiple of ``every_steps``
    (:func:`~taskology.engine.exchange.publication_due`: the engine's own schedule). Outputs are computed in
    eval mode without gradient and rounded through ``payload_dtype`` (as the distributed payload is).
    Staleness of every row served (peer steps and seconds since the snapshot) is kept in
    :attr:`staleness_steps` / :attr:`staleness_s`.

    Args:
        peers: task name -> runner (``model``, ``task``, ``step``, ``device``).
        every_steps: snapshot refresh interval in peer steps (>= 1; 1 = always the current model).
        payload_dtype: ``"float16"`` or ``"float32"``.
        phases: task -> publication phase in steps (missing: 0).
    """

    def __init__(self, peers: Mapping[str, Any], every_steps: int, payload_dtype: str = "float16",
                 phases: Mapping[str, int] | None = None) -> None:
        if every_steps < 1:
            raise ValueError(f"every_steps must be >= 1, got {every_steps}")
        self.peers = dict(peers)
        self.every_steps = int(every_steps)
        self.phases = {t: int(p) % self.every_steps for t, p in (phases or {}).items()}
        self.dtype = getattr(torch, payload_dtype)
        self._snapshots: dict[str, tuple[torch.nn.Module, int, float]] = {}
        self.staleness_steps: list[int] = []
        self.staleness_s: list[float] = []
        self.refreshes: dict[str, int] = {}

    def usable_ids(self, task: str) -> set[str] | None:
        """Every sample: a snapshot answers any batch."""
        return None

    def _snapshot(self, task: str) -> tuple[torch.nn.Module, int, float]:
        runner = self.peers[task]
        snap = self._snapshots.get(task)
        if publication_due(int(runner.step), None if snap is None else snap[1], self.every_steps,
                           self.phases.get(task, 0)):
            snap = (copy.deepcopy(runner.model).eval(), int(runner.step), time.time())
            self._snapshots[task] = snap
            self.refreshes[task] = self.refreshes.get(task, 0) + 1
        return snap

    @torch.no_grad()
    def peer_outputs(self, task: str, batch: Mapping[str, Any]) -> PeerOutputs | None:
        runner = self.peers.get(task)
        if runner is None:
            return None
        model, step, wall = self._snapshot(task)
        from taskology.engine.batches import to_device

        batch = to_device(batch, runner.device)
        rows = len(batch["sample_id"])
        steps, seconds = [int(runner.step) - step] * rows, [time.time() - wall] * rows
        self.staleness_steps.extend(steps)
        self.staleness_s.extend(seconds)
        outputs = {k: v.detach().to(self.dtype).float() for k, v in runner.task.forward(model, batch).items()}
        return PeerOutputs(outputs=outputs, staleness_steps=steps, staleness_s=seconds)


def arm_config(root: Path, steps: int, width: int, batch: int, test_sequences: int, alone: bool,
               label_fraction: float) -> Any:
    """The experiment config of one arm (its peers' refresh interval and dtype go to the view instead)."""
    from taskology.config import load_config

    warmup = steps // 4  # the collective recipe (the consistency preset): supervised first, then relations
    over = [f"data.root={root}", f"data.test_sequences={test_sequences}", "data.mediator_fraction=0.4",
            "train.lr_schedule=cosine", f"train.steps={steps}",
            f"train.consistency_start_step={warmup}", f"train.consistency_ramp_steps={max(warmup // 2, 1)}",
            "train.mediator_batch_size=4", "train.device=cpu", "train.checkpoint_every_steps=0",
            "train.checkpoint_every_s=0", f"train.mode={'alone' if alone else 'collective'}", "train.eval_every=0",
            "tasks.segmentation.enabled=false", "tasks.motion.enabled=false", "relations.depth_normals.enabled=true"]
    for t in TASKS:
        over += [f"tasks.{t}.width={width}", f"tasks.{t}.batch_size={batch}", f"tasks.{t}.lr=0.002",
                 f"tasks.{t}.label_fraction={label_fraction}"]
    return load_config(None, over)


def train_with_stale_peers(config: Any, run_dir: Path, seed: int, every_steps: int,
                           payload_dtype: str = "float16",
                           on_round: Callable[[int, Mapping[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train every enabled task ``config.train.steps`` steps round-robin in this process, peers read through
    one :class:`StalePeerView` on the engine's publication schedule; returns test metrics, observed
    staleness and wall time. ``on_round(step, runners)`` is called before every round and after the last
    (``step`` = rounds done), e.g. to record predictions."""
    from taskology.engine.collective import build_runners

    runners, _ = build_runners(config, run_dir, seed=seed, device="cpu", collective=config.train.mode == "collective")
    phases = {t: publication_phase(t, list(runners), every_steps) for t in runners}
    view = StalePeerView(runners, every_steps, payload_dtype, phases=phases)
    for runner in runners.values():
        runner.peer_view = view
    start = time.perf_counter()
    terms = 0
    for done in range(int(config.train.steps)):
        if on_round is not None:
            on_round(done, runners)
        for runner in runners.values():
            scalars = runner.train_step()
            terms += sum(k.startswith("consistency/") and k != "consistency/scale" for k in scalars)
    if on_round is not None:
        on_round(int(config.train.steps), runners)
    elapsed = time.perf_counter() - start
    steps, secs = np.asarray(view.staleness_steps or [0], float), np.asarray(view.staleness_s or [0], float)
    return {"metrics": {t: r.evaluate("test") for t, r in runners.items()}, "train_s": elapsed,
            "relation_terms": terms, "snapshot_refreshes": dict(view.refreshes),
            "staleness": {"p50_steps": float(np.percentile(steps, 50)), "p95_steps": float(np.percentile(steps, 95)),
                          "max_steps": float(steps.max()), "p50_s": float(np.percentile(secs, 50)),
                          "p95_s": float(np.percentile(secs, 95)), "rows": len(view.staleness_steps)}}


#: the noise-floor arm's key: fresh peers (interval 1) served in float32 instead of float16.
FLOOR = "1, float32"
#: the reference arm without relations: each task on its labels only (what the relations are worth).
ALONE = "alone"

#: label fraction of both tasks in the full run: the regime the relations are for (few labels).
LABEL_FRACTION = 0.1
#: steps per task of the full run; ``--steps N`` (>= LONG_MIN_STEPS) runs N instead.
DEFAULT_STEPS = 800
#: (camera hw, sequences, test sequences, frames, width, batch, seeds) of the full run and of ``--quick``
FULL_SIZES = ((32, 96), 10, 3, 40, 8, 4, (0, 1, 2, 3))
QUICK_SIZES = ((32, 96), 4, 1, 6, 4, 2, (0,))

#: the fixed age a longer run keeps (the stalest interval of the default run) so the two can be compared.
LONG_INTERVAL = 200
LONG_MIN_STEPS = 4 * LONG_INTERVAL


class ArmSettings(NamedTuple):
    """What an arm key stands for."""

    every: int     #: peers' refresh interval (peer steps)
    dtype: str     #: payload dtype
    alone: bool = False  #: no relations at all


def arm_settings(arm: int | str) -> ArmSettings:
    """The settings an arm key stands for: an interval, :data:`FLOOR` or :data:`ALONE`.

    Example:
        >>> tuple(arm_settings(50)), tuple(arm_settings(FLOOR)), arm_settings(ALONE).alone
        ((50, 'float16', False), (1, 'float32', False), True)
    """
    if arm == FLOOR:
        return ArmSettings(1, "float32")
    if arm == ALONE:
        return ArmSettings(1, "float16", alone=True)
    try:
        return ArmSettings(int(arm), "float16")
    except ValueError as exc:
        raise ConfigError(f"staleness arm {arm!r}: expected an interval in steps, {FLOOR!r} or {ALONE!r}") from exc


def run_arm(root: Path, steps: int, width: int, batch: int, test_sequences: int, run_dir: Path, seed: int,
            arm: int | str, fraction: float) -> dict[str, Any]:
    """One (arm, seed) run of the benchmark in a worker process (one torch thread): the arm's config and its
    stale peer view (:func:`arm_settings`); returns :func:`train_with_stale_peers`'s record."""
    torch.set_num_threads(1)
    settings = arm_settings(arm)
    config = arm_config(root, steps, width, batch, test_sequences, settings.alone, fraction)
    return train_with_stale_peers(config, run_dir, seed, settings.every, settings.dtype)


def plan(quick: bool, steps: int | None = None) -> tuple[int, list[int]]:
    """Steps per task and the peers' refresh intervals (1 = fresh) of a run.

    Example:
        >>> plan(False), plan(False, 1600), plan(True)
        ((800, [1, 50, 200]), (1600, [1, 200, 400]), (40, [1, 5, 10]))
    """
    if steps is not None and quick:
        raise ConfigError("--steps with --quick: the quick run has its own 40 steps")
    if steps is not None and steps < LONG_MIN_STEPS:
        raise ConfigError(f"--steps {steps}: a staleness run with its own length needs >= {LONG_MIN_STEPS} steps "
                          f"(its stale arms refresh every {LONG_INTERVAL} steps and every 25 % of the run)")
    if quick:
        return 40, [1, 5, 10]
    if steps is None:
        return DEFAULT_STEPS, [1, 50, DEFAULT_STEPS // 4]
    return int(steps), sorted({1, LONG_INTERVAL, steps // 4})


def run(quick: bool, steps: int | None = None, seeds: int | None = None) -> BenchResult:
    """The arms of the module docstring; ``steps`` (not with ``quick``): a longer run; ``seeds``: seeds 0 ..
    ``seeds`` - 1 instead of the run's own."""
    from taskology.bench.parallel import map_in_processes

    torch.set_num_threads(1)
    steps, intervals = plan(quick, steps)
    hw, sequences, test_sequences, frames, width, batch, own_seeds = QUICK_SIZES if quick else FULL_SIZES
    run_seeds: tuple[int, ...] = own_seeds if seeds is None else tuple(range(seeds))
    arms: list[int | str] = [intervals[0], FLOOR, *intervals[1:], ALONE]
    quarter = max(steps // 4, 1)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="taskology-bench-staleness-") as tmp:
        root = sim_world(Path(tmp) / "sim", hw, sequences, frames)
        jobs = {(arm, s): (root, steps, width, batch, test_sequences, Path(tmp) / f"arm{k}_s{s}", s, arm,
                           LABEL_FRACTION) for k, arm in enumerate(arms) for s in run_seeds}
        processes = max(1, min(2, os.cpu_count() or 1))  # one single-threaded run per core (2-core target)
        runs: dict[int | str, dict[int, dict[str, Any]]] = {}
        for done, ((arm, seed), result) in enumerate(map_in_processes(run_arm, jobs, processes), 1):
            runs.setdefault(arm, {})[seed] = result
            print(f"[{done}/{len(jobs)}] arm '{arm}' seed {seed}: {result['train_s']:.0f} s training "
                  f"({time.time() - t0:.0f} s elapsed)", flush=True)

    def metric(arm: int | str, seed: int, task: str) -> float:
        return float(runs[arm][seed]["metrics"][task][HEADLINE[task]])

    means = {a: {t: float(np.mean([metric(a, s, t) for s in run_seeds])) for t in HEADLINE} for a in arms}
    seed_sd = {t: float(np.std([metric(1, s, t) for s in run_seeds], ddof=1)) if len(run_seeds) > 1 else None
               for t in HEADLINE}
    rel = {a: {t: (means[a][t] - means[1][t]) / abs(means[1][t]) for t in HEADLINE} for a in arms}
    # paired by seed (same initial weights, same batches): the change each seed sees, mean and standard error
    paired = {a: {t: [(metric(a, s, t) - metric(1, s, t)) / abs(metric(1, s, t)) for s in run_seeds] for t in HEADLINE}
              for a in arms}
    paired_se = {a: {t: float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None
                     for t, v in by_task.items()} for a, by_task in paired.items()}
    worst = max((abs(v) for n in intervals if n <= quarter for v in rel[n].values()), default=0.0)
    # what the relations are worth, and how much of it each arm keeps: (arm - fresh) / (alone - fresh)
    gain = {t: (means[ALONE][t] - means[1][t]) / abs(means[1][t]) for t in HEADLINE}
    lost = {a: {t: (means[a][t] - means[1][t]) / (means[ALONE][t] - means[1][t])
                if means[ALONE][t] > means[1][t] else None for t in HEADLINE} for a in arms}
    floor = max(abs(v) for v in rel[FLOOR].values())
    rows = ["| refresh every (steps) | % of run | " + " | ".join(f"{t} {m}" for t, m in HEADLINE.items())
            + " | change vs fresh | paired change ± s.e. | share of the relations' gain lost"
            + " | staleness p50/p95 steps | p50/p95 s |",
            "| --- | --- | " + " | ".join("---" for _ in HEADLINE) + " | --- | --- | --- | --- | --- |"]
    for a in arms:
        st = [runs[a][s]["staleness"] for s in run_seeds]
        p50, p95 = np.mean([x["p50_steps"] for x in st]), np.mean([x["p95_steps"] for x in st])
        s50, s95 = np.mean([x["p50_s"] for x in st]), np.mean([x["p95_s"] for x in st])
        share = (f"{100 * a / steps:.1f}" if isinstance(a, int) else "noise floor" if a == FLOOR else "no relations")
        rows.append(f"| {a} | {share} | " + " | ".join(f"{means[a][t]:.4f}" for t in HEADLINE)
                    + " | " + ", ".join(f"{100 * rel[a][t]:+.2f}%" for t in HEADLINE)
                    + " | " + ", ".join(f"{100 * float(np.mean(paired[a][t])):+.1f}"
                                        + (f" ± {100 * paired_se[a][t]:.1f}%" if paired_se[a][t] is not None
                                           else "% (1 seed)") for t in HEADLINE)
                    + " | " + ", ".join(f"{100 * lost[a][t]:.0f}%" if lost[a][t] is not None else "n/a (no gain)"
                                        for t in HEADLINE)
                    + f" | {p50:.0f} / {p95:.0f} | {s50:.2f} / {s95:.2f} |")
    figures = {"steps": steps, "seeds": list(run_seeds), "camera_hw": list(hw), "width": width, "batch_size": batch,
               "sequences": sequences, "frames": frames, "test_sequences": test_sequences, "lr_schedule": "cosine",
               "label_fraction": LABEL_FRACTION, "relations_gain_vs_alone": gain,
               "share_of_gain_lost": {str(a): v for a, v in lost.items()},
               "intervals": intervals, "arms": [str(a) for a in arms], "quarter_of_run": quarter,
               "mean_metrics": {str(a): v for a, v in means.items()},
               "relative_change_vs_fresh": {str(a): v for a, v in rel.items()},
               "paired_relative_change": {str(a): v for a, v in paired.items()},
               "paired_standard_error": {str(a): v for a, v in paired_se.items()},
               "noise_floor_max_relative_change": floor,
               "consistency_start_step": steps // 4, "fresh_seed_sd": seed_sd, "wall_s": time.time() - t0,
               "load_average_1min": os.getloadavg()[0],
               "runs": {str(a): {str(s): runs[a][s] for s in run_seeds} for a in arms}}
    targets = {"max_relative_change_up_to_25pct": target(worst, 0.03, higher_is_better=False)}
    return BenchResult(
        figures=figures, table="\n".join(rows), targets=targets,
        notes=("In-process, peers read through a model snapshot refreshed every N peer steps on the engine's "
               "publication schedule (the two tasks in turn, half an interval apart; float16-rounded outputs), "
               "which serves the same predictions a distributed consumer uses with publish interval N but on a "
               "deterministic schedule (see the module docstring of taskology.bench.staleness). N = 1 is the fresh "
               "reference. Change = relative difference of seed means of the headline metric vs N = 1 (lower is "
               f"better for both); seed sd of the fresh run: {seed_sd}. Paired change: per seed (same initial "
               "weights and batches in every arm), mean ± standard error over seeds. "
               f"Noise floor ('{FLOOR}'): fresh peers served in float32 instead of float16, a perturbation by "
               f"rounding alone; its largest change, {100 * floor:.2f} %, is the resolution of this benchmark. "
               f"Alone: no relations, each task on its {LABEL_FRACTION:.0%} labels; the relations (fresh) are worth "
               + ", ".join(f"{t} {100 * g:+.1f}%" for t, g in gain.items())
               + " over it; share lost = (arm - fresh) / (alone - fresh). "
               + (f"A longer run (--steps {steps}): the fixed age of {LONG_INTERVAL} steps the default "
                  f"{DEFAULT_STEPS}-step run measured, and 25 % of this run. " if steps != DEFAULT_STEPS and not quick
                  else "")
               + f"{sequences} sequences x {frames} frames ({test_sequences} test), {LABEL_FRACTION:.0%} labels, "
               "cosine learning-rate decay. Relations start after "
               f"{steps // 4} supervised steps and ramp in over {max(steps // 8, 1)} (the collective recipe of "
               "consistency preset); the snapshot of a peer is then never its random initialisation. "
               + (f"--quick: a pipeline smoke run (40 steps, {len(run_seeds)} seed{'s' * (len(run_seeds) > 1)}), not a "
                  "result." if quick else "")))
