"""The LiDAR relations on the simulator's ground truth: ~zero (or fully matched) when the tasks are right,
clearly worse when one is wrong, and gradients only where the relation says."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from taskology.data.datasets import FrameDataset
from taskology.data.splits import make_splits
from taskology.engine.batches import collate
from taskology.geometry.pillars import BevGrid
from taskology.geometry.rigid import so3_log
from taskology.losses import RELATIONS, evaluate_for_receiver
from taskology.losses.box_tracking import box_tracking_terms
from taskology.losses.ego_motion_agreement import ego_motion_agreement_terms
from taskology.losses.segmentation_boxes import box_pixel_labels, segmentation_boxes_loss
from taskology.tasks import build_task, lidar
from taskology.tasks.detection import DetectionTask
from taskology.tasks.tracking import TrackingTask

GRID = BevGrid((-32.0, 32.0), (-32.0, 32.0), (-0.5, 4.5), 0.5)


def _perfect(batch: dict, suffix: str = "") -> dict[str, torch.Tensor]:
    return lidar.label_outputs(batch["gt_boxes" + suffix], batch["gt_class" + suffix], GRID, suffix=suffix)


@pytest.fixture(scope="module")
def gt(lidar_root: Path):
    """Ground-truth outputs of detection (t and t+1), tracking and motion on the pairs of the LiDAR fixture."""
    manifest = make_splits(lidar_root, {"tracking": 1.0}, test_sequences=2, mediator_fraction=0.5, seed=0,
                           write=False)
    tasks = {"detection": DetectionTask(width=4, grid=GRID), "tracking": TrackingTask(width=4, grid=GRID),
             "motion": build_task("motion", width=4), "segmentation": build_task("segmentation", width=4),
             "depth": build_task("depth", width=4)}
    layers = sorted({layer for task in tasks.values() for layer in task.input_layers + task.label_layers})
    base = FrameDataset(manifest, "test", None, layers=layers, pairs=True)
    samples = []
    for i in range(len(base)):
        sample = base[i]
        at_t = tasks["detection"].prepare(sample)
        at_next = tasks["detection"].prepare({**sample, "lidar_points": sample["lidar_points_next"],
                                             "boxes": sample["boxes_next"], "class_id": sample["class_id_next"],
                                             "track_id": sample["track_id_next"]})
        merged = tasks["motion"].prepare(tasks["tracking"].prepare(sample))
        merged.update({"gt_boxes_next": at_next["gt_boxes"], "gt_class_next": at_next["gt_class"]})
        merged.update({k: at_t[k] for k in ("gt_boxes", "gt_class")})
        samples.append({k: v for k, v in merged.items() if k not in lidar_ragged()})
    batch = collate(samples)
    # tracking's object motion map: the true motion at each labelled centre cell
    h, w = lidar.output_shape(GRID)
    motion_map = torch.zeros(len(samples), 3, h * w)
    for b in range(len(samples)):
        mask = batch["gt_motion_mask"][b] > 0
        motion_map[b, :, batch["gt_index"][b][mask]] = batch["gt_motion"][b][mask].T
    lidar_motion = batch["lidar_motion"].double().numpy()
    tracking = {"ego_rotation": torch.tensor(np.stack([so3_log(m[:3, :3]) for m in lidar_motion])).float(),
                "ego_translation": batch["lidar_motion"][:, :3, 3].clone(),
                "object_motion": motion_map.reshape(len(samples), 3, h, w)}
    cam = batch["cam_next_from_cam"].double().numpy()
    motion = {"rotation": torch.tensor(np.stack([so3_log(m[:3, :3]) for m in cam])).float(),
              "translation": batch["cam_next_from_cam"][:, :3, 3].clone()}
    detection = {**_perfect(batch), **_perfect(batch, "_next")}
    return {"batch": batch, "tasks": tasks, "outputs": {"detection": detection, "tracking": tracking, "motion": motion}}


def lidar_ragged() -> set[str]:
    from taskology.data.datasets import RAGGED_KEYS

    return set(RAGGED_KEYS)


def test_ego_motion_agreement_is_zero_on_truth_and_teaches_both(gt) -> None:
    terms = ego_motion_agreement_terms(gt["outputs"], gt["batch"])
    assert float(terms["translation"]) < 1e-4 and float(terms["rotation"]) < 1e-4
    outputs = {k: dict(v) for k, v in gt["outputs"].items()}
    outputs["motion"]["translation"] = gt["outputs"]["motion"]["translation"] * 0.5   # the scale a camera misses
    worse = ego_motion_agreement_terms(outputs, gt["batch"])
    assert float(worse["translation"]) > 0.1
    for receiver in ("motion", "tracking"):
        own = {k: v.clone().requires_grad_(True) for k, v in outputs[receiver].items()}
        peers = {k: v for k, v in outputs.items() if k != receiver}
        loss = evaluate_for_receiver(RELATIONS["ego_motion_agreement"], receiver, own, peers, gt["batch"], gt["tasks"])
        loss.backward()
        assert any(float(v.grad.abs().sum()) > 0 for v in own.values() if v.grad is not None)


def test_box_tracking_matches_true_boxes_and_blames_wrong_motion(gt) -> None:
    batch, tasks = gt["batch"], gt["tasks"]
    terms = box_tracking_terms(gt["outputs"], batch, tasks)
    assert float(terms["matched"]) > 0.95
    assert float(terms["tracking"]) < 0.05
    outputs = {k: dict(v) for k, v in gt["outputs"].items()}
    outputs["tracking"]["ego_translation"] = gt["outputs"]["tracking"]["ego_translation"] + torch.tensor([0.6, 0, 0])
    wrong = box_tracking_terms(outputs, batch, tasks)
    assert float(wrong["tracking"]) > 0.4


def test_box_tracking_teaches_detection_at_t_plus_1_only_where_boxes_move_to(gt) -> None:
    batch, tasks = gt["batch"], gt["tasks"]
    detection = {k: v.clone() for k, v in gt["outputs"]["detection"].items()}
    detection["heatmap_next"] = torch.full_like(detection["heatmap_next"], -5.0).requires_grad_(True)  # sees nothing
    loss = evaluate_for_receiver(RELATIONS["box_tracking"], "detection", detection,
                                 {"tracking": gt["outputs"]["tracking"]}, batch, tasks)
    assert float(loss.detach()) > 1.0
    loss.backward()
    grad = detection["heatmap_next"].grad
    taught = grad.abs().sum(dim=1) > 0                                  # cells that received a push
    truth = _perfect(batch, "_next")["heatmap_next"] > 0                # the true centres at t+1
    assert int(taught.sum()) > 5
    assert float((taught & truth.any(dim=1)).sum()) / float(taught.sum()) > 0.9
    assert float(grad[taught.unsqueeze(1).expand_as(grad)].max()) <= 0.0   # pushes the logit up only


def test_segmentation_boxes_labels_agree_with_the_true_classes(gt) -> None:
    batch = gt["batch"]
    depth = batch["depth"]
    b, _, h, w = depth.shape
    boxes = [lidar.unpadded(batch["gt_boxes"][i], batch["gt_class"][i]) for i in range(b)]
    from taskology.geometry.camera import points_from_depth_torch

    points = points_from_depth_torch(depth, batch["K"]).reshape(b, 3, -1).double()
    ego_from_cam = torch.linalg.inv(batch["cam_from_ego"].double())
    ego = (ego_from_cam[:, :3, :3] @ points + ego_from_cam[:, :3, 3:]).transpose(1, 2).numpy()
    ego[(depth.reshape(b, -1) <= 0).numpy()] = np.nan
    labels = np.stack([box_pixel_labels(np.ascontiguousarray(ego[i]), *boxes[i], GRID, 1.0) for i in range(b)])
    semantic = batch["semantic"].reshape(b, -1).numpy()
    vehicle = labels == 0
    assert vehicle.sum() > 20, "the fixture should show vehicles in the camera"
    assert np.isin(semantic[vehicle], [14, 15, 16]).mean() > 0.9
    far = labels == -1
    assert not np.isin(semantic[far], [12, 14, 15, 16]).mean() > 0.02


def test_segmentation_boxes_prefers_the_true_segmentation(gt) -> None:
    batch, tasks = gt["batch"], gt["tasks"]
    seg = tasks["segmentation"]
    labels = seg.contiguous_labels(batch["semantic"]).clamp_min(0)
    right = 30.0 * F.one_hot(labels, seg.num_classes).permute(0, 3, 1, 2).float()
    road = torch.zeros_like(right)
    road[:, seg.class_index([1])[0]] = 30.0
    car = torch.zeros_like(right)
    car[:, seg.class_index([14])[0]] = 30.0
    outputs = {"depth": {"depth": batch["depth"]}, "detection": gt["outputs"]["detection"]}
    good = float(segmentation_boxes_loss({**outputs, "segmentation": {"logits": right}}, batch, tasks))
    no_vehicles = float(segmentation_boxes_loss({**outputs, "segmentation": {"logits": road}}, batch, tasks))
    all_vehicles = float(segmentation_boxes_loss({**outputs, "segmentation": {"logits": car}}, batch, tasks))
    assert good < 0.1 and no_vehicles > 10 * good and all_vehicles > 100 * good
