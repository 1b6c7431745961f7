"""In-process peer view: peers' models run on the consumer's mediator batch (fresh, no gradient).

This is the reference behaviour the distributed engine reproduces with cached, possibly stale
predictions (``taskology.engine.exchange.DistributedPeerView``): same
:class:`~taskology.engine.protocol.PeerView` protocol, same runner code.

Example:
    >>> view = InProcessPeerView()
    >>> view.peer_outputs("depth", {"sample_id": ["s:0"]}) is None    # no such peer registered
    True
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Protocol

import torch

from taskology.engine.faults import describe_nonfinite, nonfinite_counts
from taskology.engine.protocol import PeerOutputs

_log = logging.getLogger(__name__)


class Predictor(Protocol):
    def predict(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]: ...


class InProcessPeerView:
    """Answers ``peer_outputs`` by running the registered peer's ``predict`` on the batch.

    The last answer per peer is kept, keyed by the peer's optimizer ``step`` (when it has one) and the
    batch's sample ids: in a collective round every consumer draws the same mediator batch (same seed,
    same pool), so a peer that has not stepped since another consumer asked is not run again. The
    answer is the same tensors either way (eval mode, no gradient, same weights, same frames);
    :attr:`forward_passes` / :attr:`cache_hits` count both cases.

    An answer with a NaN or an infinity in a floating output is not given (``None``: the consumer's step
    skips the relations needing that peer; fresh predictions have no older good one to fall back on), as the
    distributed cache drops such a publication (:mod:`taskology.engine.faults`). :attr:`dropped` counts them
    per peer, once per peer step (each step's weights are one "publication"), and each is logged once.

    Args:
        peers: task name -> anything with ``predict(batch)`` (normally a TaskRunner).
    """

    def __init__(self, peers: Mapping[str, Predictor] | None = None) -> None:
        self.peers: dict[str, Predictor] = dict(peers or {})
        self._last: dict[str, tuple[tuple[Any, ...], dict[str, torch.Tensor] | None]] = {}
        self._dropped_at: dict[str, Any] = {}  # peer -> the step of its last refused answer
        self.forward_passes = 0
        self.cache_hits = 0
        #: peer -> answers refused for a non-finite value (once per peer step)
        self.dropped: dict[str, int] = {}

    def usable_ids(self, task: str) -> set[str] | None:
        """Every sample: peers' models answer any batch."""
        return None

    def register(self, task: str, predictor: Predictor) -> None:
        self.peers[task] = predictor

    def peer_outputs(self, task: str, batch: Mapping[str, Any]) -> PeerOutputs | None:
        predictor = self.peers.get(task)
        if predictor is None:
            return None
        step = getattr(predictor, "step", None)
        key = (step, tuple(batch["sample_id"])) if step is not None and "sample_id" in batch else None
        cached = self._last.get(task)
        if key is not None and cached is not None and cached[0] == key:
            if cached[1] is None:
                return None
            outputs = dict(cached[1])
            self.cache_hits += 1
        else:
            outputs = {k: v.detach().float() for k, v in predictor.predict(batch).items()}
            self.forward_passes += 1
            bad = nonfinite_counts(outputs)
            if key is not None:
                self._last[task] = (key, None if bad else dict(outputs))
            if bad:
                self._drop(task, step, bad)
                return None
        rows = len(batch["sample_id"]) if "sample_id" in batch else next(iter(outputs.values())).shape[0]
        return PeerOutputs(outputs=outputs, staleness_steps=[0] * rows, staleness_s=[0.0] * rows)

    def _drop(self, task: str, step: Any, bad: Mapping[str, tuple[int, int]]) -> None:
        """Count and log a refused answer of ``task`` once per peer step (every time when it has no step)."""
        if step is not None and self._dropped_at.get(task, object()) == step:
            return
        self._dropped_at[task] = step
        self.dropped[task] = self.dropped.get(task, 0) + 1
        _log.warning("dropped the predictions of peer %s at its step %s: %s not finite; relations needing it are "
                     "skipped", task, step, describe_nonfinite(bad))
