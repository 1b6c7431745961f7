"""``taskology bench staleness``: final metrics vs how old the peers' predictions are.

Two tasks (depth, normals, tied by ``depth_normals``) train collectively in-process; every consumer reads
its peer through a :class:`StalePeerView` that serves predictions of a *snapshot* of the peer model,
refreshed every ``N`` peer steps: ``N = 1`` (fresh: identical to the in-process reference), 50, 200 and
25 % of the run. Final test metrics are compared to the fresh run (relative difference of seed means);
target: within 3 % up to ``N`` = 25 % of the run.

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
float16, i.e. a change of the peers' outputs by rounding alone. Two choices keep that floor below 1 %
(measured while designing the benchmark, 4 seeds, paired changes): a test split of 3 sequences instead
of 1 (with 1, float32 vs float16 alone moved one seed's normals error by 24 %), and a cosine learning-
rate decay (``train.lr_schedule: cosine``): with a constant rate the final iterate carries the last
steps' gradient noise (the depth metric moved ±10 % per seed between arms).

What the relations are worth: an *alone* arm trains each task on its labels only. Staleness matters
only where the relations help, so the share of their gain a stale arm loses, (arm - fresh) / (alone -
fresh), is reported beside the relative change. Both tasks see :data:`LABEL_FRACTION` = 10 % of their
frames labeled, the regime the relations are for (an earlier design at 100 % labels measured +8.5 % on
normals at 25 % of the run, without an alone arm; at 100 % labels the consistency benchmark finds
collective normals 8-15 % worse than alone, so that design measured staleness where the relations may
not help at all).

Full: 32x96, 10 sequences x 40 frames (3 test), width 8, batch 4, 800 steps per task, cosine decay
(relations from step 200, ramped over 100: the collective recipe, so no snapshot is a random
initialisation), 4 seeds, intervals 1/50/200 (= 25 %) plus the noise-floor and alone arms and two
arms of each of three mitigations, 44 runs of ~2 min CPU each, two at a time in single-threaded worker
processes (~50 min on 2 idle cores).

Mitigation tried (:func:`weighted_arm`): every stale interval again, but each relation term weighted
``0.5 ** (age / H)`` (``exchange.staleness_halflife_steps = H``), so a consumer leans on a peer prediction
less the older it is. One ``H`` for every interval, half the stalest one (100 steps in the full run), as a
default would be. It is judged separately, on harm only: its largest worsening vs fresh up to 25 % of the
run (a down-weighted arm may beat fresh, since it leans more on its own labels; that is not a loss).
Second mitigation (:func:`averaged_arm`): every stale interval again, each relation tied to the mean of the
peer's last two snapshots (``exchange.average_publications = 2``; only snapshots from the relations' start).
Stale peers make the two models swap states at every refresh (each fits the other's old snapshot); the
mean cancels the alternating part (:mod:`taskology.bench.staleness_trace` draws it). Judged like the first.
Third mitigation (:func:`anchored_arm`): every stale interval again, each consumer also pulled toward its own
model as of its last publication, what its peers hold of it (``exchange.anchor_weight`` = :data:`ANCHOR`), so
it does not run ahead of the picture its peers fit; this damps the oscillation at its source. Judged like the
first. Fourth (:func:`staggered_arm`): every stale interval again, the peers' snapshots retaken in turn (normals
half an interval out of phase with depth: ``exchange.staggered_publication``) instead of together; it changes
the schedule only, not the interval or the age. Judged like the first. With the four the full run has 52 runs.

``--quick``: 40 steps, intervals 1/5/10 (= 25 %), one seed: a smoke run of the pipeline, not a result.

``--steps N`` (N >= 800): does the cost of a fixed age fall in a longer run (the paper's no-loss claim is
for ~2000-step-old predictions in far longer runs)? The same world and seeds, N steps per task, arms
fresh, noise floor, 200 steps (the default run's stalest interval), N / 4, the mitigation at both (one
``H`` = N / 8, half the stalest interval, by the same rule), the other two mitigations at both, and alone;
results go to ``staleness-steps-N.*`` beside the default run's (``--steps 1600``: 44 runs; 28 of them took
~50 min on 2 idle cores on 2026-11-26, and runs took about twice as long on 2026-11-27).
"""
from __future__ import annotations

import copy
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from taskology.bench import BenchResult, sim_world, target
from taskology.engine.exchange import publication_due, publication_phase
from taskology.engine.protocol import PeerOutputs, PeerVersion
from taskology.errors import ConfigError

