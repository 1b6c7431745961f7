"""Camera geometry: Numba kernels vs NumPy references, hand-worked answers, round trips, torch twins,
gradients, and kornia as an independent reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from taskology.geometry import camera
from taskology.geometry.camera import (normals_from_depth, normals_from_depth_torch, points_from_depth,
                                       points_from_depth_torch, project_points, project_points_torch)

H, W = 24, 32
K = np.array([[40.0, 0.0, 15.5], [0.0, 44.0, 11.0], [0.0, 0.0, 1.0]])


def random_depth(rng: np.random.Generator, batch: int = 2, invalid: bool = True) -> np.ndarray:
    depth = (1.0 + 4.0 * rng.random((batch, H, W))).astype(np.float32)
    if invalid:
        depth[rng.random(depth.shape) < 0.1] = 0.0
        depth[0, 3, 5], depth[0, 4, 5], depth[-1, 7, 7] = np.nan, -1.0, np.inf
    return depth


def plane_depth(normal: np.ndarray, offset: float, k: np.ndarray = K) -> np.ndarray:
    """Planar depth of the plane {p : normal . p = offset} seen through k (float64)."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.einsum("ij,jhw->hwi", np.linalg.inv(k), np.stack([u, v, np.ones_like(u)]))
    return offset / (rays @ normal)


def to_torch(depth: np.ndarray, k: np.ndarray = K, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    depth_t = torch.tensor(depth, dtype=dtype)[:, None]
    return depth_t, torch.tensor(k, dtype=dtype).expand(depth.shape[0], 3, 3).contiguous()


# ---------------------------------------------------------------------------------------------- unprojection
def test_points_from_depth_hand_worked():
    k = np.array([[2.0, 0.0, 1.0], [0.0, 2.0, 1.0], [0.0, 0.0, 1.0]])
    points = points_from_depth(np.full((3, 3), 4.0, np.float32), k)
    np.testing.assert_array_equal(points[0, 0], [-2.0, -2.0, 4.0])  # pixel (v=0, u=0): x = (0-1)*4/2
    np.testing.assert_array_equal(points[1, 1], [0.0, 0.0, 4.0])  # principal point
    np.testing.assert_array_equal(points[2, 1], [0.0, 2.0, 4.0])  # one row down = +y (OpenCV)


def test_points_from_depth_kernel_matches_reference_with_skew_and_invalid():
    rng = np.random.default_rng(0)
    depth = random_depth(rng)
    k = np.stack([K, K + np.array([[5.0, 0.3, -2.0], [0, -3.0, 1.0], [0, 0, 0]])])
    ours = points_from_depth(depth, k)
    ref = camera._points_from_depth_reference(depth, np.linalg.inv(k))
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)
    invalid = ~(np.isfinite(depth) & (depth > 0))
    assert invalid.sum() > 10 and np.all(ours[invalid] == 0.0)
    np.testing.assert_array_equal(ours[~invalid][:, 2], depth[~invalid])


def test_unproject_then_project_returns_pixel_grid():
    rng = np.random.default_rng(1)
    depth = random_depth(rng, batch=1, invalid=False)[0]
    pixels, z = project_points(points_from_depth(depth, K).reshape(-1, 3), K)
    v, u = np.mgrid[0:H, 0:W]
    np.testing.assert_allclose(pixels, np.stack([u, v], -1).reshape(-1, 2), atol=2e-5)  # float32 points
    np.testing.assert_allclose(z, depth.reshape(-1), rtol=1e-7)
    # float64 torch twin: exact to rounding
    d, k = to_torch(depth[None])
    pix, zz = project_points_torch(points_from_depth_torch(d, k), k)
    np.testing.assert_allclose(pix[0].permute(1, 2, 0).reshape(-1, 2).numpy(), np.stack([u, v], -1).reshape(-1, 2),
                               atol=1e-10)


def test_project_points_kernel_matches_reference_and_marks_behind_camera():
    rng = np.random.default_rng(2)
    points = rng.normal(size=(500, 3)) * [3.0, 2.0, 5.0]
    points[:5, 2] = 0.0
    pixels, depth = project_points(points, K)
    ref_pixels, ref_depth = camera._project_points_reference(points, K)
    np.testing.assert_allclose(pixels, ref_pixels, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(depth, ref_depth)
    assert np.isnan(pixels[points[:, 2] <= 0]).all() and np.isfinite(pixels[points[:, 2] > 0]).all()
    np.testing.assert_allclose(project_points(np.array([[1.0, -1.0, 2.0]]), K)[0], [[35.5, -11.0]])


def test_projection_torch_matches_numpy():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(2, 3, 40)) + [[0.0], [0.0], [6.0]]
    pix, z = project_points_torch(torch.tensor(points), torch.tensor(K).expand(2, 3, 3))
    for b in range(2):
        ref, ref_z = project_points(points[b].T, K)
        np.testing.assert_allclose(pix[b].numpy().T, ref, rtol=1e-12)
        np.testing.assert_allclose(z[b, 0].numpy(), ref_z)


