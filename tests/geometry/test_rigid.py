"""Rigid motion: kernels vs NumPy references, hand-worked rotations, round trips, SO(3) edge angles,
torch twins with float64 gradchecks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taskology.geometry import rigid
from taskology.geometry.rigid import (compose, invert, pose_from_axis_angle_torch, so3_exp, so3_exp_torch, so3_log,
                                      transform_points, transform_points_per_object, transform_points_torch)


def random_poses(rng: np.random.Generator, count: int) -> np.ndarray:
    poses = np.tile(np.eye(4), (count, 1, 1))
    axis_angle = rng.normal(size=(count, 3))
    poses[:, :3, :3] = so3_exp(axis_angle)
    poses[:, :3, 3] = rng.normal(scale=5.0, size=(count, 3))
    return poses


def test_rotation_about_z_by_90_degrees_maps_x_to_y():
    pose = np.eye(4)
    pose[:3, :3] = so3_exp(np.array([0.0, 0.0, np.pi / 2]))
    pose[:3, 3] = [1.0, 2.0, 3.0]
    out = transform_points(pose, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    np.testing.assert_allclose(out, [[1.0, 3.0, 3.0], [0.0, 2.0, 3.0], [1.0, 2.0, 4.0]], atol=1e-15)
    np.testing.assert_allclose(so3_exp(np.array([np.pi, 0.0, 0.0])), np.diag([1.0, -1.0, -1.0]), atol=1e-15)


def test_transform_points_kernel_matches_reference_single_and_batched():
    rng = np.random.default_rng(0)
    poses = random_poses(rng, 3)
    points = rng.normal(size=(3, 50, 3))
    np.testing.assert_allclose(transform_points(poses, points), rigid._transform_points_reference(poses, points),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(transform_points(poses[0], points[0]), points[0] @ poses[0, :3, :3].T + poses[0, :3, 3],
                               rtol=1e-12, atol=1e-12)
    broadcast = transform_points(poses[0], points)  # one pose for every batch element
    np.testing.assert_allclose(broadcast[2], transform_points(poses[0], points[2]), rtol=1e-15)
    assert transform_points(poses[0], np.zeros((0, 3))).shape == (0, 3)


def test_transform_then_inverse_is_identity_and_compose_is_associative():
    rng = np.random.default_rng(1)
    a, b, c = random_poses(rng, 3)
    points = rng.normal(size=(20, 3))
    np.testing.assert_allclose(transform_points(invert(a), transform_points(a, points)), points, atol=1e-12)
    np.testing.assert_allclose(compose(a, invert(a)), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(compose(compose(a, b), c), compose(a, compose(b, c)), atol=1e-12)
    np.testing.assert_allclose(transform_points(compose(a, b), points),
                               transform_points(a, transform_points(b, points)), atol=1e-12)
    batched = random_poses(rng, 4)
    np.testing.assert_allclose(invert(batched), np.linalg.inv(batched), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1.0, 1.0), min_size=3, max_size=3), st.floats(0.0, np.pi - 1e-9))
def test_so3_log_inverts_so3_exp(direction, angle):
    direction = np.array(direction)
    if np.linalg.norm(direction) < 1e-3:
        direction = np.array([0.0, 0.0, 1.0])
    v = direction / np.linalg.norm(direction) * angle
    rotation = so3_exp(v)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-14)
    assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-14)
    np.testing.assert_allclose(so3_log(rotation), v, atol=1e-9)


@pytest.mark.parametrize("angle", [0.0, 1e-12, 1e-8, 1e-6, 2e-6, 1e-3, np.pi - 1e-3, np.pi - 1e-6, np.pi - 1e-9])
def test_so3_log_edge_angles(angle):
    rng = np.random.default_rng(2)
    axes = rng.normal(size=(5, 3))
    v = axes / np.linalg.norm(axes, axis=1, keepdims=True) * angle
    np.testing.assert_allclose(so3_log(so3_exp(v)), v, atol=1e-10 if angle > 3 else 1e-15)


def test_so3_log_at_exactly_pi_returns_an_equivalent_vector():
    for axis in (np.array([1.0, 0, 0]), np.array([0, 1.0, 1.0]) / np.sqrt(2), np.array([0.3, -0.4, 0.5])):
        axis = axis / np.linalg.norm(axis)
        rotation = so3_exp(axis * np.pi)
        log = so3_log(rotation)
        assert np.linalg.norm(log) == pytest.approx(np.pi)
        np.testing.assert_allclose(so3_exp(log), rotation, atol=1e-12)


def test_so3_exp_small_angle_matches_series():
    v = np.array([1e-8, -2e-8, 3e-9])
    hat = rigid._hat(v)
    expected = np.eye(3) + hat + 0.5 * hat @ hat  # third-order terms are ~1e-24
    np.testing.assert_allclose(so3_exp(v), expected, atol=1e-18, rtol=0)


def test_per_object_kernel_matches_reference_and_leaves_background():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(300, 3))
    transforms = random_poses(rng, 4)
    index = rng.integers(-1, 4, size=300)
    ours = transform_points_per_object(points, index, transforms)
    np.testing.assert_allclose(ours, rigid._transform_points_per_object_reference(points, index, transforms),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(ours[index == -1], points[index == -1])
    for k in range(4):
        np.testing.assert_allclose(ours[index == k], transform_points(transforms[k], points[index == k]), atol=1e-12)
    # no objects at all
    background = transform_points_per_object(points, np.full(300, -1), np.zeros((0, 4, 4)))
    np.testing.assert_array_equal(background, points)


def test_validation_errors():
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        transform_points(np.eye(3), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="points"):
        transform_points(np.eye(4), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="batch sizes"):
        transform_points(np.tile(np.eye(4), (2, 1, 1)), np.zeros((3, 5, 3)))
    with pytest.raises(ValueError, match=r"\[-1, 2\)"):
        transform_points_per_object(np.zeros((2, 3)), np.array([0, 2]), np.tile(np.eye(4), (2, 1, 1)))
    with pytest.raises(ValueError, match="integer"):
        transform_points_per_object(np.zeros((2, 3)), np.array([0.0, 1.0]), np.tile(np.eye(4), (2, 1, 1)))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        so3_exp(np.zeros(4))


# ---------------------------------------------------------------------------------------------- torch twins
def test_torch_twins_match_numpy():
    rng = np.random.default_rng(4)
    v = rng.normal(size=(6, 3))
    v[0] = 0.0
    v[1] = [1e-9, 0.0, -2e-9]
    np.testing.assert_allclose(so3_exp_torch(torch.tensor(v)).numpy(), so3_exp(v), atol=1e-15)
    t = rng.normal(size=(6, 3))
    poses = pose_from_axis_angle_torch(torch.tensor(v), torch.tensor(t)).numpy()
    np.testing.assert_allclose(poses[:, :3, :3], so3_exp(v), atol=1e-15)
    np.testing.assert_array_equal(poses[:, :3, 3], t)
    np.testing.assert_array_equal(poses[:, 3], np.tile([0.0, 0.0, 0.0, 1.0], (6, 1)))
    points = rng.normal(size=(6, 3, 4, 5))
    moved = transform_points_torch(torch.tensor(poses), torch.tensor(points)).numpy()
    ref = transform_points(poses, points.reshape(6, 3, 20).transpose(0, 2, 1))
    np.testing.assert_allclose(moved.reshape(6, 3, 20).transpose(0, 2, 1), ref, atol=1e-12)


def test_torch_twins_gradcheck_including_zero_angle():
    rng = np.random.default_rng(5)
    v = torch.tensor(rng.normal(size=(3, 3)), requires_grad=True)
    assert torch.autograd.gradcheck(so3_exp_torch, (v,))
    tiny = torch.tensor([[1e-8, -2e-8, 5e-9]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(so3_exp_torch, (tiny,))
    zero = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    so3_exp_torch(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()
    t = torch.tensor(rng.normal(size=(3, 3)), requires_grad=True)
    points = torch.tensor(rng.normal(size=(3, 3, 7)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, p: transform_points_torch(pose_from_axis_angle_torch(a, b), p),
                                    (v, t, points))
