"""``taskology bench exchange``: the peer-prediction exchange with many tasks (N = 2 ... 32).

What it runs: the engine's own :class:`~taskology.engine.actor.TaskActor` (publication box, fetch thread,
prediction cache, peer view) around synthetic tasks (:mod:`taskology.bench.exchange_synthetic`), on a local
Dask cluster on 127.0.0.1 whose scheduler is its own process (:mod:`taskology.bench.exchange_traffic`). Task
``i`` of N reads ``k`` peers, tasks ``i+1 ... i+k`` (mod N), their rows of one mediator batch per step, and publishes
its prediction on the whole mediator pool every ``publish_every_steps`` steps, in turn with the others
(:func:`~taskology.engine.exchange.publication_phase`), as the engine's runs do. The publication is
mediator-sized: one depth map per sample of the default live pool (80 samples of 1x64x208, float16 on the
wire: 2.1 MB).

Why a sleep, and why several tasks per process: the question is what the exchange costs as N grows, not how
fast two cores train 32 networks. A task's compute stand-in is a 50 ms sleep, as a GPU step is for the Python
thread that launched it: the training thread waits while the device works, and the exchange's threads run
meanwhile. A real model (or a matmul) would make 32 tasks compete for 2 cores, and the step time would grow
with N for a reason that has nothing to do with the exchange. Processes: 32 worker processes each importing
torch do not fit beside the work on 2 cores, so up to ``max_workers`` (8) processes hold the tasks
round-robin: N = 16 packs 2 tasks per process, N = 32 packs 4 (they then share a process's interpreter lock
and its one actor thread, a cost a 64-GPU cluster with one task per process does not pay: the measured
share at N = 32 is an upper bound for that). A task's peers always sit in other processes when N >= 8 (in
the quick mode some do not).

What is measured, in a window after a warm-up, per (N, k):

- **exchange share of a step**: the part of each training-loop iteration that is not the compute stand-in
  (``1 - steps * compute_s / wall``), averaged over tasks. It holds the publication on the training thread
  (compaction and hand-over), the peer lookups, and whatever the fetch threads take from the training thread
  (interpreter lock, CPU), plus the loop's own bookkeeping and the sleep's overshoot: the k = 0 row
  (publishing, reading nobody) shows that floor. Publication and lookup shares are shown apart;
- per-task step rate; publication latency (training thread) and fetch latency (fetch thread, request to rows
  in the cache), p50/p95, fetches that brought a publication apart from polls that found none;
- bytes fetched per second per task, and where they came from: every fetch is whole publications, and a
  consumer's publications are counted against those its peers made up to the newest it holds (a publication
  a peer no longer kept when polled, it keeps the last 4, is counted as skipped; one fetched twice would show
  as a negative skip);
- the scheduler's CPU (psutil on its process), the messages it handled, and the bytes on its sockets against
  the bytes the exchange moved: fetches go worker to worker (actor calls on the holder's worker), so the
  scheduler sees heartbeats only. The run fails if a fetch was relayed through the scheduler, or if one
  publication fetched through it on purpose at the end (``figures.relay_control``) does not show there.

Rates: publications every 50 steps (the engine's default) and a poll of each peer every second, so that 32
tasks stay within 2 cores: past that, the share would grow with N because the machine is full, not because
of the exchange.

Targets: the share at N = 32 within 1.5x of N = 4 (k = 2); the share grows no worse than linearly in k
(k = 0, 1, 2, 4 at N = 8: share(4) / share(1) <= 4); the scheduler's socket bytes at most 5 % of the
exchange's.
``figures.model`` turns the per-message costs into the 64-task estimate of docs/cluster.md.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from taskology.bench import BenchResult, target


@dataclass(frozen=True)
class ExchangePlan:
    """Sizes of one run. ``peers`` is k in the task sweep; ``peer_sweep`` are the k at ``peer_sweep_tasks``;
    ``reference_tasks`` is the N the largest N's share is compared with."""

    task_counts: tuple[int, ...] = (2, 4, 8, 16, 32)
    peers: int = 2
    peer_sweep: tuple[int, ...] = (0, 1, 2, 4)
    peer_sweep_tasks: int = 8
    reference_tasks: int = 4
    compute_s: float = 0.05
    publish_every_steps: int = 50
    refresh_every_s: float = 1.0
    samples: int = 80
    output_shape: tuple[int, ...] = (1, 64, 208)
    batch_size: int = 8
    warmup_s: float = 5.0
    measure_s: float = 20.0
    max_workers: int = 8

    def configurations(self) -> list[tuple[int, int]]:
        """(N, k) in run order: the task sweep, then the peer sweep; k is at most N - 1.

        Example:
            >>> ExchangePlan(task_counts=(2, 8), peer_sweep=(1, 2, 4)).configurations()
            [(2, 1), (8, 2), (8, 1), (8, 4)]
        """
        pairs = [(n, min(self.peers, n - 1)) for n in self.task_counts]
        pairs += [(self.peer_sweep_tasks, min(k, self.peer_sweep_tasks - 1)) for k in self.peer_sweep]
        return list(dict.fromkeys(pairs))

    @property
    def payload_nbytes(self) -> int:
        """Bytes of one publication on the wire (float16)."""
        return self.samples * math.prod(self.output_shape) * 2


