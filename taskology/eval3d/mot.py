"""Multi-object tracking metrics (CLEAR MOT, IDF1) with ``motmetrics``, and the error of predicted box motion.

**Tracking** (:func:`evaluate_tracking`), per class: one ``motmetrics.MOTAccumulator(auto_id=True)`` per sequence,
fed frame by frame with the ground-truth track ids, the predicted track ids and the distance matrix
``1 - IoU_bev`` (:func:`taskology.geometry.box_iou_bev`; ``motmetrics.distances.iou_matrix`` crashes on NumPy 2),
``nan`` (no match possible) where the IoU is below the class's threshold. The default threshold of a class is the
lower of its AP thresholds (:data:`DEFAULT_TRACKING_IOU`: vehicle 0.5, pedestrian 0.25). Only predictions with a
track id (``>= 0``) and a score ``>= score_threshold`` enter tracking. The metrics are motmetrics' over all
sequences together (``compute_many(..., generate_overall=True)``, the ``OVERALL`` row):

- ``MOTA = 1 - (FN + FP + IDSW) / num_objects`` (``num_objects``: ground-truth boxes over all frames); ``nan``
  when there is no ground truth;
- ``IDF1 = 2 IDTP / (num_objects + num_predictions)`` with the identity-optimal track assignment;
- ``id_switches``: frames where a ground-truth track is matched to a different predicted track than at its last
  match.

**Motion** (:func:`box_motion_error`): for predictions matched one-to-one to ground truth at frame ``t``
(Hungarian, :func:`taskology.geometry.match_boxes`, BEV IoU ``>= iou_threshold``), the Euclidean distance (metres,
x and y) between the predicted displacement ``motion[:, :2]`` and the true one, ``box_{t+1} - box_t`` of the same
ground-truth track, both in the ego frame of ``t``.

Example:
    >>> import numpy as np
    >>> from taskology.eval3d.records import FrameDetections
    >>> box = np.array([[10.0, 0, 0.8, 4, 2, 1.6, 0]])
    >>> gt = FrameDetections(box, np.array(["vehicle"]), track_ids=np.array([7]))
    >>> pred = FrameDetections(box, np.array(["vehicle"]), np.array([0.9]), track_ids=np.array([3]))
    >>> out = evaluate_tracking({"seq": [(pred, gt), (pred, gt)]}, classes=["vehicle"])
    >>> out["vehicle/mota"], out["vehicle/idf1"], out["vehicle/id_switches"], out["vehicle/num_objects"]
    (1.0, 1.0, 0, 2)
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from taskology.eval3d.ap import DEFAULT_AP_THRESHOLDS, DEFAULT_CLASSES
from taskology.eval3d.records import FrameDetections
from taskology.geometry.box_iou import box_iou_bev
from taskology.geometry.boxes_match import match_boxes
from taskology.runtime import numba_single_thread

#: Default BEV IoU threshold of a tracking match per class: the lower AP threshold of the class.
DEFAULT_TRACKING_IOU: Mapping[str, float] = MappingProxyType({c: min(t) for c, t in DEFAULT_AP_THRESHOLDS.items()})

#: motmetrics metric -> key suffix in the result of :func:`evaluate_tracking`.
TRACKING_METRICS: Mapping[str, str] = MappingProxyType({
    "mota": "mota", "idf1": "idf1", "num_switches": "id_switches", "num_objects": "num_objects",
    "num_false_positives": "false_positives", "num_misses": "misses", "num_predictions": "num_predictions",
})

Sequences = Mapping[str, Sequence[tuple[FrameDetections, FrameDetections]]] | Sequence[
    Sequence[tuple[FrameDetections, FrameDetections]]]


def _tracking_inputs(pred: FrameDetections, gt: FrameDetections, name: str, iou_threshold: float,
                     score_threshold: float, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground-truth ids, predicted ids and the (gt, pred) distance matrix of one frame and class."""
    g = gt.select(gt.classes == name)
    p = pred.select((pred.classes == name) & (pred.scores >= score_threshold) & (pred.track_ids >= 0))
    if (g.track_ids < 0).any():
        raise ValueError(f"evaluate_tracking: {where}: every ground-truth box needs a track id >= 0")
    for ids, what in ((g.track_ids, "ground-truth"), (p.track_ids, "predicted")):
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"evaluate_tracking: {where}: {what} track ids of class {name!r} repeat in one frame")
    with numba_single_thread():
        iou = box_iou_bev(g.boxes, p.boxes)
    dist = np.where(iou >= iou_threshold, 1.0 - iou, np.nan)
    return g.track_ids, p.track_ids, dist


