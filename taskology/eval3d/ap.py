"""Average precision of 3D box detections, KITTI style (R40), in bird's-eye view or in 3D.

Definition, for one class over a set of frames (IoU from :func:`taskology.geometry.box_iou_bev` /
:func:`taskology.geometry.box_iou_3d` only):

1. **Matching, per frame.** The frame's predictions are visited by descending score; each takes the still
   unmatched ground-truth box of the highest IoU (the lowest index among equal IoUs) if that IoU is
   ``>= iou_threshold`` (a true positive), else it is a false positive. Ground truth is never shared across
   frames, so the order in which frames are given never changes the result.
2. **Curve.** One point per distinct score ``s`` over all frames: ``TP(s)``, ``FP(s)`` count the predictions with
   score ``>= s``; recall ``TP / num_gt``, precision ``TP / (TP + FP)``.
3. **Interpolation.** ``p(r)`` = the highest precision of the points with recall ``>= r`` (the curve made
   monotone), 0 where recall ``r`` is never reached.
4. **AP** = the mean of ``p(k / R)`` for ``k = 1 .. R``, ``R = recall_points`` (40: KITTI's R40, which leaves out
   ``r = 0``). Recall comparisons are exact, in integers (``TP * R >= k * num_gt``).

**Tie rule.** Predictions of equal score enter the curve together (one point for all of them, whichever frames
they are in): no order among tied predictions is invented, so AP is the same for every ordering of the frames
and of the predictions across frames. Within one frame, tied predictions are *matched* in their input order
(a stable sort), which decides which of them takes a contested ground-truth box.

**Empty cases.** No ground truth at all: ``nan`` (AP is undefined; callers average with ``nanmean`` or report
it as missing). Ground truth but no predictions: ``0.0``.

Cost: one IoU matrix per frame and mode (Numba kernel), reused for every threshold by
:func:`evaluate_detections`; matching is a short NumPy loop per prediction. The per-frame matrices are small, so
the kernels run on the calling thread only (:func:`numba_single_thread`): a parallel launch per frame costs more
than the work, and many times more when the cores are busy.

Example:
    >>> import numpy as np
    >>> gt = np.array([[10.0, 0, 0.8, 4, 2, 1.6, 0], [20, 5, 0.8, 4, 2, 1.6, 0]])
    >>> pred = np.array([[10.2, 0, 0.8, 4, 2, 1.6, 0], [40, 0, 0.8, 4, 2, 1.6, 0]])
    >>> average_precision([(pred, np.array([0.8, 0.9]), gt)], 0.7)  # FP first, then TP at recall 1/2
    0.25
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np

from taskology.eval3d.records import FrameDetections
from taskology.geometry.box_iou import box_iou_3d, box_iou_bev
from taskology.runtime import numba_single_thread

#: Default IoU thresholds per class (KITTI's hard and easy overlaps for cars and pedestrians).
DEFAULT_AP_THRESHOLDS: Mapping[str, tuple[float, ...]] = MappingProxyType(
    {"vehicle": (0.7, 0.5), "pedestrian": (0.5, 0.25)})
#: Classes evaluated by default.
DEFAULT_CLASSES = ("vehicle", "pedestrian")

Frame = tuple[np.ndarray, np.ndarray, np.ndarray]


class _Prepared:
    """IoU matrices and matching orders of a set of frames for one mode, reusable across thresholds."""

    def __init__(self, frames: Sequence[Frame], mode: str) -> None:
        if mode not in ("bev", "3d"):
            raise ValueError(f"average_precision: expected mode 'bev' or '3d', found {mode!r}")
        iou_fn = box_iou_bev if mode == "bev" else box_iou_3d
        self.ious: list[np.ndarray] = []
        self.orders: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        self.num_gt = 0
        for k, (pred_boxes, pred_scores, gt_boxes) in enumerate(frames):
            sc = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
            pred = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 7)
            gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 7)
            if sc.shape[0] != pred.shape[0]:
                raise ValueError(f"average_precision: frame {k} has {pred.shape[0]} predicted boxes but "
                                 f"{sc.shape[0]} scores")
            if np.isnan(sc).any():
                raise ValueError(f"average_precision: frame {k} has NaN scores")
            self.num_gt += gt.shape[0]
            if pred.shape[0] == 0:
                continue
            with numba_single_thread():
                self.ious.append(iou_fn(pred, gt))
            self.orders.append(np.argsort(-sc, kind="stable"))
            scores.append(sc)
        self.scores = np.concatenate(scores) if scores else np.zeros(0)

    def true_positives(self, iou_threshold: float) -> np.ndarray:
        """(P,) bool: which prediction (in concatenated frame order) is a true positive at the threshold."""
        out = []
        for iou, order in zip(self.ious, self.orders):
            tp = np.zeros(iou.shape[0], dtype=bool)
            if iou.shape[1]:
                best = np.where(iou >= iou_threshold, iou, -1.0)  # candidate pairs; a matched GT column is cleared
                for i in order[(best[order] >= 0.0).any(axis=1)]:  # predictions with a candidate at all
                    j = int(np.argmax(best[i]))
                    if best[i, j] >= 0.0:
                        tp[i] = True
                        best[:, j] = -1.0
            out.append(tp)
        return np.concatenate(out) if out else np.zeros(0, dtype=bool)

    def average_precision(self, iou_threshold: float, recall_points: int) -> float:
        if not 0.0 < float(iou_threshold) <= 1.0:
            raise ValueError(f"average_precision: expected iou_threshold in (0, 1], found {iou_threshold}")
        if int(recall_points) < 1:
            raise ValueError(f"average_precision: expected recall_points >= 1, found {recall_points}")
        if self.num_gt == 0:
            return math.nan
        if self.scores.size == 0:
            return 0.0
        return _ap_from_curve(self.scores, self.true_positives(float(iou_threshold)), self.num_gt,
                              int(recall_points))


def _ap_from_curve(scores: np.ndarray, tp: np.ndarray, num_gt: int, recall_points: int) -> float:
    """AP from per-prediction scores and TP flags (steps 2-4 of the module docstring)."""
    levels, inverse = np.unique(scores, return_inverse=True)  # ascending distinct scores
    tp_at = np.bincount(inverse[tp], minlength=len(levels))[::-1].cumsum()  # TP(s), descending s
    n_at = np.bincount(inverse, minlength=len(levels))[::-1].cumsum()  # TP(s) + FP(s)
    precision = np.maximum.accumulate((tp_at / n_at)[::-1])[::-1]  # best precision at recall >= this point's
    k = np.arange(1, recall_points + 1, dtype=np.int64)
    first = np.searchsorted(tp_at * recall_points, k * num_gt, side="left")  # first point with recall >= k/R
    reached = first < len(tp_at)
    return float(np.where(reached, precision[np.minimum(first, len(tp_at) - 1)], 0.0).sum() / recall_points)


def average_precision(frames: Sequence[Frame], iou_threshold: float, mode: str = "bev",
                      recall_points: int = 40) -> float:
    """KITTI-style average precision of one class (see the module docstring for the definition and tie rule).

    Args:
        frames: per frame ``(pred_boxes (n, 7), pred_scores (n,), gt_boxes (m, 7))``, float64 boxes
            ``(x, y, z, l, w, h, yaw)`` in the ego frame, all of one class.
        iou_threshold: minimum IoU of a true positive, in (0, 1].
        mode: ``"bev"`` (footprint IoU) or ``"3d"``.
        recall_points: ``R``; AP averages interpolated precision at recalls ``1/R, 2/R, ..., 1``.

    Returns:
        AP in [0, 1]; ``nan`` when there is no ground truth, ``0.0`` when there is but no prediction.

    Example:
        >>> box = np.array([[0.0, 0, 0, 4, 2, 1.5, 0]])
        >>> average_precision([(box, np.array([0.5]), box), (np.zeros((0, 7)), np.zeros(0), box)], 0.7)
        0.5
    """
    return _Prepared(frames, mode).average_precision(iou_threshold, recall_points)


def evaluate_detections(records: Sequence[tuple[FrameDetections, FrameDetections]],
                        classes: Sequence[str] = DEFAULT_CLASSES,
                        thresholds: Mapping[str, Sequence[float]] | None = None,
                        recall_points: int = 40) -> dict[str, float]:
    """AP in bird's-eye view and 3D per class and IoU threshold, over frames of any number of sequences.

    Args:
        records: per frame ``(predictions, ground_truth)``; ground-truth scores, track ids and motion are ignored.
        classes: class names to evaluate (each needs an entry in ``thresholds``).
        thresholds: class name -> IoU thresholds; default :data:`DEFAULT_AP_THRESHOLDS`.
        recall_points: see :func:`average_precision`.

    Returns:
        ``"<class>/ap_bev@<t>"`` and ``"<class>/ap_3d@<t>"`` for every threshold ``t`` (written with ``:g``, e.g.
        ``vehicle/ap_3d@0.7``), plus ``"<class>/num_gt"`` and ``"<class>/num_pred"`` (box counts).

    Example:
        >>> gt = FrameDetections(np.array([[8.0, 0, 0.8, 4, 2, 1.6, 0]]), np.array(["vehicle"]))
        >>> out = evaluate_detections([(gt, gt)], classes=["vehicle"])
        >>> out["vehicle/ap_3d@0.7"], out["vehicle/num_gt"]
        (1.0, 1)
    """
    thresholds = DEFAULT_AP_THRESHOLDS if thresholds is None else thresholds
    missing = [c for c in classes if c not in thresholds]
    if missing:
        raise ValueError(f"evaluate_detections: no IoU thresholds for classes {missing}")
    out: dict[str, float] = {}
    for name in classes:
        frames = []
        for pred, gt in records:
            keep = pred.classes == name
            frames.append((pred.boxes[keep], pred.scores[keep], gt.boxes[gt.classes == name]))
        out[f"{name}/num_gt"] = sum(len(f[2]) for f in frames)
        out[f"{name}/num_pred"] = sum(len(f[0]) for f in frames)
        for mode in ("bev", "3d"):
            prepared = _Prepared(frames, mode)
            for t in thresholds[name]:
                out[f"{name}/ap_{mode}@{t:g}"] = prepared.average_precision(t, recall_points)
    return out


__all__ = ["DEFAULT_AP_THRESHOLDS", "DEFAULT_CLASSES", "average_precision", "evaluate_detections"]