FULL = ExchangePlan()
#: a few seconds on 2 cores: N = 3 and 6 on 2 worker processes, k = 1 and 2, small payload, short windows
QUICK = ExchangePlan(task_counts=(3, 6), peer_sweep=(1, 2), peer_sweep_tasks=6, reference_tasks=3, compute_s=0.02,
                     publish_every_steps=10, refresh_every_s=0.1, samples=16, output_shape=(1, 32, 104),
                     warmup_s=0.5, measure_s=1.2, max_workers=2)


def peers_of(task: int, tasks: int, k: int) -> list[int]:
    """The ``k`` tasks task ``task`` of ``tasks`` reads: the next ones, wrapping around.

    Example:
        >>> peers_of(3, 4, 2)
        [0, 1]
    """
    return [(task + j) % tasks for j in range(1, k + 1)]


def task_window(steps: Sequence[Sequence[float]], publishes: Sequence[Sequence[float]], compute_s: float,
                t0: float, t1: float) -> dict[str, Any]:
    """One task's figures over the loop iterations that start and end inside ``[t0, t1]``.

    ``steps``: ``(wall start, lookup seconds, peers answered)`` per step; ``publishes``: ``(wall start,
    seconds, step)``. An iteration runs from one step's start to the next's (step, publication, bookkeeping).

    Example:
        >>> f = task_window([(0.0, .002, 1), (0.11, .002, 1), (0.22, .002, 1), (0.33, .002, 1)],
        ...                 [(0.105, 0.005, 1)], compute_s=0.1, t0=0.0, t1=0.4)
        >>> f["steps"], round(f["share"], 4), round(f["publish_share"], 4), round(f["lookup_share"], 4)
        (3, 0.0909, 0.0152, 0.0182)
    """
    inside = [i for i, s in enumerate(steps) if t0 <= s[0] <= t1]
    if len(inside) < 2:
        raise RuntimeError(f"bench exchange: a task made {len(inside)} steps in the {t1 - t0:.1f} s window")
    first, last = inside[0], inside[-1]
    begin, end = float(steps[first][0]), float(steps[last][0])
    n, wall = last - first, end - begin
    publish_s = [float(p[1]) for p in publishes if begin <= p[0] < end]
    lookup_s = sum(float(steps[i][1]) for i in range(first, last))
    return {"steps": n, "wall_s": wall, "steps_per_s": n / wall, "share": 1.0 - n * compute_s / wall,
            "publish_share": sum(publish_s) / wall, "lookup_share": lookup_s / wall, "publish_s": publish_s,
            "peers_answered": [int(steps[i][2]) for i in range(first, last)]}


