"""What a consistency relation is: a pure function over the named outputs of the tasks it relates.

``fn(outputs, batch, tasks) -> scalar`` where ``outputs`` maps task name -> that task's named outputs
on a mediator batch (``{"depth": {"depth": (B,1,H,W)}, "normals": {"normals": (B,3,H,W)}}``),
``batch`` carries the inputs (``rgb``, ``rgb_next``, ``K``, ``cam_from_ego``, ``sample_id``) and
``tasks`` maps task name -> :class:`~taskology.tasks.base.Task` for task-specific constants (e.g. the
segmentation task's class ids). The engine calls it once per receiving task with only that task's
outputs carrying gradient (:func:`evaluate_for_receiver`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from taskology.tasks.base import Task

RelationFn = Callable[[Mapping[str, Mapping[str, torch.Tensor]], Mapping[str, Any], Mapping[str, Task]], torch.Tensor]


@dataclass(frozen=True)
class Relation:
    """A registered consistency relation.

    Attributes:
        name: registry name, logged as ``consistency/<name>``.
        fn: the pure loss function (see the module docstring).
        tasks: the related task names; each one receives the loss.
        needs_pair: whether the batch must carry the next frame (``rgb_next``).
    """

    name: str
    fn: RelationFn
    tasks: tuple[str, ...]
    needs_pair: bool = False


def detach_outputs(outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Peers' outputs as fixed targets: detached tensors (``requires_grad`` False)."""
    return {k: v.detach() for k, v in outputs.items()}


def evaluate_for_receiver(relation: Relation, receiver: str, own: Mapping[str, torch.Tensor],
                          peers: Mapping[str, Mapping[str, torch.Tensor]], batch: Mapping[str, Any],
                          tasks: Mapping[str, Task]) -> torch.Tensor:
    """The relation's loss for ``receiver``: its ``own`` outputs keep their graph, peers are detached."""
    outputs: dict[str, Mapping[str, torch.Tensor]] = {name: detach_outputs(out) for name, out in peers.items()}
    outputs[receiver] = own
    missing = [t for t in relation.tasks if t not in outputs]
    if missing:
        raise KeyError(f"relation {relation.name!r} needs outputs of {missing}")
    return relation.fn(outputs, batch, tasks)
