"""Rotated BEV/3D IoU and rotated NMS: kernel vs pure-Python reference vs shapely, guards, hand cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from taskology.errors import TaskologyError
from taskology.geometry.box_iou import box_iou_3d, box_iou_bev, box_iou_reference, nms_bev, nms_bev_reference
from taskology.geometry.boxes import GeometryInputError, box_corners


def random_boxes(rng: np.random.Generator, n: int, span: float, origin: float = 0.0,
                 size: tuple[float, float] = (0.5, 5.0)) -> np.ndarray:
    boxes = np.empty((n, 7))
    boxes[:, :2] = origin + rng.uniform(0, span, (n, 2))
    boxes[:, 2] = rng.uniform(-1, 1, n)
    boxes[:, 3:6] = rng.uniform(*size, (n, 3))
    boxes[:, 6] = rng.uniform(-2 * np.pi, 2 * np.pi, n)
    return boxes


def shapely_iou_bev(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Independent oracle: shapely polygons of the BEV corners, re-centred on the scene's mean centre."""
    origin = np.concatenate([a[:, :2], b[:, :2]]).mean(axis=0)
    ac, bc = a.copy(), b.copy()
    ac[:, :2] -= origin
    bc[:, :2] -= origin
    pa = shapely.polygons(box_corners(ac)[:, :4, :2])
    pb = shapely.polygons(box_corners(bc)[:, :4, :2])
    inter = shapely.area(shapely.intersection(pa[:, None], pb[None, :]))
    union = shapely.area(pa)[:, None] + shapely.area(pb)[None, :] - inter
    return inter / union


def shapely_iou_3d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    bev = shapely_iou_bev(a, b)
    area_a, area_b = a[:, 3] * a[:, 4], b[:, 3] * b[:, 4]
    inter_bev = bev * (area_a[:, None] + area_b[None, :]) / (1 + bev)
    lo = np.maximum(a[:, None, 2] - a[:, None, 5] / 2, b[None, :, 2] - b[None, :, 5] / 2)
    hi = np.minimum(a[:, None, 2] + a[:, None, 5] / 2, b[None, :, 2] + b[None, :, 5] / 2)
    inter = inter_bev * np.clip(hi - lo, 0, None)
    return inter / ((area_a * a[:, 5])[:, None] + (area_b * b[:, 5])[None, :] - inter)


@pytest.mark.parametrize("span", [3.0, 10.0, 40.0])  # heavy overlaps ... sparse
def test_kernel_matches_reference_and_shapely(span: float) -> None:
    rng = np.random.default_rng(int(span))
    a, b = random_boxes(rng, 40, span), random_boxes(rng, 35, span)
    got = box_iou_bev(a, b)
    assert got.shape == (40, 35) and got.dtype == np.float64
    np.testing.assert_allclose(got, box_iou_reference(a, b), rtol=0, atol=1e-9)
    np.testing.assert_allclose(got, shapely_iou_bev(a, b), rtol=0, atol=1e-9)
    got3 = box_iou_3d(a, b)
    np.testing.assert_allclose(got3, box_iou_reference(a, b, use_3d=True), rtol=0, atol=1e-9)
    np.testing.assert_allclose(got3, shapely_iou_3d(a, b), rtol=0, atol=1e-9)
    if span <= 10:
        assert (got > 0.3).sum() > 10  # the scene really has heavy overlaps
    assert ((got >= 0) & (got <= 1)).all() and ((got3 >= 0) & (got3 <= 1)).all()


def test_containment_and_45_degree_crossings_match_shapely() -> None:
    rng = np.random.default_rng(7)
    big = random_boxes(rng, 20, 0.0, size=(6.0, 8.0))
    small = big.copy()
    small[:, 3:5] = rng.uniform(0.5, 2.0, (20, 2))  # inside: half-diagonal <= 1.42 < 3
    small[:, :2] += rng.uniform(-0.5, 0.5, (20, 2))
    small[:, 6] = rng.uniform(-np.pi, np.pi, 20)
    crossing = big.copy()
    crossing[:, 6] += np.pi / 4
    crossing[:, 3] *= 1.7  # long thin boxes crossing the big ones at 45 degrees
    crossing[:, 4] *= 0.3
    for other in (small, crossing):
        got = np.diag(box_iou_bev(big, other))
        np.testing.assert_allclose(got, np.diag(shapely_iou_bev(big, other)), rtol=0, atol=1e-9)
    expected_small = small[:, 3] * small[:, 4] / (big[:, 3] * big[:, 4])
    np.testing.assert_allclose(np.diag(box_iou_bev(big, small)), expected_small, rtol=1e-14, atol=0)


