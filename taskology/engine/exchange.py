"""Peer-prediction exchange between task actors: policy, publisher box, consumer cache, fetcher.

Data path (one arrow per thread, none of them the training thread except the first):

    training thread --publish()--> PublicationBox  (the publisher actor's serving side; a list swap)
    peer's fetch thread --TaskActor.predictions_since(step)--> PredictionCache (merged per sample)
    training thread --DistributedPeerView.peer_outputs(task, batch)--> PeerOutputs (cache lookup only)

Decisions live in :class:`ExchangePolicy` (pure: fresh enough? publish now? refetch now?) so they are
tested without a cluster. Payloads are compact: float arrays travel as ``float16``
(configurable), only the published mediator samples travel, and the fetcher counts bytes/s.

Staleness of a cached row = (publisher's latest known step - step the row was predicted at) in steps,
and ``now - wall_time`` in seconds. Rows older than the policy's maximum are not used.

A publication with a NaN or an infinity in any floating output is dropped on receipt
(:meth:`PredictionCache.add`; why there: :mod:`taskology.engine.faults`): counted per peer
(``StalenessLog.dropped``), logged once, its rows never cached; the rows held before stay in use.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from taskology.engine.faults import describe_nonfinite, nonfinite_counts
from taskology.engine.protocol import PeerOutputs, Predictions

_log = logging.getLogger(__name__)


def publication_due(step: int, last: int | None, every: int, phase: int = 0) -> bool:
    """Whether a publisher at ``step`` that last published at ``last`` (None: never) publishes now, once
    every ``every`` steps. Without a phase, once ``every`` steps have passed since the last; with one,
    whenever ``step + phase`` reaches a new multiple of ``every``, so that publishers with phases spread
    over the interval take turns (:func:`publication_phase`).

    Example:
        >>> def schedule(phase):
        ...     last, due = None, []
        ...     for s in range(401):
        ...         if publication_due(s, last, 200, phase):
        ...             last = s
        ...             due.append(s)
        ...     return due
        >>> schedule(0), schedule(100)
        ([0, 200, 400], [0, 100, 300])
    """
    if last is None:
        return True
    if not phase:
        return step - last >= every
    return (step + phase) // every > (last + phase) // every


def publication_phase(task: str, tasks: Sequence[str], every: int) -> int:
    """Task ``i`` of ``n`` publishes ``i * every // n`` steps out of phase, so that the tasks' publications
    alternate instead of landing together (each consumer then fits a peer that has already answered its own
    last publication; experiments/staleness/README.md measures what that is worth).

    Example:
        >>> [publication_phase(t, ["depth", "normals"], 200) for t in ("depth", "normals")]
        [0, 100]
    """
    return list(tasks).index(task) * int(every) // max(len(tasks), 1)


@dataclass(frozen=True)
class ExchangePolicy:
    """When to publish, when to refetch, and which peer prediction is fresh enough.

    Attributes:
        publish_every_steps: publish after every this many optimizer steps (>= 1).
        refresh_every_s: a consumer polls each peer at most this often, seconds.
        max_staleness_steps: rows older than this many publisher steps are not used (None: no limit).
        max_staleness_s: rows older than this many seconds are not used (None: no limit).
        payload_dtype: dtype floats travel in, ``"float16"`` or ``"float32"``.
        lockstep_lag_steps: ``None``: a consumer never waits. ``N``: a consumer at its step ``s`` waits (up
            to ``lockstep_timeout_s``) until it holds a peer publication from peer step ``>= s - N``, and
            publishers also publish their initial model (step 0). ``0`` with ``publish_every_steps=1`` is
            the in-process reference's freshness up to one step (see :class:`DistributedPeerView`).
        lockstep_timeout_s: longest wait for one peer; then the step goes on with what the cache holds.
        publish_phase_steps: this publisher's phase (:func:`publication_phase`), in [0, publish_every_steps).

    Example:
        >>> p = ExchangePolicy(publish_every_steps=10, max_staleness_steps=100)
        >>> p.should_publish(step=20, last_published_step=10), p.should_publish(step=15, last_published_step=10)
        (True, False)
        >>> p.is_usable(staleness_steps=101, staleness_s=0.0)
        False
    """

    publish_every_steps: int = 50
    refresh_every_s: float = 2.0
    max_staleness_steps: int | None = 2000
    max_staleness_s: float | None = None
    payload_dtype: str = "float16"
    lockstep_lag_steps: int | None = None
    lockstep_timeout_s: float = 60.0
    publish_phase_steps: int = 0

    def __post_init__(self) -> None:
        assert self.publish_every_steps >= 1, "publish_every_steps must be >= 1"
        assert self.lockstep_lag_steps is None or self.lockstep_lag_steps >= 0, "lockstep_lag_steps must be >= 0"
        assert self.refresh_every_s >= 0, "refresh_every_s must be >= 0"
        assert self.payload_dtype in ("float16", "float32"), self.payload_dtype
        assert 0 <= self.publish_phase_steps < self.publish_every_steps, "publish_phase_steps must be in [0, N)"

    def should_publish(self, step: int, last_published_step: int | None) -> bool:
        """Publish at the first step, then once ``publish_every_steps`` steps have passed (with a
        ``publish_phase_steps``: whenever ``step + phase`` reaches a new multiple of the interval)."""
        return publication_due(step, last_published_step, self.publish_every_steps, self.publish_phase_steps)

    def should_refetch(self, now: float, last_fetch: float | None) -> bool:
        """Poll a peer when ``refresh_every_s`` seconds have passed since the last poll (or never polled)."""
        return last_fetch is None or now - last_fetch >= self.refresh_every_s

    def is_usable(self, staleness_steps: int, staleness_s: float) -> bool:
        """A row is used unless it is older than either configured maximum."""
        if self.max_staleness_steps is not None and staleness_steps > self.max_staleness_steps:
            return False
        if self.max_staleness_s is not None and staleness_s > self.max_staleness_s:
            return False
        return True


def compact_predictions(predictions: Predictions, payload_dtype: str = "float16") -> Predictions:
    """Copy of ``predictions`` whose floating arrays are ``payload_dtype``; integer/bool arrays unchanged.

    Example:
        >>> p = Predictions("depth", 3, 0.0, ["s:0"], {"depth": np.ones((1, 1, 2, 2), np.float32)})
        >>> compact_predictions(p).outputs["depth"].dtype
        dtype('float16')
    """
    dtype = np.dtype(payload_dtype)
    outputs: dict[str, np.ndarray] = {}
    for name, array in predictions.outputs.items():
        if isinstance(array, torch.Tensor):
            array = array.detach().cpu().numpy()
        array = np.asarray(array)
        if len(array) != len(predictions.sample_ids):
            raise ValueError(f"output {name!r} of {predictions.task} has {len(array)} rows for "
                             f"{len(predictions.sample_ids)} sample ids")
        outputs[name] = np.ascontiguousarray(array.astype(dtype) if np.issubdtype(array.dtype, np.floating) else array)
    return Predictions(predictions.task, int(predictions.step), float(predictions.wall_time),
                       list(predictions.sample_ids), outputs)


class PublicationBox:
    """The publisher's serving side: keeps the last ``keep`` publications; publish() is a list append.

    Thread-safe; ``publish`` is called from the training thread, ``since`` from the actor thread.
    """

    def __init__(self, keep: int = 4) -> None:
        self._lock = threading.Lock()
        self._publications: deque[Predictions] = deque(maxlen=keep)

    def publish(self, predictions: Predictions) -> None:
        with self._lock:
            if self._publications and predictions.step < self._publications[-1].step:
                self._publications.clear()  # restarted from an older checkpoint: newer steps are void
            self._publications.append(predictions)

    def since(self, step: int) -> list[Predictions]:
        """Publications made after publisher step ``step``, oldest first."""
        with self._lock:
            return [p for p in self._publications if p.step > step]

    def latest(self, since_step: int = -1) -> Predictions | None:
        """The newest publication if it is newer than ``since_step``, else ``None``."""
        with self._lock:
            if self._publications and self._publications[-1].step > since_step:
                return self._publications[-1]
            return None

    @property
    def last_step(self) -> int | None:
        with self._lock:
            return self._publications[-1].step if self._publications else None


@dataclass
class _Row:
    step: int
    wall_time: float
    values: dict[str, np.ndarray]


@dataclass
class StalenessLog:
    """Staleness of every peer row a consumer used: per peer, running count/sum/max (steps and seconds),
    lookups refused as too stale (``rejected``) and publications dropped for a non-finite value (``dropped``)."""

    count: dict[str, int] = field(default_factory=dict)
    sum_steps: dict[str, float] = field(default_factory=dict)
    max_steps: dict[str, int] = field(default_factory=dict)
    sum_s: dict[str, float] = field(default_factory=dict)
    max_s: dict[str, float] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    def record(self, task: str, steps: list[int], seconds: list[float]) -> None:
        self.count[task] = self.count.get(task, 0) + len(steps)
        self.sum_steps[task] = self.sum_steps.get(task, 0.0) + float(sum(steps))
        self.max_steps[task] = max([self.max_steps.get(task, 0), *steps])
        self.sum_s[task] = self.sum_s.get(task, 0.0) + float(sum(seconds))
        self.max_s[task] = max([self.max_s.get(task, 0.0), *seconds])

    def to_dict(self) -> dict[str, dict[str, float]]:
        """JSON-ready copy (saved beside a checkpoint so the figures cover the whole run, not one incarnation)."""
        return {name: dict(getattr(self, name)) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, float]]) -> "StalenessLog":
        """Inverse of :meth:`to_dict`; unknown keys are ignored, missing ones start empty."""
        log = cls()
        for name in cls.__dataclass_fields__:
            kind = int if name in ("count", "max_steps", "rejected", "dropped") else float
            getattr(log, name).update({str(k): kind(v) for k, v in dict(data.get(name, {})).items()})
        return log

    def scalars(self) -> dict[str, float]:
        """``staleness/<peer>/{mean,max}_{steps,s}``, ``staleness/<peer>/rejected`` and ``.../dropped``."""
        out: dict[str, float] = {}
        for task, n in self.count.items():
            out[f"staleness/{task}/mean_steps"] = self.sum_steps[task] / max(n, 1)
            out[f"staleness/{task}/max_steps"] = float(self.max_steps[task])
            out[f"staleness/{task}/mean_s"] = self.sum_s[task] / max(n, 1)
            out[f"staleness/{task}/max_s"] = self.max_s[task]
        for task, n in self.rejected.items():
            out[f"staleness/{task}/rejected"] = float(n)
        for task, n in self.dropped.items():
            out[f"staleness/{task}/dropped"] = float(n)
        return out

    def dropped_total(self) -> int:
        """Publications dropped for a non-finite value, all peers together."""
        return int(sum(self.dropped.values()))


class PredictionCache:
    """Latest row per (peer, sample) a consumer has received; merged across publications.

    ``max_rows_per_peer`` bounds memory (least recently updated rows are evicted first).
    ``clock`` is injectable for tests.
    """

    def __init__(self, policy: ExchangePolicy, max_rows_per_peer: int = 4096,
                 clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.max_rows_per_peer = max_rows_per_peer
        self._clock = clock
        self._lock = threading.Lock()
        self._rows: dict[str, OrderedDict[str, _Row]] = {}
        self._peer_step: dict[str, int] = {}
        self._received: dict[str, int] = {}  # newest publication step received per peer, dropped ones included
        self.log = StalenessLog()

    def add(self, predictions: Predictions) -> bool:
        """Merge one publication (rows replace older rows of the same sample); returns whether it was merged.

        A publication with a NaN or an infinity in a floating output is dropped whole: none of its rows is
        cached, the rows held before stay, and it is counted in ``log.dropped`` and logged (one line: peer,
        output, step) the first time it arrives, not again when delivered twice."""
        bad = nonfinite_counts(predictions.outputs)  # outside the lock: lookups go on meanwhile
        task, step = predictions.task, int(predictions.step)
        with self._lock:
            new = step > self._received.get(task, -1)
            self._received[task] = max(self._received.get(task, -1), step)
            if bad:
                self._peer_step[task] = max(self._peer_step.get(task, -1), step)
                if new:
                    self.log.dropped[task] = self.log.dropped.get(task, 0) + 1
        if bad:
            if new:
                _log.warning("dropped the publication of peer %s at its step %d: %s not finite; its rows are "
                             "not used", task, step, describe_nonfinite(bad))
            return False
        with self._lock:
            rows = self._rows.setdefault(predictions.task, OrderedDict())
            for i, sid in enumerate(predictions.sample_ids):
                old = rows.get(sid)
                if old is not None and old.step > predictions.step:
                    continue
                rows[sid] = _Row(predictions.step, predictions.wall_time,
                                 {k: v[i] for k, v in predictions.outputs.items()})
                rows.move_to_end(sid)
            while len(rows) > self.max_rows_per_peer:
                rows.popitem(last=False)
            self._peer_step[predictions.task] = max(self._peer_step.get(predictions.task, -1), predictions.step)
        return True

    def note_peer_step(self, task: str, step: int) -> None:
        """The publisher's current step, as last reported (makes step staleness grow between publications)."""
        with self._lock:
            self._peer_step[task] = max(self._peer_step.get(task, -1), int(step))

    def forget_peer(self, task: str) -> None:
        """Drop everything cached for ``task`` (it was recreated from a checkpoint older than our rows,
        so its steps restart below what we hold)."""
        with self._lock:
            self._peer_step.pop(task, None)
            self._rows.pop(task, None)
            self._received.pop(task, None)

    def latest_step(self, task: str) -> int:
        """Newest publisher step among cached rows of ``task`` (-1 when none)."""
        with self._lock:
            rows = self._rows.get(task)
            return max((r.step for r in rows.values()), default=-1) if rows else -1

    def received_step(self, task: str) -> int:
        """Newest publisher step of any publication of ``task`` received, dropped ones included (-1 when
        none): fetching resumes after it, and a lockstep wait is over once it is recent enough."""
        with self._lock:
            return self._received.get(task, -1)

    def usable_ids(self, task: str) -> set[str]:
        """Sample ids whose cached row of ``task`` is within the staleness limits now."""
        now = self._clock()
        with self._lock:
            rows = self._rows.get(task)
            if not rows:
                return set()
            current = self._peer_step.get(task, -1)
            return {sid for sid, row in rows.items()
                    if self.policy.is_usable(max(current - row.step, 0), max(now - row.wall_time, 0.0))}

    def lookup(self, task: str, sample_ids: list[str], device: str | torch.device = "cpu") -> PeerOutputs | None:
        """Outputs of ``task`` for every id (float32 tensors, no grad), or ``None`` if any row is missing
        or too stale. The staleness of returned rows is recorded in :attr:`log`."""
        now = self._clock()
        with self._lock:
            rows = self._rows.get(task)
            if not rows:
                return None
            current = self._peer_step.get(task, -1)
            picked: list[_Row] = []
            for sid in sample_ids:
                row = rows.get(sid)
                if row is None:
                    return None
                if not self.policy.is_usable(max(current - row.step, 0), max(now - row.wall_time, 0.0)):
                    self.log.rejected[task] = self.log.rejected.get(task, 0) + 1
                    return None
                picked.append(row)
            steps = [max(current - r.step, 0) for r in picked]
            seconds = [max(now - r.wall_time, 0.0) for r in picked]
            self.log.record(task, steps, seconds)
            outputs = _stacked([r.values for r in picked], device)
        return PeerOutputs(outputs=outputs, staleness_steps=steps, staleness_s=seconds)


