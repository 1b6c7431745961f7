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

from typing import Any, Mapping, Protocol

import torch

from taskology.engine.protocol import PeerOutputs


class Predictor(Protocol):
    def predict(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]: ...


class InProcessPeerView:
    """Answers ``peer_outputs`` by running the registered peer's ``predict`` on the batch.

    The last answer per peer is kept, keyed by the peer's optimizer ``step`` (when it has one) and the
    batch's sample ids: in a collective round every consumer draws the same mediator batch (same seed,
    same pool), so a peer that has not stepped since another consumer asked is not run again. The
    answer is the same tensors either way (eval mode, no gradient, same weights, same frames);
    :attr:`forward_passes` / :attr:`cache_hits` count both cases.

    Args:
        peers: task name -> anything with ``predict(batch)`` (normally a TaskRunner).
    """

    def __init__(self, peers: Mapping[str, Predictor] | None = None) -> None:
        self.peers: dict[str, Predictor] = dict(peers or {})
        self._last: dict[str, tuple[tuple[Any, ...], dict[str, torch.Tensor]]] = {}
        self.forward_passes = 0
        self.cache_hits = 0

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
            outputs = dict(cached[1])
            self.cache_hits += 1
        else:
            outputs = {k: v.detach().float() for k, v in predictor.predict(batch).items()}
            self.forward_passes += 1
            if key is not None:
                self._last[task] = (key, dict(outputs))
        rows = len(batch["sample_id"]) if "sample_id" in batch else next(iter(outputs.values())).shape[0]
        return PeerOutputs(outputs=outputs, staleness_steps=[0] * rows, staleness_s=[0.0] * rows)