#: headline metric per task (lower is better for both).
HEADLINE = {"depth": "abs_rel", "normals": "mean_angle_deg"}
TASKS = tuple(HEADLINE)


class StalePeerView:
    """:class:`~taskology.engine.protocol.PeerView` serving peers' predictions from model snapshots.

    A peer's snapshot (a deep copy of its model) is taken when first asked for and again whenever the
    peer has made ``every_steps`` optimizer steps since the last one. Outputs are computed in eval mode
    without gradient and rounded through ``payload_dtype`` (as the distributed payload is). Staleness
    of every row served (peer steps and seconds since the snapshot) is kept in :attr:`staleness_steps` /
    :attr:`staleness_s`. With ``versions`` > 1 the ``versions - 1`` snapshots before the current one are
    kept too and their outputs served as :attr:`PeerOutputs.previous` (what a distributed consumer's cache
    holds with ``exchange.average_publications = versions``). With ``phases``, a peer's snapshot is
    retaken whenever its step plus its phase reaches a new multiple of ``every_steps``
    (:func:`~taskology.engine.exchange.publication_due`, ``exchange.staggered_publication``).

    Args:
        peers: task name -> runner (``model``, ``task``, ``step``, ``device``).
        every_steps: snapshot refresh interval in peer steps (>= 1; 1 = always the current model).
        payload_dtype: ``"float16"`` or ``"float32"``.
        versions: snapshots kept per peer (>= 1).
        phases: task -> publication phase in steps (missing: 0).
    """

    def __init__(self, peers: Mapping[str, Any], every_steps: int, payload_dtype: str = "float16",
                 versions: int = 1, phases: Mapping[str, int] | None = None) -> None:
        if every_steps < 1:
            raise ValueError(f"every_steps must be >= 1, got {every_steps}")
        if versions < 1:
            raise ValueError(f"versions must be >= 1, got {versions}")
        self.peers = dict(peers)
        self.every_steps = int(every_steps)
        self.refresh_every_steps = self.every_steps  # consumers' snapshots of a task: the anchor's schedule
        self.versions = int(versions)
        self.phases = {t: int(p) % self.every_steps for t, p in (phases or {}).items()}
        self.dtype = getattr(torch, payload_dtype)
        self._snapshots: dict[str, tuple[torch.nn.Module, int, float]] = {}
        self._older: dict[str, list[tuple[torch.nn.Module, int, float]]] = {}
        self.staleness_steps: list[int] = []
        self.staleness_s: list[float] = []
        self.refreshes: dict[str, int] = {}

    def refresh_phase_steps(self, task: str) -> int:
        """``task``'s publication phase: its snapshots, and so its anchor, are retaken on that schedule."""
        return self.phases.get(task, 0)

    def _snapshot(self, task: str) -> tuple[torch.nn.Module, int, float]:
        runner = self.peers[task]
        snap = self._snapshots.get(task)
        if publication_due(int(runner.step), None if snap is None else snap[1], self.every_steps,
                           self.phases.get(task, 0)):
            if snap is not None and self.versions > 1:
                self._older[task] = [snap, *self._older.get(task, [])][: self.versions - 1]
            model = copy.deepcopy(runner.model).eval()
            snap = (model, int(runner.step), time.time())
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
        previous = [PeerVersion(self._rounded(runner.task.forward(older, batch)), [older_step] * rows)
                    for older, older_step, _ in self._older.get(task, [])]
        return PeerOutputs(outputs=self._rounded(runner.task.forward(model, batch)), staleness_steps=steps,
                           staleness_s=seconds, previous=previous)

    def _rounded(self, out: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Outputs rounded through the payload dtype, as float32."""
        return {k: v.detach().to(self.dtype).float() for k, v in out.items()}


def _config(root: Path, steps: int, width: int, batch: int, test_sequences: int,
            label_fraction: float = 1.0, mode: str = "collective", halflife: float = 0.0,
            average: int = 1, anchor: float = 0.0, staggered: bool = False) -> Any:
    from taskology.config import load_config

    warmup = steps // 4  # the collective recipe (configs/consistency.yaml): supervised first, then relations
    over = [f"data.root={root}", f"data.test_sequences={test_sequences}", "data.mediator_fraction=0.4",
            "train.lr_schedule=cosine", f"train.steps={steps}",
            f"train.consistency_start_step={warmup}", f"train.consistency_ramp_steps={max(warmup // 2, 1)}",
            "train.mediator_batch_size=4", "train.device=cpu", "train.checkpoint_every_steps=0",
            "train.checkpoint_every_s=0", f"train.mode={mode}", "train.eval_every=0",
            f"exchange.staleness_halflife_steps={halflife}", f"exchange.average_publications={average}",
            f"exchange.anchor_weight={anchor}", f"exchange.staggered_publication={str(bool(staggered)).lower()}",
            "tasks.segmentation.enabled=false", "tasks.motion.enabled=false", "relations.depth_normals.enabled=true"]
    for t in TASKS:
        over += [f"tasks.{t}.width={width}", f"tasks.{t}.batch_size={batch}", f"tasks.{t}.lr=0.002",
                 f"tasks.{t}.label_fraction={label_fraction}"]
    return load_config(None, over)


def train_with_stale_peers(config: Any, run_dir: Path, seed: int, every_steps: int,
                           payload_dtype: str = "float16",
                           on_round: Callable[[int, Mapping[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train every enabled task ``config.train.steps`` steps round-robin in this process, peers read through
    one :class:`StalePeerView`; returns test metrics, observed staleness and wall time. ``on_round(step,
    runners)`` is called before every round and after the last (``step`` = rounds done), e.g. to record
    predictions (:mod:`taskology.bench.staleness_trace`)."""
    from taskology.engine.collective import build_runners

    runners, _ = build_runners(config, run_dir, seed=seed, device="cpu", collective=config.train.mode == "collective")
    phases = ({t: publication_phase(t, list(runners), every_steps) for t in runners}
              if config.exchange.staggered_publication else None)
    view = StalePeerView(runners, every_steps, payload_dtype, versions=int(config.exchange.average_publications),
                         phases=phases)
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


def weighted_arm(every: int, halflife: int) -> str:
    """Key of the arm refreshed every ``every`` steps whose relation terms are down-weighted by age
    (``exchange.staleness_halflife_steps`` = ``halflife``): the mitigation tried.

    Example:
        >>> weighted_arm(200, 100)
        '200, half-life 100'
    """
    return f"{every}, half-life {halflife}"


#: publications averaged by the second mitigation (``exchange.average_publications``).
AVERAGED = 2


def averaged_arm(every: int, count: int = AVERAGED) -> str:
    """Key of the arm refreshed every ``every`` steps whose relations use the mean of the peer's last
    ``count`` snapshots (``exchange.average_publications`` = ``count``): the second mitigation.

    Example:
        >>> averaged_arm(200)
        '200, mean of last 2'
    """
    return f"{every}, mean of last {count}"


#: weight of the third mitigation's pull toward the consumer's own last publication (``exchange.anchor_weight``).
#: 1 (the relation's own weight, chosen first: a consumer would settle halfway between its old state and the
#: peer's) froze both models and cost 8-11 % (scripts/staleness_oscillation.py, 3 seeds); 0.1 was the second
#: and last value tried.
ANCHOR = 0.1


def staggered_arm(every: int) -> str:
    """Key of an arm whose peers are refreshed every ``every`` steps in turn (``exchange.staggered_publication``):
    the fourth mitigation.

    Example:
        >>> staggered_arm(200), arm_settings(staggered_arm(200)).staggered
        ('200, staggered', True)
    """
    return f"{every}, staggered"


def anchored_arm(every: int, weight: float = ANCHOR) -> str:
    """Key of the arm refreshed every ``every`` steps whose consumers are also pulled toward their own last
    publication (``exchange.anchor_weight`` = ``weight``): the third mitigation.

    Example:
        >>> anchored_arm(400), anchored_arm(400, 1.0)
        ('400, anchor 0.1', '400, anchor 1')
    """
    return f"{every}, anchor {weight:g}"


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


def _one_run(root: Path, steps: int, width: int, batch: int, test_sequences: int, run_dir: Path, seed: int,
             arm: int | str, fraction: float) -> dict[str, Any]:
    """One (arm, seed) run in a worker process (one torch thread)."""
    torch.set_num_threads(1)
    settings = arm_settings(arm)
    config = arm_config(root, steps, width, batch, test_sequences, arm, fraction)
    return train_with_stale_peers(config, run_dir, seed, settings.every, settings.dtype)


def arm_config(root: Path, steps: int, width: int, batch: int, test_sequences: int, arm: int | str,
               fraction: float) -> Any:
    """The experiment config of one arm (its peers' refresh interval and dtype go to the view instead)."""
    settings = arm_settings(arm)
    return _config(root, steps, width, batch, test_sequences, fraction, "alone" if arm == ALONE else "collective",
                   settings.halflife, settings.average, settings.anchor, settings.staggered)


class ArmSettings(NamedTuple):
    """What an arm key stands for."""

    every: int            #: peers' refresh interval (peer steps)
    dtype: str            #: payload dtype
    halflife: float = 0.0  #: ``exchange.staleness_halflife_steps``
    average: int = 1      #: ``exchange.average_publications``
    anchor: float = 0.0   #: ``exchange.anchor_weight``
    staggered: bool = False  #: ``exchange.staggered_publication``


def arm_settings(arm: int | str) -> ArmSettings:
    """The settings an arm key stands for.

    Example:
        >>> tuple(arm_settings(50)), tuple(arm_settings(FLOOR)), arm_settings(weighted_arm(200, 100)).halflife
        ((50, 'float16', 0.0, 1, 0.0, False), (1, 'float32', 0.0, 1, 0.0, False), 100.0)
        >>> arm_settings(averaged_arm(400)).average, arm_settings(anchored_arm(400)).anchor
        (2, 0.1)
        >>> tuple(arm_settings("200, mean of last 2, half-life 100"))   # mitigations combined
        (200, 'float16', 100.0, 2, 0.0, False)
        >>> arm_settings("200, staggered").staggered
        True
    """
    if arm == FLOOR:
        return ArmSettings(1, "float32")
    if arm == ALONE:
        return ArmSettings(1, "float16")
    every, *mitigations = str(arm).split(", ")
    try:
        settings = ArmSettings(int(every), "float16")
        for part in mitigations:  # weighted_arm, averaged_arm, anchored_arm; combined: "200, mean of last 2, anchor 0.1"
            if part.startswith("half-life "):
                settings = settings._replace(halflife=float(part.removeprefix("half-life ")))
            elif part.startswith("mean of last "):
                settings = settings._replace(average=int(part.removeprefix("mean of last ")))
            elif part.startswith("anchor "):
                settings = settings._replace(anchor=float(part.removeprefix("anchor ")))
            elif part == "staggered":
                settings = settings._replace(staggered=True)
            else:
                raise ValueError(part)
    except ValueError as exc:
        raise ConfigError(f"staleness arm {arm!r}: expected INTERVAL[, half-life H][, mean of last N][, anchor W][, staggered] "
                          f"({exc})") from exc
    return settings


class Plan(NamedTuple):
    """The arms of one run."""

    steps: int              #: steps per task
    intervals: list[int]    #: peers' refresh intervals (1 = fresh)
    halflife: int           #: the first mitigation's half-life (one value for every interval)
    weighted: list[str]     #: first mitigation: relation terms down-weighted by age
    averaged: list[str]     #: second: the mean of the last two snapshots
    anchored: list[str]     #: third: the pull toward the consumer's own last publication
    staggered: list[str]    #: fourth: peers refreshed in turn instead of together


#: the mitigations, one family of arms each: ``--factor NAME`` runs only the named ones (with the fresh, noise-floor,
#: plain stale and alone arms, which every run has).
FACTORS = ("half-life", "mean of last 2", "anchor", "staggered")


def plan(quick: bool, steps: int | None = None, factors: Sequence[str] = FACTORS) -> Plan:
    """The arms of a run; ``factors``: only these mitigations (:data:`FACTORS`).

    Example:
        >>> p = plan(False)
        >>> p.steps, p.intervals, p.halflife, p.weighted
        (800, [1, 50, 200], 100, ['50, half-life 100', '200, half-life 100'])
        >>> p.averaged, p.anchored
        (['50, mean of last 2', '200, mean of last 2'], ['50, anchor 0.1', '200, anchor 0.1'])
        >>> plan(False, 1600)[:4]     # longer: the default run's fixed age of 200 steps and 25 % of this run
        (1600, [1, 200, 400], 200, ['200, half-life 200', '400, half-life 200'])
        >>> plan(True).intervals, plan(True).anchored
        ([1, 5, 10], ['5, anchor 0.1', '10, anchor 0.1'])
        >>> p.staggered
        ['50, staggered', '200, staggered']
        >>> only = plan(False, factors=["staggered"])
        >>> only.intervals, only.weighted, only.averaged, only.anchored, only.staggered
        ([1, 50, 200], [], [], [], ['50, staggered', '200, staggered'])
    """
    unknown = [f for f in factors if f not in FACTORS]
    if unknown:
        raise ConfigError(f"--factor {unknown[0]!r}: not a factor of 'staleness'; available: "
                          + ", ".join(map(repr, FACTORS)))
    if steps is not None and quick:
        raise ConfigError("--steps with --quick: the quick run has its own 40 steps")
    if steps is not None and steps < LONG_MIN_STEPS:
        raise ConfigError(f"--steps {steps}: a staleness run with its own length needs >= {LONG_MIN_STEPS} steps "
                          f"(its stale arms refresh every {LONG_INTERVAL} steps and every 25 % of the run)")
    if quick:
        steps, intervals = 40, [1, 5, 10]
    elif steps is None:
        steps = DEFAULT_STEPS
        intervals = [1, 50, steps // 4]
    else:  # a longer run keeps the fixed age the default run measured (200 steps) and 25 % of its own length
        intervals = [1, LONG_INTERVAL, steps // 4]
    intervals = sorted(set(intervals))
    # the mitigation at one half-life for every stale interval, as a default would be: half the stalest interval
    halflife = max(intervals[-1] // 2, 1)
    weighted = [weighted_arm(n, halflife) for n in intervals[1:]]
    averaged = [averaged_arm(n) for n in intervals[1:]]
    anchored = [anchored_arm(n) for n in intervals[1:]]
    staggered = [staggered_arm(n) for n in intervals[1:]]
    weighted, averaged, anchored, staggered = (arms if name in factors else [] for name, arms in
                                               zip(FACTORS, (weighted, averaged, anchored, staggered)))
    return Plan(int(steps), intervals, halflife, weighted, averaged, anchored, staggered)


def run(quick: bool, steps: int | None = None, factors: Sequence[str] = FACTORS,
        seeds: int | None = None) -> BenchResult:
    """The arms of the module docstring; ``steps`` (not with ``quick``): a longer run; ``factors``: only these
    mitigations (:data:`FACTORS`); ``seeds``: seeds 0 .. ``seeds`` - 1 instead of the run's own (4 in the full
    run: paired standard errors of 2-3 %, as large as the 3 % target; 12 resolve it)."""
    from taskology.bench.parallel import map_in_processes

    torch.set_num_threads(1)
    steps, intervals, halflife, weighted, averaged, anchored, staggered = plan(quick, steps, factors)
    hw, sequences, test_sequences, frames, width, batch, own_seeds = QUICK_SIZES if quick else FULL_SIZES
    run_seeds: tuple[int, ...] = own_seeds if seeds is None else tuple(range(seeds))
    arms: list[int | str] = [intervals[0], FLOOR, *intervals[1:], *weighted, *averaged, *anchored, *staggered, ALONE]
    quarter = max(steps // 4, 1)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="taskology-bench-staleness-") as tmp:
        root = sim_world(Path(tmp) / "sim", hw, sequences, frames)
        jobs = {(arm, s): (root, steps, width, batch, test_sequences, Path(tmp) / f"arm{k}_s{s}", s, arm,
                           LABEL_FRACTION) for k, arm in enumerate(arms) for s in run_seeds}
        processes = max(1, min(2, os.cpu_count() or 1))  # one single-threaded run per core (2-core target)
        runs: dict[int | str, dict[int, dict[str, Any]]] = {}
        for done, ((arm, seed), result) in enumerate(
                map_in_processes(_one_run, jobs, processes), 1):
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
    # the mitigation judged on harm only: a weighted arm may be better than fresh (it leans on its own labels)
    def worst_of(mitigation: list[str]) -> float:
        return max((rel[a][t] for a in mitigation if arm_settings(a).every <= quarter for t in HEADLINE), default=0.0)

    worst_weighted, worst_averaged, worst_anchored = worst_of(weighted), worst_of(averaged), worst_of(anchored)
    worst_staggered = worst_of(staggered)
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
        share = (f"{100 * a / steps:.1f}" if isinstance(a, int) else "noise floor" if a == FLOOR
                 else "no relations" if a == ALONE else f"{100 * arm_settings(a).every / steps:.1f}, "
                 + ("down-weighted by age" if a in weighted else f"mean of the last {AVERAGED} snapshots"
                    if a in averaged else "peers refreshed in turn" if a in staggered
                    else f"pulled toward the own last publication ({ANCHOR:g})"))
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
               "noise_floor_max_relative_change": floor, "halflife_steps": halflife,
               "max_worsening_with_halflife": worst_weighted if weighted else None,
               "averaged_publications": AVERAGED, "max_worsening_with_averaging": worst_averaged if averaged else None,
               "anchor_weight": ANCHOR, "max_worsening_with_anchor": worst_anchored if anchored else None,
               "max_worsening_staggered": worst_staggered if staggered else None,
               "consistency_start_step": steps // 4, "fresh_seed_sd": seed_sd, "wall_s": time.time() - t0,
               "load_average_1min": os.getloadavg()[0],
               "runs": {str(a): {str(s): runs[a][s] for s in run_seeds} for a in arms}}
    targets = {"max_relative_change_up_to_25pct": target(worst, 0.03, higher_is_better=False)}
    if weighted:
        targets["max_worsening_with_halflife_up_to_25pct"] = target(worst_weighted, 0.03, higher_is_better=False)
    if averaged:
        targets["max_worsening_with_averaging_up_to_25pct"] = target(worst_averaged, 0.03, higher_is_better=False)
    if anchored:
        targets["max_worsening_with_anchor_up_to_25pct"] = target(worst_anchored, 0.03, higher_is_better=False)
    if staggered:
        targets["max_worsening_staggered_up_to_25pct"] = target(worst_staggered, 0.03, higher_is_better=False)
    return BenchResult(
        figures=figures, table="\n".join(rows), targets=targets,
        notes=("In-process, peers read through a model snapshot refreshed every N peer steps (float16-rounded "
               "outputs), which serves the same predictions a distributed consumer uses with publish interval N "
               "but on a deterministic schedule (see the module docstring of taskology.bench.staleness). N = 1 is "
               "the fresh reference. Change = relative difference of seed means of the headline metric vs N = 1 "
               f"(lower is better for both); seed sd of the fresh run: {seed_sd}. Paired change: per seed (same "
               "initial weights and batches in every arm), mean ± standard error over seeds. "
               f"Noise floor ('{FLOOR}'): fresh peers served in float32 instead of float16, a perturbation by "
               f"rounding alone; its largest change, {100 * floor:.2f} %, is the resolution of this benchmark. "
               f"Alone: no relations, each task on its {LABEL_FRACTION:.0%} labels; the relations (fresh) are worth "
               + ", ".join(f"{t} {100 * g:+.1f}%" for t, g in gain.items())
               + " over it; share lost = (arm - fresh) / (alone - fresh). "
               + (f"'N, half-life {halflife}': refreshed every N steps, each relation term weighted "
                  f"0.5 ** (age / {halflife}) (exchange.staleness_halflife_steps = {halflife}, one value for every N, "
                  "as a default would be): the mitigation, judged separately and on harm only (its largest "
                  "worsening vs fresh; being better than fresh is not a loss). " if weighted else "")
               + (f"'N, mean of last {AVERAGED}': refreshed every N steps, each relation tied to the mean of the "
                  f"peer's last {AVERAGED} snapshots from the relations' start on (exchange.average_publications = "
                  f"{AVERAGED}; unit normals normalized again): the second mitigation, against the period-two "
                  "oscillation stale peers fall into (docs/cluster.md), judged the same way. " if averaged else "")
               + (f"'N, anchor {ANCHOR:g}': refreshed every N steps, each consumer also pulled toward its own model "
                  f"as of its last publication, i.e. what its peers hold of it (exchange.anchor_weight = {ANCHOR:g}; "
                  "distance: |log ratio| for depth, angle for normals): the third mitigation, which damps the "
                  "oscillation at its source, judged the same way. " if anchored else "")
               + ("'N, staggered': refreshed every N steps, the two peers in turn (normals N/2 out of phase; "
                  "exchange.staggered_publication) instead of together: the fourth mitigation, which changes the "
                  "schedule only, judged the same way. " if staggered else "")
               + (f"A longer run (--steps {steps}): the fixed age of {LONG_INTERVAL} steps the default "
                  f"{DEFAULT_STEPS}-step run measured, and 25 % of this run. " if steps != DEFAULT_STEPS and not quick
                  else "")
               + f"{sequences} sequences x {frames} frames ({test_sequences} test), {LABEL_FRACTION:.0%} labels, "
               "cosine learning-rate decay. Relations start after "
               f"{steps // 4} supervised steps and ramp in over {max(steps // 8, 1)} (the collective recipe of "
               "configs/consistency.yaml); the snapshot of a peer is then never its random initialisation. "
               + (f"--quick: a pipeline smoke run (40 steps, {len(run_seeds)} seed{'s' * (len(run_seeds) > 1)}), not a "
                  "result." if quick else "")))