def _stacked(rows: list[dict[str, np.ndarray]], device: str | torch.device) -> dict[str, torch.Tensor]:
    """Per output name, the rows stacked into one float32 tensor on ``device``."""
    return {n: torch.from_numpy(np.stack([r[n] for r in rows])).to(device=device).float() for n in rows[0]}


class DistributedPeerView:
    """:class:`~taskology.engine.protocol.PeerView` answered from a :class:`PredictionCache`.

    By default it never blocks on the network: a missing or stale peer gives ``None`` and the runner
    skips that relation. In lockstep (``policy.lockstep_lag_steps = N``) the owner sets
    :attr:`consumer_step` before every step; ``peer_outputs`` then first waits (polling the cache, which
    the background fetcher fills) until the cache has received a publication of the peer from peer step
    ``>= consumer_step - N`` (one dropped for a non-finite value counts: the step goes on with the rows
    held before, as far as they are fresh enough), at most ``policy.lockstep_timeout_s`` (a peer being
    recovered must not stall training forever; such waits are counted in :attr:`timeouts`). With
    ``N = 0`` and a publication after every step, the consumer at step ``s`` uses the peer's model after
    ``s`` (or more) of its steps; the in-process round-robin run gives the first task the peer after ``s``
    steps and the second task the peer after ``s + 1``: the same freshness up to one step.
    """

    def __init__(self, cache: PredictionCache, device: str | torch.device = "cpu",
                 stop: threading.Event | None = None) -> None:
        self.cache = cache
        self.device = device
        self.consumer_step: int | None = None
        self.timeouts: dict[str, int] = {}
        self.wait_s = 0.0
        self._stop = stop

    def _wait_for(self, task: str) -> None:
        lag = self.cache.policy.lockstep_lag_steps
        if lag is None or self.consumer_step is None:
            return
        need = self.consumer_step - lag
        start = time.perf_counter()
        deadline = start + self.cache.policy.lockstep_timeout_s
        while self.cache.received_step(task) < need:  # a dropped publication ends the wait too
            if time.perf_counter() > deadline:
                self.timeouts[task] = self.timeouts.get(task, 0) + 1
                break
            if self._stop is not None and self._stop.is_set():
                break
            time.sleep(0.002)
        self.wait_s += time.perf_counter() - start

    def usable_ids(self, task: str) -> set[str]:
        """Mediator samples for which ``task``'s cached prediction can be used now (the runner draws its
        mediator batches among them, so a live pool's new samples wait until peers have published them)."""
        return self.cache.usable_ids(task)

    def peer_outputs(self, task: str, batch: Mapping[str, Any]) -> PeerOutputs | None:
        self._wait_for(task)
        ids = batch["sample_id"]
        return self.cache.lookup(task, list(ids), self.device)


