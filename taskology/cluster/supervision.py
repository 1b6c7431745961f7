"""Pure supervision decisions: where to place an actor, whether and when to restart it.

Dask actors are not resilient (a lost worker takes its actor with it); the supervisor in
:mod:`taskology.engine.distributed` recreates them. What it decides is here, free of any cluster, so it
is tested directly.

Example:
    >>> policy = RestartPolicy(max_restarts=3, backoff_s=1.0)
    >>> policy.decide(restarts=0, last_failure=None, now=10.0).action
    'restart'
    >>> policy.decide(restarts=3, last_failure=9.0, now=10.0).action
    'give_up'
    >>> watch = SchedulerWatch(grace_s=10.0)
    >>> watch.observe(reachable=False, now=100.0), watch.observe(reachable=False, now=110.5)
    (False, True)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping


@dataclass(frozen=True)
class RestartDecision:
    """``action`` is ``"restart"`` (now), ``"wait"`` (retry after ``wait_s``) or ``"give_up"``."""

    action: str
    wait_s: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class RestartPolicy:
    """Restart a lost actor up to ``max_restarts`` times, with exponential backoff between quick repeats.

    Attributes:
        max_restarts: restarts allowed per actor over a run (a crash loop ends the run instead).
        backoff_s: wait before restart ``k`` (k >= 1) is ``backoff_s * 2**(k-1)``, capped at ``max_backoff_s``.
        max_backoff_s: cap of the wait, seconds.
    """

    max_restarts: int = 10
    backoff_s: float = 0.0
    max_backoff_s: float = 30.0

    def backoff(self, restarts: int) -> float:
        """Seconds to wait after a failure before restart number ``restarts + 1``.

        >>> [RestartPolicy(backoff_s=1.0, max_backoff_s=5.0).backoff(k) for k in range(5)]
        [0.0, 1.0, 2.0, 4.0, 5.0]
        """
        if restarts <= 0 or self.backoff_s <= 0:
            return 0.0
        return min(self.backoff_s * 2 ** (restarts - 1), self.max_backoff_s)

    def decide(self, restarts: int, last_failure: float | None, now: float, fatal: bool = False) -> RestartDecision:
        """What to do about an actor found lost at ``now`` after ``restarts`` earlier restarts;
        ``last_failure`` is when it was first found lost this time. ``fatal``: it stopped on an error that a
        restart from its checkpoint would meet again (its status says so), so it is not restarted.

        >>> RestartPolicy().decide(0, None, 0.0, fatal=True).reason
        'stopped by an error a restart cannot fix'
        """
        if fatal:
            return RestartDecision("give_up", reason="stopped by an error a restart cannot fix")
        if restarts >= self.max_restarts:
            return RestartDecision("give_up", reason=f"lost {restarts + 1} times (max_restarts={self.max_restarts})")
        wait = self.backoff(restarts)
        started = now if last_failure is None else last_failure
        if now - started < wait:
            return RestartDecision("wait", wait_s=wait - (now - started), reason="backoff")
        return RestartDecision("restart")


@dataclass
class SchedulerWatch:
    """When the driver takes its scheduler as lost: no answer for ``grace_s`` seconds in a row, or at once
    when the client has stopped reconnecting (``client_closed``). One answer resets the count.

    Dask's client reconnects on its own for its connect timeout; a scheduler that comes back within
    ``grace_s`` costs nothing. A lost scheduler takes every worker with it (a worker closes when its
    scheduler connection breaks), so there is nothing to wait for after that.

    Attributes:
        grace_s: seconds without an answer before the scheduler counts as lost.
        unreachable_since: when the current run of unanswered checks began (None: it answered last).
    """

    grace_s: float = 10.0
    unreachable_since: float | None = None

    def observe(self, reachable: bool, now: float, client_closed: bool = False) -> bool:
        """Record one check made at ``now``; True when the scheduler is to be taken as lost."""
        if reachable:
            self.unreachable_since = None
            return False
        if self.unreachable_since is None:
            self.unreachable_since = now
        return client_closed or now - self.unreachable_since >= self.grace_s


def gpu_task_cap(n_gpu_actors: int, n_gpus: int) -> int | None:
    """Most GPU actors one GPU should hold: ``ceil(T / G)``; ``None`` without GPUs (no bound).

    Example:
        >>> [gpu_task_cap(t, 4) for t in (1, 4, 5, 8, 9)]
        [1, 1, 2, 2, 3]
        >>> gpu_task_cap(3, 0) is None
        True
    """
    if n_gpus <= 0:
        return None
    return max(-(-int(n_gpu_actors) // int(n_gpus)), 1)


def gpu_loads(placed: Iterable[tuple[str | None, bool]], worker_gpus: Mapping[str, str]) -> dict[str, int]:
    """GPU -> number of GPU actors on it, from ``(worker address, needs_gpu)`` of the placed actors.

    Example:
        >>> gpu_loads([("w1", True), ("w2", True), ("w3", False)], {"w1": "h/0", "w2": "h/0", "w3": "h/1"})
        {'h/0': 2}
    """
    loads: dict[str, int] = {}
    for worker, needs_gpu in placed:
        if needs_gpu and worker in worker_gpus:
            gpu = worker_gpus[worker]
            loads[gpu] = loads.get(gpu, 0) + 1
    return loads


def choose_worker(live_workers: Mapping[str, Mapping[str, float]], occupied: Mapping[str, int],
                  needs_gpu: bool = False, allow_shared: bool = True, *,
                  worker_gpus: Mapping[str, str] | None = None, gpu_load: Mapping[str, int] | None = None,
                  gpu_cap: int | None = None) -> str | None:
    """Worker address for a new actor, or ``None`` when there is no suitable worker (yet).

    A GPU actor (``needs_gpu``) goes to a worker advertising a ``GPU`` resource (or, with none, any): the
    one whose GPU holds the fewest GPU actors, then a free worker before a shared one. Other actors
    prefer a worker without a GPU, then a free one, then the GPU holding the most GPU actors (its
    workers are the least likely to be needed for a GPU actor). Ties break by address, so the choice
    is deterministic. With ``allow_shared=False`` only a free worker is acceptable and, for a GPU actor
    when ``gpu_cap`` is given, only one whose GPU holds fewer than ``gpu_cap`` GPU actors: the
    supervisor waits a while for such a worker (a nanny restarting the dead process brings back its
    GPU) and only then shares a worker or a GPU.

    Args:
        live_workers: address -> resources of that worker (``{"GPU": 1}`` or ``{}``).
        occupied: address -> number of actors it holds now.
        worker_gpus: address -> the GPU it sees (any label, e.g. ``"host/0"``); a GPU worker missing
            here counts as a GPU of its own.
        gpu_load: GPU label -> number of GPU actors on it now (see :func:`gpu_loads`).
        gpu_cap: most GPU actors a GPU should hold (see :func:`gpu_task_cap`).

    Example:
        >>> choose_worker({"tcp://a:1": {}, "tcp://b:1": {}}, {"tcp://a:1": 1})
        'tcp://b:1'
        >>> choose_worker({"tcp://a:1": {}}, {"tcp://a:1": 1}, allow_shared=False) is None
        True
        >>> choose_worker({}, {}) is None
        True
        >>> gpus = {"tcp://a:1": "h/0", "tcp://b:1": "h/0", "tcp://c:1": "h/1"}
        >>> live = {a: {"GPU": 1} for a in gpus}
        >>> choose_worker(live, {"tcp://a:1": 1}, True, worker_gpus=gpus, gpu_load={"h/0": 1})
        'tcp://c:1'
    """
    if not live_workers:
        return None
    gpus = worker_gpus or {}
    load = gpu_load or {}

    def has_gpu(address: str) -> bool:
        return float(live_workers[address].get("GPU", 0) or 0) > 0

    def load_of(address: str) -> int:
        return load.get(gpus.get(address, address), 0) if has_gpu(address) else 0

    candidates = sorted(live_workers)
    if needs_gpu:
        candidates = [a for a in candidates if has_gpu(a)] or candidates
    if not allow_shared:
        candidates = [a for a in candidates if occupied.get(a, 0) == 0]
        if needs_gpu and gpu_cap is not None:
            candidates = [a for a in candidates if not has_gpu(a) or load_of(a) < gpu_cap]
        if not candidates:
            return None
    if needs_gpu:
        return min(candidates, key=lambda a: (load_of(a), occupied.get(a, 0), a))
    return min(candidates, key=lambda a: (has_gpu(a), occupied.get(a, 0), -load_of(a), a))
