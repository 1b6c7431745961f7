"""``box_tracking`` (physics): objects move rigidly, so boxes detected at t, moved by the tracked motion, must be
the boxes detected at t+1.

On a mediator pair, the ``detection`` task's boxes at t with a score of at least ``confidence`` are moved by the
``tracking`` task's motion (its ``object_motion`` read at each box's centre cell, then its ego-motion into the
frame of t+1: :func:`taskology.tasks.tracking.propagate`). The moved boxes are matched one-to-one to the boxes
detected at t+1 (score at least ``confidence / 2``) by BEV IoU of at least ``match_iou`` (the Numba IoU kernel
and a Hungarian assignment on CPU arrays: the matching is discrete and carries no gradient). Then, in torch:

- teaching ``tracking``: for every matched pair, the L1 distance (metres) between the moved centre (a function of
  the object motion and the ego-motion, so both get gradient) and the centre of its match at t+1, plus the
  heading difference (radians, wrapped);
- teaching ``detection`` (its outputs on frame t+1, ``heatmap_next`` / ``box_next``): every confident box of t,
  matched or not, says where an object is at t+1: the heatmap logit of its class at the moved centre's cell is
  pushed up (binary cross-entropy towards 1, weighted by the score at t: a confident box that was not found at
  t+1 is one that should have been seen), and the box code there towards the moved box (its size from t: a
  rigid object keeps its size).

Each term is averaged over the boxes that carry it; 0 when no box is confident. Zero-ish on ground truth (a true
box moved by the true motion is the true box at t+1; the heatmap term is then only the BCE of a confident peak).

Options (``relations.box_tracking.options``): ``confidence`` (default 0.5, in [0, 1)) and ``match_iou``
(default 0.1, in (0, 1]).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from taskology.geometry.boxes_match import match_boxes
from taskology.runtime import numba_single_thread
import taskology.tasks.lidar as lidar
from taskology.tasks.base import Task
from taskology.tasks.tracking import lidar_motion_matrix, propagate, wrap_angle

#: weight of the heading error (radians) against the centre error (metres) in the tracking term.
HEADING_WEIGHT = 0.5


def _box_code(boxes: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(n, 8) box code of (n, 7) boxes relative to their integer output cells (n, 2) (inverse of
    :func:`taskology.tasks.lidar.boxes_from_code` given the cells' metres)."""
    return np.stack([cells[:, 0] - np.floor(cells[:, 0]), cells[:, 1] - np.floor(cells[:, 1]), boxes[:, 2],
                     np.log(boxes[:, 3]), np.log(boxes[:, 4]), np.log(boxes[:, 5]),
                     np.sin(boxes[:, 6]), np.cos(boxes[:, 6])], axis=1)


def box_tracking_terms(outputs: Mapping[str, Mapping[str, torch.Tensor]], batch: Mapping[str, Any],
                       tasks: Mapping[str, Task], *, confidence: float = 0.5,
                       match_iou: float = 0.1) -> dict[str, torch.Tensor]:
    """The ``tracking`` term and the ``detection`` term (module docstring), and ``matched``: the share of
    confident boxes of t that found their match at t+1 (a diagnostic, no gradient)."""
    det, trk = outputs["detection"], outputs["tracking"]
    grid = tasks["detection"].grid
    h, w = lidar.output_shape(grid)
    at_t = lidar.decode_batch({k: v.detach() for k, v in det.items()}, grid, score_threshold=float(confidence))
    at_next = lidar.decode_batch({k: v.detach() for k, v in det.items()}, grid, suffix="_next",
                                 score_threshold=0.5 * float(confidence))
    lidar_from_ego = batch["lidar_from_ego"].to(trk["ego_rotation"].dtype)
    ego_motion = torch.linalg.inv(lidar_from_ego) @ lidar_motion_matrix(trk) @ lidar_from_ego     # (B, 4, 4)
    zero = trk["object_motion"].sum() * 0.0 + det["heatmap_next"].sum() * 0.0
    track_terms, heat_terms, code_terms, matched, total = [], [], [], 0, 0
    for b, (boxes, classes, scores) in enumerate(at_t):
        if len(boxes) == 0:
            continue
        cells = np.floor(lidar.output_cells(boxes[:, :2], grid)).astype(np.int64)
        cells = np.clip(cells, 0, [h - 1, w - 1])
        index = torch.from_numpy(cells[:, 0] * w + cells[:, 1]).to(trk["object_motion"].device)
        motion = lidar.gather_cells(trk["object_motion"][b:b + 1], index[None])[0]             # (n, 3)
        moved = propagate(boxes, motion.detach().cpu().double().numpy(),
                          ego_motion[b].detach().cpu().double().numpy())
        with numba_single_thread():
            pairs = match_boxes(moved, at_next[b][0], float(match_iou)) if len(at_next[b][0]) else np.zeros((0, 2), int)
        total += len(boxes)
        matched += len(pairs)
        if len(pairs):
            rows = torch.from_numpy(pairs[:, 0]).to(motion.device)
            start = torch.from_numpy(boxes[pairs[:, 0]]).to(motion)
            centre = torch.cat([start[:, :2] + motion[rows, :2], start[:, 2:3]], dim=1)            # frame t
            centre = centre @ ego_motion[b, :3, :3].T.to(motion) + ego_motion[b, :3, 3].to(motion)
            heading = start[:, 6] + motion[rows, 2] + torch.atan2(ego_motion[b, 1, 0], ego_motion[b, 0, 0]).to(motion)
            target = torch.from_numpy(at_next[b][0][pairs[:, 1]]).to(motion)
            track_terms.append((centre[:, :2] - target[:, :2]).abs().sum(dim=1)
                               + HEADING_WEIGHT * wrap_angle(heading - target[:, 6]).abs())
        cells_next = lidar.output_cells(moved[:, :2], grid)
        on_grid = (cells_next[:, 0] >= 0) & (cells_next[:, 0] < h) & (cells_next[:, 1] >= 0) & (cells_next[:, 1] < w)
        if on_grid.any():
            ij = np.floor(cells_next[on_grid]).astype(np.int64)
            k = torch.from_numpy(classes[on_grid]).to(det["heatmap_next"].device)
            i, j = torch.from_numpy(ij[:, 0]).to(k.device), torch.from_numpy(ij[:, 1]).to(k.device)
            logit = det["heatmap_next"][b, k, i, j]
            weight = torch.from_numpy(scores[on_grid]).to(logit)
            heat_terms.append(weight * F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit),
                                                                          reduction="none"))
            code = det["box_next"][b][:, i, j].T                                                     # (m, 8)
            target = torch.from_numpy(_box_code(moved[on_grid], cells_next[on_grid])).to(code)
            code_terms.append((code - target).abs().sum(dim=1))
    mean = (lambda terms: torch.cat(terms).mean() + zero if terms else zero)  # noqa: E731
    return {"tracking": mean(track_terms), "detection": mean(heat_terms) + 0.25 * mean(code_terms),
            "matched": torch.tensor(matched / total if total else math.nan)}


def box_tracking_loss(outputs: Mapping[str, Mapping[str, torch.Tensor]], batch: Mapping[str, Any],
                      tasks: Mapping[str, Task], *, receiver: str | None = None, confidence: float = 0.5,
                      match_iou: float = 0.1) -> torch.Tensor:
    """The term of ``receiver`` (both summed when None) -> scalar."""
    terms = box_tracking_terms(outputs, batch, tasks, confidence=confidence, match_iou=match_iou)
    if receiver in ("tracking", "detection"):
        return terms[receiver]
    return terms["tracking"] + terms["detection"]
