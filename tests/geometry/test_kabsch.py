"""Kabsch: exact recovery, weights, reflections, optimality, degenerate inputs, kernel (Horn) vs reference (SVD)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskology.errors import TaskologyError
from taskology.geometry import kabsch as kabsch_module
from taskology.geometry.kabsch import DegeneratePointSetError, kabsch, kabsch_batched
from taskology.geometry.rigid import so3_exp, transform_points


def random_pose(rng: np.random.Generator) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = so3_exp(rng.normal(size=3))
    pose[:3, 3] = rng.normal(scale=10.0, size=3)
    return pose


def residual(pose: np.ndarray, src: np.ndarray, dst: np.ndarray, weights: np.ndarray) -> float:
    return float(np.sum(weights * np.sum((transform_points(pose, src) - dst) ** 2, axis=-1)))


def test_hand_worked_rotation_about_z():
    src = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]])
    dst = np.array([[0.0, 1, 0], [-1.0, 0, 0], [0, 0, 1.0], [-1.0, 1.0, 1.0]]) + [5.0, 0.0, 0.0]
    expected = np.array([[0.0, -1, 0, 5], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(kabsch(src, dst), expected, atol=1e-14)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(3, 40))
def test_recovers_known_transform_noise_free(seed, count):
    rng = np.random.default_rng(seed)
    pose = random_pose(rng)
    src = rng.normal(scale=3.0, size=(count, 3))
    np.testing.assert_allclose(kabsch(src, transform_points(pose, src)), pose, atol=1e-9)


def test_recovers_known_transform_planar_and_with_weights():
    rng = np.random.default_rng(1)
    pose = random_pose(rng)
    planar = np.column_stack([rng.normal(size=(10, 2)), np.zeros(10)])  # H has rank 2: det correction needed
    np.testing.assert_allclose(kabsch(planar, transform_points(pose, planar)), pose, atol=1e-9)
    src = rng.normal(size=(30, 3))
    dst = transform_points(pose, src)
    dst[:10] += rng.normal(scale=5.0, size=(10, 3))  # outliers that the weights exclude
    weights = np.r_[np.zeros(10), rng.uniform(0.1, 3.0, size=20)]
    np.testing.assert_allclose(kabsch(src, dst, weights), pose, atol=1e-9)
    assert np.abs(kabsch(src, dst) - pose).max() > 1e-3  # without the weights the outliers do hurt


def test_reflected_target_still_gives_a_proper_rotation_matching_the_svd_reference():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(20, 3))
    dst = src * [1.0, 1.0, -1.0]  # a mirror image: the unconstrained optimum is a reflection
    pose = kabsch(src, dst)
    assert np.linalg.det(pose[:3, :3]) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-12)
    ref = kabsch_module._kabsch_batched_reference(src[None], dst[None], np.ones((1, 20)))
    np.testing.assert_allclose(pose, ref.dst_from_src[0], atol=1e-9)


def test_fit_is_a_least_squares_optimum():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(25, 3))
    dst = transform_points(random_pose(rng), src) + rng.normal(scale=0.2, size=(25, 3))
    weights = rng.uniform(0.0, 2.0, size=25)
    pose = kabsch(src, dst, weights)
    best = residual(pose, src, dst, weights)
    for _ in range(50):
        perturbed = pose.copy()
        perturbed[:3, :3] = so3_exp(rng.normal(scale=1e-3, size=3)) @ pose[:3, :3]
        perturbed[:3, 3] += rng.normal(scale=1e-3, size=3)
        assert residual(perturbed, src, dst, weights) > best


def test_batched_kernel_matches_svd_reference_on_noisy_and_degenerate_groups():
    rng = np.random.default_rng(4)
    groups, count = 64, 12
    src = rng.normal(size=(groups, count, 3))
    dst = np.stack([transform_points(random_pose(rng), s) for s in src]) + rng.normal(scale=0.3, size=src.shape)
    weights = rng.uniform(0.0, 2.0, size=(groups, count))
    weights[0, 2:] = 0.0  # two points left
    src[1] = src[1, :1]  # all coincident
    dst[2] = dst[2, :1] + 0.0  # coincident targets
    src[3] = np.outer(rng.normal(size=count), [1.0, 2.0, -1.0]) + [1.0, 0.0, 0.0]  # collinear
    dst[4] = np.outer(rng.normal(size=count), [0.0, 1.0, 0.0])  # collinear targets
    src[5] = np.zeros((count, 3)) + [1e8, -1e8, 3.0]  # coincident far from the origin
    ours = kabsch_batched(src, dst, weights)
    ref = kabsch_module._kabsch_batched_reference(src, dst, weights)
    np.testing.assert_array_equal(ours.ok, ref.ok)
    np.testing.assert_array_equal(ours.ok[:6], False)
    assert ours.ok[6:].all()
    assert np.isnan(ours.dst_from_src[~ours.ok]).all()
    np.testing.assert_allclose(ours.dst_from_src[ours.ok], ref.dst_from_src[ref.ok], atol=1e-9)
    dets = np.linalg.det(ours.dst_from_src[ours.ok][:, :3, :3])
    np.testing.assert_allclose(dets, 1.0, atol=1e-12)


def test_single_fit_raises_on_degenerate_input():
    rng = np.random.default_rng(5)
    line = np.outer(np.arange(5.0), [1.0, 1.0, 0.0])
    cases = [
        (rng.normal(size=(2, 3)), None),  # two points
        (line, None),  # collinear
        (np.ones((6, 3)), None),  # coincident
        (rng.normal(size=(6, 3)), np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])),  # two positive weights
    ]
    for src, weights in cases:
        with pytest.raises(DegeneratePointSetError, match="no unique rigid fit"):
            kabsch(src, src + 1.0, weights)
    assert issubclass(DegeneratePointSetError, TaskologyError) and issubclass(DegeneratePointSetError, ValueError)
    # three non-collinear points are enough
    tri = np.array([[0.0, 0, 0], [1.0, 0, 0], [0, 2.0, 0]])
    np.testing.assert_allclose(kabsch(tri, tri + 1.0)[:3, 3], [1.0, 1.0, 1.0], atol=1e-12)


def test_validation_errors():
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        kabsch(np.zeros((4, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"\(G, N, 3\)"):
        kabsch_batched(np.zeros((4, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="weights must be"):
        kabsch(np.zeros((4, 3)), np.zeros((4, 3)), np.array([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="weights must be"):
        kabsch_batched(np.zeros((2, 4, 3)), np.zeros((2, 4, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="finite"):
        kabsch(np.full((4, 3), np.nan), np.zeros((4, 3)))
