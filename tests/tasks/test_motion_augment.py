"""Motion augmentation: mirrored and reversed pairs must carry exact labels.

The mirror is checked against projective geometry done independently in NumPy: 3D points and a motion are
projected before and after mirroring the world, and the mirrored labels must predict the flipped pixels.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from taskology.errors import ConfigError
from taskology.geometry.rigid import so3_exp
from taskology.tasks.motion import MotionTask, mirror_pairs, reverse_pairs

H, W = 8, 12
K = np.array([[10.0, 0.0, (W - 1) / 2], [0.0, 10.0, (H - 1) / 2], [0.0, 0.0, 1.0]])


def _pose(axis_angle: list[float], translation: list[float]) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = so3_exp(np.asarray(axis_angle, float))
    pose[:3, 3] = translation
    return pose


def _batch(n: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    poses = np.stack([_pose([0.02, -0.05 * (i + 1), 0.01], [0.3, -0.1, 0.8 + i]) for i in range(n)])
    return {"rgb": torch.rand(n, 3, H, W, generator=gen), "rgb_next": torch.rand(n, 3, H, W, generator=gen),
            "cam_next_from_cam": torch.from_numpy(poses.astype(np.float32)),
            "object_translation": torch.rand(n, 3, H, W, generator=gen) - 0.5,
            "object_translation_valid": torch.rand(n, 1, H, W, generator=gen) > 0.3,
            "movable": torch.rand(n, 1, H, W, generator=gen) > 0.5}


def _project(points: np.ndarray) -> np.ndarray:
    uvw = points @ K.T
    return uvw[:, :2] / uvw[:, 2:]


def test_mirrored_labels_predict_the_flipped_pixels() -> None:
    """Pixel (v, u) of frame t and its 3D point move to pixel p(T X + o). Mirrored: the point seen at (v,
    W-1-u) must move, under the mirrored pose and object field, to p(T X + o) flipped."""
    rng = np.random.default_rng(3)
    batch = _batch()
    out = mirror_pairs(batch, torch.tensor([True, False]))
    pose, field = batch["cam_next_from_cam"][0].double().numpy(), batch["object_translation"][0].double().numpy()
    pose_m, field_m = out["cam_next_from_cam"][0].double().numpy(), out["object_translation"][0].double().numpy()
    for _ in range(20):
        v, u, z = int(rng.integers(H)), int(rng.integers(W)), float(rng.uniform(2, 30))
        point = z * np.linalg.solve(K, [u, v, 1.0])
        moved = pose[:3, :3] @ point + pose[:3, 3] + field[:, v, u]
        expected = _project(moved[None])[0]
        u_m = W - 1 - u
        point_m = z * np.linalg.solve(K, [u_m, v, 1.0])
        moved_m = pose_m[:3, :3] @ point_m + pose_m[:3, 3] + field_m[:, v, u_m]
        got = _project(moved_m[None])[0]
        np.testing.assert_allclose(got, [W - 1 - expected[0], expected[1]], atol=1e-4)
    # the other sample is untouched; the images and masks are flipped, the rotation stays a rotation
    for key in batch:
        assert torch.equal(out[key][1], batch[key][1]), key
    assert torch.equal(out["rgb"][0], batch["rgb"][0].flip(-1))
    assert torch.equal(out["object_translation_valid"][0], batch["object_translation_valid"][0].flip(-1))
    rot = out["cam_next_from_cam"][0, :3, :3].double()
    torch.testing.assert_close(rot @ rot.T, torch.eye(3, dtype=torch.float64), atol=1e-5, rtol=0)
    assert float(torch.det(rot)) == pytest.approx(1.0, abs=1e-5)


def test_mirror_twice_is_identity_and_keeps_straight_driving() -> None:
    batch = _batch()
    which = torch.tensor([True, True])
    twice = mirror_pairs(mirror_pairs(batch, which), which)
    for key in batch:
        torch.testing.assert_close(twice[key], batch[key], atol=1e-6, rtol=0)
    straight = dict(batch, cam_next_from_cam=torch.from_numpy(np.stack([_pose([0, 0, 0], [0, 0.03, -0.6])] * 2)
                                                              .astype(np.float32)))
    torch.testing.assert_close(mirror_pairs(straight, which)["cam_next_from_cam"], straight["cam_next_from_cam"])


def test_reversed_pair_has_the_inverse_motion_and_no_object_labels() -> None:
    batch = _batch()
    out = reverse_pairs(batch, torch.tensor([False, True]))
    assert torch.equal(out["rgb"][1], batch["rgb_next"][1]) and torch.equal(out["rgb_next"][1], batch["rgb"][1])
    product = out["cam_next_from_cam"][1].double() @ batch["cam_next_from_cam"][1].double()
    torch.testing.assert_close(product, torch.eye(4, dtype=torch.float64), atol=1e-6, rtol=0)
    assert not out["object_translation_valid"][1].any()
    for key in batch:
        assert torch.equal(out[key][0], batch[key][0]), key


def test_augment_draws_each_sample_and_is_a_function_of_the_generator() -> None:
    task = MotionTask(width=4)
    batch = _batch(n=400, seed=1)
    out = task.augment(batch, np.random.default_rng([1, 7, 2]))
    swapped = (out["rgb_next"] == batch["rgb"]).flatten(1).all(1) | (out["rgb_next"] == batch["rgb"].flip(-1)).flatten(1).all(1)
    mirrored = (out["rgb"] == batch["rgb"].flip(-1)).flatten(1).all(1) | (out["rgb"] == batch["rgb_next"].flip(-1)).flatten(1).all(1)
    assert 150 < int(swapped.sum()) < 250 and 150 < int(mirrored.sum()) < 250
    assert 50 < int((swapped & mirrored).sum()) < 150  # independent draws
    again = task.augment(batch, np.random.default_rng([1, 7, 2]))
    for key in out:
        assert torch.equal(out[key], again[key]), key


def test_augment_flag_refused_at_load_for_a_task_without_augmentations() -> None:
    from taskology.config import load_config

    with pytest.raises(ConfigError, match=r"tasks\.depth\.augment: task 'depth' has no augmentations"):
        load_config(None, ["tasks.depth.augment=true"])
    assert load_config(None, ["tasks.motion.augment=true"]).tasks["motion"].augment