@dataclass
class TrafficMeter:
    """Bytes received by a consumer; ``bytes_per_s`` over the time since creation."""

    started: float = field(default_factory=time.time)
    bytes_total: int = 0
    fetches: int = 0
    fetch_s: float = 0.0

    def record(self, nbytes: int, seconds: float) -> None:
        self.bytes_total += int(nbytes)
        self.fetches += 1
        self.fetch_s += seconds

    def bytes_per_s(self, now: float | None = None) -> float:
        elapsed = (now if now is not None else time.time()) - self.started
        return self.bytes_total / elapsed if elapsed > 0 else 0.0


class PeerFetcher:
    """Background thread polling peers and filling a :class:`PredictionCache`.

    ``peers`` maps task name -> an object with ``predictions_since(step) -> list[Predictions]`` and
    ``current_step() -> int`` returning either values or futures with ``.result()`` (Dask actor proxies
    do). Errors of one peer (it died and is being restarted) are counted, never raised: the cache just
    ages until :meth:`set_peers` hands over the recreated peer.
    """

    def __init__(self, cache: PredictionCache, peers: Mapping[str, Any] | None = None,
                 call_timeout_s: float = 5.0) -> None:
        self.cache = cache
        self.meter = TrafficMeter()
        self.errors: dict[str, int] = {}
        self.last_error: dict[str, str] = {}
        self.call_timeout_s = call_timeout_s
        self._peers: dict[str, Any] = dict(peers or {})
        self._last_fetch: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def set_peers(self, peers: Mapping[str, Any]) -> None:
        with self._lock:
            for name, handle in peers.items():
                if self._peers.get(name) is not handle:
                    self._last_fetch.pop(name, None)
                    self.cache.forget_peer(name)
            self._peers = dict(peers)

    def _value(self, x: Any) -> Any:
        return x.result(timeout=self.call_timeout_s) if hasattr(x, "result") else x

    def poll_once(self, now: float | None = None) -> int:
        """Poll every peer due for a refresh; returns bytes received."""
        now = time.time() if now is None else now
        with self._lock:
            peers = dict(self._peers)
        received = 0
        for name, handle in peers.items():
            if not self.cache.policy.should_refetch(now, self._last_fetch.get(name)):
                continue
            self._last_fetch[name] = now
            start = time.perf_counter()
            try:
                pubs = self._value(handle.predictions_since(self.cache.received_step(name)))
                step = self._value(handle.current_step())
            except Exception as exc:  # noqa: BLE001 - a dead peer is normal during recovery
                self.errors[name] = self.errors.get(name, 0) + 1
                self.last_error[name] = f"{type(exc).__name__}: {exc}"[:300]
                continue
            nbytes = 0
            for pub in pubs or []:
                self.cache.add(pub)
                nbytes += pub.nbytes()
            self.cache.note_peer_step(name, step)
            self.meter.record(nbytes, time.perf_counter() - start)
            received += nbytes
        return received

    def _loop(self) -> None:
        floor = 0.005 if self.cache.policy.lockstep_lag_steps is not None else 0.02
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(max(min(self.cache.policy.refresh_every_s, 1.0), floor))

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="taskology-peer-fetcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.call_timeout_s + 1)
            self._thread = None
