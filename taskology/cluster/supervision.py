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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


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

    def decide(self, restarts: int, last_failure: float | None, now: float) -> RestartDecision:
        """What to do about an actor found lost at ``now`` after ``restarts`` earlier restarts;
        ``last_failure`` is when it was first found lost this time."""
        if restarts >= self.max_restarts:
            return RestartDecision("give_up", reason=f"lost {restarts + 1} times (max_restarts={self.max_restarts})")
        wait = self.backoff(restarts)
        started = now if last_failure is None else last_failure
        if now - started < wait:
            return RestartDecision("wait", wait_s=wait - (now - started), reason="backoff")
        return RestartDecision("restart")


def choose_worker(live_workers: Mapping[str, Mapping[str, float]], occupied: Mapping[str, int],
                  needs_gpu: bool = False, allow_shared: bool = True) -> str | None:
    """Worker address for a new actor, or ``None`` when there is no suitable worker (yet).

    Prefers a worker holding no actor (one task actor per process keeps the shared actor thread free),
    then the least occupied; with ``needs_gpu`` a worker advertising a ``GPU`` resource (or, failing
    that, any). Ties break by address, so the choice is deterministic. With ``allow_shared=False`` only
    a free worker is acceptable (the supervisor first waits for the nanny to bring a dead worker back,
    and only shares a worker once that took too long).

    Args:
        live_workers: address -> resources of that worker (``{"GPU": 1}`` or ``{}``).
        occupied: address -> number of actors it holds now.

    Example:
        >>> choose_worker({"tcp://a:1": {}, "tcp://b:1": {}}, {"tcp://a:1": 1})
        'tcp://b:1'
        >>> choose_worker({"tcp://a:1": {}}, {"tcp://a:1": 1}, allow_shared=False) is None
        True
        >>> choose_worker({}, {}) is None
        True
    """
    if not live_workers:
        return None
    candidates = sorted(live_workers)
    if needs_gpu:
        gpu = [a for a in candidates if live_workers[a].get("GPU", 0) > 0]
        candidates = gpu or candidates
    if not allow_shared:
        candidates = [a for a in candidates if occupied.get(a, 0) == 0]
        if not candidates:
            return None
    return min(candidates, key=lambda a: (occupied.get(a, 0), a))
