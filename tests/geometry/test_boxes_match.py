"""Hungarian matching of box sets by rotated IoU: brute force over assignments, thresholds, edge cases."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from taskology.geometry.box_iou import box_iou_3d, box_iou_bev
from taskology.geometry.boxes import GeometryInputError
from taskology.geometry.boxes_match import match_boxes


def test_matches_brute_force_best_assignment() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = np.column_stack([rng.uniform(0, 6, (5, 2)), np.zeros(5), rng.uniform(1, 4, (5, 3)), rng.uniform(-3, 3, 5)])
        b = a[rng.permutation(5)[:4]] + rng.normal(0, 0.5, (4, 7)) * [1, 1, 0.2, 0.2, 0.2, 0.2, 0.3]
        iou = box_iou_bev(a, b)
        best = max(sum(iou[i, j] for j, i in enumerate(perm)) for perm in itertools.permutations(range(5), 4))
        pairs = match_boxes(a, b, 0.0)
        assert pairs.dtype == np.int64 and (np.diff(pairs[:, 0]) > 0).all()
        assert len(set(pairs[:, 1])) == len(pairs)
        assert iou[pairs[:, 0], pairs[:, 1]].sum() == pytest.approx(best, abs=1e-12)
        strict = match_boxes(a, b, 0.4)
        assert (iou[strict[:, 0], strict[:, 1]] >= 0.4).all()
        assert {tuple(p) for p in strict} <= {tuple(p) for p in pairs}


def test_hand_case_threshold_and_modes() -> None:
    a = np.array([[0.0, 0, 0, 4, 2, 2, 0], [10, 0, 0, 4, 2, 2, 0], [30, 0, 0, 4, 2, 2, 0]])
    b = np.array([[10.4, 0, 0, 4, 2, 2, 0], [0.0, 0, 1.5, 4, 2, 2, 0], [50, 0, 0, 4, 2, 2, 0]])
    np.testing.assert_array_equal(match_boxes(a, b, 0.5), [[0, 1], [1, 0]])  # far boxes stay unmatched
    # In 3D b[1] overlaps a[0] only by a quarter of the height: IoU 0.25 / 1.75.
    assert box_iou_3d(a[:1], b[1:2])[0, 0] == pytest.approx(1 / 7)
    np.testing.assert_array_equal(match_boxes(a, b, 0.5, mode="3d"), [[1, 0]])
    assert match_boxes(np.zeros((0, 7)), b, 0.1).shape == (0, 2)
    with pytest.raises(GeometryInputError, match="mode"):
        match_boxes(a, b, 0.5, mode="2d")
    with pytest.raises(GeometryInputError, match="iou_threshold"):
        match_boxes(a, b, -0.1)