def publication_accounting(consumer: dict[str, Any], publishers: dict[str, dict[str, Any]],
                           payload: int) -> dict[str, int]:
    """How ``consumer``'s fetched bytes relate to its peers' publications.

    ``received``: publications its fetcher counted (bytes / payload); ``available``: its peers' publications up
    to the newest one it holds of each; ``skipped`` = available - received (a publication the publisher no
    longer kept when the consumer polled; negative: one fetched twice); ``partial``: fetches that were not
    whole publications; ``uncounted``: bytes the fetcher's meter and its fetch log disagree on.

    Example:
        >>> pubs = {"b": {"publishes": [(0, 0, 1), (0, 0, 6), (0, 0, 11)]}}
        >>> c = {"received_up_to": {"b": 11}, "fetched_bytes": 20, "fetches": [(0, 10, 0), (0, 0, 0), (0, 10, 0)]}
        >>> publication_accounting(c, pubs, 10)
        {'received': 2, 'available': 3, 'skipped': 1, 'partial': 0, 'uncounted': 0}
    """
    available = sum(sum(1 for p in publishers[peer]["publishes"] if p[2] <= upto)
                    for peer, upto in consumer["received_up_to"].items())
    received = consumer["fetched_bytes"] // payload
    return {"received": received, "available": available, "skipped": available - received,
            "partial": sum(1 for f in consumer["fetches"] if f[1] % payload),
            "uncounted": consumer["fetched_bytes"] - sum(f[1] for f in consumer["fetches"])}


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not len(values):
        return {"p50_ms": None, "p95_ms": None, "count": 0}
    return {"p50_ms": 1e3 * float(np.percentile(values, 50)), "p95_ms": 1e3 * float(np.percentile(values, 95)),
            "count": len(values)}


def summarize(measured: list[dict[str, Any]], plan: ExchangePlan, tasks: int, k: int, workers: int,
              t0: float, t1: float, traffic: dict[str, Any], fetch_errors: int = 0) -> dict[str, Any]:
    """The figures of one (N, k) run from every actor's ``measurements()``, the traffic between the readings
    at ``t0`` and ``t1`` and the fetch errors the actors had counted by ``t1``."""
    by_task = {m["task"]: m for m in measured}
    windows = [task_window(m["steps"], m["publishes"], plan.compute_s, t0, t1) for m in measured]
    fetches = [f for m in measured for f in m["fetches"] if t0 <= f[0] <= t1]
    exchange_bytes = sum(f[1] for f in fetches)
    payloads = {m["payload_nbytes"] for m in measured}
    if payloads != {plan.payload_nbytes}:
        raise RuntimeError(f"bench exchange: publications of {sorted(payloads)} bytes, expected {plan.payload_nbytes}")
    shares = [w["share"] for w in windows]
    staleness = [v for m in measured for key, v in m["staleness"].items() if key.endswith("/mean_s")]
    accounts = [publication_accounting(m, by_task, plan.payload_nbytes) for m in measured]
    steps = sum(w["steps"] for w in windows)
    row = {
        "tasks": tasks, "peers": k, "workers": workers, "tasks_per_worker": tasks / workers,
        "steps_per_s_per_task": float(np.mean([w["steps_per_s"] for w in windows])),
        "steps_per_s_min": float(min(w["steps_per_s"] for w in windows)),
        "share": float(np.mean(shares)), "share_max": float(max(shares)),
        "publish_share": float(np.mean([w["publish_share"] for w in windows])),
        "lookup_share": float(np.mean([w["lookup_share"] for w in windows])),
        "publish_latency": _percentiles([s for w in windows for s in w["publish_s"]]),
        "fetch_latency": _percentiles([f[2] for f in fetches if f[1] > 0]),
        "poll_latency": _percentiles([f[2] for f in fetches if f[1] == 0]),
        "bytes_per_s_per_task": exchange_bytes / (t1 - t0) / tasks, "exchange_bytes": exchange_bytes,
        "steps_with_every_peer": sum(a == k for w in windows for a in w["peers_answered"]) / max(steps, 1),
        "peer_row_age_s_mean": float(np.mean(staleness)) if staleness else None,
        "fetch_errors": int(fetch_errors),
        "publications": {key: sum(a[key] for a in accounts) for key in accounts[0]},
        "window_s": t1 - t0, **traffic}
    scheduler_bytes, worker_bytes = traffic.get("scheduler_socket_bytes"), traffic.get("worker_socket_bytes_received")
    moved = exchange_bytes > 0  # k = 0: nothing fetched, nothing to compare with
    row["scheduler_bytes_per_exchange_byte"] = scheduler_bytes / exchange_bytes if moved and scheduler_bytes is not None else None
    row["worker_bytes_per_exchange_byte"] = worker_bytes / exchange_bytes if moved and worker_bytes is not None else None
    return row


