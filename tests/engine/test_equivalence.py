"""With peer predictions refreshed every step, the distributed engine reaches the
in-process run's metrics within seed noise (2 tasks, depth + normals tied by depth_normals).

Also the lockstep mechanism it relies on (:class:`DistributedPeerView` waiting for a fresh enough peer
publication), tested without a cluster.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from taskology.engine.exchange import DistributedPeerView, ExchangePolicy, PredictionCache
from taskology.engine.protocol import Predictions

STEPS = 30
SEEDS = (0, 1)  # distributed runs
REFERENCE_SEEDS = (0, 1, 2, 3)  # in-process runs (cheap: ~3 s each), for the seed noise
#: tolerance rule (see the test docstring): K_SIGMA standard errors of a difference of seed means
K_SIGMA = 3.0
REL_FLOOR = 0.005


def _pub(task: str, step: int) -> Predictions:
    return Predictions(task, step, time.time(), ["s:0", "s:1"], {"y": np.full((2, 1), float(step), np.float32)})


def test_lockstep_view_waits_for_a_fresh_enough_publication() -> None:
    cache = PredictionCache(ExchangePolicy(publish_every_steps=1, lockstep_lag_steps=0, lockstep_timeout_s=10.0))
    view = DistributedPeerView(cache)
    cache.add(_pub("peer", 2))
    view.consumer_step = 3  # needs peer step >= 3: arrives 0.2 s later from another thread
    timer = threading.Timer(0.2, cache.add, args=(_pub("peer", 3),))
    timer.start()
    start = time.perf_counter()
    got = view.peer_outputs("peer", {"sample_id": ["s:0", "s:1"]})
    waited = time.perf_counter() - start
    timer.join()
    assert got is not None and float(got.outputs["y"][0, 0]) == 3.0  # the fresh one, not step 2
    assert 0.15 <= waited < 5.0 and view.timeouts == {}
    # lag 0 and a publication already fresh enough: no wait
    start = time.perf_counter()
    assert view.peer_outputs("peer", {"sample_id": ["s:0"]}) is not None
    assert time.perf_counter() - start < 0.1


def test_lockstep_view_gives_up_after_the_timeout_and_counts_it() -> None:
    cache = PredictionCache(ExchangePolicy(publish_every_steps=1, lockstep_lag_steps=1, lockstep_timeout_s=0.2))
    view = DistributedPeerView(cache)
    cache.add(_pub("peer", 4))
    view.consumer_step = 5  # lag 1: step 4 is enough
    assert view.peer_outputs("peer", {"sample_id": ["s:0"]}) is not None and view.timeouts == {}
    view.consumer_step = 7  # needs >= 6; never comes: goes on with the cached (stale) row after 0.2 s
    start = time.perf_counter()
    got = view.peer_outputs("peer", {"sample_id": ["s:0"]})
    assert 0.19 <= time.perf_counter() - start < 2.0
    assert got is not None and view.timeouts == {"peer": 1}
    # without lockstep it never waits
    free = DistributedPeerView(PredictionCache(ExchangePolicy()))
    free.consumer_step = 100
    assert free.peer_outputs("peer", {"sample_id": ["s:0"]}) is None


def _overrides(root: Path, seeds: tuple[int, ...] = SEEDS) -> list[str]:
    out = [f"data.root={root}", "data.test_sequences=1", "data.mediator_fraction=0.4", f"train.steps={STEPS}",
           "train.mediator_batch_size=2", "train.log_every=1", "train.eval_every=0", "train.device=cpu",
           f"train.checkpoint_every_steps={STEPS}", "train.checkpoint_every_s=0",
           f"train.seeds=[{','.join(str(s) for s in seeds)}]", "train.mode=collective",
           "tasks.segmentation.enabled=false", "tasks.motion.enabled=false", "relations.depth_normals.enabled=true",
           "exchange.publish_every_steps=1", "exchange.refresh_every_s=0.01", "exchange.lockstep_lag_steps=0",
           "exchange.live_mediator=false", "exchange.max_staleness_steps=2000", "cluster.dashboard=false"]
    for t in ("depth", "normals"):
        out += [f"tasks.{t}.width=4", f"tasks.{t}.batch_size=2", f"tasks.{t}.lr=0.005", f"tasks.{t}.label_fraction=0.5"]
    return out


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_distributed_run_matches_in_process_run_within_seed_noise(sim_root: Path, tmp_path: Path) -> None:
    """Rule, per task metric m: with the in-process runs' seed standard deviation ``sd`` (REFERENCE_SEEDS,
    sample std), ``|mean_s m_distributed(s) - mean_s m_in_process(s)| <= max(K_SIGMA * sd * sqrt(1/n_d +
    1/n_i), REL_FLOOR * |mean in-process|)``: a 3-sigma two-sample test of "same mean, seed noise only".

    Why means and not seed-by-seed: both runs start from the same init and data order, but this training
    is chaotic: rounding the (fresh, in-process) peer predictions to float16 alone moves depth abs_rel of
    one seed by 0.03, more than the 0.02 difference between two seeds. Distributed: lockstep lag 0 with a
    publication after every step (``exchange.publish_every_steps=1``, ``lockstep_lag_steps=0``, refresh
    0.01 s): a consumer at step s uses the peer after >= s of its steps (s or s + 1, by timing); in-process
    the first task sees its peer after s steps, the second after s + 1. Payloads are float16.

    It can fail: a broken exchange that silently skips relations (the runner gets ``None`` from the peer
    view and trains supervised only) shows in the relation-term counts, which must equal the in-process
    run's (STEPS per task and seed, none skipped, no lockstep timeout), and the observed staleness must be
    <= 1 peer step.
    """
    from taskology.config import load_config
    from taskology.engine.collective import evaluate_run, run_collective
    from taskology.engine.distributed import run_distributed

    cfg = load_config(None, _overrides(sim_root, REFERENCE_SEEDS) + ["cluster.address=none"])
    in_process: dict[int, dict[str, dict[str, float]]] = {}
    in_terms: dict[int, dict[str, int]] = {}
    for seed in REFERENCE_SEEDS:
        terms: dict[str, int] = {}

        def count(step: int, scalars: dict[str, dict[str, float]], terms: dict[str, int] = terms) -> None:
            for task, values in scalars.items():
                for key in values:
                    if key.startswith("consistency/") and key != "consistency/scale":
                        terms[f"{task}/{key.split('/', 1)[1]}"] = terms.get(f"{task}/{key.split('/', 1)[1]}", 0) + 1

        record = run_collective(cfg, tmp_path / "inproc" / f"seed_{seed}", seed=seed, tensorboard=False, on_log=count)
        in_process[seed], in_terms[seed] = record["tasks"], terms
    assert in_terms[SEEDS[0]] == {"depth/depth_normals": STEPS, "normals/depth_normals": STEPS}

    dcfg = load_config(None, _overrides(sim_root) + ["cluster.address=local"])
    summaries = run_distributed(dcfg, tmp_path / "dist", resume=False, live=False, timeout_s=300, spare_workers=0)
    distributed: dict[int, dict[str, dict[str, float]]] = {}
    for seed in SEEDS:
        summary = summaries[str(seed)]
        terms = {}
        for task in ("depth", "normals"):
            status = summary["actors"][task]["status"]
            assert status["state"] == "done" and status["step"] == STEPS
            terms.update({f"{task}/{k}": v for k, v in status["relation_terms"].items()})
            assert not status["relation_skips"], status["relation_skips"]
            assert not status["lockstep_timeouts"], status["lockstep_timeouts"]
            peer = "normals" if task == "depth" else "depth"
            # refreshed every step: the peer rows used were at most one peer step behind its current step
            assert status["staleness"][f"staleness/{peer}/max_steps"] <= 1, status["staleness"]
        assert terms == in_terms[seed], (terms, in_terms[seed])  # the exchange really fed every relation term
        metrics = evaluate_run(dcfg, tmp_path / "dist" / f"seed_{seed}", seed=seed)
        distributed[seed] = {t: {k: v for k, v in m.items() if k != "step"} for t, m in metrics.items()}
        assert all(metrics[t]["step"] == STEPS for t in metrics)

    failures = []
    for task, reference in in_process[SEEDS[0]].items():
        for metric in reference:
            ref = np.array([in_process[s][task][metric] for s in REFERENCE_SEEDS])
            got = np.array([distributed[s][task][metric] for s in SEEDS])
            sd = float(ref.std(ddof=1))
            tol = max(K_SIGMA * sd * float(np.sqrt(1 / len(got) + 1 / len(ref))), REL_FLOOR * abs(float(ref.mean())))
            diff = abs(float(got.mean() - ref.mean()))
            print(f"{task}/{metric}: in-process {ref.round(4).tolist()} mean {ref.mean():.4f} sd {sd:.4f}; "
                  f"distributed {got.round(4).tolist()} mean {got.mean():.4f}; |diff| {diff:.4f} tol {tol:.4f}")
            if not diff <= tol:
                failures.append((task, metric, float(ref.mean()), float(got.mean()), tol))
    assert not failures, failures


def test_stale_peer_view_fresh_equals_in_process_and_ages_by_the_interval(sim_root: Path, tmp_path: Path) -> None:
    """The staleness benchmark's view: interval 1 serves the in-process (fresh) predictions up to float16
    rounding; interval 3 serves a snapshot whose age cycles 0, 1, 2 peer steps and is refreshed on time."""
    import torch

    from taskology.bench.staleness import StalePeerView
    from taskology.config import load_config
    from taskology.engine.collective import build_runners

    cfg = load_config(None, _overrides(sim_root) + ["cluster.address=none", "train.seeds=[0]"])
    runners, fresh = build_runners(cfg, tmp_path, seed=0, device="cpu", collective=True)
    batch = runners["depth"].mediator.stream.next_batch()
    every1, every3 = StalePeerView(runners, 1), StalePeerView(runners, 3)
    ages = []
    for _ in range(5):
        ref = fresh.peer_outputs("depth", batch).outputs
        got = every1.peer_outputs("depth", batch)
        assert got.staleness_steps == [0] * len(batch["sample_id"])
        for key, value in ref.items():
            torch.testing.assert_close(got.outputs[key], value.half().float(), rtol=0, atol=0)
        stale = every3.peer_outputs("depth", batch)
        ages.append(stale.staleness_steps[0])
        if stale.staleness_steps[0] > 0:  # a stale snapshot really differs from the current model
            assert any(not torch.equal(stale.outputs[k], got.outputs[k]) for k in ref)
        runners["depth"].train_step()
    assert ages == [0, 1, 2, 0, 1] and every3.refreshes == {"depth": 2} and every1.refreshes == {"depth": 5}
