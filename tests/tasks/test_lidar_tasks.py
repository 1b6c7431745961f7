"""The LiDAR tasks: box code round trips, labels derived from the simulator's ground truth, AP of perfect and of
wrong boxes, training that learns, and empty sweeps."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from taskology.data.datasets import FrameDataset
from taskology.data.splits import make_splits
from taskology.engine.batches import collate
from taskology.engine.task_data import PreparedDataset
from taskology.geometry.box_iou import nms_bev_reference
from taskology.geometry.boxes import transform_boxes
from taskology.geometry.pillars import BevGrid
import taskology.tasks.lidar as lidar
from taskology.tasks.detection import DetectionTask, interpolated_ap
from taskology.tasks.tracking import TrackingTask, associate, propagate

GRID = BevGrid((-32.0, 32.0), (-32.0, 32.0), (-0.5, 4.5), 0.5)


def _dataset(root: Path, task, pairs: bool) -> PreparedDataset:
    manifest = make_splits(root, {task.name: 1.0}, test_sequences=2, mediator_fraction=0.5, seed=0, write=False)
    layers = task.input_layers + task.label_layers
    return PreparedDataset(FrameDataset(manifest, "test", None, layers=layers, pairs=pairs), task)


def perfect_outputs(batch: dict, grid: BevGrid, suffix: str = "") -> dict[str, torch.Tensor]:
    """Detection outputs that say exactly the labelled boxes of each frame of ``batch``."""
    return lidar.label_outputs(batch["gt_boxes" + suffix], batch["gt_class" + suffix], grid, suffix=suffix)


def test_box_code_round_trips_through_targets_and_decoding() -> None:
    rng = np.random.default_rng(0)
    boxes = np.column_stack([rng.uniform(-30, 30, (12, 2)), rng.uniform(0.3, 1.5, 12), rng.uniform(3.5, 5.0, 12),
                             rng.uniform(1.6, 2.1, 12), rng.uniform(1.4, 2.0, 12), rng.uniform(-3.1, 3.1, 12)])
    boxes[::3, 0] = np.arange(4) * 15.0 - 25.0       # spread out: one peak per cell, no NMS between them
    boxes[::3, 1] = 10.0
    boxes = boxes[np.argsort(boxes[:, 0])]
    keep = np.ones(len(boxes), bool)
    for i in range(len(boxes)):                      # drop boxes whose centres share a 1 m output cell
        for j in range(i):
            if keep[j] and np.abs(boxes[i, :2] - boxes[j, :2]).max() < 6.0:
                keep[i] = False
    boxes = boxes[keep]
    classes = np.arange(len(boxes)) % 2
    target = lidar.encode_targets(boxes, classes, GRID)
    assert target["heatmap"].max() == 1.0 and int(target["mask"].sum()) == len(boxes)
    found, found_classes, scores = lidar.decode_boxes(target["heatmap"] * 40 - 20, target["box_map"], GRID)
    order = np.lexsort((found[:, 1], found[:, 0]))
    truth = np.lexsort((boxes[:, 1], boxes[:, 0]))
    np.testing.assert_allclose(found[order], boxes[truth], atol=1e-5)
    assert found_classes[order].tolist() == classes[truth].tolist()
    assert (scores > 0.99).all()


def _decode_reference(heatmap: torch.Tensor, box_map: torch.Tensor, grid: BevGrid, threshold: float, max_boxes: int,
                      nms_iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decoding written the plain way: a 3x3 max-pool over the whole sigmoid map, top-k, then the pure-Python
    NMS of each class on its own."""
    heat = torch.sigmoid(heatmap.double())[None]
    peaks = (heat == torch.nn.functional.max_pool2d(heat, 3, stride=1, padding=1)) & (heat >= threshold)
    scores = torch.where(peaks, heat, torch.zeros(())).flatten()
    top = torch.topk(scores, min(max_boxes, int((scores > 0).sum()))).indices.numpy()
    k, rest = np.divmod(top, heat.shape[2] * heat.shape[3])
    i, j = np.divmod(rest, heat.shape[3])
    boxes = lidar.boxes_from_code(np.stack([i, j], 1).astype(np.float64), box_map.numpy()[:, i, j].T, grid)
    score = scores.numpy()[top]
    keep = []
    for cls in np.unique(k):
        rows = np.flatnonzero(k == cls)
        keep.extend(rows[nms_bev_reference(boxes[rows], score[rows], nms_iou)])
    keep = np.array(sorted(keep, key=lambda r: -score[r]), dtype=np.int64)
    return boxes[keep], k[keep], score[keep]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decoding_matches_a_plain_max_pool_and_per_class_nms(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = GRID.shape[0] // lidar.OUTPUT_STRIDE, GRID.shape[1] // lidar.OUTPUT_STRIDE
    smooth = torch.nn.functional.avg_pool2d(torch.from_numpy(rng.normal(0, 3, (2, h, w))), 5, 1, 2)
    heatmap = (smooth * 6 - 1.5).float()                       # smooth hills: plateaus-free peaks, many of them
    box_map = torch.from_numpy(np.concatenate([rng.uniform(0, 1, (2, h, w)), rng.uniform(0.3, 1.5, (1, h, w)),
                                               np.log(rng.uniform(2.0, 9.0, (3, h, w))),
                                               rng.normal(0, 1, (2, h, w))])).float()  # large boxes: NMS at work
    found = lidar.decode_boxes(heatmap, box_map, GRID, score_threshold=0.3, max_boxes=40, nms_iou=0.1)
    want = _decode_reference(heatmap, box_map, GRID, 0.3, 40, 0.1)
    assert 5 < len(want[0]) < 40                               # NMS removed some, not all
    np.testing.assert_allclose(found[0], want[0], rtol=1e-6, atol=1e-6)
    assert found[1].tolist() == want[1].tolist()
    np.testing.assert_allclose(found[2], want[2], rtol=1e-5)


def test_visible_boxes_need_points_inside_and_a_detection_class() -> None:
    boxes = np.array([[5.0, 0, 1, 4, 2, 2, 0], [10.0, 5, 1, 4, 2, 2, 0], [-5.0, 0, 1, 1, 1, 2, 0],
                      [50.0, 0, 1, 4, 2, 2, 0]])
    points = np.array([[5.0 + 0.1 * k, 0, 1, 0.5] for k in range(6)] + [[10.0, 5, 1, 0.5]] * 2
                      + [[-5.0, 0, 1, 0.5]] * 9 + [[50.0, 0, 1, 0.5]] * 9, dtype=np.float32)
    kept, classes, tracks = lidar.visible_boxes(points, boxes, np.array([14, 16, 9, 14]), np.arange(4), GRID, 5)
    # box 1 has 2 points, box 2 is vegetation, box 3 is off the grid
    assert tracks.tolist() == [0] and classes.tolist() == [0]


def test_detection_labels_and_perfect_predictions_score_ap_one(lidar_root: Path) -> None:
    task = DetectionTask(width=4, grid=GRID)
    data = _dataset(lidar_root, task, pairs=False)
    batch = collate([data[i] for i in range(len(data))])
    assert batch["bev"].shape == (len(data), 6, 128, 128)
    assert int((batch["gt_class"] >= 0).sum()) >= 10, "the fixture should show objects"
    perfect = perfect_outputs(batch, GRID)
    metrics = task.finalize_metrics(task.metrics(perfect, batch))
    assert metrics["vehicle/ap_bev@0.7"] == pytest.approx(1.0)
    shifted = dict(perfect, box=perfect["box"].clone())
    shifted["box"][:, 0] += 3.0                       # every box 6 m forward: no IoU with the truth
    assert task.finalize_metrics(task.metrics(shifted, batch))["vehicle/ap_bev@0.5"] == 0.0
    loss = task.supervised_loss(perfect, batch)
    assert float(loss["box"]) < 1e-5 and float(loss["heatmap"]) < 1e-3


def test_interpolated_ap_of_half_the_objects_found_first() -> None:
    # two true positives with the best scores, then two false positives, 4 objects: precision 1 up to recall 0.5
    tp, fp = np.zeros(10), np.zeros(10)
    tp[9], fp[5] = 2, 2
    assert interpolated_ap(tp, fp, 4) == pytest.approx(20 / 40)


def test_tracking_labels_carry_every_box_onto_its_next_frame(lidar_root: Path) -> None:
    task = TrackingTask(width=4, grid=GRID)
    data = _dataset(lidar_root, task, pairs=True)
    moved_objects = 0
    for i in range(len(data)):
        sample = data.base[i]
        prepared = task.prepare(sample)
        boxes, _ = lidar.unpadded(prepared["gt_boxes"], prepared["gt_class"])
        known = prepared["gt_motion_mask"].numpy()[: len(boxes)] > 0
        ego = sample["ego_next_from_ego"].double().numpy()
        moved = propagate(boxes[known], prepared["gt_motion"].numpy()[: len(boxes)][known], ego)
        ids = prepared["gt_track"].numpy()[: len(boxes)][known]
        truth = sample["boxes_next"].double().numpy()
        for row, track in zip(moved, ids):
            expected = truth[sample["track_id_next"].numpy() == track][0]
            np.testing.assert_allclose(row[:2], expected[:2], atol=1e-3)
        moved_objects += int((np.abs(prepared["gt_motion"].numpy()[:, :2]).sum(1) > 0.05).sum())
        lidar_from_ego = sample["lidar_from_ego"].double().numpy()
        np.testing.assert_allclose(prepared["lidar_motion"].numpy(), lidar_from_ego @ ego @ np.linalg.inv(lidar_from_ego),
                                   atol=1e-5)
    assert moved_objects > 0, "the fixture should show moving objects"


def test_associate_follows_moved_boxes_not_the_order() -> None:
    boxes = np.array([[10.0, 0, 1, 4, 2, 1.5, 0], [10.0, 5, 1, 4, 2, 1.5, 0], [20.0, -5, 1, 4, 2, 1.5, 0]])
    motion = np.array([[1.0, 0, 0], [0.0, 0, 0], [-1.0, 0, 0]])
    ego = np.eye(4)
    ego[0, 3] = -0.5                                   # the ego drove 0.5 m forward
    later = transform_boxes(ego, boxes + np.column_stack([motion[:, :2], np.zeros((3, 5))]))
    order = np.array([2, 0, 1])
    assert associate(propagate(boxes, motion, ego), later[order]).tolist() == order.tolist()
    assert associate(propagate(boxes, motion, ego), later[order] + [0, 30, 0, 0, 0, 0, 0]).tolist() == [-1, -1, -1]


def test_detection_learns_on_two_sweeps(lidar_root: Path) -> None:
    torch.manual_seed(0)
    task = DetectionTask(width=4, grid=GRID, augment=False)
    data = _dataset(lidar_root, task, pairs=False)
    batch = collate([data[0], data[1]])
    model = task.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = sum(task.supervised_loss(task.forward(model, batch), batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_an_empty_sweep_is_a_valid_empty_prediction() -> None:
    task = DetectionTask(width=4, grid=GRID)
    sample = {"lidar_points": torch.zeros(0, 4), "lidar_from_ego": torch.eye(4), "boxes": torch.zeros(0, 7,
              dtype=torch.float64), "class_id": torch.zeros(0, dtype=torch.int64), "track_id": torch.zeros(0, dtype=torch.int64)}
    prepared = task.prepare(sample, augment=True)
    assert float(prepared["bev"].abs().sum()) == 0.0 and int((prepared["gt_class"] >= 0).sum()) == 0
    model = task.build_model().eval()
    with torch.no_grad():
        out = task.forward(model, {"bev": prepared["bev"][None]})
    assert lidar.decode_batch(out, GRID, score_threshold=0.5)[0][0].shape == (0, 7)


def test_ego_correlation_finds_the_shift_of_a_static_world() -> None:
    """The correlation layer's soft-argmax is the ego translation, with the right sign, for a world seen from a
    vehicle that moved (with a fixed encoder that keeps the pillar features: no training involved)."""
    from taskology.geometry.pillars import bev_pillars
    from taskology.tasks.tracking import EgoCorrelation

    rng = np.random.default_rng(0)
    grid = BevGrid((-16.0, 16.0), (-16.0, 16.0), (-0.5, 4.5), 0.5)
    world = np.column_stack([rng.uniform(-24, 24, (4000, 2)), rng.uniform(0, 3, 4000), np.ones(4000)])
    layer = EgoCorrelation(len(lidar.PILLAR_FEATURES), 4, radius=3, cell_m=2 * grid.cell_m)
    layer.encode = torch.nn.AvgPool2d(2)
    layer.log_sharpness.data.fill_(np.log(500.0))
    for dx, dy in [(-2.0, 1.0), (1.0, 0.0), (0.0, -3.0)]:
        ego = np.eye(4)
        ego[:2, 3] = dx, dy                                   # ego_{t+1}_from_ego_t
        later = world.copy()
        later[:, :3] = world[:, :3] + [dx, dy, 0.0]
        bev, bev_next = (torch.from_numpy(bev_pillars(p.astype(np.float32), grid))[None] for p in (world, later))
        translation, correlation = layer(bev, bev_next)
        np.testing.assert_allclose(translation[0].detach().numpy(), [dx, dy], atol=0.1)
        assert correlation.shape == (1, 49)
