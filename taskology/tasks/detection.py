"""3D object detection in a LiDAR sweep: BEV pillars -> CNN -> CenterPoint heads -> boxes with class and score.

Input and box code: :mod:`taskology.tasks.lidar` (the sweep's pillars on the ``lidar`` grid of the config).
Outputs on a batch with ``bev`` (B, 6, H, W):

- ``heatmap`` (B, K, H/2, W/2): logit per class (:data:`~taskology.tasks.lidar.CLASS_NAMES`) that an object's
  centre lies in the cell;
- ``box`` (B, 8, H/2, W/2): the box code ``(di, dj, z, log l, log w, log h, sin yaw, cos yaw)`` per cell;
- on a pair (``bev_next`` in the batch, e.g. a mediator batch) also ``heatmap_next`` and ``box_next`` for frame
  t+1, with gradient: the ``box_tracking`` relation teaches detection at t+1 from the boxes at t.

Boxes are read from the maps with :func:`~taskology.tasks.lidar.decode_boxes`. Supervision: CenterPoint's focal
loss on the heatmap and L1 on the box code at the true centres (weight 0.25). Labelled sweeps are augmented
(global yaw, mirror, scale; labels move exactly with the points) when ``lidar.augment`` is on.

Metrics: BEV average precision per class at the KITTI IoU thresholds (vehicle 0.7 and 0.5, pedestrian 0.5 and
0.25), interpolated over 40 recall points, from additive per-score-bin counts (:data:`SCORE_BINS` bins, so
tied scores within 1/100 share a bin); the exact AP (and 3D AP) of a run comes from ``taskology eval``.

Example:
    >>> from taskology.geometry.pillars import BevGrid
    >>> task = DetectionTask(width=4, grid=BevGrid((-8.0, 8.0), (-8.0, 8.0), (-0.5, 4.5), 0.5))
    >>> out = task.forward(task.build_model(), {"bev": torch.zeros(2, 6, 32, 32)})
    >>> tuple(out["heatmap"].shape), tuple(out["box"].shape)
    ((2, 2, 16, 16), (2, 8, 16, 16))
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from torch import nn

from taskology.geometry.pillars import PILLAR_FEATURES, BevGrid
import taskology.tasks.lidar as lidar
from taskology.tasks.base import MetricState, Task

#: IoU thresholds of the BEV AP per class (KITTI's strict and loose ones).
AP_THRESHOLDS: dict[str, tuple[float, ...]] = {"vehicle": (0.7, 0.5), "pedestrian": (0.5, 0.25)}
#: score bins of the additive AP state.
SCORE_BINS = 100
#: weight of the box-code L1 against the heatmap loss (CenterPoint's).
BOX_WEIGHT = 0.25
#: recall points of the interpolated AP (KITTI R40: 1/40 .. 40/40).
RECALL_POINTS = np.linspace(1.0 / 40.0, 1.0, 40)


class DetectionNet(nn.Module):
    """BEV backbone + heatmap head + box-code head."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.backbone = lidar.BevBackbone(len(PILLAR_FEATURES), width)
        self.heatmap = lidar.head(self.backbone.channels, classes, lidar.HEATMAP_PRIOR_BIAS)
        self.box = lidar.head(self.backbone.channels, len(lidar.BOX_CODE))

    def forward(self, bev: torch.Tensor) -> dict[str, torch.Tensor]:
        features, _ = self.backbone(bev)
        return {"heatmap": self.heatmap(features), "box": self.box(features)}


def interpolated_ap(tp: np.ndarray, fp: np.ndarray, num_gt: float) -> float:
    """R40 AP from true and false positives per score bin (index = bin, higher bins = higher scores);
    ``nan`` without ground truth.

    Example:
        >>> interpolated_ap(np.array([0, 0, 1]), np.array([0, 0, 0]), 1)
        1.0
        >>> interpolated_ap(np.array([0, 0]), np.array([0, 3]), 2)
        0.0
    """
    if num_gt <= 0:
        return float("nan")
    tp_cum, fp_cum = np.cumsum(tp[::-1]), np.cumsum(fp[::-1])
    detections = tp_cum + fp_cum
    nonempty = (tp[::-1] + fp[::-1]) > 0
    if not nonempty.any():
        return 0.0
    recall = tp_cum[nonempty] / num_gt
    precision = tp_cum[nonempty] / detections[nonempty]
    precision = np.maximum.accumulate(precision[::-1])[::-1]          # best precision at recall >= r
    values = [precision[recall >= r - 1e-12].max() if (recall >= r - 1e-12).any() else 0.0 for r in RECALL_POINTS]
    return float(np.mean(values))


def greedy_true_positives(boxes: np.ndarray, gt: np.ndarray, threshold: float) -> np.ndarray:
    """Whether each prediction (``boxes``, best score first) is a true positive: it takes the unmatched ground
    truth box of highest BEV IoU >= ``threshold``."""
    hits = np.zeros(len(boxes), dtype=bool)
    if len(boxes) == 0 or len(gt) == 0:
        return hits
    iou = lidar.box_iou_matrix(boxes, gt)
    taken = np.zeros(len(gt), dtype=bool)
    for n in range(len(boxes)):
        row = np.where(taken, -1.0, iou[n])
        best = int(np.argmax(row))
        if row[best] >= threshold:
            taken[best], hits[n] = True, True
    return hits


