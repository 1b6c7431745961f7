"""Surface normals: RGB -> unit normals in the camera frame, pointing towards the camera (n . p < 0).

The 3-channel head is normalised to unit length. The supervised loss is the mean angle (radians)
between prediction and ground truth over valid pixels (``|n*| > 0.5``; invalid pixels carry 0).
Metrics over the whole evaluated set: mean angular error (deg), median angular error (deg, from a
0.05-degree histogram, linearly interpolated inside the bin: exact to 0.05 deg), and the percentage of
pixels within 11.25 deg.

Example:
    >>> n = torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    >>> m = NormalsTask(width=4)
    >>> m.finalize_metrics(m.metrics({"normals": n}, {"normals": n}))["mean_angle_deg"]
    0.0
"""
from __future__ import annotations

from typing import ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from taskology.tasks.base import MetricState, Task, mean_state
from taskology.tasks.unet import CompactUNet

#: histogram resolution of the median angular error, degrees.
HIST_BIN_DEG = 0.05
HIST_BINS = int(round(180.0 / HIST_BIN_DEG))


def angle_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle (radians) between unit vector maps ``a``, ``b`` (B, 3, H, W) -> (B, 1, H, W).

    Uses ``atan2(|a x b|, a . b)``: accurate near 0 and pi, with a finite gradient except at 0.
    """
    cross = torch.linalg.cross(a, b, dim=1).norm(dim=1, keepdim=True)
    dot = (a * b).sum(dim=1, keepdim=True)
    return torch.atan2(cross, dot)


def valid_normals(normals: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) ground-truth normals -> (B, 1, H, W) bool, True where a unit normal is given."""
    return normals.norm(dim=1, keepdim=True) > 0.5


class NormalsTask(Task):
    """Normals from one RGB frame.

    Args:
        width: base channels of the U-Net.
    """

    name: ClassVar[str] = "normals"
    label_layers: ClassVar[tuple[str, ...]] = ("camera/normals",)

    def __init__(self, *, width: int = 16) -> None:
        self.width = width

    def build_model(self) -> nn.Module:
        net = CompactUNet(in_channels=3, out_channels=3, width=self.width)
        with torch.no_grad():  # start by facing the camera, the most common orientation
            net.head.bias.copy_(torch.tensor([0.0, 0.0, -1.0]))
        return net

    def forward(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"normals": F.normalize(model(batch["rgb"]), dim=1, eps=1e-6)}  # (B, 3, H, W) unit

    def supervised_loss(self, outputs: Mapping[str, torch.Tensor],
                        batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pred, gt = outputs["normals"], batch["normals"]
        valid = valid_normals(gt)
        if not bool(valid.any()):
            return {"normals_angle": pred.sum() * 0.0}
        cos = (pred * gt).sum(dim=1, keepdim=True).clamp(-1 + 1e-6, 1 - 1e-6)
        return {"normals_angle": torch.acos(cos)[valid].mean()}

    def metrics(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> MetricState:
        pred, gt = outputs["normals"].detach().double(), batch["normals"].double()
        valid = valid_normals(gt)
        deg = torch.rad2deg(angle_between(F.normalize(pred, dim=1, eps=1e-12), F.normalize(gt, dim=1, eps=1e-12)))
        state: MetricState = {}
        state.update(mean_state("mean_angle_deg", deg, valid))
        state.update(mean_state("within_11_25_pct", (deg < 11.25).double() * 100.0, valid))
        bins = (deg[valid] / HIST_BIN_DEG).long().clamp(0, HIST_BINS - 1)
        state["angle_hist"] = torch.bincount(bins, minlength=HIST_BINS).double()
        return state

    def finalize_metrics(self, state: Mapping[str, torch.Tensor]) -> dict[str, float]:
        out = super().finalize_metrics(state)
        out["median_angle_deg"] = median_from_histogram(state["angle_hist"], HIST_BIN_DEG)
        return out


def median_from_histogram(hist: torch.Tensor, bin_width: float) -> float:
    """Median of values binned as ``floor(v / bin_width)``, interpolated linearly inside the bin."""
    total = float(hist.sum())
    if total <= 0:
        return float("nan")
    cum = torch.cumsum(hist.double(), 0)
    half = total / 2.0
    k = int(torch.searchsorted(cum, torch.tensor(half, dtype=torch.float64)))
    before = float(cum[k - 1]) if k > 0 else 0.0
    frac = (half - before) / max(float(hist[k]), 1e-12)
    return (k + frac) * bin_width
