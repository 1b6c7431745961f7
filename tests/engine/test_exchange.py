"""Exchange policy, publication box and consumer cache, without a cluster."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch

from taskology.engine.exchange import (DistributedPeerView, ExchangePolicy, PeerFetcher, PredictionCache,
                                       PublicationBox, StalenessLog, compact_predictions)
from taskology.engine.protocol import Predictions


def pub(task: str, step: int, wall: float, ids: list[str], value: float | None = None) -> Predictions:
    rows = np.stack([np.full((1, 2, 2), value if value is not None else i, np.float32) for i, _ in enumerate(ids)])
    return Predictions(task, step, wall, list(ids), {"depth": rows})


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_should_publish_every_n_steps() -> None:
    p = ExchangePolicy(publish_every_steps=3)
    published, last = [], None
    for step in range(1, 11):
        if p.should_publish(step, last):
            published.append(step)
            last = step
    assert published == [1, 4, 7, 10]


def test_should_refetch_after_interval() -> None:
    p = ExchangePolicy(refresh_every_s=2.0)
    assert p.should_refetch(5.0, None)
    assert not p.should_refetch(6.9, 5.0)
    assert p.should_refetch(7.0, 5.0)


@pytest.mark.parametrize("steps,seconds,usable", [(100, 1.0, True), (101, 1.0, False), (0, 30.0, True),
                                                  (0, 30.5, False), (100, 30.0, True)])
def test_is_usable_limits_are_inclusive(steps: int, seconds: float, usable: bool) -> None:
    p = ExchangePolicy(max_staleness_steps=100, max_staleness_s=30.0)
    assert p.is_usable(steps, seconds) is usable
    assert ExchangePolicy(max_staleness_steps=None, max_staleness_s=None).is_usable(10**9, 1e9)


def test_compact_casts_floats_only_and_checks_rows() -> None:
    p = Predictions("seg", 1, 0.0, ["a:0", "a:1"], {"logits": np.array([[0.1, 1 / 3], [2.0, -7.5]]),
                                                     "label": np.array([[1, 2], [3, 4]], np.int64)})
    c = compact_predictions(p, "float16")
    assert c.outputs["logits"].dtype == np.float16 and c.outputs["label"].dtype == np.int64
    np.testing.assert_allclose(c.outputs["logits"], p.outputs["logits"], rtol=1e-3)
    assert c.nbytes() == 4 * 2 + 4 * 8  # float16 halves 8-byte floats four-fold; labels unchanged
    with pytest.raises(ValueError, match="3 rows"):
        compact_predictions(Predictions("seg", 1, 0.0, ["a:0"], {"x": np.zeros((3, 1))}))


def test_box_since_and_latest_and_restart_reset() -> None:
    box = PublicationBox(keep=3)
    assert box.latest() is None and box.since(-1) == []
    for s in (10, 20, 30, 40):
        box.publish(pub("depth", s, float(s), ["a:0"]))
    assert [p.step for p in box.since(15)] == [20, 30, 40]  # keep=3 dropped step 10
    assert [p.step for p in box.since(-1)] == [20, 30, 40]
    assert box.latest(40) is None and box.latest(39).step == 40
    box.publish(pub("depth", 5, 50.0, ["a:0"]))  # restarted from an older checkpoint
    assert [p.step for p in box.since(-1)] == [5]


def test_since_returns_all_newer_in_order() -> None:
    box = PublicationBox(keep=3)
    for s in (10, 20, 30, 40):
        box.publish(pub("depth", s, float(s), ["a:0"]))
    assert [p.step for p in box.since(20)] == [30, 40]


def test_cache_merges_rows_and_reports_staleness() -> None:
    clock = FakeClock(1000.0)
    cache = PredictionCache(ExchangePolicy(max_staleness_steps=50, max_staleness_s=None), clock=clock)
    cache.add(pub("depth", 10, 990.0, ["s:0", "s:1"], value=1.0))
    cache.add(pub("depth", 30, 995.0, ["s:1", "s:2"], value=3.0))
    cache.note_peer_step("depth", 40)
    got = cache.lookup("depth", ["s:2", "s:0", "s:1"])
    assert got is not None
    assert got.outputs["depth"].dtype == torch.float32 and got.outputs["depth"].shape == (3, 1, 2, 2)
    assert got.outputs["depth"][:, 0, 0, 0].tolist() == [3.0, 1.0, 3.0]
    assert got.staleness_steps == [10, 30, 10]  # publisher at step 40
    assert got.staleness_s == [5.0, 10.0, 5.0]
    assert cache.lookup("depth", ["s:0", "s:9"]) is None  # a missing row -> None
    assert cache.lookup("normals", ["s:0"]) is None
    cache.note_peer_step("depth", 61)  # s:0 (step 10) is now 51 steps old > 50
    assert cache.lookup("depth", ["s:0"]) is None
    assert cache.lookup("depth", ["s:1"]).staleness_steps == [31]
    s = cache.log.scalars()
    assert s["staleness/depth/max_steps"] == 31.0 and s["staleness/depth/rejected"] == 1.0
    assert s["staleness/depth/mean_steps"] == pytest.approx((10 + 30 + 10 + 31) / 4)


def test_staleness_log_survives_a_json_round_trip() -> None:
    log = StalenessLog()
    log.record("depth", [3, 9], [0.5, 1.25])
    log.record("normals", [0], [0.0])
    log.rejected["depth"] = 2
    back = StalenessLog.from_dict(json.loads(json.dumps(log.to_dict())))
    assert back == log and back.scalars() == log.scalars()
    assert isinstance(back.count["depth"], int) and back.scalars()["staleness/depth/max_steps"] == 9.0
    back.record("depth", [20], [2.0])  # keeps accumulating after a restore
    assert back.scalars()["staleness/depth/mean_steps"] == pytest.approx(32 / 3)
    assert StalenessLog.from_dict({}) == StalenessLog()


def test_cache_ignores_older_rows_and_evicts_lru_and_forgets() -> None:
    cache = PredictionCache(ExchangePolicy(max_staleness_steps=None), max_rows_per_peer=2, clock=FakeClock())
    cache.add(pub("d", 20, 0.0, ["a"], value=2.0))
    cache.add(pub("d", 10, 0.0, ["a"], value=1.0))  # older than what we hold: ignored
    assert cache.lookup("d", ["a"]).outputs["depth"].max() == 2.0
    cache.add(pub("d", 21, 0.0, ["b", "c"]))  # a is least recently updated -> evicted
    assert cache.lookup("d", ["a"]) is None and cache.lookup("d", ["b", "c"]) is not None
    assert cache.latest_step("d") == 21
    cache.forget_peer("d")
    assert cache.latest_step("d") == -1 and cache.lookup("d", ["b"]) is None


def test_peer_view_reads_sample_ids_of_batch() -> None:
    cache = PredictionCache(ExchangePolicy(max_staleness_steps=None), clock=FakeClock())
    cache.add(pub("depth", 3, 1000.0, ["x:0", "x:1"], value=7.0))
    view = DistributedPeerView(cache)
    out = view.peer_outputs("depth", {"sample_id": ["x:1"], "image": torch.zeros(1)})
    assert out is not None and out.outputs["depth"].shape == (1, 1, 2, 2) and not out.outputs["depth"].requires_grad


class FakePeer:
    """A peer answering like a Dask actor proxy (values directly), or failing like a lost one."""

    def __init__(self, box: PublicationBox, step: int) -> None:
        self.box, self.step, self.fail, self.calls = box, step, False, 0

    def predictions_since(self, step: int) -> list[Predictions]:
        self.calls += 1
        if self.fail:
            raise OSError("Unable to contact Actor's worker")
        return self.box.since(step)

    def current_step(self) -> int:
        return self.step


def test_fetcher_polls_incrementally_counts_bytes_and_survives_dead_peer() -> None:
    box = PublicationBox()
    box.publish(compact_predictions(pub("depth", 5, time.time(), ["s:0", "s:1"])))
    peer = FakePeer(box, step=7)
    cache = PredictionCache(ExchangePolicy(refresh_every_s=1.0, max_staleness_steps=None))
    fetcher = PeerFetcher(cache, {"depth": peer})
    assert fetcher.poll_once(now=100.0) == 2 * 4 * 2  # two float16 rows of 2x2
    assert fetcher.poll_once(now=100.5) == 0 and peer.calls == 1  # not due yet
    assert fetcher.poll_once(now=101.0) == 0 and peer.calls == 2  # due, nothing newer than step 5
    assert cache.lookup("depth", ["s:0"]).staleness_steps == [2]
    peer.fail = True
    assert fetcher.poll_once(now=102.0) == 0 and fetcher.errors == {"depth": 1}
    assert cache.lookup("depth", ["s:1"]) is not None  # the cache keeps serving while the peer is down
    new_peer = FakePeer(PublicationBox(), step=0)
    fetcher.set_peers({"depth": new_peer})  # recreated from an older checkpoint
    assert cache.lookup("depth", ["s:1"]) is None
    assert fetcher.meter.bytes_total == 16 and fetcher.meter.fetches == 2


def test_fetcher_thread_starts_and_stops() -> None:
    box = PublicationBox()
    box.publish(pub("depth", 1, time.time(), ["s:0"]))
    cache = PredictionCache(ExchangePolicy(refresh_every_s=0.01, max_staleness_steps=None))
    fetcher = PeerFetcher(cache, {"depth": FakePeer(box, 1)})
    before = set(threading.enumerate())
    fetcher.start()
    # this fetcher's thread (other tests of the process, e.g. under pytest-xdist, may run fetchers of their own)
    started = [t for t in threading.enumerate() if t.name == "taskology-peer-fetcher" and t not in before]
    assert len(started) == 1
    deadline = time.time() + 5
    while cache.lookup("depth", ["s:0"]) is None and time.time() < deadline:
        time.sleep(0.01)
    fetcher.stop()
    assert cache.lookup("depth", ["s:0"]) is not None
    assert not started[0].is_alive()


def test_staggered_publication_makes_the_tasks_take_turns() -> None:
    """With 2 tasks every 200 steps, normals publishes 100 steps out of phase: the publications alternate (one
    every 100 steps, tasks in turn) while each task still publishes once every 200 steps."""
    from taskology.config import load_config
    from taskology.engine.distributed import exchange_policy_from_config

    def schedule(policy) -> list[int]:
        last, due = None, []
        for step in range(1001):
            if policy.should_publish(step, last):
                last = step
                due.append(step)
        return due

    tasks = ["depth", "normals"]
    staggered = load_config(None, ["exchange.publish_every_steps=200"]).exchange
    policies = {t: exchange_policy_from_config(staggered, t, tasks) for t in tasks}
    assert {t: p.publish_phase_steps for t, p in policies.items()} == {"depth": 0, "normals": 100}
    assert schedule(policies["depth"]) == [0, 200, 400, 600, 800, 1000]
    assert schedule(policies["normals"]) == [0, 100, 300, 500, 700, 900]
    assert exchange_policy_from_config(staggered).publish_phase_steps == 0  # no task named: no phase


def test_stale_peer_view_retakes_each_peer_on_its_own_phase() -> None:
    """The staleness benchmark's view with phases serves what the engine's publication schedule gives a consumer."""
    from types import SimpleNamespace

    from taskology.bench.staleness import StalePeerView

    runners = {t: SimpleNamespace(model=torch.nn.Linear(1, 1), step=0) for t in ("depth", "normals")}
    view = StalePeerView(runners, 4, phases={"normals": 2})
    taken: dict[str, list[int]] = {"depth": [], "normals": []}
    for step in range(11):
        for task, runner in runners.items():
            runner.step = step
            before = view.refreshes.get(task, 0)
            view._snapshot(task)
            if view.refreshes[task] > before:
                taken[task].append(step)
    assert taken == {"depth": [0, 4, 8], "normals": [0, 2, 6, 10]}
