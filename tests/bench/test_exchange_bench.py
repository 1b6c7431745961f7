"""``taskology bench exchange``: the quick run measures the engine's exchange between synthetic tasks, counts
exactly the bytes the publications make, and sees the fetches go worker to worker; its accounting helpers
give hand-worked answers."""
from __future__ import annotations

import pytest

from taskology.bench import exchange
from taskology.bench.exchange_traffic import bytes_moved, socket_bytes

SS_OUTPUT = """0      0      127.0.0.1:8786 127.0.0.1:40112 users:(("python",pid=100,fd=12))
\t cubic wscale:7,7 rto:204 rtt:0.05/0.02 bytes_sent:5120 bytes_acked:5121 bytes_received:734 segs_out:9
0      0      127.0.0.1:40112 127.0.0.1:8786 users:(("python",pid=200,fd=7))
\t cubic wscale:7,7 rto:204 rtt:0.05/0.02 bytes_acked:735 bytes_received:5120 segs_out:9
0      0      127.0.0.1:51000 10.0.0.1:22
\t cubic bytes_received:99
"""


def test_socket_counters_are_read_per_socket_and_owner() -> None:
    sockets = socket_bytes(SS_OUTPUT)
    # a socket without a visible owner is skipped; a missing bytes_sent is zero
    assert sockets == {("127.0.0.1:8786", "127.0.0.1:40112", 100): (734, 5120),
                       ("127.0.0.1:40112", "127.0.0.1:8786", 200): (5120, 0)}
    later = {**sockets, ("127.0.0.1:8786", "127.0.0.1:40112", 100): (1734, 5200),
             ("127.0.0.1:8786", "127.0.0.1:40999", 100): (50, 60)}
    # the scheduler (pid 100): 1000 + 80 on the old socket, 110 on a new one
    assert sum(bytes_moved(sockets, later, [100])) == 1190
    assert bytes_moved(sockets, later, [200]) == (0, 0)


def test_publications_are_counted_against_what_the_peers_made() -> None:
    publishers = {"a": {"publishes": [(0.0, 0.001, 1), (0.0, 0.001, 6), (0.0, 0.001, 11)]},
                  "b": {"publishes": [(0.0, 0.001, 3), (0.0, 0.001, 8)]}}
    consumer = {"received_up_to": {"a": 11, "b": 3}, "fetched_bytes": 400,
                "fetches": [(0.0, 200, 0.01), (0.0, 0, 0.01), (0.0, 100, 0.01), (0.0, 100, 0.01)]}
    whole = {"received": 4, "available": 4, "skipped": 0, "partial": 0, "uncounted": 0}
    assert exchange.publication_accounting(consumer, publishers, 100) == whole
    # a publication fetched twice shows as a negative skip
    twice = {**consumer, "fetched_bytes": 500, "fetches": consumer["fetches"] + [(0.0, 100, 0.01)]}
    assert exchange.publication_accounting(twice, publishers, 100)["skipped"] == -1
    # holding b's step 8 without having fetched it: one skipped
    assert exchange.publication_accounting({**consumer, "received_up_to": {"a": 11, "b": 8}}, publishers, 100)[
        "skipped"] == 1
    # part of a publication in a fetch; bytes the meter counted that no fetch brought
    assert exchange.publication_accounting({**consumer, "fetches": [(0.0, 250, 0.01), (0.0, 150, 0.01)]},
                                           publishers, 100)["partial"] == 2
    assert exchange.publication_accounting({**consumer, "fetched_bytes": 500}, publishers, 100)["uncounted"] == 100


def test_share_counts_everything_in_an_iteration_but_the_compute_stand_in() -> None:
    # four steps 120 ms apart, 100 ms of compute each: 3 whole iterations in the window, 60 ms not compute
    steps = [(10.0, 0.004, 2), (10.12, 0.004, 2), (10.24, 0.004, 1), (10.36, 0.004, 2), (10.48, 0.004, 2)]
    window = exchange.task_window(steps, [(10.23, 0.01, 20), (10.40, 0.5, 30)], 0.1, 9.9, 10.37)
    assert window["steps"] == 3 and window["wall_s"] == pytest.approx(0.36)
    assert window["share"] == pytest.approx(0.06 / 0.36)
    assert window["publish_share"] == pytest.approx(0.01 / 0.36)  # the one after the window is left out
    assert window["lookup_share"] == pytest.approx(0.012 / 0.36) and window["peers_answered"] == [2, 2, 1]


@pytest.mark.timeout(120)
def test_quick_bench_measures_the_exchange_and_sees_no_fetch_through_the_scheduler() -> None:
    result = exchange.run(quick=True)
    plan = exchange.QUICK
    rows = {(r["tasks"], r["peers"]): r for r in result.figures["configurations"]}
    assert list(rows) == plan.configurations() == [(3, 2), (6, 2), (6, 1)]
    for (tasks, k), row in rows.items():
        assert row["workers"] == 2 and row["fetch_errors"] == 0
        # every byte counted is part of a whole publication its consumer had not fetched before; the publisher
        # keeps its last 4, so a consumer skips one only when its polls fall that far behind
        counts = row["publications"]
        assert counts["partial"] == counts["uncounted"] == 0 and counts["received"] > 0, (tasks, k)
        assert 0 <= counts["skipped"] <= 0.1 * counts["available"], (tasks, k)
        # every task saw all its peers' predictions after the warm-up; no more steps than the stand-in allows
        assert row["steps_with_every_peer"] >= 0.9
        assert 0 < row["steps_per_s_per_task"] <= 1 / plan.compute_s
        assert 0 < row["share"] < 1 and row["publish_share"] + row["lookup_share"] <= row["share"]
        assert row["fetch_latency"]["count"] > 0 and row["publish_latency"]["count"] > 0
        # each task fetched about k peers' publications: k x payload x publications per second
        publications_per_s = row["steps_per_s_per_task"] / plan.publish_every_steps
        assert row["bytes_per_s_per_task"] == pytest.approx(k * plan.payload_nbytes * publications_per_s, rel=0.35)
        # worker to worker: the workers' sockets carried the exchange, the scheduler's a tiny fraction of it
        assert row["scheduler_proxy_messages"] == 0
        assert row["worker_bytes_per_exchange_byte"] >= 0.75
        assert row["scheduler_bytes_per_exchange_byte"] < 0.05
        assert 0 <= row["scheduler_cpu_cores"] < 1
    # the same counts do see a fetch relayed through the scheduler on purpose: at least its bytes
    control = result.figures["relay_control"]
    assert control["fetched_bytes"] == plan.payload_nbytes and control["scheduler_proxy_messages"] >= 1
    assert control["scheduler_socket_bytes"] >= control["fetched_bytes"]
    share_n = rows[(6, 2)]["share"] / rows[(3, 2)]["share"]
    assert result.targets["share_n6_over_n3"]["value"] == pytest.approx(share_n)
    assert result.targets["scheduler_bytes_per_exchange_byte"]["met"]
    model = result.figures["model"]["predicted"]
    assert model["tasks"] == 64 and model["mb_per_s_in_per_task"] > 0 and model["scheduler_cpu_cores"] >= 0
    assert "| 6 | 1 |" in result.table