def test_large_coordinates_match_recentred_shapely() -> None:
    rng = np.random.default_rng(3)
    local_a, local_b = random_boxes(rng, 30, 8.0), random_boxes(rng, 30, 8.0)
    far_a, far_b = local_a.copy(), local_b.copy()
    shift = np.array([4.1e5, -3.9e5])  # UTM-like coordinates, exactly representable shift
    far_a[:, :2] += shift
    far_b[:, :2] += shift
    expected = shapely_iou_bev(local_a, local_b)
    assert (expected > 0).sum() > 50
    np.testing.assert_allclose(box_iou_bev(far_a, far_b), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(box_iou_3d(far_a, far_b), shapely_iou_3d(local_a, local_b), rtol=0, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-3, 3), min_size=2, max_size=2), st.floats(-7, 7), st.floats(-7, 7),
       st.lists(st.floats(0.05, 6), min_size=4, max_size=4), st.sampled_from([0.0, 1e3, 4e5]))
def test_property_pair_matches_shapely(offset: list[float], yaw_a: float, yaw_b: float, sizes: list[float],
                                       origin: float) -> None:
    a = np.array([[origin, -origin, 0.0, sizes[0], sizes[1], 1.0, yaw_a]])
    b = np.array([[origin + offset[0], -origin + offset[1], 0.3, sizes[2], sizes[3], 1.0, yaw_b]])
    got = box_iou_bev(a, b)[0, 0]
    assert 0.0 <= got <= 1.0
    assert got == pytest.approx(shapely_iou_bev(a, b)[0, 0], abs=1e-9)
    assert box_iou_bev(b, a)[0, 0] == pytest.approx(got, abs=1e-12)  # symmetric


def test_hand_worked_cases() -> None:
    unit = np.array([[0.0, 0, 0, 1, 1, 1, 0]])
    shifted = unit + [0.5, 0, 0, 0, 0, 0, 0]
    assert box_iou_bev(unit, shifted)[0, 0] == pytest.approx(1 / 3, abs=1e-15)  # 0.5 / 1.5
    square = np.array([[2.0, -1, 0, 3, 3, 2, 0.3]])
    assert box_iou_bev(square, square + [0, 0, 0, 0, 0, 0, np.pi / 2])[0, 0] == pytest.approx(1.0, abs=1e-15)
    # 2x2 square vs itself at 45 degrees: regular octagon of area 8 (sqrt 2 - 1); IoU = 1 / sqrt 2.
    two = np.array([[0.0, 0, 0, 2, 2, 2, 0]])
    assert box_iou_bev(two, two + [0, 0, 0, 0, 0, 0, np.pi / 4])[0, 0] == pytest.approx(1 / math.sqrt(2), abs=1e-15)
    # 3D: same footprint, half the height overlapping: 4 / (8 + 8 - 4).
    assert box_iou_3d(two, two + [0, 0, 1, 0, 0, 0, 0])[0, 0] == pytest.approx(1 / 3, abs=1e-15)
    # A 4x2 box and the same box turned 90 degrees: a 2x2 cross-over; IoU = 4 / (8 + 8 - 4).
    car = np.array([[0.0, 0, 0, 4, 2, 1, 0]])
    assert box_iou_bev(car, car + [0, 0, 0, 0, 0, 0, np.pi / 2])[0, 0] == pytest.approx(1 / 3, abs=1e-15)


