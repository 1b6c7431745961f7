"""Semantic segmentation: RGB -> logits over a contiguous remap of the CARLA tag ids we render.

``class_ids`` lists the CARLA ids (taskology.data.schema.SEMANTIC_CLASSES) in training order; class
``i`` of the logits is CARLA id ``class_ids[i]``. Pixels whose id is not listed (e.g. 0 "unlabeled")
are ignored by the loss and the metric. Loss: cross-entropy. Metric: mIoU over the classes present
in the ground truth of the whole evaluated set (intersections and unions are summed over batches), and
``iou_vehicle`` / ``iou_pedestrian``: the IoU of the class groups :data:`GROUPS` (car, truck and bus count as
one vehicle class there: what the LiDAR detector tells apart).

Example:
    >>> task = SegmentationTask(width=4, class_ids=(1, 11, 14))
    >>> task.contiguous_labels(torch.tensor([[1, 14, 0, 11]]))
    tensor([[ 0,  2, -1,  1]])
"""
from __future__ import annotations

from typing import ClassVar, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from taskology.data.schema import SEMANTIC_CLASSES
from taskology.tasks.base import MetricState, Task
from taskology.tasks.unet import CompactUNet

#: default classes: every CARLA id of the schema except 0 "unlabeled".
#: class groups with their own IoU metric (``iou_<group>``): the movable objects the LiDAR tasks detect.
GROUPS: dict[str, tuple[int, ...]] = {"vehicle": (14, 15, 16), "pedestrian": (12,)}
DEFAULT_CLASS_IDS: tuple[int, ...] = tuple(sorted(i for i in SEMANTIC_CLASSES if i != 0))
IGNORE = -1


class SegmentationTask(Task):
    """Semantic classes from one RGB frame.

    Args:
        width: base channels of the U-Net.
        class_ids: CARLA tag ids of the classes, in logit order.
    """

    name: ClassVar[str] = "segmentation"
    label_layers: ClassVar[tuple[str, ...]] = ("camera/semantic",)

    def __init__(self, *, width: int = 16, class_ids: Sequence[int] = DEFAULT_CLASS_IDS) -> None:
        unknown = [c for c in class_ids if c not in SEMANTIC_CLASSES]
        if unknown or len(set(class_ids)) != len(class_ids) or not class_ids:
            raise ValueError(f"class_ids must be distinct ids of SEMANTIC_CLASSES; got {list(class_ids)}")
        self.width = width
        self.class_ids = tuple(int(c) for c in class_ids)
        self.num_classes = len(self.class_ids)
        lut = torch.full((256,), IGNORE, dtype=torch.long)
        for index, carla_id in enumerate(self.class_ids):
            lut[carla_id] = index
        self._lut = lut
        self.carla_ids = torch.tensor(self.class_ids, dtype=torch.long)

    def contiguous_labels(self, semantic: torch.Tensor) -> torch.Tensor:
        """(B, H, W) CARLA ids -> (B, H, W) int64 training labels, -1 where ignored."""
        return self._lut.to(semantic.device)[semantic.long().clamp(0, 255)]

    def class_index(self, carla_ids: Sequence[int]) -> list[int]:
        """Logit indices of the listed CARLA ids (ids not trained on are skipped)."""
        return [self.class_ids.index(c) for c in carla_ids if c in self.class_ids]

    def class_probability(self, logits: torch.Tensor, carla_ids: Iterable[int]) -> torch.Tensor:
        """(B, C, H, W) logits -> (B, 1, H, W) total softmax probability of the listed CARLA classes
        (zeros when none of them is trained on)."""
        return self.class_probabilities(logits, carla_ids)[0]

    def class_probabilities(self, logits: torch.Tensor, *groups: Iterable[int]) -> tuple[torch.Tensor, ...]:
        """:meth:`class_probability` of several groups of CARLA ids from one softmax."""
        probs = torch.softmax(logits, dim=1)
        out = []
        for carla_ids in groups:
            index = self.class_index(sorted(carla_ids))
            out.append(probs[:, index].sum(dim=1, keepdim=True) if index else torch.zeros_like(probs[:, :1]))
        return tuple(out)

    def build_model(self) -> nn.Module:
        return CompactUNet(in_channels=3, out_channels=self.num_classes, width=self.width)

    def forward(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": model(batch["rgb"])}  # (B, C, H, W)

    def supervised_loss(self, outputs: Mapping[str, torch.Tensor],
                        batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = self.contiguous_labels(batch["semantic"])
        if not bool((labels != IGNORE).any()):
            return {"segmentation_ce": outputs["logits"].sum() * 0.0}
        return {"segmentation_ce": F.cross_entropy(outputs["logits"], labels, ignore_index=IGNORE)}

    def metrics(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> MetricState:
        labels = self.contiguous_labels(batch["semantic"])
        pred = outputs["logits"].detach().argmax(dim=1)
        known = labels != IGNORE
        gt, pr = labels[known], pred[known]
        c = self.num_classes
        inter = torch.bincount(gt[gt == pr], minlength=c).double()
        gt_count = torch.bincount(gt, minlength=c).double()
        pred_count = torch.bincount(pr, minlength=c).double()
        state = {"intersection": inter, "union": gt_count + pred_count - inter, "gt_pixels": gt_count,
                 "pixel_acc:sum": inter.sum(), "pixel_acc:count": gt_count.sum()}
        for group, carla_ids in GROUPS.items():  # a group's IoU counts a car taken for a truck as right
            index = torch.tensor(self.class_index(carla_ids), dtype=torch.long, device=gt.device)
            in_gt, in_pred = torch.isin(gt, index), torch.isin(pr, index)
            state[f"{group}:intersection"] = (in_gt & in_pred).sum().double()
            state[f"{group}:union"] = (in_gt | in_pred).sum().double()
        return state

    def finalize_metrics(self, state: Mapping[str, torch.Tensor]) -> dict[str, float]:
        out = super().finalize_metrics(state)
        for group in GROUPS:
            union = float(state[f"{group}:union"]) if f"{group}:union" in state else 0.0
            out[f"iou_{group}"] = float(state[f"{group}:intersection"]) / union if union > 0 else float("nan")
        present = state["gt_pixels"] > 0
        if not bool(present.any()):
            out["miou"] = float("nan")
            return out
        iou = state["intersection"][present] / state["union"][present]
        out["miou"] = float(iou.mean())
        return out
