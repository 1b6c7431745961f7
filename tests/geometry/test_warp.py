"""Photometric warp: identity, known answers (linear image, analytic textured plane), masks, gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from taskology.geometry.camera import project_points
from taskology.geometry.rigid import pose_from_axis_angle_torch, so3_exp, transform_points
from taskology.geometry.warp import warp_frame

H, W = 32, 48
K = np.array([[40.0, 0.0, 23.5], [0.0, 40.0, 15.5], [0.0, 0.0, 1.0]])


def pose(axis_angle, translation) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = so3_exp(np.asarray(axis_angle, dtype=np.float64))
    out[:3, 3] = translation
    return out


def batch_tensors(depth: np.ndarray, motion: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b = depth.shape[0]
    return (torch.tensor(depth[:, None]), torch.tensor(K).expand(b, 3, 3).contiguous(),
            torch.tensor(motion).expand(b, 4, 4).contiguous())


def test_identity_motion_returns_the_same_image():
    rng = np.random.default_rng(0)
    image = torch.tensor(rng.random((2, 3, H, W)))
    depth = 1.0 + 5.0 * rng.random((2, H, W))
    depth[0, 4, 4] = 0.0
    d, k, m = batch_tensors(depth, np.eye(4))
    result = warp_frame(image, d, k, m)
    expected_valid = torch.tensor(depth > 0)[:, None]
    assert torch.equal(result.valid, expected_valid)
    torch.testing.assert_close(result.image, torch.where(expected_valid, image, 0.0), atol=1e-12, rtol=0)
    torch.testing.assert_close(result.projected_depth, d)


def test_linear_image_is_sampled_exactly_where_the_numpy_reference_projects():
    """Bilinear sampling of an image linear in (u, v) is exact, so the warp must equal a*u' + b*v' + c."""
    rng = np.random.default_rng(1)
    depth = 3.0 + 4.0 * rng.random((1, H, W))
    motion = pose([0.02, -0.03, 0.01], [0.1, -0.05, 0.3])
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    image_t1 = torch.tensor(0.3 * u + 0.7 * v + 2.0)[None, None]
    result = warp_frame(image_t1, *batch_tensors(depth, motion))
    # independent path: NumPy unprojection (float64) -> Numba transform -> Numba projection
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T
    points_t1 = transform_points(motion, (rays * depth[0, ..., None]).reshape(-1, 3))
    pixels, z = project_points(points_t1, K)
    inside = (pixels[:, 0] >= 0) & (pixels[:, 0] <= W - 1) & (pixels[:, 1] >= 0) & (pixels[:, 1] <= H - 1)
    np.testing.assert_array_equal(result.valid.numpy().reshape(-1), inside & (z > 0))
    assert 0.5 < inside.mean() < 1.0  # the motion moves some pixels out of view
    np.testing.assert_allclose(result.projected_depth.numpy().reshape(-1), z, rtol=1e-12)
    expected = np.where(inside, 0.3 * pixels[:, 0] + 0.7 * pixels[:, 1] + 2.0, 0.0)
    np.testing.assert_allclose(result.image.numpy().reshape(-1), expected, atol=1e-9)


def render_textured_plane(cam_from_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast the plane z_world = 6 with a smooth texture; returns (image (H,W), depth (H,W))."""
    world_from_cam = np.linalg.inv(cam_from_world)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays_cam = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T  # z = 1
    rays_world = rays_cam @ world_from_cam[:3, :3].T
    origin = world_from_cam[:3, 3]
    scale = (6.0 - origin[2]) / rays_world[..., 2]  # planar depth, because rays_cam has z = 1
    hit = origin + scale[..., None] * rays_world
    image = 0.5 + 0.25 * np.sin(hit[..., 0] * 1.3) * np.cos(hit[..., 1] * 1.1)
    return image, scale


def test_warp_reproduces_frame_t_on_an_analytic_scene():
    cam_t_from_world = pose([0.05, -0.02, 0.0], [0.0, 0.0, 0.0])
    cam_t1_from_world = pose([0.02, 0.04, 0.01], [0.15, -0.1, -0.4]) @ cam_t_from_world
    image_t, depth_t = render_textured_plane(cam_t_from_world)
    image_t1, _ = render_textured_plane(cam_t1_from_world)
    motion = cam_t1_from_world @ np.linalg.inv(cam_t_from_world)
    d, k, m = batch_tensors(depth_t[None], motion)
    result = warp_frame(torch.tensor(image_t1)[None, None], d, k, m)
    valid = result.valid[0, 0].numpy()
    assert valid.mean() > 0.6
    error = np.abs(result.image[0, 0].numpy() - image_t)[valid]
    assert error.max() < 0.01, error.max()  # bilinear interpolation error of a smooth texture
    # the wrong motion (identity) does not explain frame t
    wrong = warp_frame(torch.tensor(image_t1)[None, None], d, k, torch.eye(4, dtype=torch.float64)[None])
    assert np.abs(wrong.image[0, 0].numpy() - image_t)[valid].mean() > 10 * error.mean()


