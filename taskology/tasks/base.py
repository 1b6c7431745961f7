"""The task contract: what a perception task gives the engine.

A task is a small object with a few methods (DESIGN.md "Contracts"):

- :meth:`Task.build_model` -> a fresh ``nn.Module`` (its own network; no shared backbone);
- :meth:`Task.forward` -> named outputs, e.g. ``{"depth": (B, 1, H, W)}``;
- :meth:`Task.supervised_loss` -> named scalar losses, summed by the engine;
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

from typing import ClassVar, Mapping

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
    """

    name: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ("rgb",)
    label_keys: ClassVar[tuple[str, ...]] = ()
    pair: ClassVar[bool] = False

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def supervised_loss(self, outputs: Mapping[str, torch.Tensor],
                        batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def metrics(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> MetricState:
        raise NotImplementedError

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