def evaluate_tracking(sequences: Sequences, classes: Sequence[str] = DEFAULT_CLASSES,
                      iou_thresholds: Mapping[str, float] | None = None,
                      score_threshold: float = 0.3) -> dict[str, float]:
    """CLEAR MOT and IDF1 per class over all sequences (see the module docstring).

    Args:
        sequences: sequence id -> frames (or a list of sequences), each frame ``(predictions, ground_truth)`` as
            :class:`FrameDetections`; ground truth needs track ids ``>= 0``, predictions with track id ``-1``
            are ignored. Boxes of both in the ego frame of that frame.
        classes: class names to evaluate.
        iou_thresholds: class -> minimum BEV IoU of a match; default :data:`DEFAULT_TRACKING_IOU`.
        score_threshold: predictions scored below it do not enter tracking.

    Returns:
        ``"<class>/mota"``, ``"<class>/idf1"``, ``"<class>/id_switches"``, ``"<class>/num_objects"``,
        ``"<class>/false_positives"``, ``"<class>/misses"``, ``"<class>/num_predictions"``.
    """
    import motmetrics as mm  # lazy: pandas and motmetrics cost ~0.6 s to import

    iou_thresholds = DEFAULT_TRACKING_IOU if iou_thresholds is None else iou_thresholds
    missing = [c for c in classes if c not in iou_thresholds]
    if missing:
        raise ValueError(f"evaluate_tracking: no IoU threshold for classes {missing}")
    named = dict(sequences) if isinstance(sequences, Mapping) else {str(k): s for k, s in enumerate(sequences)}
    out: dict[str, float] = {}
    host = mm.metrics.create()
    for name in classes:
        accumulators: list[Any] = []
        names: list[str] = []
        for seq_id, frames in named.items():
            if not len(frames):
                continue
            acc = mm.MOTAccumulator(auto_id=True)
            for f, (pred, gt) in enumerate(frames):
                gt_ids, pred_ids, dist = _tracking_inputs(pred, gt, name, float(iou_thresholds[name]),
                                                          float(score_threshold), f"sequence {seq_id!r} frame {f}")
                acc.update(gt_ids.tolist(), pred_ids.tolist(), dist)
            accumulators.append(acc)
            names.append(str(seq_id))
        if not accumulators:
            summary: dict[str, Any] = dict.fromkeys(TRACKING_METRICS, 0)
            summary.update(mota=math.nan, idf1=math.nan)
        else:
            table = host.compute_many(accumulators, metrics=list(TRACKING_METRICS), names=names,
                                      generate_overall=True)
            summary = table.loc["OVERALL"].to_dict()
        for metric, key in TRACKING_METRICS.items():
            value = summary[metric]
            out[f"{name}/{key}"] = int(value) if metric.startswith("num_") else float(value)
        if out[f"{name}/num_objects"] == 0:
            out[f"{name}/mota"] = math.nan
    return out


def box_motion_error(samples: Iterable[tuple[FrameDetections, FrameDetections, FrameDetections]],
                     classes: Sequence[str] = DEFAULT_CLASSES, iou_threshold: float = 0.5,
                     score_threshold: float = 0.3) -> dict[str, float]:
    """Mean BEV error (metres) of predicted object displacements, per class (see the module docstring).

    Args:
        samples: per frame pair ``(t, t+1)``: ``(pred_t, gt_t, gt_next)``. ``pred_t``: predictions at ``t``
            with ``motion`` (n, 3) ``(dx, dy, dyaw)`` to ``t+1`` in the ego frame of ``t`` (rows with ``nan``
            motion are skipped); ``gt_t``: ground truth at ``t`` with track ids; ``gt_next``: ground truth at
            ``t+1`` **already expressed in the ego frame of t**, with the same track ids.
        classes: class names.
        iou_threshold: minimum BEV IoU of a prediction / ground-truth match at ``t``.
        score_threshold: predictions scored below it are not matched.

    Returns:
        ``"<class>/motion_error_m"``: mean of ``|motion[:2] - (gt_next.xy - gt_t.xy)|`` over matched predictions
        whose ground-truth track exists at ``t+1`` (``nan`` if there is none), and ``"<class>/motion_pairs"``:
        their number.

    Example:
        >>> box = np.array([[10.0, 0, 0.8, 4, 2, 1.6, 0]])
        >>> gt_t = FrameDetections(box, ["vehicle"], track_ids=[4])
        >>> gt_next = FrameDetections(box + [1.0, 0, 0, 0, 0, 0, 0], ["vehicle"], track_ids=[4])
        >>> pred = FrameDetections(box, ["vehicle"], [0.9], motion=[[1.0, 0.5, 0.0]])
        >>> box_motion_error([(pred, gt_t, gt_next)], classes=["vehicle"])
        {'vehicle/motion_error_m': 0.5, 'vehicle/motion_pairs': 1}
    """
    errors: dict[str, list[np.ndarray]] = {c: [] for c in classes}
    for pred, gt_t, gt_next in samples:
        for name in classes:
            p = pred.select((pred.classes == name) & (pred.scores >= score_threshold))
            g = gt_t.select(gt_t.classes == name)
            n = gt_next.select(gt_next.classes == name)
            if (g.track_ids < 0).any() or (n.track_ids < 0).any():
                raise ValueError("box_motion_error: every ground-truth box needs a track id >= 0")
            with numba_single_thread():
                pairs = match_boxes(p.boxes, g.boxes, iou_threshold, mode="bev")
            if not len(pairs):
                continue
            next_row = {int(t): k for k, t in enumerate(n.track_ids)}
            rows = [(i, j, next_row[int(g.track_ids[j])]) for i, j in pairs.tolist()
                    if int(g.track_ids[j]) in next_row and np.isfinite(p.motion[i, :2]).all()]
            if rows:
                i, j, k = (np.array(v) for v in zip(*rows))
                true = n.boxes[k, :2] - g.boxes[j, :2]
                errors[name].append(np.linalg.norm(p.motion[i, :2].astype(np.float64) - true, axis=1))
    out: dict[str, float] = {}
    for name in classes:
        values = np.concatenate(errors[name]) if errors[name] else np.zeros(0)
        out[f"{name}/motion_error_m"] = float(values.mean()) if values.size else math.nan
        out[f"{name}/motion_pairs"] = int(values.size)
    return out


__all__ = ["DEFAULT_TRACKING_IOU", "TRACKING_METRICS", "box_motion_error", "evaluate_tracking"]
