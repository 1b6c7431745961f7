"""NaN and infinity in training: the checks, and the policy deciding what a task does about them.

Two faults, each handled where it can be handled correctly at the least cost:

- **A peer's prediction holds a NaN or an infinity.** The consumer checks every publication once, when it
  receives it (:meth:`taskology.engine.exchange.PredictionCache.add`; in-process,
  :class:`taskology.engine.peers.InProcessPeerView` checks each answer). The consumer is the only place that
  can be trusted with the check: the publisher may be another process or framework, and its float16 payload
  turns any ``|x| > 65504`` into an infinity in transit. One pass over a publication's arrays on receipt is
  cheaper than a check at every lookup, and nothing non-finite ever enters the cache. A publication with a
  non-finite value in any floating output is dropped whole (counted, logged once); the consumer keeps the
  rows it already held from that peer, used while the staleness limits allow, else the step trains without
  the relations that need the peer.
- **A task's own loss or gradient is not finite.** The runner checks the loss and the gradient norm after the
  backward pass and before the optimizer step, and raises :class:`NonFiniteLoss` instead of stepping: no
  weight and no optimizer moment ever sees the NaN. What follows is :class:`DivergencePolicy`'s decision,
  carried out by the task actor: roll back to the newest checkpoint at a lowered learning rate, or stop with
  :class:`~taskology.errors.TrainingDiverged`.

Example:
    >>> nonfinite_counts({"depth": np.array([1.0, np.nan, np.inf, -np.inf]), "ids": np.array([1, 2])})
    {'depth': (1, 2)}
    >>> describe_nonfinite({"depth": (1, 2)})
    "output 'depth' (1 NaN, 2 inf)"
    >>> p = DivergencePolicy()
    >>> p.decide(rollbacks_done=0), p.lr_scale(1), p.decide(rollbacks_done=1)
    ('rollback', 0.5, 'stop')
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from taskology.errors import TrainingDiverged


def nonfinite_counts(outputs: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """``{name: (NaN count, ±inf count)}`` for every floating output (NumPy array or torch tensor) holding a
    non-finite value; empty when all are finite. Integer and boolean outputs are never counted.

    Costs one ``isfinite`` pass per output; the counts are only taken for an output that fails it."""
    bad: dict[str, tuple[int, int]] = {}
    for name, value in outputs.items():
        if isinstance(value, torch.Tensor):
            if not value.is_floating_point() or bool(torch.isfinite(value).all()):
                continue
            bad[name] = (int(torch.isnan(value).sum()), int(torch.isinf(value).sum()))
        else:
            array = np.asarray(value)
            if not np.issubdtype(array.dtype, np.floating) or bool(np.isfinite(array).all()):
                continue
            bad[name] = (int(np.isnan(array).sum()), int(np.isinf(array).sum()))
    return bad


def describe_nonfinite(bad: Mapping[str, tuple[int, int]]) -> str:
    """The outputs of :func:`nonfinite_counts` in words, e.g. ``output 'depth' (1 NaN, 2 inf)``."""
    return ", ".join(f"output {name!r} ({nan} NaN, {inf} inf)" for name, (nan, inf) in bad.items())


class NonFiniteLoss(TrainingDiverged):
    """A runner's loss or gradient was NaN or infinite in step ``step`` (0-based: the step being taken, from the
    state after ``step`` steps); the step was not applied. ``detail`` says which (e.g. ``loss is not finite
    (loss/depth_log_l1=nan)``). In-process runs stop on it (a :class:`~taskology.errors.TaskologyError`: one
    line); a task actor asks :class:`DivergencePolicy` first."""

    def __init__(self, task: str, step: int, detail: str) -> None:
        self.task, self.step, self.detail = task, int(step), detail
        super().__init__(f"{task}: {detail} at step {step}; the step was not applied")


@dataclass(frozen=True)
class DivergencePolicy:
    """What a task does when its loss or gradient is not finite.

    The first ``max_rollbacks`` times (default once per run): roll back to the newest checkpoint (or, before
    the first one, to the start state, which is what a checkpoint at step 0 would hold) and continue with
    the learning rate multiplied by ``lr_factor`` per rollback so far (default 0.5: halved after the first,
    quartered after a second). Halving is the usual first remedy for a loss blowing up, and replaying the
    same batches at the same rate would most likely blow up again. After that, stop: a task that diverges
    again at a lower rate needs a person (learning rate, data, a relation weight), not another retry.

    Attributes:
        max_rollbacks: rollbacks allowed per task over a run (0: stop at the first non-finite loss).
        lr_factor: learning-rate multiplier per rollback, in (0, 1].
    """

    max_rollbacks: int = 1
    lr_factor: float = 0.5

    def __post_init__(self) -> None:
        assert self.max_rollbacks >= 0, "max_rollbacks must be >= 0"
        assert 0.0 < self.lr_factor <= 1.0, "lr_factor must be in (0, 1]"

    def decide(self, rollbacks_done: int) -> str:
        """``"rollback"`` while fewer than ``max_rollbacks`` rollbacks were done, else ``"stop"``."""
        return "rollback" if rollbacks_done < self.max_rollbacks else "stop"

    def lr_scale(self, rollbacks: int) -> float:
        """The learning-rate multiplier after ``rollbacks`` rollbacks: ``lr_factor ** rollbacks``."""
        return float(self.lr_factor) ** int(rollbacks)


__all__ = ["DivergencePolicy", "NonFiniteLoss", "describe_nonfinite", "nonfinite_counts"]