# ---------------------------------------------------------------------------------------------- normals
def test_fronto_parallel_plane_gives_minus_z_everywhere():
    normals = normals_from_depth(np.full((H, W), 3.0, np.float32), K)
    np.testing.assert_allclose(normals.reshape(-1, 3), np.tile([0.0, 0.0, -1.0], (H * W, 1)), atol=1e-7)


@pytest.mark.parametrize("normal", [[0.3, -0.2, -1.0], [-0.6, 0.1, -0.5], [0.0, 0.7, -0.6]])
def test_tilted_plane_gives_its_normal_towards_the_camera(normal):
    n = np.array(normal) / np.linalg.norm(normal)
    depth = plane_depth(n, -4.0)  # n . p = -4 < 0: n points towards the camera
    assert (depth > 0).all()
    normals = normals_from_depth(depth.astype(np.float32), K, max_relative_jump=1.0)
    np.testing.assert_allclose(normals.reshape(-1, 3), np.tile(n, (H * W, 1)), atol=2e-4)  # float32 depth
    torch_normals, valid = normals_from_depth_torch(*to_torch(depth[None]), max_relative_jump=1.0)
    assert valid.all()
    np.testing.assert_allclose(torch_normals[0].permute(1, 2, 0).reshape(-1, 3).numpy(), np.tile(n, (H * W, 1)),
                               atol=1e-9)


