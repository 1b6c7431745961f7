"""Monocular depth: RGB -> planar z-depth in metres.

The head is squashed into ``[min_depth, max_depth]`` in log space,
``depth = exp(log(min) + (log(max) - log(min)) * sigmoid(h))``, so predictions are positive and
bounded (sky should come out near ``max_depth``). The supervised loss is L1 on log depth over valid
ground-truth pixels (``depth > 0``). Metrics (no median scaling: the simulator gives metric depth),
over valid pixels of the whole evaluated set: AbsRel = mean(|d - d*| / d*), RMSE (m),
delta<1.25 = fraction with max(d/d*, d*/d) < 1.25.

Example:
    >>> task = DepthTask(width=4)
    >>> out = task.forward(task.build_model(), {"rgb": torch.rand(1, 3, 32, 96)})
    >>> out["depth"].shape, bool((out["depth"] > 0).all())
    (torch.Size([1, 1, 32, 96]), True)
"""
from __future__ import annotations

import math
from typing import ClassVar, Mapping

import torch
from torch import nn

from taskology.tasks.base import MetricState, Task, mean_state
from taskology.tasks.unet import CompactUNet


class DepthTask(Task):
    """Depth from one RGB frame.

    Args:
        width: base channels of the U-Net.
        min_depth, max_depth: output range in metres (the embedded simulator sees up to ~200 m).
    """

    name: ClassVar[str] = "depth"
    label_layers: ClassVar[tuple[str, ...]] = ("camera/depth",)

    def __init__(self, *, width: int = 16, min_depth: float = 0.5, max_depth: float = 256.0) -> None:
        if not 0 < min_depth < max_depth:
            raise ValueError(f"depth range must satisfy 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        self.width = width
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)

    def build_model(self) -> nn.Module:
        return CompactUNet(in_channels=3, out_channels=1, width=self.width)

    def depth_from_head(self, head: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) raw head -> depth in metres within [min_depth, max_depth]."""
        lo, hi = math.log(self.min_depth), math.log(self.max_depth)
        return torch.exp(lo + (hi - lo) * torch.sigmoid(head))

    def forward(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"depth": self.depth_from_head(model(batch["rgb"]))}  # (B, 1, H, W) metres

    def supervised_loss(self, outputs: Mapping[str, torch.Tensor],
                        batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pred, gt = outputs["depth"], batch["depth"]
        valid = gt > 0
        if not bool(valid.any()):
            return {"depth_log_l1": pred.sum() * 0.0}
        err = (torch.log(pred) - torch.log(gt.clamp_min(1e-6))).abs()
        return {"depth_log_l1": err[valid].mean()}

    def metrics(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> MetricState:
        pred, gt = outputs["depth"].detach().double(), batch["depth"].double()
        valid = gt > 0
        safe_gt = torch.where(valid, gt, torch.ones_like(gt))
        ratio = torch.maximum(pred / safe_gt, safe_gt / pred)
        state: MetricState = {}
        state.update(mean_state("abs_rel", (pred - gt).abs() / safe_gt, valid))
        state.update(mean_state("sq_err", (pred - gt) ** 2, valid))
        state.update(mean_state("delta1", (ratio < 1.25).double(), valid))
        return state

    def finalize_metrics(self, state: Mapping[str, torch.Tensor]) -> dict[str, float]:
        out = super().finalize_metrics(state)
        out["rmse"] = math.sqrt(out.pop("sq_err"))
        return out
