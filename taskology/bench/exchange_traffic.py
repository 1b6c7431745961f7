"""Who moved the bytes: the loopback cluster of ``taskology bench exchange`` and its traffic accounting.

The scheduler runs in its own process (:func:`loopback_cluster`, Dask's ``SubprocessCluster`` on 127.0.0.1),
so that its CPU time (psutil) and its sockets are its own and not the driver's. Two independent counts tell
whether the exchange's fetches pass through it:

- **socket bytes** per process, from the kernel's per-socket TCP counters (``ss -tinp``: ``bytes_received``,
  ``bytes_sent``); the same count over the workers' sockets must show the exchange's bytes, else the
  accounting misses traffic and proves nothing;
- **messages** the scheduler handled, per operation, from its own counters (``Server.counters["op"]``): a
  fetch relayed through it would be a ``proxy`` message.

Example:
    >>> text = ("0 0 127.0.0.1:40000 127.0.0.1:8786 users:((\\"python\\",pid=11,fd=9))\\n"
    ...         "\\t cubic bytes_sent:300 bytes_acked:301 bytes_received:2000 segs_out:4\\n")
    >>> socket_bytes(text)
    {('127.0.0.1:40000', '127.0.0.1:8786', 11): (2000, 300)}
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

#: one TCP socket: (local address, peer address, owning pid) -> (bytes received, bytes sent)
Sockets = dict[tuple[str, str, int], tuple[int, int]]


def socket_bytes(ss_output: str) -> Sockets:
    """Per established TCP socket, bytes received and sent since it opened, from ``ss -tinpH state
    established`` output (a line with the addresses and owner, then an indented line of TCP info)."""
    sockets: Sockets = {}
    key: tuple[str, str, int] | None = None
    for line in ss_output.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            fields, pid = line.split(), re.search(r"pid=(\d+)", line)
            key = (fields[2], fields[3], int(pid.group(1))) if len(fields) >= 4 and pid else None
            continue
        if key is None:
            continue
        received, sent = re.search(r"bytes_received:(\d+)", line), re.search(r"bytes_sent:(\d+)", line)
        sockets[key] = (int(received.group(1)) if received else 0, int(sent.group(1)) if sent else 0)
        key = None
    return sockets


def read_sockets() -> Sockets | None:
    """The TCP sockets of this machine's processes that this user may inspect (``None``: no ``ss`` here)."""
    ss = shutil.which("ss")
    if ss is None:
        return None
    out = subprocess.run([ss, "-tinpH", "state", "established"], capture_output=True, text=True, timeout=20,
                         check=False)
    return socket_bytes(out.stdout)


def bytes_moved(before: Sockets, after: Sockets, pids: Iterable[int]) -> tuple[int, int]:
    """Bytes (received, sent) by the sockets of ``pids`` between two readings; a socket opened in between
    counts from zero (one closed in between is missed: Dask keeps its connections open).

    Example:
        >>> bytes_moved({("a", "b", 1): (10, 5)}, {("a", "b", 1): (25, 6), ("c", "d", 1): (3, 0),
        ...                                       ("e", "f", 2): (99, 99)}, [1])
        (18, 1)
    """
    wanted = set(pids)
    received = sent = 0
    for key, (r, s) in after.items():
        if key[2] in wanted:
            r0, s0 = before.get(key, (0, 0))
            received, sent = received + max(r - r0, 0), sent + max(s - s0, 0)
    return received, sent


def scheduler_op_counts(dask_scheduler: Any) -> dict[str, float]:
    """Messages the scheduler has handled since it started, per operation (run on the scheduler: its
    ``counters["op"]`` keeps decaying windows whose sum is the total)."""
    totals: dict[str, float] = {}
    for part in dask_scheduler.counters["op"].components:
        for op, count in part.items():
            totals[str(op)] = totals.get(str(op), 0.0) + float(count)
    return totals


@dataclass(frozen=True)
class TrafficReading:
    """What the scheduler and the sockets had done at one instant (``wall``: ``time.time()``)."""

    wall: float
    scheduler_cpu_s: float
    scheduler_ops: dict[str, float]
    sockets: Sockets | None


def read_traffic(client: Any, scheduler: Any) -> TrafficReading:
    """One :class:`TrafficReading`; ``scheduler`` is the scheduler's ``psutil.Process``."""
    wall = time.time()
    cpu = scheduler.cpu_times()
    ops = client.run_on_scheduler(scheduler_op_counts)
    return TrafficReading(wall, float(cpu.user + cpu.system), ops, read_sockets())


def traffic_between(before: TrafficReading, after: TrafficReading, scheduler_pid: int,
                    worker_pids: Iterable[int]) -> dict[str, Any]:
    """Scheduler CPU (cores), messages handled (the readings' own calls left out), relayed ``proxy``
    messages, and socket bytes of the scheduler and of the workers between two readings."""
    seconds = max(after.wall - before.wall, 1e-9)
    ops = {op: n - before.scheduler_ops.get(op, 0.0) for op, n in after.scheduler_ops.items()
           if op != "run_function"}
    figures: dict[str, Any] = {
        "seconds": seconds, "scheduler_cpu_cores": (after.scheduler_cpu_s - before.scheduler_cpu_s) / seconds,
        "scheduler_messages": round(sum(ops.values())), "scheduler_messages_per_s": sum(ops.values()) / seconds,
        "scheduler_messages_by_op": {op: round(n) for op, n in ops.items() if round(n)},
        "scheduler_proxy_messages": round(ops.get("proxy", 0.0)),
        "scheduler_socket_bytes": None, "worker_socket_bytes_received": None}
    if before.sockets is not None and after.sockets is not None:
        figures["scheduler_socket_bytes"] = sum(bytes_moved(before.sockets, after.sockets, [scheduler_pid]))
        figures["worker_socket_bytes_received"] = bytes_moved(before.sockets, after.sockets, worker_pids)[0]
    return figures


@contextmanager
def loopback_cluster(n_workers: int) -> Iterator[tuple[Any, Any, dict[str, int]]]:
    """A Dask cluster on 127.0.0.1 whose scheduler and ``n_workers`` single-threaded workers are each
    their own process; yields ``(client, scheduler psutil.Process, worker address -> pid)`` and closes
    everything on exit (also on errors). An orphaned scheduler closes itself after 10 idle minutes, its
    workers a minute after losing it."""
    import psutil
    from distributed import Client
    from distributed.deploy.subprocess import SubprocessCluster

    cluster = SubprocessCluster(host="127.0.0.1", dashboard_address=None, worker_class="distributed.Worker",
                                n_workers=n_workers, threads_per_worker=1, silence_logs=logging.ERROR,
                                scheduler_kwargs={"idle_timeout": "600s"},
                                worker_kwargs={"memory_limit": 0, "death_timeout": 60})
    try:
        client = Client(cluster, direct_to_workers=True)
        try:
            client.wait_for_workers(n_workers, timeout=180)
            scheduler = psutil.Process(cluster.scheduler.process.pid)
            client.run_on_scheduler(scheduler_op_counts)  # imports this module there, before any reading
            yield client, scheduler, dict(client.run(_pid))
        finally:
            client.close(timeout=30)
    finally:
        cluster.close(timeout=30)


def _pid() -> int:
    import os

    return os.getpid()
