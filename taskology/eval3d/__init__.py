"""Evaluation of 3D detection and tracking: KITTI-style AP (R40, BEV and 3D), CLEAR MOT / IDF1, box-motion error,
and the on-disk format of a run's detections and tracks (one NPZ file per sequence).

Boxes are (N, 7) float64 ``(x, y, z, l, w, h, yaw)`` in the ego frame (docs/conventions.md); classes are names
(``"vehicle"``, ``"pedestrian"``). IoU comes from :func:`taskology.geometry.box_iou_bev` /
:func:`taskology.geometry.box_iou_3d`. Modules: :mod:`.ap` (average precision), :mod:`.mot` (tracking metrics
with ``motmetrics``, imported on first use), :mod:`.records` (:class:`FrameDetections`, sequence files).

Example:
    >>> import numpy as np
    >>> from taskology.eval3d import FrameDetections, evaluate_detections
    >>> gt = FrameDetections(np.array([[8.0, 0, 0.8, 4, 2, 1.6, 0]]), np.array(["vehicle"]))
    >>> evaluate_detections([(gt, gt)], classes=["vehicle"])["vehicle/ap_bev@0.7"]
    1.0
"""
from __future__ import annotations

from taskology.eval3d.ap import DEFAULT_AP_THRESHOLDS, DEFAULT_CLASSES, average_precision, evaluate_detections
from taskology.eval3d.mot import DEFAULT_TRACKING_IOU, TRACKING_METRICS, box_motion_error, evaluate_tracking
from taskology.eval3d.records import ARRAY_DTYPES, FrameDetections, read_sequence, sequence_path, write_sequence

__all__ = ["ARRAY_DTYPES", "DEFAULT_AP_THRESHOLDS", "DEFAULT_CLASSES", "DEFAULT_TRACKING_IOU", "TRACKING_METRICS",
           "FrameDetections", "average_precision", "box_motion_error", "evaluate_detections", "evaluate_tracking",
           "read_sequence", "sequence_path", "write_sequence"]
