"""``segmentation_boxes`` (geometry and logic): a pixel whose surface lies in a detected 3D box shows that object.

The camera segmentation task has few labels for cars and pedestrians; the LiDAR ``detection`` task finds them
in 3D. With the ``depth`` peer, every pixel of frame t becomes a 3D point (unprojected with ``K``, moved to the
ego frame with ``cam_from_ego``), which is tested against the detection peer's confident boxes (score at least
``confidence``) with the Numba ``points_in_boxes`` kernel:

- a point inside a vehicle box is taught "vehicle": the summed probability of the segmentation task's vehicle
  classes (car, truck, bus: the detector does not tell them apart) should be 1, loss ``-log sum p``;
- a point inside a pedestrian box is taught "pedestrian" (``-log p``);
- a point on the detection grid that is more than ``margin_m`` metres from every confident box (outside every
  box grown by ``margin_m`` on each side) is taught "no movable class": ``-log (1 - sum p(movable))``;
- everything else (near a box but outside it, beyond the grid, sky) is not taught.

The loss is the mean over the taught pixels (0 when there are none). Depth and the boxes are hard inputs to a
test (no gradient can reach them), so the relation teaches segmentation only (``Relation.receivers``).

Options (``relations.segmentation_boxes.options``): ``confidence`` (default 0.5) and ``margin_m`` (default 1.0).

Example:
    >>> import numpy as np
    >>> from taskology.geometry.pillars import BevGrid
    >>> grid = BevGrid((-8.0, 8.0), (-8.0, 8.0), (-0.5, 4.5), 0.5)
    >>> car = np.array([[5.5, 0.5, 1.0, 4.5, 2.0, 2.0, 0.0]])          # a detected vehicle 5.5 m ahead
    >>> points = np.array([[5.5, 0.5, 1.0], [5.5, 4.0, 1.0], [5.5, 2.0, 1.0], [40.0, 0.0, 1.0]])
    >>> box_pixel_labels(points, car, np.array([0]), grid, margin_m=1.0).tolist()  # in, far, near, off the grid
    [0, -1, -2, -2]
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from taskology.data.schema import MOVABLE_CLASS_IDS
from taskology.geometry.boxes import points_in_boxes
from taskology.geometry.camera import points_from_depth_torch
from taskology.runtime import numba_single_thread
import taskology.tasks.lidar as lidar
from taskology.tasks.base import Task

#: detection class -> the segmentation classes (CARLA ids) it stands for.
SEGMENTATION_CLASSES_OF: dict[str, tuple[int, ...]] = {"vehicle": (14, 15, 16), "pedestrian": (12,)}


def box_pixel_labels(points: np.ndarray, boxes: np.ndarray, classes: np.ndarray, grid: Any,
                     margin_m: float) -> np.ndarray:
    """Per ego-frame point (n, 3): the detection class index of the box it lies in, -1 for "far from every box
    and on the grid" (no movable object), -2 for "not taught"."""
    labels = np.full(len(points), -2, dtype=np.int64)
    (x0, x1), (y0, y1), (z0, z1) = grid.x_range, grid.y_range, grid.z_range
    on_grid = ((points[:, 0] >= x0) & (points[:, 0] < x1) & (points[:, 1] >= y0) & (points[:, 1] < y1)
               & (points[:, 2] >= z0) & (points[:, 2] < z1) & np.isfinite(points).all(axis=1))
    if len(boxes) == 0:
        labels[on_grid] = -1
        return labels
    grown = boxes.copy()
    grown[:, 3:6] += 2.0 * margin_m
    with numba_single_thread():
        near = points_in_boxes(points, grown) >= 0
        inside = points_in_boxes(points, boxes)
    labels[on_grid & ~near] = -1
    hit = on_grid & (inside >= 0)
    labels[hit] = classes[inside[hit]]
    return labels


def segmentation_boxes_loss(outputs: Mapping[str, Mapping[str, torch.Tensor]], batch: Mapping[str, Any],
                            tasks: Mapping[str, Task], *, confidence: float = 0.5,
                            margin_m: float = 1.0) -> torch.Tensor:
    """Mean cross-entropy of the taught pixels against the box labels (module docstring) -> scalar."""
    seg, det = tasks["segmentation"], tasks["detection"]
    logits = outputs["segmentation"]["logits"]
    log_p = F.log_softmax(logits.float(), dim=1)                                     # (B, C, H, W)
    depth = outputs["depth"]["depth"].detach().float()
    depth = torch.where(torch.isfinite(depth) & (depth > 0), depth, torch.zeros(()))
    cam_points = points_from_depth_torch(depth, batch["K"].float())                  # (B, 3, H, W)
    ego_from_cam = torch.linalg.inv(batch["cam_from_ego"].double())
    b, _, h, w = cam_points.shape
    flat = cam_points.reshape(b, 3, -1).double()
    ego = (ego_from_cam[:, :3, :3] @ flat + ego_from_cam[:, :3, 3:]).transpose(1, 2).cpu().numpy()  # (B, HW, 3)
    ego[(depth.reshape(b, -1) <= 0).cpu().numpy()] = np.nan
    detections = lidar.decode_batch(outputs["detection"], det.grid, score_threshold=float(confidence))
    labels = np.stack([box_pixel_labels(np.ascontiguousarray(ego[i]), detections[i][0], detections[i][1], det.grid,
                                        float(margin_m)) for i in range(b)])
    labels = torch.from_numpy(labels).to(logits.device).reshape(b, h, w)
    terms = []
    for k, name in enumerate(lidar.CLASS_NAMES):
        index = seg.class_index(SEGMENTATION_CLASSES_OF[name])
        where = labels == k
        if index and where.any():
            terms.append(-torch.logsumexp(log_p[:, index], dim=1)[where])
    movable = seg.class_index(sorted(MOVABLE_CLASS_IDS))
    where = labels == -1
    if movable and where.any():
        p_movable = torch.logsumexp(log_p[:, movable], dim=1).exp().clamp(max=1 - 1e-6)
        terms.append(-torch.log1p(-p_movable)[where])
    if not terms:
        return logits.sum() * 0.0
    return torch.cat(terms).mean()
