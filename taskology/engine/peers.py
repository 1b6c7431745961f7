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

    Args:
        peers: task name -> anything with ``predict(batch)`` (normally a TaskRunner).
    """

    def __init__(self, peers: Mapping[str, Predictor] | None = None) -> None:
        self.peers: dict[str, Predictor] = dict(peers or {})

    def register(self, task: str, predictor: Predictor) -> None:
        self.peers[task] = predictor

    def peer_outputs(self, task: str, batch: Mapping[str, Any]) -> PeerOutputs | None:
        predictor = self.peers.get(task)
        if predictor is None:
            return None
        outputs = {k: v.detach().float() for k, v in predictor.predict(batch).items()}
        rows = len(batch["sample_id"]) if "sample_id" in batch else next(iter(outputs.values())).shape[0]
        return PeerOutputs(outputs=outputs, staleness_steps=[0] * rows, staleness_s=[0.0] * rows)
