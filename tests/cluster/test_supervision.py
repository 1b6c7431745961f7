"""Pure supervision decisions (restart policy, placement) and the live table, without a cluster."""
from __future__ import annotations

import pytest

from taskology.cluster.live import staleness_summary, status_rows
from taskology.cluster.supervision import RestartPolicy, choose_worker


def test_restart_now_then_backoff_then_give_up() -> None:
    policy = RestartPolicy(max_restarts=3, backoff_s=2.0, max_backoff_s=3.0)
    assert policy.decide(0, last_failure=100.0, now=100.0).action == "restart"  # first loss: at once
    wait = policy.decide(1, last_failure=100.0, now=100.5)
    assert wait.action == "wait" and wait.wait_s == pytest.approx(1.5)  # 2 s backoff, 0.5 s elapsed
    assert policy.decide(1, last_failure=100.0, now=102.0).action == "restart"
    assert policy.decide(2, last_failure=100.0, now=102.9).action == "wait"  # 4 s capped to 3 s
    assert policy.decide(2, last_failure=100.0, now=103.0).action == "restart"
    give_up = policy.decide(3, last_failure=100.0, now=500.0)
    assert give_up.action == "give_up" and "lost 4 times (max_restarts=3)" in give_up.reason
    assert RestartPolicy(max_restarts=0).decide(0, None, 0.0).action == "give_up"


def test_choose_worker_prefers_free_then_least_occupied_then_address() -> None:
    live = {"tcp://h:3": {}, "tcp://h:1": {}, "tcp://h:2": {}}
    assert choose_worker(live, {}) == "tcp://h:1"
    assert choose_worker(live, {"tcp://h:1": 1}) == "tcp://h:2"
    assert choose_worker(live, {"tcp://h:1": 2, "tcp://h:2": 1, "tcp://h:3": 1}) == "tcp://h:2"
    assert choose_worker(live, {"tcp://h:1": 1, "tcp://h:2": 1, "tcp://h:3": 1}, allow_shared=False) is None
    assert choose_worker({}, {}) is None


def test_choose_worker_gpu() -> None:
    live = {"tcp://cpu:1": {}, "tcp://gpu:1": {"GPU": 1}, "tcp://gpu:2": {"GPU": 1}}
    assert choose_worker(live, {"tcp://gpu:1": 1}, needs_gpu=True) == "tcp://gpu:2"
    assert choose_worker(live, {"tcp://gpu:1": 1, "tcp://gpu:2": 1}, needs_gpu=True, allow_shared=False) is None
    assert choose_worker({"tcp://cpu:1": {}}, {}, needs_gpu=True) == "tcp://cpu:1"  # no GPU anywhere: any


def test_live_rows_show_progress_staleness_and_restarts() -> None:
    actors = {
        "depth": {"kind": "task", "restarts": 2, "status": {
            "state": "training", "step": 120, "steps_per_s": 3.456, "scalars": {"loss/total": 0.12345},
            "staleness": {"staleness/normals/mean_steps": 40.0, "staleness/normals/mean_s": 2.5},
            "exchange_bytes_per_s": 2048.0}},
        "sim": {"kind": "sim", "restarts": 0, "status": {"phase": "generating", "shards_available": 3,
                                                         "frames_per_s": 4.0}},
        "normals": {"kind": "task", "restarts": 0, "status": {}},
    }
    rows = status_rows(actors, target_steps=500)
    assert rows[0] == ["depth", "training", "120/500", "3.46", "0.1235", "40 st / 2.5 s", "2.0 kB/s", "2"]
    assert rows[1][:3] == ["sim", "generating", "3 shards"]
    assert rows[2][:3] == ["normals", "starting", "0/500"] and rows[2][5] == ""
    assert staleness_summary({}) == (None, None)