def measure_configuration(client: Any, scheduler: Any, worker_pids: dict[str, int], plan: ExchangePlan,
                          tasks: int, k: int, run_dir: Path) -> dict[str, Any]:
    """Create ``tasks`` actors round-robin on the first ``min(tasks, max_workers)`` workers, wire each to its
    ``k`` peers, train for the warm-up and the window, stop, collect, release."""
    from taskology.bench.exchange_synthetic import MeasuredTaskActor, SyntheticRunner
    from taskology.bench.exchange_traffic import read_traffic, traffic_between
    from taskology.engine.exchange import ExchangePolicy, publication_phase

    addresses = sorted(worker_pids)[:min(tasks, plan.max_workers)]
    names = [f"task{i:02d}" for i in range(tasks)]
    futures = [client.submit(
        MeasuredTaskActor, actor=True, workers=[addresses[i % len(addresses)]], allow_other_workers=False,
        pure=False, task_name=name, runner_cls=SyntheticRunner, run_dir=str(run_dir / f"n{tasks}-k{k}"),
        runner_kwargs=dict(task_name=name, peers=[names[p] for p in peers_of(i, tasks, k)], compute_s=plan.compute_s,
                           samples=plan.samples, output_shape=plan.output_shape, batch_size=plan.batch_size, seed=i),
        policy=ExchangePolicy(publish_every_steps=plan.publish_every_steps, refresh_every_s=plan.refresh_every_s,
                              publish_phase_steps=publication_phase(name, names, plan.publish_every_steps)),
        checkpoint_every_steps=None, checkpoint_every_s=None, log_every=0) for i, name in enumerate(names)]
    try:
        handles = [f.result(timeout=120) for f in futures]
        for i, handle in enumerate(handles):
            handle.set_peers({names[p]: handles[p] for p in peers_of(i, tasks, k)}).result(timeout=60)
        for handle in handles:
            handle.start(10 ** 9).result(timeout=60)
        time.sleep(plan.warmup_s)
        before = read_traffic(client, scheduler)
        time.sleep(plan.measure_s)
        after = read_traffic(client, scheduler)
        statuses = [h.status() for h in handles]
        fetch_errors = sum(sum(s.result(timeout=60)["fetch_errors"].values()) for s in statuses)
        # fetching ends first: an actor's stop() joins its fetch thread, which may be waiting on a peer's
        # worker whose one actor thread is itself in stop(), joining a fetch thread (until the call times out)
        for quiet in [h.set_peers({}) for h in handles]:
            quiet.result(timeout=60)
        time.sleep(min(plan.refresh_every_s, 0.3))
        stops = [h.stop() for h in handles]
        states = [s.result(timeout=120) for s in stops]
        if set(states) != {"stopped"}:
            raise RuntimeError(f"bench exchange: actors ended {sorted(set(states))}, expected all stopped")
        measured = [h.measurements().result(timeout=120) for h in handles]
    finally:
        for future in futures:
            future.release()
    traffic = traffic_between(before, after, scheduler.pid, worker_pids.values())
    return summarize(measured, plan, tasks, k, len(addresses), before.wall, after.wall, traffic, fetch_errors)


