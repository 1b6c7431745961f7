"""Tracking in LiDAR sweeps: the LiDAR's ego-motion and every object's motion from a pair of sweeps (t, t+1).

Outputs on a pair batch (``bev``, ``bev_next``; :mod:`taskology.tasks.lidar`):

- ``ego_rotation`` (B, 3), ``ego_translation`` (B, 3): axis-angle (radians) and translation (metres) of
  ``lidar_{t+1}_from_lidar_t``;
- ``object_motion`` (B, 3, H/2, W/2): per BEV cell of frame t, the motion ``(dx, dy, dyaw)`` (metres, radians,
  ego frame of t) of an object whose box centre lies there: the box at t+1, expressed in the ego frame of t,
  minus the box at t. Static objects have zero motion; ego-motion is not part of it.

An object's motion is read at the cell of its box centre at t (as CenterPoint reads velocities).
:func:`propagate` moves boxes of frame t with their motion and the ego-motion into frame t+1, and
:func:`associate` gives track ids: a box at t+1 takes the id of the moved box of t it overlaps most (BEV IoU,
Hungarian). Labelled pairs train on ground-truth boxes; on mediator pairs the ``box_tracking`` relation reads
the ``detection`` peer's boxes.

Supervision: L1 on the ego rotation (matrix entries) and translation, L1 on the object motion of every labelled
box visible at t and present at t+1. Metrics: ego translation error (m), ego rotation error (deg), box motion
error (m, BEV end point) of those boxes.

Example:
    >>> from taskology.geometry.pillars import BevGrid
    >>> task = TrackingTask(width=4, grid=BevGrid((-8.0, 8.0), (-8.0, 8.0), (-0.5, 4.5), 0.5))
    >>> out = task.forward(task.build_model(), {"bev": torch.zeros(1, 6, 32, 32), "bev_next": torch.zeros(1, 6, 32, 32)})
    >>> tuple(out["ego_translation"].shape), tuple(out["object_motion"].shape)
    ((1, 3), (1, 3, 16, 16))
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from torch import nn

from taskology.geometry.boxes import transform_boxes
from taskology.geometry.boxes_match import match_boxes
from taskology.geometry.pillars import PILLAR_FEATURES, BevGrid
from taskology.geometry.rigid import pose_from_axis_angle_torch, so3_exp_torch
from taskology.runtime import numba_single_thread
import taskology.tasks.lidar as lidar
from taskology.tasks.base import MetricState, Task, mean_state

#: output scales of the heads at initialisation: rotation (rad), translation (m), object motion (m, m, rad).
ROTATION_SCALE, TRANSLATION_SCALE = 0.01, 1.0
MOTION_SCALE = (1.0, 1.0, 0.1)
#: how far (metres, per frame) the correlation layer searches for the ego translation: 2 m covers 20 m/s at 10 Hz.
EGO_SEARCH_M = 2.0


def wrap_angle(angle: np.ndarray | torch.Tensor) -> Any:
    """Angles wrapped to [-pi, pi)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi


