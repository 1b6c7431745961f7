"""The task contract: what a perception task gives the engine.

A task is a small object with a few methods and a declaration of the data it reads
(docs/conventions.md, "Contracts"):

- class attributes ``input_layers``, ``label_layers`` and ``pair``: the data-store layers its model reads
  (sensor inputs, visible in every split), the layers that are its labels (visible to it on its labelled
  training frames and in the evaluation splits) and whether its samples are frame pairs (t, t+1). The
  engine derives the rest from them: the label masks of the split manifest, the layers each dataset reads,
  what a mediator batch carries;
- :meth:`Task.prepare` -> one sample with labels derived from the layers read (default: as it is);
- :meth:`Task.build_model` -> a fresh ``nn.Module`` (its own network; no shared backbone);
- :meth:`Task.forward` -> named outputs, e.g. ``{"depth": (B, 1, H, W)}``;
- :meth:`Task.supervised_loss` -> named scalar losses, summed by the engine;
- :meth:`Task.metrics` -> *additive* metric state (sums, counts, histograms as tensors) so that
  dataset-level metrics are exact: states of batches are added with :func:`add_metric_state`, and
  :meth:`Task.finalize_metrics` turns the total into floats.

Batches are dicts of tensors in training layout (``rgb`` (B, 3, H, W) float32 0..1, ``K`` (B, 3, 3),
``depth`` (B, 1, H, W) metres, ``normals`` (B, 3, H, W), ``semantic`` (B, H, W) int64, ...; the keys of
:data:`taskology.data.datasets.KEYS`, with ``<key>_next`` for frame t+1 of a pair). A new task is one module
with such a class and one line in ``taskology.tasks.TASKS``.

Example:
    >>> state = {"abs_rel:sum": torch.tensor(2.0), "abs_rel:count": torch.tensor(4.0)}
    >>> Task().finalize_metrics(state)
    {'abs_rel': 0.5}
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
from torch import nn

#: additive metric state: name -> tensor (sums, counts, histograms); states of batches add up.
MetricState = dict[str, torch.Tensor]
#: the camera inputs: the image, its intrinsics and the camera mount (the relations read the last two).
CAMERA_INPUTS: tuple[str, ...] = ("camera/rgb", "camera/K", "camera/cam_from_ego")


class Task:
    """Base class of a task. Subclasses set the class attributes and implement the methods.

    Class attributes:
        name: registry name.
        input_layers: data-store layers the model reads; each must be an input layer, visible in every
            split (:data:`taskology.data.labels.INPUT_LAYERS`).
        label_layers: data-store layers that are this task's labels (the supervised loss, the metrics and
            :meth:`prepare` read them).
        pair: whether the task consumes frame pairs (t, t+1) (then ``rgb_next`` is an input too).
    """

    name: ClassVar[str] = ""
    input_layers: ClassVar[tuple[str, ...]] = CAMERA_INPUTS
    label_layers: ClassVar[tuple[str, ...]] = ()
    pair: ClassVar[bool] = False

    @classmethod
    def declaration_problem(cls) -> str | None:
        """What is wrong with the class's data declaration (None when nothing): every input layer must be
        visible in every split, every label layer must be a schema layer that is not an input.

        Example:
            >>> type("Bad", (Task,), {"input_layers": ("camera/depth",)}).declaration_problem()
            "input layer 'camera/depth' is not visible in every split; inputs are: camera/rgb, camera/K, camera/cam_from_ego, lidar/points, lidar/offsets, lidar/lidar_from_ego"
        """
        from taskology.data.labels import INPUT_LAYERS
        from taskology.data.schema import LAYERS

        for layer in cls.input_layers:
            if layer not in INPUT_LAYERS:
                return f"input layer {layer!r} is not visible in every split; inputs are: {', '.join(INPUT_LAYERS)}"
        for layer in cls.label_layers:
            if layer not in LAYERS or layer in INPUT_LAYERS:
                return f"label layer {layer!r} is not a label layer of the schema (taskology.data.schema)"
        return None

    @classmethod
    def config_arguments(cls, config: Any) -> dict[str, Any]:
        """Constructor keyword arguments the task takes from the experiment config besides its own section's
        ``width`` (e.g. the LiDAR tasks' BEV grid from ``lidar``). Default: none."""
        return {}

    def prepare(self, sample: Mapping[str, Any], *, augment: bool = False) -> dict[str, Any]:
        """One sample of the task's own frames (training layout, one frame or pair) with its training labels
        derived from the layers read, as a new dict. ``augment``: the sample is a labelled training sample
        (a task may augment it, keeping its labels exact). Default: :meth:`prepare_inputs`. Ragged layers
        (boxes, point clouds) are dropped after this, so a task that reads them turns them into fixed shapes
        here."""
        return self.prepare_inputs(sample)

    def prepare_inputs(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """The sample with the task's model inputs in fixed shapes, as a new dict, for a sample without labels
        (a mediator pair, which every enabled task's :meth:`prepare_inputs` sees before ragged layers are
        dropped). Default: the sample as it is. A LiDAR task turns the point cloud into its BEV grid here."""
        return dict(sample)

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