def relay_control(client: Any, scheduler: Any, worker_pids: dict[str, int], plan: ExchangePlan,
                  run_dir: Path) -> dict[str, Any]:
    """The accounting's own check: one publication fetched *through* the scheduler must show on its sockets.

    A client that does not talk to workers directly sends actor calls through the scheduler (its ``proxy``
    handler); such a client fetches one publication of a fresh synthetic task. Run it last: the driver's actor
    handles bind to the newest client."""
    from distributed import Client

    from taskology.bench.exchange_synthetic import MeasuredTaskActor, SyntheticRunner
    from taskology.bench.exchange_traffic import read_traffic, traffic_between
    from taskology.engine.exchange import ExchangePolicy

    with Client(client.scheduler.address, direct_to_workers=False) as relay:
        future = relay.submit(MeasuredTaskActor, actor=True, workers=[sorted(worker_pids)[0]], pure=False,
                              task_name="relayed", runner_cls=SyntheticRunner, run_dir=str(run_dir / "relayed"),
                              runner_kwargs={"task_name": "relayed", "peers": [], "compute_s": 0.0,
                                             "samples": plan.samples, "output_shape": plan.output_shape},
                              policy=ExchangePolicy(publish_every_steps=1), checkpoint_every_steps=None,
                              checkpoint_every_s=None, log_every=0)
        try:
            handle = future.result(timeout=120)
            handle.start(1).result(timeout=60)
            handle.join(60).result(timeout=90)
            before = read_traffic(relay, scheduler)
            fetched = handle.predictions_since(-1).result(timeout=60)
            after = read_traffic(relay, scheduler)
        finally:
            future.release()
    traffic = traffic_between(before, after, scheduler.pid, worker_pids.values())
    return {"fetched_bytes": sum(p.nbytes() for p in fetched), "scheduler_socket_bytes": traffic["scheduler_socket_bytes"],
            "scheduler_proxy_messages": traffic["scheduler_proxy_messages"]}


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x``; returns ``(a, b)``.

    Example:
        >>> linear_fit([1, 2, 4], [3.0, 5.0, 9.0])
        (1.0, 2.0)
    """
    b, a = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return round(float(a), 12), round(float(b), 12)


def scaling_model(rows: list[dict[str, Any]], plan: ExchangePlan, tasks: int = 64, k: int = 2) -> dict[str, Any]:
    """Per-message costs measured in ``rows`` and what they predict for ``tasks`` tasks on as many GPUs, one
    task per process (the packing of the peer sweep), each reading ``k`` peers at this plan's step time,
    publication size and interval.

    - share of a step: the least-squares line ``a + b k`` through the peer sweep, at ``k`` (nothing in it
      depends on N once each task has its own process: a task serves the ``k`` tasks that read it and fetches
      from ``k``), and the number of peers at which it would reach 10 %;
    - bytes: ``k`` publications per publication interval into each task, ``tasks`` times that in all;
    - scheduler: it handles heartbeats, not the exchange; Dask spaces them by cluster size
      (``distributed.scheduler.heartbeat_interval``), so the messages per worker measured here are scaled
      to ``tasks`` workers and priced at the scheduler's CPU per message measured here (all of its CPU over
      all of its messages: an upper bound).
    """
    from distributed.scheduler import heartbeat_interval

    sweep = sorted((r for r in rows if r["tasks"] == plan.peer_sweep_tasks), key=lambda r: r["peers"])
    a, b = linear_fit([r["peers"] for r in sweep], [r["share"] for r in sweep])
    polls = [r["poll_latency"]["p50_ms"] for r in rows if r["poll_latency"]["p50_ms"] is not None]
    fetches = [r["fetch_latency"]["p50_ms"] for r in rows if r["fetch_latency"]["p50_ms"] is not None]
    poll = float(np.median(polls)) if polls else float("nan")
    fetch = float(np.median(fetches)) if fetches else float("nan")
    publish = float(np.median([r["publish_latency"]["p50_ms"] for r in rows if r["publish_latency"]["p50_ms"]]))
    mb = plan.payload_nbytes / 1e6
    step_s = plan.compute_s / (1.0 - a - b * k)
    publications_per_s = 1.0 / (plan.publish_every_steps * step_s)
    largest = max(rows, key=lambda r: (r["workers"], r["tasks"]))
    per_worker_messages = (largest["scheduler_messages_per_s"] / largest["workers"]
                           * heartbeat_interval(largest["workers"]) / heartbeat_interval(tasks))
    cpu_per_message = float(np.mean([r["scheduler_cpu_cores"] / r["scheduler_messages_per_s"] for r in rows
                                     if r["scheduler_messages_per_s"] > 0]))
    lookups = [r["lookup_share"] * plan.compute_s / (1 - r["share"]) / r["peers"] for r in sweep if r["peers"]]
    return {
        "share_fit": {"at_tasks": plan.peer_sweep_tasks, "intercept": a, "per_peer": b},
        "poll_p50_ms": poll, "fetch_p50_ms": fetch, "fetch_ms_per_mb": (fetch - poll) / mb,
        "publish_p50_ms": publish, "publish_ms_per_mb": publish / mb,
        "lookup_ms_per_peer_step": 1e3 * float(np.mean(lookups)) if lookups else None,
        "scheduler_cpu_s_per_message": cpu_per_message,
        "predicted": {"tasks": tasks, "peers": k, "share": a + b * k, "exchange_ms_per_step": 1e3 * (a + b * k) * step_s,
                      "peers_at_10pct_share": (0.10 - a) / b if b > 0 else None,
                      "mb_per_s_in_per_task": k * mb * publications_per_s,
                      "mb_per_s_cluster": tasks * k * mb * publications_per_s,
                      "scheduler_messages_per_s": tasks * per_worker_messages,
                      "scheduler_cpu_cores": tasks * per_worker_messages * cpu_per_message,
                      "all_to_all_mb_per_s_in_per_task": (tasks - 1) * mb * publications_per_s}}


def _ms(p: dict[str, Any]) -> str:
    return "–" if p["p50_ms"] is None else f"{p['p50_ms']:.1f} / {p['p95_ms']:.1f}"


def table(rows: list[dict[str, Any]], plan: ExchangePlan) -> str:
    """The Markdown table, one row per (N, k)."""
    lines = [("| N | k | tasks per process | steps/s per task | exchange share of a step (publish / lookup) "
              "| publish ms p50 / p95 | fetch ms p50 / p95 | empty poll ms p50 / p95 | MB/s fetched per task "
              "| scheduler CPU | scheduler kB/s (exchange MB/s) |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        sched = "–" if r["scheduler_socket_bytes"] is None else f"{r['scheduler_socket_bytes'] / r['window_s'] / 1e3:.1f}"
        lines.append(
            f"| {r['tasks']} | {r['peers']} | {r['tasks_per_worker']:g} | {r['steps_per_s_per_task']:.2f} | "
            f"{100 * r['share']:.2f} % ({100 * r['publish_share']:.2f} / {100 * r['lookup_share']:.2f}) | "
            f"{_ms(r['publish_latency'])} | {_ms(r['fetch_latency'])} | {_ms(r['poll_latency'])} | "
            f"{r['bytes_per_s_per_task'] / 1e6:.2f} | {100 * r['scheduler_cpu_cores']:.1f} % | "
            f"{sched} ({r['exchange_bytes'] / r['window_s'] / 1e6:.1f}) |")
    return "\n".join(lines)


def run(quick: bool) -> BenchResult:
    from taskology.bench.exchange_traffic import loopback_cluster

    plan = QUICK if quick else FULL
    started = time.time()
    rows: list[dict[str, Any]] = []
    workers = min(plan.max_workers, max(plan.task_counts + (plan.peer_sweep_tasks,)))
    with tempfile.TemporaryDirectory(prefix="taskology-bench-exchange-") as tmp, \
            loopback_cluster(workers) as (client, scheduler, worker_pids):
        for tasks, k in plan.configurations():
            rows.append(measure_configuration(client, scheduler, worker_pids, plan, tasks, k, Path(tmp)))
            print(f"bench exchange: N={tasks} k={k}: share {100 * rows[-1]['share']:.2f} %, "
                  f"{rows[-1]['steps_per_s_per_task']:.2f} steps/s per task", flush=True)
        control = relay_control(client, scheduler, worker_pids, plan, Path(tmp))
    if control["scheduler_proxy_messages"] < 1 or (control["scheduler_socket_bytes"] is not None
                                                  and control["scheduler_socket_bytes"] < control["fetched_bytes"]):
        raise RuntimeError(f"bench exchange: a fetch relayed through the scheduler did not show there ({control}); "
                           "its counts cannot tell where the exchange's fetches went")
    relayed = [r for r in rows if r["scheduler_proxy_messages"]
               or (r["scheduler_bytes_per_exchange_byte"] is not None and r["scheduler_bytes_per_exchange_byte"] > 0.5)]
    if relayed:
        raise RuntimeError("bench exchange: fetches went through the scheduler: " + ", ".join(
            f"N={r['tasks']} k={r['peers']}: {r['scheduler_proxy_messages']} proxy messages, "
            f"{r['scheduler_socket_bytes']} scheduler bytes for {r['exchange_bytes']} exchange bytes" for r in relayed))
    at = {(r["tasks"], r["peers"]): r for r in rows}
    n_max, n_ref = max(plan.task_counts), plan.reference_tasks
    k_lo, k_hi = min(k for k in plan.peer_sweep if k > 0), max(plan.peer_sweep)
    share_n = at[(n_max, plan.peers)]["share"] / at[(n_ref, plan.peers)]["share"]
    share_k = at[(plan.peer_sweep_tasks, k_hi)]["share"] / at[(plan.peer_sweep_tasks, k_lo)]["share"]
    relayed_share = [r["scheduler_bytes_per_exchange_byte"] for r in rows if r["scheduler_bytes_per_exchange_byte"] is not None]
    targets = {f"share_n{n_max}_over_n{n_ref}": target(share_n, 1.5, higher_is_better=False),
               f"share_k{k_hi}_over_k{k_lo}": target(share_k, k_hi / k_lo, higher_is_better=False)}
    if relayed_share:
        targets["scheduler_bytes_per_exchange_byte"] = target(max(relayed_share), 0.05, higher_is_better=False)
    model = scaling_model(rows, plan)
    figures = {"plan": asdict(plan), "payload_nbytes": plan.payload_nbytes, "configurations": rows, "model": model,
               "relay_control": control, "seconds": time.time() - started}
    p = model["predicted"]
    notes = (f"Synthetic tasks: a {1e3 * plan.compute_s:.0f} ms sleep stands in for a GPU step; each publishes "
             f"{plan.payload_nbytes / 1e6:.2f} MB ({plan.samples} samples of {'x'.join(map(str, plan.output_shape))}, "
             f"float16) every {plan.publish_every_steps} steps and polls each peer every {plan.refresh_every_s} s; "
             f"up to {plan.max_workers} worker processes hold the tasks round-robin. Share = the part of a training-"
             f"loop iteration that is not the compute stand-in, mean over tasks, in a {plan.measure_s:g} s window "
             "after a warm-up. Fetch latency: request to rows in the cache, fetches that brought a publication; "
             "empty poll: those that found none. Scheduler kB/s: bytes on the scheduler's sockets (kernel TCP "
             "counters); exchange MB/s: bytes the fetches moved, all tasks.\n\n"
             f"Model (per-message costs above, one task per process): {p['tasks']} tasks reading {p['peers']} peers "
             f"each spend {100 * p['share']:.2f} % of a step on the exchange, fetch {p['mb_per_s_in_per_task']:.1f} "
             f"MB/s each ({p['mb_per_s_cluster']:.0f} MB/s in all), and keep the scheduler at "
             f"{100 * p['scheduler_cpu_cores']:.1f} % of a core ({p['scheduler_messages_per_s']:.0f} messages/s, heartbeats); "
             + (f"the share would reach 10 % at {p['peers_at_10pct_share']:.0f} peers per task; "
                if p["peers_at_10pct_share"] is not None else "")
             + f"all-to-all (k = {p['tasks'] - 1}) would bring {p['all_to_all_mb_per_s_in_per_task']:.0f} MB/s into each task.")
    return BenchResult(figures=figures, table=table(rows, plan), targets=targets, notes=notes)
