"""What a consistency relation is: a pure function over the named outputs of the tasks it relates.

``fn(outputs, batch, tasks) -> scalar`` where ``outputs`` maps task name -> that task's named outputs
on a mediator batch (``{"depth": {"depth": (B,1,H,W)}, "normals": {"normals": (B,3,H,W)}}``),
``batch`` carries the inputs (``rgb``, ``rgb_next``, ``K``, ``cam_from_ego``, ``sample_id``) and
``tasks`` maps task name -> :class:`~taskology.tasks.base.Task` for task-specific constants (e.g. the
segmentation task's class ids). The engine calls it once per receiving task with only that task's
outputs carrying gradient (:func:`evaluate_for_receiver`).

A function that has a ``receiver`` keyword is also told which task is being taught (``None`` when the
caller wants the relation as one symmetric loss), and the relation's ``options`` from the config
(``relations.<name>.options``) come as keywords, each named in :attr:`Relation.options` with its default
in the function's signature. So a relation may treat one receiver differently, e.g. the logic relations
teach segmentation only where a peer's disagreement exceeds a tolerance (``segmentation_tolerance_deg``),
while a plain ``fn(outputs, batch, tasks)`` keeps working unchanged.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

import torch

from taskology.tasks.base import Task

RelationFn = Callable[..., torch.Tensor]  # fn(outputs, batch, tasks[, *, receiver=None, **options]) -> scalar


class Option(NamedTuple):
    """A relation's keyword option and its valid range: ``[low, high)``, or ``[low, high]`` when ``inclusive``.

    Example:
        >>> Option("share", 0.0, 1.0, inclusive=True).problem(1.0) is None, Option("deg", 0.0, 90.0).problem(90)
        (True, 'must be in [0, 90), got 90')
    """

    name: str
    low: float
    high: float
    inclusive: bool = False

    def problem(self, value: float) -> str | None:
        """Why ``value`` is out of range (None when it is in range)."""
        below_high = value <= self.high if self.inclusive else value < self.high
        if self.low <= value and below_high:
            return None
        return f"must be in [{self.low:g}, {self.high:g}{']' if self.inclusive else ')'}, got {value:g}"


@dataclass(frozen=True)
class Relation:
    """A registered consistency relation.

    Attributes:
        name: registry name, logged as ``consistency/<name>``.
        fn: the pure loss function (see the module docstring).
        tasks: the related task names; each one receives the loss.
        needs_pair: whether the batch must carry the next frame (``rgb_next``).
        options: the keyword options the function takes from ``relations.<name>.options``, each an
            :class:`Option` with its valid range.
        receivers: the related tasks it teaches when not all of them (empty: all). A relation whose
            evidence for one task is a hard test on the others' outputs (no gradient could reach them)
            names that task alone, e.g. ``segmentation_temporal`` teaches only segmentation.
        next_frame_targets: the receiver's own outputs on frame t+1 (``rgb_next`` as its ``rgb``) are
            passed too, each as ``<output>_next`` (e.g. ``logits_next``), computed without gradient:
            they are targets, like a peer's. For a receiver that takes a single frame.
    """

    name: str
    fn: RelationFn
    tasks: tuple[str, ...]
    needs_pair: bool = False
    options: tuple[Option, ...] = ()
    receivers: tuple[str, ...] = ()
    next_frame_targets: bool = False

    @property
    def teaches(self) -> tuple[str, ...]:
        """The tasks this relation feeds: ``receivers`` when given, else every related task."""
        return self.receivers or self.tasks

    @functools.cached_property
    def takes_receiver(self) -> bool:
        """Whether ``fn`` has a ``receiver`` keyword (then the engine says which task it teaches)."""
        return "receiver" in inspect.signature(self.fn).parameters

    def option_names(self) -> tuple[str, ...]:
        return tuple(option.name for option in self.options)

    def check_option(self, name: str, value: float) -> str | None:
        """Why ``value`` is not valid for option ``name`` (None when it is)."""
        for option in self.options:
            if option.name == name:
                return option.problem(value)
        return f"unknown option; this relation takes {', '.join(self.option_names()) or 'none'}"


def detach_outputs(outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Peers' outputs as fixed targets: detached tensors (``requires_grad`` False)."""
    return {k: v.detach() for k, v in outputs.items()}


def evaluate_for_receiver(relation: Relation, receiver: str, own: Mapping[str, torch.Tensor],
                          peers: Mapping[str, Mapping[str, torch.Tensor]], batch: Mapping[str, Any],
                          tasks: Mapping[str, Task], options: Mapping[str, float] | None = None) -> torch.Tensor:
    """The relation's loss for ``receiver``: its ``own`` outputs keep their graph, peers are detached.
    ``options``: the relation's keyword options (``relations.<name>.options``; unset ones keep defaults)."""
    outputs: dict[str, Mapping[str, torch.Tensor]] = {name: detach_outputs(out) for name, out in peers.items()}
    outputs[receiver] = own
    if receiver not in relation.teaches:
        raise ValueError(f"relation {relation.name!r} teaches {', '.join(relation.teaches)}, not {receiver!r}")
    missing = [t for t in relation.tasks if t not in outputs]
    if missing:
        raise KeyError(f"relation {relation.name!r} needs outputs of {missing}")
    for name, value in (options or {}).items():
        problem = relation.check_option(name, float(value))
        if problem:
            raise ValueError(f"relation {relation.name!r} option {name!r}: {problem}")
    extra = {"receiver": receiver} if relation.takes_receiver else {}
    return relation.fn(outputs, batch, tasks, **extra, **dict(options or {}))
