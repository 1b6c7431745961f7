"""``taskology bench lidar``: what the LiDAR tasks' discrete steps cost next to their networks.

On the six-task CPU preset (``six-tasks``: +-32 m at 0.5 m, width 8; ``--quick``: a smaller world, fewer
repeats), measured in one process on one torch thread:

- the ``box_tracking`` relation (decoding both frames, Numba IoU matching, the torch loss and its backward) on a
  mediator batch against one detection training step (forward, loss, backward, optimizer) of the preset's batch:
  target <= 10 %;
- decoding + NMS of one frame (:func:`taskology.tasks.lidar.decode_boxes`) against the detection network's forward
  pass on that frame: target <= 5 %;
- the exact AP evaluation (BEV and 3D, both classes, :func:`taskology.eval3d.evaluate_detections`) over every frame
  of the test split: target <= 10 s.

The relation and the decoding run on *truthful* outputs (the labelled boxes drawn as heatmaps), so they see as
many boxes as a trained detector would; an untrained network has none above the score threshold. The AP input is
the labelled boxes moved by 0.3 m of noise plus 30 random false boxes per frame and class.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from taskology.bench import BenchResult, median_time, target

PRESET = "six-tasks"
QUICK_OVERRIDES = ["sim.sequences=4", "sim.frames=6", "data.test_sequences=1", "data.val_sequences=1"]


def run(quick: bool) -> BenchResult:
    import torch

    import taskology.tasks.lidar as lidar
    from taskology.engine.batches import collate
    from taskology.engine.peers import InProcessPeerView
    from taskology.engine.runner import TaskRunner
    from taskology.eval3d import FrameDetections, evaluate_detections
    from taskology.experiment import arm_config, ensure_world
    from taskology.losses import RELATIONS, evaluate_for_receiver

    torch.set_num_threads(1)
    overrides = QUICK_OVERRIDES if quick else []
    config = arm_config(PRESET, 1.0, "alone", overrides=overrides)
    root = ensure_world(config)
    config = arm_config(PRESET, 1.0, "alone", data_root=root, overrides=overrides)
    runner = TaskRunner(task_name="detection", config=config, data_root=root, run_dir=Path("/nonexistent"),
                        peer_view=InProcessPeerView({}), seed=0, collective=False)
    tracker = TaskRunner(task_name="tracking", config=config, data_root=root, run_dir=Path("/nonexistent"),
                         peer_view=InProcessPeerView({}), seed=0, collective=False)
    grid = runner.task.grid
    repeats = 3 if quick else 10

    step_s = median_time(runner.train_step, repeats)
    # a pair batch with labels at t and t+1: the tracking split's pairs (labels of t) and detection's frames
    pairs = tracker.data.evaluation("test")
    frames = runner.data.evaluation("test")
    index = {sid: i for i, sid in enumerate(frames.sample_ids)}
    size = int(config.train.mediator_batch_size)
    chosen = [i for i, sid in enumerate(pairs.sample_ids) if _next_id(sid) in index][:size]
    pair_batch = collate([pairs[i] for i in chosen])
    next_batch = collate([frames[index[_next_id(pairs.sample_ids[i])]] for i in chosen])
    outputs = {**lidar.label_outputs(pair_batch["gt_boxes"], pair_batch["gt_class"], grid, logit=4.0),
               **lidar.label_outputs(next_batch["gt_boxes"], next_batch["gt_class"], grid, suffix="_next", logit=4.0)}
    with torch.no_grad():
        motion = tracker.model.eval()(pair_batch["bev"], pair_batch["bev_next"])
    relation = RELATIONS["box_tracking"]

    def relation_step() -> None:
        own = {k: v.clone().requires_grad_(True) for k, v in outputs.items()}
        loss = evaluate_for_receiver(relation, "detection", own, {"tracking": motion}, pair_batch,
                                     {"detection": runner.task, "tracking": tracker.task})
        loss.backward()

    relation_s = median_time(relation_step, repeats)
    boxes_per_frame = float(np.mean([len(lidar.decode_boxes(outputs["heatmap"][b], outputs["box"][b], grid)[0])
                                     for b in range(len(chosen))]))

    one = {k: v[:1] for k, v in outputs.items() if not k.endswith("_next")}
    decode_s = median_time(lambda: lidar.decode_boxes(one["heatmap"][0], one["box"][0], grid), repeats * 3)
    model = runner.model.eval()
    with torch.no_grad():
        forward_s = median_time(lambda: model(pair_batch["bev"][:1]), repeats * 3)

    rng = np.random.default_rng(0)
    records = []
    for i in range(len(frames)):
        sample = frames[i]
        boxes, classes = lidar.unpadded(sample["gt_boxes"], sample["gt_class"])
        names = np.array([lidar.CLASS_NAMES[k] for k in classes], dtype=str)
        truth = FrameDetections(boxes, names)
        noisy = boxes + np.concatenate([rng.normal(0, 0.3, (len(boxes), 2)), np.zeros((len(boxes), 5))], axis=1)
        false = np.column_stack([rng.uniform(-32, 32, (60, 2)), np.full(60, 0.8), np.tile([4.0, 1.8, 1.5], (60, 1)),
                                 rng.uniform(-3, 3, 60)])
        pred = FrameDetections(np.concatenate([noisy, false]),
                               np.concatenate([names, np.array(["vehicle", "pedestrian"] * 30)]),
                               rng.uniform(0.1, 1.0, len(boxes) + 60))
        records.append((pred, truth))
    start = time.perf_counter()
    ap = evaluate_detections(records, classes=lidar.CLASS_NAMES)
    ap_s = time.perf_counter() - start

    figures = {"detection_step_s": step_s, "box_tracking_s": relation_s, "relation_share": relation_s / step_s,
               "boxes_per_frame": boxes_per_frame, "decode_s": decode_s, "forward_s": forward_s,
               "decode_share": decode_s / forward_s, "ap_eval_s": ap_s, "ap_frames": len(records),
               "ap_noisy_vehicle_bev@0.5": ap["vehicle/ap_bev@0.5"],
               "grid": list(grid.shape), "batch_size": int(config.tasks["detection"].batch_size),
               "mediator_batch_size": size}
    table = "\n".join([
        "| measured | time | reference | share / limit |", "| --- | --- | --- | --- |",
        f"| box_tracking relation (batch {size}, {boxes_per_frame:.0f} boxes/frame) | {relation_s * 1e3:.1f} ms | "
        f"detection train step {step_s * 1e3:.0f} ms | {100 * relation_s / step_s:.1f} % (<= 10 %) |",
        f"| decode + NMS, one frame | {decode_s * 1e3:.2f} ms | detection forward {forward_s * 1e3:.1f} ms | "
        f"{100 * decode_s / forward_s:.1f} % (<= 5 %) |",
        f"| AP, BEV + 3D, 2 classes, {len(records)} test frames | {ap_s:.2f} s | - | <= 10 s |"])
    targets = {"box_tracking share of a detection step": target(relation_s / step_s, 0.10, higher_is_better=False),
               "decode + NMS share of a forward pass": target(decode_s / forward_s, 0.05, higher_is_better=False),
               "AP evaluation of the test split (s)": target(ap_s, 10.0, higher_is_better=False)}
    notes = (f"Preset {PRESET}{' (quick)' if quick else ''}: world {root}, grid {grid.shape[0]}x{grid.shape[1]} cells, "
             f"one torch thread; medians of {repeats} (decode, forward: {3 * repeats}) repeats after a warm-up. "
             "The relation and decoding run on truthful outputs (module docstring).")
    return BenchResult(figures=figures, table=table, targets=targets, notes=notes)


def _next_id(sample_id: str) -> str:
    sequence, frame = sample_id.rsplit(":", 1)
    return f"{sequence}:{int(frame) + 1}"
