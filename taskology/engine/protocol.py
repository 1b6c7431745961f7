"""Contracts between a task's training loop and the rest of the engine.

A :class:`~taskology.engine.runner.TaskRunner` trains one task. On mediator samples it needs its
peers' predictions, which it gets through a :class:`PeerView`:

- in-process (``--cluster none``): the view runs the peers' models on the same batch (fresh);
- distributed (``--cluster local|tcp://...``): the view answers from a local cache of the latest
  predictions the peers published (possibly stale), filled in the background.

Either way the runner code is the same, and peers' outputs are plain tensors without gradient.

Sample ids are ``"<sequence_id>:<frame>"`` strings (frame = first frame of a pair for pair tasks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

import numpy as np
import torch


def sample_id(sequence_id: str, frame: int) -> str:
    """Id of a mediator sample, e.g. ``sample_id("seq0003", 7) == "seq0003:7"``."""
    return f"{sequence_id}:{frame}"


@dataclass
class Predictions:
    """One publication of a task's outputs on some mediator samples.

    Attributes:
        task: publishing task name.
        step: the publisher's optimizer step when the predictions were made.
        wall_time: ``time.time()`` at prediction, seconds.
        sample_ids: N ids, one per row of every output.
        outputs: name -> (N, ...) array, compact dtype (float16 where precision allows).
    """

    task: str
    step: int
    wall_time: float
    sample_ids: list[str]
    outputs: dict[str, np.ndarray]

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.outputs.values()))


@dataclass
class PeerOutputs:
    """A peer's outputs for the rows of one batch, with how old they are.

    Attributes:
        outputs: name -> (B, ...) float32 tensor on the consumer's device, no grad.
        staleness_steps: (B,) publisher steps elapsed since prediction (0 when fresh).
        staleness_s: (B,) seconds since prediction.
    """

    outputs: dict[str, torch.Tensor]
    staleness_steps: list[int] = field(default_factory=list)
    staleness_s: list[float] = field(default_factory=list)


class PeerView(Protocol):
    """Where a runner gets its peers' predictions for a mediator batch."""

    def usable_ids(self, task: str) -> set[str] | None:
        """Mediator sample ids for which peer ``task`` can answer now (a distributed cache: the samples it
        published recently enough), or ``None`` when it can answer any sample (peers' models in-process)."""
        ...

    def peer_outputs(self, task: str, batch: Mapping[str, object]) -> PeerOutputs | None:
        """Outputs of peer ``task`` for every row of ``batch`` (which carries ``sample_id``), or
        ``None`` if not all rows are available (the runner then skips relations that need them)."""
        ...


class PredictionSink(Protocol):
    """Where a runner publishes its own predictions (the exchange, or nothing in-process)."""

    def publish(self, predictions: Predictions) -> None:
        """Hand predictions over without blocking the training step."""
        ...


def peers_needed(relations: Sequence[tuple[str, Sequence[str]]], task: str) -> set[str]:
    """Peers ``task`` needs given enabled ``(relation name, related tasks)`` pairs.

    Example:
        >>> sorted(peers_needed([("depth_normals", ["depth", "normals"]), ("x", ["motion", "segmentation"])], "depth"))
        ['normals']
    """
    needed: set[str] = set()
    for _name, tasks in relations:
        if task in tasks:
            needed.update(t for t in tasks if t != task)
    return needed
