"""One-to-one matching of two box sets by rotated IoU (Hungarian assignment), e.g. detections to tracks.

The cost matrix is built here from :func:`taskology.geometry.box_iou.box_iou_bev` /
:func:`~taskology.geometry.box_iou.box_iou_3d` (``motmetrics.distances.iou_matrix`` crashes on
NumPy 2) and solved with ``scipy.optimize.linear_sum_assignment`` on ``1 - IoU``.

Example:
    >>> import numpy as np
    >>> a = np.array([[0.0, 0, 0, 4, 2, 1, 0], [10, 0, 0, 4, 2, 1, 0]])
    >>> match_boxes(a, a[::-1] + [0.3, 0, 0, 0, 0, 0, 0], 0.5).tolist()
    [[0, 1], [1, 0]]
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from taskology.geometry.box_iou import box_iou_3d, box_iou_bev
from taskology.geometry.boxes import GeometryInputError


def match_boxes(a: np.ndarray, b: np.ndarray, iou_threshold: float, mode: str = "bev") -> np.ndarray:
    """Pairs ``(i, j)`` of a one-to-one assignment maximising total IoU, keeping pairs with IoU >= threshold.

    The assignment minimises ``sum(1 - IoU)`` over all pairs (so it maximises the summed IoU); pairs
    whose IoU is below ``iou_threshold`` are then dropped (they are unmatched). Boxes that do not
    overlap are never matched, even with ``iou_threshold = 0``.

    Args:
        a: (N, 7) float64 boxes.
        b: (M, 7) float64 boxes, same frame.
        iou_threshold: minimum IoU of a kept pair, in [0, 1].
        mode: ``"bev"`` or ``"3d"`` IoU.

    Returns:
        (K, 2) int64 pairs ``[i, j]`` sorted by ``i``.

    Example:
        >>> match_boxes(np.zeros((0, 7)), np.zeros((3, 7)), 0.1).shape
        (0, 2)
    """
    if mode not in ("bev", "3d"):
        raise GeometryInputError(f"match_boxes: expected mode 'bev' or '3d', found {mode!r}")
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise GeometryInputError(f"match_boxes: expected iou_threshold in [0, 1], found {iou_threshold}")
    iou = box_iou_bev(a, b) if mode == "bev" else box_iou_3d(a, b)
    if iou.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    rows, cols = linear_sum_assignment(1.0 - iou)
    keep = iou[rows, cols] >= iou_threshold
    if iou_threshold == 0.0:
        keep &= iou[rows, cols] > 0.0
    return np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64)