class DetectionTask(Task):
    """LiDAR 3D detection (see the module docstring).

    Args:
        width: base channel count of the BEV network.
        grid: the BEV grid (``lidar`` section of the config).
        min_points: points a labelled box needs to be a target.
        augment: augment labelled training sweeps.
    """

    name: ClassVar[str] = "detection"
    input_layers: ClassVar[tuple[str, ...]] = ("lidar/points", "lidar/offsets", "lidar/lidar_from_ego")
    label_layers: ClassVar[tuple[str, ...]] = ("objects/box", "objects/class_id", "objects/track_id")

    def __init__(self, *, width: int = 16, grid: BevGrid | None = None, min_points: int = 5,
                 augment: bool = True) -> None:
        self.width = int(width)
        self.grid = grid if grid is not None else BevGrid()
        self.min_points = int(min_points)
        self.augment = bool(augment)
        self.class_names = lidar.CLASS_NAMES

    @classmethod
    def config_arguments(cls, config: Any) -> dict[str, Any]:
        section = config.lidar
        return {"grid": section.grid(), "min_points": int(section.min_points), "augment": bool(section.augment)}

    def prepare_inputs(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        return lidar.add_bev(sample, self.grid)

    def prepare(self, sample: Mapping[str, Any], *, augment: bool = False) -> dict[str, Any]:
        """``bev`` and, when the sample has boxes, the padded ``gt_*`` labels and the CenterPoint targets
        (``heatmap_target``, ``target_index``, ``target_mask``, ``target_code``)."""
        if "boxes" not in sample:
            return self.prepare_inputs(sample)
        out = dict(sample)
        points = lidar.ego_points(sample["lidar_points"], sample["lidar_from_ego"])
        boxes, classes, tracks = lidar.visible_boxes(points, sample["boxes"].numpy(), sample["class_id"].numpy(),
                                                     sample["track_id"].numpy(), self.grid, self.min_points)
        _, boxes, out["bev"] = lidar.sweep_inputs(sample, self.grid, boxes=boxes, points=points,
                                                  augmentation=lidar.draw_augmentation(augment and self.augment))
        out.update(lidar.padded(boxes, classes, tracks))
        target = lidar.encode_targets(boxes, classes, self.grid)
        out.update({"heatmap_target": torch.from_numpy(target["heatmap"]),
                    "target_index": torch.from_numpy(target["index"]),
                    "target_mask": torch.from_numpy(target["mask"]), "target_code": torch.from_numpy(target["code"])})
        return out

    def build_model(self) -> nn.Module:
        return DetectionNet(self.width, len(self.class_names))

    def forward(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "bev_next" not in batch:
            return model(batch["bev"])
        both = model(torch.cat([batch["bev"], batch["bev_next"]], dim=0))
        b = batch["bev"].shape[0]
        return {"heatmap": both["heatmap"][:b], "box": both["box"][:b],
                "heatmap_next": both["heatmap"][b:], "box_next": both["box"][b:]}

    def supervised_loss(self, outputs: Mapping[str, torch.Tensor],
                        batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        heat = lidar.focal_heatmap_loss(outputs["heatmap"], batch["heatmap_target"])
        code = lidar.gather_cells(outputs["box"], batch["target_index"])                  # (B, n, 8)
        mask = batch["target_mask"][..., None].to(code.dtype)
        box = ((code - batch["target_code"]).abs() * mask).sum() / mask.sum().clamp_min(1.0)
        return {"heatmap": heat, "box": BOX_WEIGHT * box}

    def metrics(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> MetricState:
        state: MetricState = {}
        for k, name in enumerate(self.class_names):
            for t in AP_THRESHOLDS[name]:
                state[f"{name}:tp@{t}"] = torch.zeros(SCORE_BINS, dtype=torch.float64)
                state[f"{name}:fp@{t}"] = torch.zeros(SCORE_BINS, dtype=torch.float64)
            state[f"{name}:gt"] = torch.zeros((), dtype=torch.float64)
        for b, (boxes, classes, scores) in enumerate(lidar.decode_batch(outputs, self.grid)):
            gt_boxes, gt_classes = lidar.unpadded(batch["gt_boxes"][b], batch["gt_class"][b])
            bins = np.minimum((scores * SCORE_BINS).astype(np.int64), SCORE_BINS - 1)
            for k, name in enumerate(self.class_names):
                mine, truth = classes == k, gt_boxes[gt_classes == k]
                state[f"{name}:gt"] += float(len(truth))
                for t in AP_THRESHOLDS[name]:
                    hits = greedy_true_positives(boxes[mine], truth, t)
                    state[f"{name}:tp@{t}"] += torch.from_numpy(np.bincount(bins[mine][hits], minlength=SCORE_BINS)
                                                                .astype(np.float64))
                    state[f"{name}:fp@{t}"] += torch.from_numpy(np.bincount(bins[mine][~hits], minlength=SCORE_BINS)
                                                                .astype(np.float64))
        return state

    def finalize_metrics(self, state: Mapping[str, torch.Tensor]) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in self.class_names:
            gt = float(state[f"{name}:gt"])
            for t in AP_THRESHOLDS[name]:
                out[f"{name}/ap_bev@{t}"] = interpolated_ap(state[f"{name}:tp@{t}"].numpy(),
                                                            state[f"{name}:fp@{t}"].numpy(), gt)
        return out