def test_uniform_object_translation_equals_extra_camera_translation():
    rng = np.random.default_rng(2)
    depth = 2.0 + 3.0 * rng.random((1, H, W))
    image = torch.tensor(rng.random((1, 2, H, W)))
    motion = pose([0.0, 0.03, 0.0], [0.05, 0.0, 0.1])
    offset = np.array([0.2, -0.1, 0.3])
    moved = motion.copy()
    moved[:3, 3] += offset
    translation = torch.tensor(offset)[None, :, None, None].expand(1, 3, H, W)
    with_objects = warp_frame(image, *batch_tensors(depth, motion), object_translation=translation)
    reference = warp_frame(image, *batch_tensors(depth, moved))
    assert torch.equal(with_objects.valid, reference.valid)
    torch.testing.assert_close(with_objects.image, reference.image, atol=1e-12, rtol=0)
    torch.testing.assert_close(with_objects.projected_depth, reference.projected_depth)
    # only the pixels that carry the translation move
    translation_mask = torch.zeros(1, 3, H, W, dtype=torch.float64)
    translation_mask[..., :10, :10] = torch.tensor(offset)[:, None, None]
    partial = warp_frame(image, *batch_tensors(depth, motion), object_translation=translation_mask)
    static = warp_frame(image, *batch_tensors(depth, motion))
    torch.testing.assert_close(partial.image[..., 10:, :], static.image[..., 10:, :])
    assert not torch.allclose(partial.image[..., :10, :10], static.image[..., :10, :10])


def test_validity_behind_camera_and_out_of_view():
    depth = np.full((1, H, W), 2.0)
    image = torch.ones(1, 1, H, W, dtype=torch.float64)
    behind = warp_frame(image, *batch_tensors(depth, pose([0, 0, 0], [0, 0, -3.0])))  # camera moves past the plane
    assert not behind.valid.any() and (behind.projected_depth < 0).all() and torch.all(behind.image == 0)
    # at 2 m, 1 px = 2 / 40 m: a shift of -3 m moves every point 60 px left, out of the 48 px view
    aside = warp_frame(image, *batch_tensors(depth, pose([0, 0, 0], [-3.0, 0, 0])))
    assert not aside.valid.any()
    half = warp_frame(image, *batch_tensors(depth, pose([0, 0, 0], [-1.2, 0, 0])))  # u' = u - 24
    cols = half.valid[0, 0].all(0).numpy()
    assert cols[W // 2 + 1:].all() and not half.valid[0, 0, :, : W // 2 - 1].any()


def test_gradcheck_depth_motion_translation_and_image():
    rng = np.random.default_rng(3)
    h, w = 5, 6
    k = torch.tensor([[[6.0, 0.0, 2.5], [0.0, 6.0, 2.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    image = torch.tensor(rng.random((1, 2, h, w)), requires_grad=True)
    depth = torch.tensor(4.0 + rng.random((1, 1, h, w)), requires_grad=True)
    axis_angle = torch.tensor([[0.01, -0.02, 0.015]], dtype=torch.float64, requires_grad=True)
    translation = torch.tensor([[0.03, 0.02, -0.05]], dtype=torch.float64, requires_grad=True)
    objects = torch.tensor(0.01 * rng.normal(size=(1, 3, h, w)), requires_grad=True)

    def warped(img, dep, aa, t, obj):
        result = warp_frame(img, dep, k, pose_from_axis_angle_torch(aa, t), obj)
        return result.image, result.projected_depth

    assert warp_frame(image, depth, k, pose_from_axis_angle_torch(axis_angle, translation), objects).valid.sum() > 5
    assert torch.autograd.gradcheck(warped, (image, depth, axis_angle, translation, objects))


def test_shape_errors():
    image = torch.zeros(1, 3, H, W)
    with pytest.raises(ValueError, match="depth_t"):
        warp_frame(image, torch.ones(1, H, W), torch.eye(3)[None], torch.eye(4)[None])
    with pytest.raises(ValueError, match="object_translation"):
        warp_frame(image, torch.ones(1, 1, H, W), torch.eye(3)[None], torch.eye(4)[None], torch.zeros(1, 3, H, 2))


def test_gradients_stay_finite_with_invalid_depth_and_points_behind_the_camera():
    rng = np.random.default_rng(4)
    depth = 0.5 + 4.0 * rng.random((1, 1, H, W))
    depth[0, 0, :3] = 0.0
    depth[0, 0, 5, 5], depth[0, 0, 6, 6] = np.nan, np.inf
    d = torch.tensor(depth, requires_grad=True)
    motion = torch.tensor(pose([0.0, 0.2, 0.0], [0.0, 0.0, -1.5]))[None].requires_grad_(True)  # some points behind
    result = warp_frame(torch.tensor(rng.random((1, 2, H, W))), d, torch.tensor(K)[None], motion)
    assert 0 < result.valid.float().mean() < 1 and (result.projected_depth < 0).any()
    (result.image.sum() + (result.projected_depth * result.valid).sum()).backward()
    assert torch.isfinite(d.grad).all() and torch.isfinite(motion.grad).all()
    assert torch.all(d.grad[~result.valid] == 0)


@pytest.mark.gpu
def test_warp_on_cuda_matches_cpu():
    rng = np.random.default_rng(5)
    depth = 2.0 + 3.0 * rng.random((2, H, W))
    image = torch.tensor(rng.random((2, 3, H, W)), dtype=torch.float32)
    d, k, m = batch_tensors(depth, pose([0.01, 0.02, 0.0], [0.1, 0.0, 0.2]))
    cpu = warp_frame(image, d.float(), k.float(), m.float())
    gpu = warp_frame(image.cuda(), d.float().cuda(), k.float().cuda(), m.float().cuda())
    assert torch.equal(gpu.valid.cpu(), cpu.valid)
    torch.testing.assert_close(gpu.image.cpu(), cpu.image, atol=1e-4, rtol=1e-4)