class EgoCorrelation(nn.Module):
    """Planar ego translation from where the two sweeps' BEV features agree best (a correlation layer).

    Both sweeps go through one small encoder (shared weights, half the BEV resolution: ``cell_m`` is the
    encoder's cell). For every shift ``s`` of up to ``radius`` of those cells, the cosine similarity of the
    features of sweep t at cell ``p`` and of sweep t+1 at cell ``p + s`` is averaged over the cells of t that
    hold points. A static world seen from a vehicle that moved appears shifted by the translation of
    ``ego_{t+1}_from_ego_t`` (rows along x, columns along y), so the soft-argmax of that correlation is that
    translation, in cells. The output is metric by construction: labels only have to teach features that tell
    places apart, which is why this head learns from a few labelled pairs where a pooled regression head
    learns the mean speed. Moving objects are outvoted by the static cells.

    Returns the (B, 2) translation (metres, ego frame of the grid) and the (B, (2r+1)^2) correlation, which the
    global head reads to refine it and to estimate rotation.
    """

    def __init__(self, in_channels: int, width: int, radius: int, cell_m: float) -> None:
        super().__init__()
        self.encode = nn.Sequential(lidar.conv_block(in_channels, width, 2), nn.Conv2d(width, width, 3, padding=1))
        self.radius, self.cell_m = int(radius), float(cell_m)
        offsets = torch.arange(-self.radius, self.radius + 1, dtype=torch.float32)
        shifts = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1).reshape(-1, 2)
        self.register_buffer("shifts", shifts, persistent=False)                         # (S, 2) cells
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(20.0)))

    def forward(self, bev: torch.Tensor, bev_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = nn.functional.normalize(self.encode(bev), dim=1)
        b = nn.functional.normalize(self.encode(bev_next), dim=1)
        occupied = nn.functional.max_pool2d((bev.abs().sum(dim=1, keepdim=True) > 0).to(a.dtype), 2)[:, 0]
        weight = occupied / occupied.sum(dim=(1, 2), keepdim=True).clamp_min(1.0)
        r, (h, w) = self.radius, a.shape[-2:]
        padded = nn.functional.pad(b, (r, r, r, r))
        scores = [((a * padded[:, :, r + int(di):r + int(di) + h, r + int(dj):r + int(dj) + w]).sum(dim=1)
                   * weight).sum(dim=(1, 2)) for di, dj in self.shifts.tolist()]
        correlation = torch.stack(scores, dim=1)                                         # (B, S)
        attention = torch.softmax(correlation * self.log_sharpness.exp(), dim=1)
        return attention @ self.shifts * self.cell_m, correlation


class TrackingNet(nn.Module):
    """BEV backbone over both sweeps (12 channels) + dense object-motion head + ego-motion from a correlation
    layer (:class:`EgoCorrelation`, the x/y translation) refined by a global head (rotation, z, residuals)."""

    def __init__(self, width: int, grid: BevGrid | None = None, search_m: float = EGO_SEARCH_M) -> None:
        super().__init__()
        grid = grid if grid is not None else BevGrid()
        self.backbone = lidar.BevBackbone(2 * len(PILLAR_FEATURES), width)
        self.motion = lidar.head(self.backbone.channels, 3)
        self.correlation = EgoCorrelation(len(PILLAR_FEATURES), width, math.ceil(search_m / (2 * grid.cell_m)), 2 * grid.cell_m)
        shifts = len(self.correlation.shifts)
        self.pool = nn.Sequential(nn.Conv2d(4 * width, 4 * width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.ego = nn.Linear(4 * width + shifts, 6)
        with torch.no_grad():                  # the translation starts as the correlation's, the rest near zero
            self.ego.weight[3:].zero_()
            self.ego.bias.zero_()
        self.register_buffer("motion_scale", torch.tensor(MOTION_SCALE).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, bev: torch.Tensor, bev_next: torch.Tensor) -> dict[str, torch.Tensor]:
        features, coarse = self.backbone(torch.cat([bev, bev_next], dim=1))
        planar, correlation = self.correlation(bev, bev_next)
        ego = self.ego(torch.cat([self.pool(coarse), correlation], dim=1))
        translation = ego[:, 3:] * TRANSLATION_SCALE + nn.functional.pad(planar, (0, 1))
        return {"ego_rotation": ego[:, :3] * ROTATION_SCALE, "ego_translation": translation,
                "object_motion": self.motion(features) * self.motion_scale}


def lidar_motion_matrix(outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """(B, 4, 4) ``lidar_{t+1}_from_lidar_t`` from the ``ego_rotation`` / ``ego_translation`` outputs."""
    return pose_from_axis_angle_torch(outputs["ego_rotation"], outputs["ego_translation"])


def ego_motion_from_lidar(lidar_motion: np.ndarray, lidar_from_ego: np.ndarray) -> np.ndarray:
    """``ego_{t+1}_from_ego_t`` = ``ego_from_lidar @ lidar_motion @ lidar_from_ego`` (float64)."""
    lidar_from_ego = np.asarray(lidar_from_ego, dtype=np.float64)
    return np.linalg.inv(lidar_from_ego) @ np.asarray(lidar_motion, dtype=np.float64) @ lidar_from_ego


def propagate(boxes: np.ndarray, motion: np.ndarray, ego_next_from_ego: np.ndarray) -> np.ndarray:
    """Boxes of frame t (n, 7) moved by their motion (n, 3: dx, dy, dyaw in frame t) and expressed in the ego
    frame of t+1: where they should be found at t+1.

    Example:
        >>> box = np.array([[10.0, 0, 1, 4, 2, 1.5, 0]])
        >>> ego = np.eye(4); ego[0, 3] = -1.0           # the ego drove 1 m forward
        >>> propagate(box, np.array([[2.0, 0, 0]]), ego)[0, :2].tolist()
        [11.0, 0.0]
    """
    moved = np.asarray(boxes, dtype=np.float64).reshape(-1, 7).copy()
    motion = np.asarray(motion, dtype=np.float64).reshape(-1, 3)
    moved[:, :2] += motion[:, :2]
    moved[:, 6] = wrap_angle(moved[:, 6] + motion[:, 2])
    return transform_boxes(np.asarray(ego_next_from_ego, dtype=np.float64), moved) if len(moved) else moved


def associate(moved: np.ndarray, boxes_next: np.ndarray, iou_threshold: float = 0.1) -> np.ndarray:
    """For each box at t+1, the index of the moved box of t it continues (BEV IoU >= ``iou_threshold``,
    one-to-one, Hungarian), or -1 (a new track)."""
    out = np.full(len(boxes_next), -1, dtype=np.int64)
    if len(moved) and len(boxes_next):
        with numba_single_thread():
            pairs = match_boxes(moved, boxes_next, iou_threshold)
        for i, j in pairs:
            out[j] = i
    return out


def motion_targets(sample: Mapping[str, Any], boxes: np.ndarray, tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per box at t (n, 7), its true motion (n, 3) in frame t and whether it is known (present at t+1)."""
    next_ids = sample["track_id_next"].numpy()
    next_boxes = sample["boxes_next"].double().numpy().reshape(-1, 7)
    ego_from_ego_next = np.linalg.inv(sample["ego_next_from_ego"].double().numpy())
    motion = np.zeros((len(boxes), 3))
    known = np.zeros(len(boxes), dtype=bool)
    for n, track in enumerate(tracks):
        rows = np.flatnonzero(next_ids == track)
        if len(rows):
            later = transform_boxes(ego_from_ego_next, next_boxes[rows[:1]])[0]
            motion[n] = (later[0] - boxes[n, 0], later[1] - boxes[n, 1], wrap_angle(later[6] - boxes[n, 6]))
            known[n] = True
    return motion, known


class TrackingTask(Task):
    """LiDAR ego-motion and object motion from a sweep pair (see the module docstring).

    Args:
        width: base channel count of the BEV network.
        grid: the BEV grid (``lidar`` section of the config).
        min_points: points a labelled box needs at t to be a target.
    """

    name: ClassVar[str] = "tracking"
    input_layers: ClassVar[tuple[str, ...]] = ("lidar/points", "lidar/offsets", "lidar/lidar_from_ego")
    label_layers: ClassVar[tuple[str, ...]] = ("objects/box", "objects/class_id", "objects/track_id",
                                               "ego/world_from_ego")
    pair: ClassVar[bool] = True

    def __init__(self, *, width: int = 16, grid: BevGrid | None = None, min_points: int = 5) -> None:
        self.width = int(width)
        self.grid = grid if grid is not None else BevGrid()
        self.min_points = int(min_points)

    @classmethod
    def config_arguments(cls, config: Any) -> dict[str, Any]:
        return {"grid": config.lidar.grid(), "min_points": int(config.lidar.min_points)}

    def prepare_inputs(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        return lidar.add_bev(sample, self.grid)

    def prepare(self, sample: Mapping[str, Any], *, augment: bool = False) -> dict[str, Any]:
        """``bev``, ``bev_next`` and, with labels, ``lidar_motion`` (4, 4) ``lidar_{t+1}_from_lidar_t``, the
        padded boxes of t (``gt_*``) and their motion ``gt_motion`` (MAX_BOXES, 3) where ``gt_motion_mask``,
        at flat output cells ``gt_index``. Pairs are not augmented (a pair's augmentation must also move its
        ego-motion; not implemented)."""
        if "boxes" not in sample or "ego_next_from_ego" not in sample:
            return self.prepare_inputs(sample)
        points = lidar.ego_points(sample["lidar_points"], sample["lidar_from_ego"])
        out = lidar.add_bev({**sample, "bev": lidar.sweep_inputs(sample, self.grid, points=points)[2]}, self.grid)
        boxes, classes, tracks = lidar.visible_boxes(points, sample["boxes"].numpy(), sample["class_id"].numpy(),
                                                     sample["track_id"].numpy(), self.grid, self.min_points)
        motion, known = motion_targets(sample, boxes, tracks)
        out.update(lidar.padded(boxes, classes, tracks))
        gt_motion = np.zeros((lidar.MAX_BOXES, 3), dtype=np.float32)
        mask = np.zeros(lidar.MAX_BOXES, dtype=np.float32)
        index = np.zeros(lidar.MAX_BOXES, dtype=np.int64)
        h, w = lidar.output_shape(self.grid)
        cells = np.floor(lidar.output_cells(boxes[:, :2], self.grid)).astype(np.int64)
        inside = (cells[:, 0] >= 0) & (cells[:, 0] < h) & (cells[:, 1] >= 0) & (cells[:, 1] < w)
        n = len(boxes)
        gt_motion[:n], mask[:n] = motion, (known & inside)
        index[:n] = np.where(inside, cells[:, 0] * w + cells[:, 1], 0)
        lidar_from_ego = sample["lidar_from_ego"].double().numpy()
        lidar_motion = lidar_from_ego @ sample["ego_next_from_ego"].double().numpy() @ np.linalg.inv(lidar_from_ego)
        out.update({"gt_motion": torch.from_numpy(gt_motion), "gt_motion_mask": torch.from_numpy(mask),
                    "gt_index": torch.from_numpy(index),
                    "lidar_motion": torch.from_numpy(lidar_motion.astype(np.float32))})
        return out

    def build_model(self) -> nn.Module:
        return TrackingNet(self.width, self.grid)

    def forward(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return model(batch["bev"], batch["bev_next"])

    @staticmethod
    def _object_motion_at(outputs: Mapping[str, torch.Tensor], index: torch.Tensor) -> torch.Tensor:
        return lidar.gather_cells(outputs["object_motion"], index)                       # (B, n, 3)

    def supervised_loss(self, outputs: Mapping[str, torch.Tensor],
                        batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        target = batch["lidar_motion"]
        rot_pred = so3_exp_torch(outputs["ego_rotation"])
        mask = batch["gt_motion_mask"][..., None].to(rot_pred.dtype)
        motion = self._object_motion_at(outputs, batch["gt_index"])
        error = (motion - batch["gt_motion"]).abs()
        return {"ego_rotation": (rot_pred - target[:, :3, :3]).abs().sum(dim=(1, 2)).mean(),
                "ego_translation": (outputs["ego_translation"] - target[:, :3, 3]).abs().sum(dim=1).mean(),
                "object_motion": (error * mask).sum() / mask.sum().clamp_min(1.0)}

    def metrics(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> MetricState:
        target = batch["lidar_motion"].double()
        rot_pred = so3_exp_torch(outputs["ego_rotation"].double())
        cos = ((rot_pred.transpose(1, 2) @ target[:, :3, :3]).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
        angle = torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))
        translation = (outputs["ego_translation"].double() - target[:, :3, 3]).norm(dim=1)
        motion = self._object_motion_at(outputs, batch["gt_index"]).double()
        box_error = (motion[..., :2] - batch["gt_motion"][..., :2].double()).norm(dim=-1)
        state = mean_state("ego_translation_error", translation)
        state.update(mean_state("ego_rotation_error_deg", angle))
        state.update(mean_state("box_motion_error", box_error, batch["gt_motion_mask"]))
        return state


__all__ = ["TrackingTask", "propagate", "associate", "lidar_motion_matrix", "ego_motion_from_lidar", "wrap_angle"]