def test_exact_guards_identical_flipped_zero_touching() -> None:
    rng = np.random.default_rng(11)
    for origin in (0.0, 4e5):
        boxes = random_boxes(rng, 25, 20.0, origin=origin)
        assert (np.diag(box_iou_bev(boxes, boxes)) == 1.0).all()
        assert (np.diag(box_iou_3d(boxes, boxes)) == 1.0).all()
        flipped = boxes.copy()
        flipped[:, 6] += np.pi
        assert (np.diag(box_iou_bev(boxes, flipped)) == 1.0).all()
        assert (np.diag(box_iou_3d(boxes, flipped)) == 1.0).all()
        for column in (3, 4):
            zero = boxes.copy()
            zero[:, column] = 0.0
            assert (box_iou_bev(zero, boxes)[np.arange(25), np.arange(25)] == 0.0).all()
            assert (box_iou_bev(zero, zero) == 0.0).all()
        flat = boxes.copy()
        flat[:, 5] = 0.0
        assert (np.diag(box_iou_3d(flat, boxes)) == 0.0).all()
        assert (np.diag(box_iou_bev(flat, boxes)) == 1.0).all()  # the footprint is still there
    # Touching along an edge, at a corner, and on top (3D) -> exactly 0.
    car = np.array([[0.0, 0, 0, 4, 2, 1.5, 0]])
    for step in ([4, 0, 0], [0, 2, 0], [4, 2, 0], [-4, 0, 0]):
        assert box_iou_bev(car, car + [*step, 0, 0, 0, 0])[0, 0] == 0.0
    assert box_iou_3d(car, car + [0, 0, 1.5, 0, 0, 0, 0])[0, 0] == 0.0
    # Rotated boxes sharing an edge: the overlap is only rounding of the centres.
    yaw = 0.7
    rotated = np.array([[3.0, -2, 0, 4, 2, 1, yaw]])
    neighbour = rotated + [4 * math.cos(yaw), 4 * math.sin(yaw), 0, 0, 0, 0, 0]
    assert box_iou_bev(rotated, neighbour)[0, 0] == 0.0


def test_outputs_stay_in_unit_interval_for_near_degenerate_boxes() -> None:
    rng = np.random.default_rng(5)
    a = random_boxes(rng, 50, 2.0, size=(1e-9, 3.0))
    b = a + rng.normal(0, 1e-13, a.shape) * [1, 1, 1, 0, 0, 0, 1]
    for got in (box_iou_bev(a, b), box_iou_3d(a, b)):
        assert np.isfinite(got).all() and (got >= 0).all() and (got <= 1).all()
    assert np.diag(box_iou_bev(a, b)) == pytest.approx(np.ones(50), abs=1e-6)


def test_empty_inputs_and_validation() -> None:
    assert box_iou_bev(np.zeros((0, 7)), np.zeros((3, 7))).shape == (0, 3)
    assert box_iou_3d(np.zeros((2, 7)), np.zeros((0, 7))).shape == (2, 0)
    with pytest.raises(GeometryInputError, match=r"b: expected an \(N, 7\) array"):
        box_iou_bev(np.zeros((2, 7)), np.zeros((2, 6)))
    with pytest.raises(ValueError, match="sizes l, w, h >= 0"):
        box_iou_3d(np.array([[0, 0, 0, -1.0, 1, 1, 0]]), np.zeros((1, 7)))
    with pytest.raises(TaskologyError, match="finite"):
        box_iou_bev(np.full((1, 7), np.nan), np.zeros((1, 7)))


def test_nms_matches_pure_python_greedy() -> None:
    rng = np.random.default_rng(2)
    for trial in range(3):
        boxes = random_boxes(rng, 50, 20.0, size=(1.0, 4.0))
        scores = np.round(rng.uniform(0, 1, 50), 1)  # many ties: order must be stable
        reference_iou = box_iou_reference(boxes, boxes)
        for threshold in (0.0, 0.1, 0.5):
            got = nms_bev(boxes, scores, threshold)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, nms_bev_reference(boxes, scores, threshold, reference_iou))
            kept_iou = box_iou_bev(boxes[got], boxes[got])
            assert (kept_iou[~np.eye(len(got), dtype=bool)] <= threshold).all()


def test_nms_hand_case_and_validation() -> None:
    boxes = np.array([[0.0, 0, 0, 4, 2, 1, 0], [0.2, 0, 0, 4, 2, 1, np.pi], [9, 0, 0, 4, 2, 1, 0],
                      [0.0, 0, 0, 4, 2, 1, 0]])
    # box 3 ties with box 0 and is its exact duplicate: the lower index wins.
    np.testing.assert_array_equal(nms_bev(boxes, np.array([0.8, 0.9, 0.7, 0.8]), 0.5), [1, 2])
    np.testing.assert_array_equal(nms_bev(boxes, np.array([0.8, 0.1, 0.7, 0.8]), 0.5), [0, 2])
    np.testing.assert_array_equal(nms_bev(boxes, np.array([0.8, 0.1, 0.7, 0.8]), 1.0), [0, 3, 2, 1])
    assert nms_bev(np.zeros((0, 7)), np.zeros(0), 0.5).shape == (0,)
    with pytest.raises(GeometryInputError, match="scores of shape"):
        nms_bev(boxes, np.zeros(3), 0.5)
    with pytest.raises(GeometryInputError, match="iou_threshold"):
        nms_bev(boxes, np.zeros(4), 1.5)
