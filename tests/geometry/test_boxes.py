"""Box corners, transforms, box motion and points-in-boxes (kernel vs NumPy reference, faces, overlaps)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

from taskology.errors import TaskologyError
from taskology.geometry.boxes import (GeometryInputError, box_corners, box_motion, box_poses, points_in_boxes,
                                      points_in_boxes_mask, points_in_boxes_reference, transform_boxes)


def random_boxes(rng: np.random.Generator, n: int, span: float, origin: float = 0.0) -> np.ndarray:
    boxes = np.empty((n, 7))
    boxes[:, :3] = origin + rng.uniform(-span, span, (n, 3))
    boxes[:, 3:6] = rng.uniform(0.5, 5.0, (n, 3))
    boxes[:, 6] = rng.uniform(-np.pi, np.pi, n)
    return boxes


def apply(dst_from_src: np.ndarray, points: np.ndarray) -> np.ndarray:
    """p_dst = R p_src + t for (..., 3) points (independent of the code under test)."""
    return points @ dst_from_src[:3, :3].T + dst_from_src[:3, 3]


def rotation_z(theta: float, translation: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    mat = np.eye(4)
    mat[:2, :2] = [[c, -s], [s, c]]
    mat[:3, 3] = translation
    return mat


def same_yaw(a: np.ndarray, b: np.ndarray, atol: float = 1e-12) -> bool:
    return bool(np.all(np.abs(np.angle(np.exp(1j * (a - b)))) <= atol))


# ---------------------------------------------------------------------------------------- corners


def test_corners_hand_case_and_order() -> None:
    box = np.array([[10.0, 5.0, 1.0, 4.0, 2.0, 1.5, np.pi / 2]])  # heading along +y
    corners = box_corners(box)[0]
    assert corners.shape == (8, 3)
    # front-left-bottom: 2 m ahead (+y) and 1 m to the left (-x), 0.75 m down.
    np.testing.assert_allclose(corners[0], [9.0, 7.0, 0.25], atol=1e-12)
    np.testing.assert_allclose(corners[2], [11.0, 3.0, 0.25], atol=1e-12)  # rear-right-bottom
    np.testing.assert_allclose(corners[4:, :2], corners[:4, :2], atol=0)
    np.testing.assert_allclose(corners[4:, 2], 1.75)
    rng = np.random.default_rng(0)
    boxes = random_boxes(rng, 20, 10.0)
    for box, c in zip(boxes, box_corners(boxes)):
        footprint = shapely.Polygon(c[:4, :2])
        assert footprint.exterior.is_ccw and footprint.area == pytest.approx(box[3] * box[4], rel=1e-12)
        assert np.linalg.norm(c[0] - c[6]) == pytest.approx(np.linalg.norm(box[3:6]), rel=1e-12)  # diagonal


def test_corners_are_box_poses_applied_to_local_corners() -> None:
    rng = np.random.default_rng(1)
    boxes = random_boxes(rng, 10, 100.0)
    signs = np.array([[1, 1, -1], [-1, 1, -1], [-1, -1, -1], [1, -1, -1], [1, 1, 1], [-1, 1, 1], [-1, -1, 1], [1, -1, 1]])
    for pose, box, corners in zip(box_poses(boxes), boxes, box_corners(boxes)):
        np.testing.assert_allclose(apply(pose, signs * box[3:6] / 2), corners, atol=1e-12)


# ------------------------------------------------------------------------------- transforms, motion


def test_transform_boxes_about_z_moves_corners_rigidly() -> None:
    rng = np.random.default_rng(2)
    boxes = random_boxes(rng, 15, 30.0)
    transform = rotation_z(0.8, (3.0, -2.0, 0.5))
    moved = transform_boxes(transform, boxes)
    np.testing.assert_allclose(moved[:, 3:6], boxes[:, 3:6], atol=0)
    assert same_yaw(moved[:, 6], boxes[:, 6] + 0.8)
    np.testing.assert_allclose(box_corners(moved), apply(transform, box_corners(boxes)), atol=1e-11)
    back = transform_boxes(np.linalg.inv(transform), moved)  # compose with the inverse -> identity
    np.testing.assert_allclose(back[:, :6], boxes[:, :6], atol=1e-11)
    assert same_yaw(back[:, 6], boxes[:, 6])


def test_transform_boxes_projects_heading_for_tilted_transforms() -> None:
    pitch = 0.3  # rotation about y: heading (1, 0, 0) tilts but still points along +x in BEV
    c, s = math.cos(pitch), math.sin(pitch)
    tilt = np.eye(4)
    tilt[[0, 0, 2, 2], [0, 2, 0, 2]] = [c, s, -s, c]
    box = np.array([[1.0, 2.0, 3.0, 4.0, 2.0, 1.0, 0.0]])
    out = transform_boxes(tilt, box)
    np.testing.assert_allclose(out[0, :3], tilt[:3, :3] @ box[0, :3], atol=1e-15)
    assert out[0, 6] == 0.0
    side = box.copy()
    side[0, 6] = np.pi / 2  # heading along +y is unchanged by a rotation about y
    assert transform_boxes(tilt, side)[0, 6] == pytest.approx(np.pi / 2, abs=1e-15)
    with pytest.raises(GeometryInputError, match="rigid transform"):
        transform_boxes(np.diag([2.0, 1, 1, 1]), box)
    with pytest.raises(GeometryInputError, match=r"\(4, 4\)"):
        transform_boxes(np.eye(3), box)


def test_box_motion_maps_corners_and_composes() -> None:
    rng = np.random.default_rng(3)
    for origin in (0.0, 4e5):
        box_t = random_boxes(rng, 12, 20.0, origin=origin)
        box_t1 = box_t.copy()
        box_t1[:, :3] += rng.normal(0, 2, (12, 3))
        box_t1[:, 6] += rng.uniform(-1, 1, 12)
        box_t2 = box_t1 + rng.normal(0, 1, (12, 7)) * [1, 1, 0.1, 0, 0, 0, 0.3]
        motion = box_motion(box_t, box_t1)
        assert motion.shape == (12, 4, 4)
        np.testing.assert_allclose(motion[:, 3], np.tile([0, 0, 0, 1.0], (12, 1)), atol=0)
        corners_t, corners_t1 = box_corners(box_t), box_corners(box_t1)
        for i in range(12):
            np.testing.assert_allclose(apply(motion[i], corners_t[i]), corners_t1[i], atol=1e-9 if origin else 1e-12)
            moved = transform_boxes(motion[i], box_t[i:i + 1])
            np.testing.assert_allclose(moved[0, :6], box_t1[i, :6], atol=1e-9 if origin else 1e-12)
            assert same_yaw(moved[:, 6], box_t1[i:i + 1, 6])
        # Round trips: back-motion is the inverse; motions compose.
        np.testing.assert_allclose(box_motion(box_t1, box_t) @ motion, np.tile(np.eye(4), (12, 1, 1)), atol=1e-9)
        np.testing.assert_allclose(box_motion(box_t1, box_t2) @ motion, box_motion(box_t, box_t2), atol=1e-9)
        np.testing.assert_allclose(box_motion(box_t, box_t), np.tile(np.eye(4), (12, 1, 1)), atol=0)
    with pytest.raises(GeometryInputError, match="same shape"):
        box_motion(np.zeros((2, 7)), np.zeros((3, 7)))


# ---------------------------------------------------------------------------------- points in boxes


def test_points_in_boxes_matches_reference_on_random_scenes() -> None:
    rng = np.random.default_rng(4)
    for origin in (0.0, 4e5):
        boxes = random_boxes(rng, 30, 5.0, origin=origin)
        points = origin + rng.uniform(-7, 7, (4000, 3))
        expected = points_in_boxes_reference(points, boxes)
        assert 200 < expected.sum() < 4000 * 30 and (expected.sum(axis=0) > 1).any()  # overlaps exist
        np.testing.assert_array_equal(points_in_boxes_mask(points, boxes), expected)
        first = np.where(expected.any(axis=0), expected.argmax(axis=0), -1)  # lowest index wins
        got = points_in_boxes(points, boxes)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, first)


def test_points_on_faces_edges_corners_are_inside_and_just_outside_are_not() -> None:
    rng = np.random.default_rng(5)
    boxes = random_boxes(rng, 8, 50.0)
    boxes[0, 6] = 0.0  # one axis-aligned box
    poses = box_poses(boxes)
    # Local points on the surface: face centres, edge midpoints, corners (3**3 - 1 sign patterns).
    signs = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1) if (i, j, k) != (0, 0, 0)])
    for b, (pose, box) in enumerate(zip(poses, boxes)):
        half = box[3:6] / 2
        on_surface = apply(pose, signs * half)
        normal_out = signs / np.linalg.norm(signs, axis=1, keepdims=True)
        outside = apply(pose, signs * half + 1e-6 * normal_out)
        inside = apply(pose, signs * half - 1e-6 * normal_out)
        mask_surface = points_in_boxes_mask(on_surface, boxes)
        assert mask_surface[b].all()
        np.testing.assert_array_equal(mask_surface, points_in_boxes_reference(on_surface, boxes))
        assert not points_in_boxes_mask(outside, boxes)[b].any()
        assert points_in_boxes_mask(inside, boxes)[b].all()
    # Exact (dyadic, rounding-free) faces of an axis-aligned box with eps = 0 are inside (inclusive rule).
    dyadic = np.array([[1.5, -2.25, 0.5, 4.0, 2.0, 1.5, 0.0]])
    exact = dyadic[0, :3] + signs * dyadic[0, 3:6] / 2
    assert points_in_boxes_mask(exact, dyadic, eps=0.0).all()
    assert not points_in_boxes_mask(exact + 1e-12 * signs, dyadic, eps=0.0).any()


def test_overlapping_boxes_lowest_index_wins_and_edge_cases() -> None:
    boxes = np.array([[0.0, 0, 0, 4, 2, 2, 0], [1.0, 0, 0, 4, 2, 2, 0.3], [50, 0, 0, 0, 0, 0, 0]])
    points = np.array([[0.5, 0, 0], [2.9, 0.5, 0], [-1.9, 0, 0], [50, 0, 0], [50, 0, 1e-3], [0, 0, 1.5]])
    np.testing.assert_array_equal(points_in_boxes(points, boxes), [0, 1, 0, 2, -1, -1])
    np.testing.assert_array_equal(points_in_boxes(points, boxes[::-1]), [1, 1, 2, 0, -1, -1])
    assert points_in_boxes(np.zeros((0, 3)), boxes).shape == (0,)
    np.testing.assert_array_equal(points_in_boxes(points, np.zeros((0, 7))), -np.ones(6))
    assert points_in_boxes_mask(points, np.zeros((0, 7))).shape == (0, 6)
    with pytest.raises(GeometryInputError, match=r"points: expected a \(P, 3\) array"):
        points_in_boxes(np.zeros((4, 2)), boxes)
    with pytest.raises(TaskologyError, match=r"boxes: expected an \(N, 7\) array"):
        points_in_boxes_mask(np.zeros((4, 3)), np.zeros(7))


def test_points_in_boxes_grid_handles_mixed_scales_and_degenerate_boxes() -> None:
    rng = np.random.default_rng(6)
    boxes = random_boxes(rng, 40, 20.0)
    boxes[0, 3:6] = [120.0, 80.0, 10.0]  # one huge box covering most cells
    boxes[1, 3:6] = 0.0  # zero-size boxes: only their centre point is inside
    boxes[2, 3:5] = [1e-6, 1e-6]
    far = np.array([[3e4, -2e4, 0.0, 4.0, 2.0, 1.5, 0.4]])  # stretches the grid to its cell cap
    boxes = np.concatenate([boxes, far])
    points = np.concatenate([rng.uniform(-60, 60, (3000, 3)), boxes[:, :3], far[:, :3] + rng.uniform(-3, 3, (200, 3))])
    points[5] = np.nan  # NaN points are in no box
    expected = points_in_boxes_reference(points, boxes)
    np.testing.assert_array_equal(points_in_boxes_mask(points, boxes), expected)
    np.testing.assert_array_equal(points_in_boxes(points, boxes), np.where(expected.any(0), expected.argmax(0), -1))
    assert expected[1, 3000 + 1] and expected[-1, -200:].sum() > 5 and not expected[:, 5].any()
    single = np.array([[7.0, 7.0, 7.0, 0.0, 0.0, 0.0, 0.3]])
    np.testing.assert_array_equal(points_in_boxes(np.array([[7.0, 7.0, 7.0], [7.0, 7.0, 7.5]]), single, eps=0.0), [0, -1])