def test_discontinuity_and_isolated_pixels():
    depth = np.full((H, W), 2.0, np.float32)
    depth[:, W // 2:] = 4.0  # a step: both sides are fronto-parallel planes
    depth[5, 3] = 0.0  # a hole: its neighbours use one-sided differences
    depth[10:12, 20:25] = 0.0
    depth[10, 22] = 4.0  # left/right neighbours but nothing above/below -> no normal
    normals = normals_from_depth(depth, K)
    has_normal = np.abs(normals).sum(-1) > 0
    expected = (depth > 0).copy()
    expected[10, 22] = False
    np.testing.assert_array_equal(has_normal, expected)
    np.testing.assert_allclose(normals[has_normal], np.tile([0.0, 0.0, -1.0], (has_normal.sum(), 1)), atol=1e-7)
    # a larger threshold differences across the step and tilts the normals next to it
    loose = normals_from_depth(depth, K, max_relative_jump=2.0)
    assert abs(loose[H // 2, W // 2 - 1, 0]) > 0.1


def test_normals_kernel_matches_reference_on_random_and_degenerate_depth():
    rng = np.random.default_rng(4)
    depth = random_depth(rng, batch=3)
    depth[2] = 0.0  # an all-invalid frame
    depth[1, :, 0] = 7.0  # a discontinuous column
    kinv = np.linalg.inv(K)[None].repeat(3, 0)
    for jump in (0.05, 0.5, 10.0):
        ours = normals_from_depth(depth, K, max_relative_jump=jump)
        ref = camera._normals_from_depth_reference(depth, kinv, jump)
        np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert np.all(ours[2] == 0)
    norms = np.linalg.norm(ours, axis=-1)
    assert np.allclose(norms[norms > 0], 1.0, atol=1e-6)
    points = points_from_depth(depth, K)
    assert np.all(np.sum(ours * points, axis=-1) <= 0)


def test_normals_torch_matches_numba_on_valid_pixels():
    rng = np.random.default_rng(5)
    depth = random_depth(rng)
    ours = normals_from_depth(depth, K)
    torch_normals, valid = normals_from_depth_torch(*to_torch(depth))
    np.testing.assert_array_equal(valid[:, 0].numpy(), np.abs(ours).sum(-1) > 0)
    np.testing.assert_allclose(torch_normals.permute(0, 2, 3, 1).numpy(), ours, atol=1e-6)


def test_validation_errors():
    with pytest.raises(ValueError, match="depth"):
        points_from_depth(np.zeros((2, 3, 4, 5), np.float32), K)
    with pytest.raises(ValueError, match="K must"):
        normals_from_depth(np.ones((4, 5), np.float32), np.eye(4))
    with pytest.raises(ValueError, match="last row"):
        points_from_depth(np.ones((4, 5), np.float32), np.ones((3, 3)))
    with pytest.raises(ValueError, match="max_relative_jump"):
        normals_from_depth(np.ones((4, 5), np.float32), K, max_relative_jump=0.0)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        project_points(np.ones((4, 2)), K)
    with pytest.raises(ValueError, match="depth must be"):
        normals_from_depth_torch(torch.ones(1, 2, 4, 5), torch.eye(3)[None])
    with pytest.raises(ValueError, match="K must be"):
        points_from_depth_torch(torch.ones(2, 1, 4, 5), torch.eye(3)[None])


# ---------------------------------------------------------------------------------------------- gradients
def test_torch_twins_gradcheck():
    rng = np.random.default_rng(6)
    depth = torch.tensor(2.0 + rng.random((1, 1, 4, 5)), requires_grad=True)
    k = torch.tensor(K[None] / [[[8.0], [8.0], [1.0]]], requires_grad=True)
    assert torch.autograd.gradcheck(lambda d, kk: points_from_depth_torch(d, kk), (depth, k))
    points = torch.tensor(rng.normal(size=(1, 3, 6)) + [[0.0], [0.0], [4.0]], requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, kk: project_points_torch(p, kk), (points, k))
    assert torch.autograd.gradcheck(lambda d, kk: normals_from_depth_torch(d, kk, 1.0)[0], (depth, k))


# ---------------------------------------------------------------------------------------------- kornia
def test_against_kornia_on_smooth_depth():
    kornia_depth = pytest.importorskip("kornia.geometry.depth")
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    depth = (3.0 + 0.4 * np.sin(u / 9.0) + 0.3 * np.cos(v / 7.0) + 0.02 * u)[None].astype(np.float32)
    d, k = to_torch(depth, dtype=torch.float32)
    kornia_points = kornia_depth.depth_to_3d(d, k, normalize_points=False)
    np.testing.assert_allclose(points_from_depth(depth, K)[0], kornia_points[0].permute(1, 2, 0).numpy(), rtol=1e-5,
                               atol=1e-5)
    kornia_normals = -kornia_depth.depth_to_normals(d, k, normalize_points=False)[0].permute(1, 2, 0).numpy()
    ours = normals_from_depth(depth[0], K)
    inner = (slice(1, -1), slice(1, -1))  # kornia's Sobel pads by replication at the border
    cosine = np.sum(ours[inner] * kornia_normals[inner], axis=-1)
    assert cosine.min() > 0.999, cosine.min()


def test_torch_normals_gradients_stay_finite_with_invalid_depth():
    rng = np.random.default_rng(7)
    depth = random_depth(rng, batch=1)  # zeros, NaN, inf and a negative value
    depth[0, 10, 10:13] = 50.0  # a discontinuity
    d, k = to_torch(depth)
    d.requires_grad_(True)
    normals, valid = normals_from_depth_torch(d, k)
    (normals * torch.tensor(rng.normal(size=normals.shape))).sum().backward()
    assert torch.isfinite(d.grad).all()
    invalid = ~torch.tensor(np.isfinite(depth) & (depth > 0))[:, None]
    assert torch.all(d.grad[invalid] == 0)  # no gradient leaks into invalid pixels


@pytest.mark.gpu
def test_torch_twins_on_cuda_match_cpu():
    rng = np.random.default_rng(8)
    d, k = to_torch(random_depth(rng), dtype=torch.float32)
    cpu_normals, cpu_valid = normals_from_depth_torch(d, k)
    gpu_normals, gpu_valid = normals_from_depth_torch(d.cuda(), k.cuda())
    assert torch.equal(gpu_valid.cpu(), cpu_valid)
    torch.testing.assert_close(gpu_normals.cpu(), cpu_normals, atol=1e-5, rtol=1e-5)
    pix, z = project_points_torch(points_from_depth_torch(d.cuda().nan_to_num(0.0).clamp(min=0), k.cuda()), k.cuda())
    assert pix.is_cuda and z.is_cuda


def test_points_torch_matches_numba_with_per_batch_intrinsics():
    rng = np.random.default_rng(9)
    depth = random_depth(rng, invalid=False)
    depth[rng.random(depth.shape) < 0.2] = 0.0
    k = np.stack([K, K * [[1.1], [0.9], [1.0]]])
    ours = points_from_depth(depth, k)
    torch_points = points_from_depth_torch(torch.tensor(depth[:, None], dtype=torch.float64), torch.tensor(k))
    np.testing.assert_allclose(torch_points.permute(0, 2, 3, 1).numpy(), ours, rtol=1e-6, atol=1e-6)
    assert np.all(ours[depth == 0] == 0)
