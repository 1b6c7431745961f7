"""The task contract: what a perception task gives the engine.

A task is a small object with a few methods (DESIGN.md "Contracts"):

- :meth:`Task.build_model` -> a fresh ``nn.Module`` (its own network; no shared backbone);
- :meth:`Task.forward` -> named outputs, e.g. ``{"depth": (B, 1, H, W)}``;
- :meth:`Task.supervised_loss` -> named scalar losses, summed by the engine;
- :meth:`Task.augment` -> a labelled batch transformed so that its labels stay exact (optional; used
  when ``tasks.<name>.augment`` is on; the default changes nothing);
- :meth:`Task.metrics` -> *additive* metric state (sums, counts, histograms as tensors) so that
  dataset-level metrics are exact: states of batches are added with :func:`add_metric_state`, and
  :meth:`Task.finalize_metrics` turns the total into floats.

Batches are dicts of tensors in training layout (``rgb`` (B, 3, H, W) float32 0..1, ``K`` (B, 3, 3),
``depth`` (B, 1, H, W) metres, ``normals`` (B, 3, H, W), ``semantic`` (B, H, W) int64, ...).

Example:
    >>> state = {"abs_rel:sum": torch.tensor(2.0), "abs_rel:count": torch.tensor(4.0)}
    >>> Task().finalize_metrics(state)
    {'abs_rel': 0.5}
"""
from __future__ import annotations

from typing import ClassVar, Mapping, Sequence

import numpy as np
import torch
from torch import nn

#: additive metric state: name -> tensor (sums, counts, histograms); states of batches add up.
MetricState = dict[str, torch.Tensor]


class Task:
    """Base class of a task. Subclasses set the class attributes and implement the methods.

    Class attributes:
        name: registry name.
        inputs: batch keys the model reads (visible in every split).
        label_keys: batch keys the supervised loss and the metrics read.
        pair: whether the task consumes frame pairs (t, t+1) (then ``rgb_next`` is an input too).
        augmentations: names of what :meth:`augment` does (empty: nothing; ``augment: true`` is then
            refused for the task).
    """

    name: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ("rgb",)
    label_keys: ClassVar[tuple[str, ...]] = ()
    pair: ClassVar[bool] = False
    augmentations: ClassVar[tuple[str, ...]] = ()

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def supervised_loss(self, outputs: Mapping[str, torch.Tensor],
                        batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def augment(self, batch: Mapping[str, torch.Tensor], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """A labelled batch transformed with its labels (each sample's draws from ``rng``); default: as is."""
        return dict(batch)

    def metrics(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> MetricState:
        raise NotImplementedError

    def average_outputs(self, versions: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """One set of outputs from several versions of the same rows (newest first): the element-wise mean
        of every floating output, the newest value of any other. Subclasses whose outputs live on a
        manifold (unit normals) project the mean back onto it.

        Example:
            >>> Task().average_outputs([{"x": torch.tensor([2.0])}, {"x": torch.tensor([0.0])}])
            {'x': tensor([1.])}
        """
        newest = versions[0]
        return {name: torch.stack([v[name] for v in versions]).mean(dim=0) if value.is_floating_point() else value
                for name, value in newest.items()}

    def output_distance(self, outputs: Mapping[str, torch.Tensor],
                        reference: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """How far ``outputs`` are from ``reference`` (the same rows, e.g. an older model's outputs), a scalar
        that is 0 when they are equal and has zero gradient there. Default: the sum over floating outputs of
        the mean absolute difference. Subclasses use their own geometry (log depth, angle, class
        distributions).

        Example:
            >>> Task().output_distance({"x": torch.tensor([1.0, 3.0])}, {"x": torch.tensor([1.0, 1.0])})
            tensor(1.)
        """
        terms = [(outputs[name] - reference[name]).abs().mean() for name, value in outputs.items()
                 if value.is_floating_point()]
        return torch.stack(terms).sum()

    def finalize_metrics(self, state: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Default: every ``"<m>:sum"`` divided by its ``"<m>:count"`` (``nan`` when the count is 0)."""
        out: dict[str, float] = {}
        for key, value in state.items():
            if key.endswith(":sum"):
                name = key[: -len(":sum")]
                count = float(state[f"{name}:count"])
                out[name] = float(value) / count if count > 0 else float("nan")
        return out


def add_metric_state(total: MetricState, part: Mapping[str, torch.Tensor]) -> MetricState:
    """Add ``part`` into ``total`` (in place, on CPU float64) and return it."""
    for key, value in part.items():
        value = value.detach().to("cpu", torch.float64)
        total[key] = total[key] + value if key in total else value.clone()
    return total


def mean_state(name: str, values: torch.Tensor, mask: torch.Tensor | None = None) -> MetricState:
    """Additive state of the mean of ``values`` over ``mask`` (all elements when ``None``)."""
    if mask is None:
        return {f"{name}:sum": values.sum(), f"{name}:count": torch.tensor(float(values.numel()))}
    mask = mask.to(values.dtype)
    return {f"{name}:sum": (values * mask).sum(), f"{name}:count": mask.sum()}
