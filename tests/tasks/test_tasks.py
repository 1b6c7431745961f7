"""Tasks: known-answer metrics and losses, motion ground truth, models that learn."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from taskology.errors import ConfigError
from taskology.config import CAMERA_TASKS
from taskology.tasks import TASKS, add_metric_state, build_task, task_class
from taskology.tasks.motion_targets import motion_targets
from taskology.tasks.normals import median_from_histogram


def finalize(task, outputs, batch):
    return task.finalize_metrics(add_metric_state({}, task.metrics(outputs, batch)))


def test_registry_lookup_error_lists_names() -> None:
    assert set(TASKS) == {"depth", "normals", "segmentation", "motion", "detection", "tracking"}
    with pytest.raises(ConfigError, match="depth, detection, motion, normals, segmentation, tracking"):
        task_class("depht")


def test_depth_metrics_known_answers() -> None:
    task = build_task("depth", width=4)
    gt = torch.tensor([[[[2.0, 4.0], [8.0, 0.0]]]])          # last pixel invalid
    perfect = finalize(task, {"depth": gt.clamp_min(1.0)}, {"depth": gt})
    assert perfect["abs_rel"] == 0 and perfect["rmse"] == 0 and perfect["delta1"] == 1
    doubled = finalize(task, {"depth": 2 * gt + 1}, {"depth": gt})   # invalid pixel's value ignored
    # |2d+1-d|/d = (d+1)/d: 1.5, 1.25, 1.125 -> mean 1.291666
    assert doubled["abs_rel"] == pytest.approx((1.5 + 1.25 + 1.125) / 3)
    assert doubled["rmse"] == pytest.approx(math.sqrt((9 + 25 + 81) / 3))
    assert doubled["delta1"] == 0
    assert float(task.supervised_loss({"depth": gt.clamp_min(1.0)}, {"depth": gt})["depth_log_l1"]) == 0


def test_depth_metrics_are_dataset_level_not_batch_means() -> None:
    task = build_task("depth", width=4)
    a = task.metrics({"depth": torch.full((1, 1, 1, 1), 2.0)}, {"depth": torch.full((1, 1, 1, 1), 1.0)})
    b = task.metrics({"depth": torch.ones(1, 1, 1, 3)}, {"depth": torch.ones(1, 1, 1, 3)})
    out = task.finalize_metrics(add_metric_state(add_metric_state({}, a), b))
    assert out["abs_rel"] == pytest.approx(1.0 / 4)  # one pixel of error 1 among four pixels


def test_depth_output_is_bounded_and_positive() -> None:
    task = build_task("depth", width=4)
    depth = task.depth_from_head(torch.tensor([-1e4, 0.0, 1e4]))
    assert depth[0] == pytest.approx(task.min_depth) and depth[2] == pytest.approx(task.max_depth)
    assert depth[1] == pytest.approx(math.sqrt(task.min_depth * task.max_depth))


def test_normals_ninety_degrees_off() -> None:
    task = build_task("normals", width=4)
    gt = torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 4, 5)
    off = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 4, 5)
    out = finalize(task, {"normals": off}, {"normals": gt})
    assert out["mean_angle_deg"] == pytest.approx(90.0, abs=1e-9)
    assert out["median_angle_deg"] == pytest.approx(90.0, abs=0.05)
    assert out["within_11_25_pct"] == 0
    loss = task.supervised_loss({"normals": off}, {"normals": gt})["normals_angle"]
    assert float(loss) == pytest.approx(math.pi / 2, abs=1e-5)
    perfect = finalize(task, {"normals": gt}, {"normals": gt})
    assert perfect["mean_angle_deg"] == pytest.approx(0.0, abs=1e-6) and perfect["within_11_25_pct"] == 100


def test_normals_ignore_invalid_pixels_and_median_is_exact_to_bin() -> None:
    task = build_task("normals", width=4)
    gt = torch.zeros(1, 3, 1, 4)
    gt[0, 2, 0, :3] = -1.0                                  # pixel 3 invalid (zero normal)
    angles = torch.deg2rad(torch.tensor([10.0, 20.0, 60.0, 90.0]))
    pred = torch.stack([torch.sin(angles), torch.zeros(4), -torch.cos(angles)]).view(1, 3, 1, 4)
    out = finalize(task, {"normals": pred}, {"normals": gt})
    assert out["mean_angle_deg"] == pytest.approx(30.0, abs=1e-6)
    assert abs(out["median_angle_deg"] - 20.0) < 0.05
    assert out["within_11_25_pct"] == pytest.approx(100 / 3)
    assert median_from_histogram(torch.tensor([0.0, 2.0, 2.0]), 1.0) == pytest.approx(2.0)


def test_segmentation_miou_known_answer() -> None:
    task = build_task("segmentation", width=4, class_ids=(1, 11, 14))
    semantic = torch.tensor([[[1, 1, 11, 11, 0, 0]]])      # 0 = unlabeled: ignored
    perfect = F.one_hot(task.contiguous_labels(semantic).clamp_min(0), 3).permute(0, 3, 1, 2).float()
    assert finalize(task, {"logits": perfect}, {"semantic": semantic})["miou"] == 1.0
    # predict road everywhere: road IoU = 2/4, sky IoU = 0; car absent from GT -> not averaged.
    road = torch.zeros(1, 3, 1, 6)
    road[:, 0] = 1.0
    out = finalize(task, {"logits": road}, {"semantic": semantic})
    assert out["miou"] == pytest.approx(0.25)
    assert out["pixel_acc"] == pytest.approx(0.5)
    loss = task.supervised_loss({"logits": perfect * 50}, {"semantic": semantic})["segmentation_ce"]
    assert float(loss) < 1e-6


def test_segmentation_rejects_unknown_class_ids() -> None:
    with pytest.raises(ValueError, match="SEMANTIC_CLASSES"):
        build_task("segmentation", width=4, class_ids=(1, 99))


def _yaw_pose(yaw: float, t: tuple[float, float, float]) -> np.ndarray:
    pose = np.eye(4)
    c, s = math.cos(yaw), math.sin(yaw)
    pose[:2, :2] = [[c, -s], [s, c]]
    pose[:3, 3] = t
    return pose


CAM_FROM_EGO = np.array([[0.0, -1, 0, 0], [0, 0, -1, 1.5], [1, 0, 0, 0], [0, 0, 0, 1]])


def test_motion_targets_hand_worked() -> None:
    # Ego drives 1 m forward (+x); a car (track 7) drives 2 m along world +y; a pole (track 3, static
    # class) has no track at t+1.
    world0, world1 = _yaw_pose(0.0, (0, 0, 0)), _yaw_pose(0.0, (1, 0, 0))
    instance = np.array([[-1, 7], [3, 7]], np.int32)
    out = motion_targets(world_from_ego=world0, world_from_ego_next=world1, cam_from_ego=CAM_FROM_EGO,
                         instance=instance, track_id=np.array([7, 3], np.int32), class_id=np.array([14, 6], np.uint8),
                         box=np.array([[10.0, 0, 0, 4, 2, 1.5, 0], [5, 5, 0, 0.3, 0.3, 3, 0]]),
                         track_id_next=np.array([7], np.int32), box_next=np.array([[9.0, 2, 0, 4, 2, 1.5, 0]]))
    # camera moves 1 m along its z axis: points come 1 m closer.
    np.testing.assert_allclose(out["cam_next_from_cam"][:3, 3], [0, 0, -1], atol=1e-6)
    # world +y (ego left) is camera -x.
    np.testing.assert_allclose(out["object_translation"][:, 0, 1], [-2, 0, 0], atol=1e-6)
    np.testing.assert_allclose(out["object_translation"][:, 0, 0], 0)
    assert out["object_translation_valid"][0].tolist() == [[True, True], [False, True]]
    assert out["movable"][0].tolist() == [[False, True], [False, True]]


def test_motion_metrics_known_answers() -> None:
    task = build_task("motion", width=4)
    pose = torch.eye(4)[None]
    pose[0, :3, 3] = torch.tensor([0.0, 0.0, -1.0])
    batch = {"cam_next_from_cam": pose, "object_translation": torch.zeros(1, 3, 2, 2),
             "object_translation_valid": torch.ones(1, 1, 2, 2, dtype=torch.bool),
             "movable": torch.tensor([[[[True, False], [False, False]]]])}
    ot = torch.zeros(1, 3, 2, 2)
    ot[0, :, 0, 0] = torch.tensor([0.3, 0.4, 0.0])           # EPE 0.5 on the single movable pixel
    ot[0, :, 1, 1] = 10.0                                   # not movable: ignored by the metric
    outputs = {"rotation": torch.tensor([[0.0, 0.0, 0.1]]), "translation": torch.tensor([[0.0, 3.0, 3.0]]),
               "object_translation": ot}
    out = finalize(task, outputs, batch)
    assert out["ego_rotation_err_deg"] == pytest.approx(math.degrees(0.1), rel=1e-6)
    assert out["ego_translation_err_m"] == pytest.approx(5.0)
    assert out["object_epe_m"] == pytest.approx(0.5)


@pytest.mark.parametrize("name", sorted(CAMERA_TASKS))  # the LiDAR tasks: tests/tasks/test_lidar_tasks.py
def test_every_camera_task_overfits_one_batch(name: str) -> None:
    torch.manual_seed(0)
    task = build_task(name, width=4)
    model = task.build_model()
    g = torch.Generator().manual_seed(1)
    rgb = torch.rand(2, 3, 16, 24, generator=g)
    batch = {"rgb": rgb, "rgb_next": rgb.roll(1, dims=3), "depth": 1.0 + 10 * rgb[:, :1],
             "normals": F.normalize(rgb - 0.5, dim=1), "semantic": torch.tensor([1, 11, 14])[(rgb[:, 0] * 2.99).long()],
             "cam_next_from_cam": torch.eye(4).expand(2, 4, 4).clone(), "object_translation": 0.2 * (rgb - 0.5),
             "object_translation_valid": torch.ones(2, 1, 16, 24, dtype=torch.bool),
             "movable": torch.ones(2, 1, 16, 24, dtype=torch.bool)}
    batch["cam_next_from_cam"][:, 2, 3] = -0.7
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss() -> torch.Tensor:
        return sum(task.supervised_loss(task.forward(model, batch), batch).values())

    first = float(loss().detach())
    for _ in range(20):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    assert float(loss().detach()) < 0.6 * first
