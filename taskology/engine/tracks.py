"""Tracking by detection over whole sequences: the ``detection`` and ``tracking`` models together, evaluated.

:func:`track_split` runs the detection model on every frame of an evaluation split and the tracking model on
every pair (t, t+1), in sequence order, and links the boxes into tracks:

1. boxes of each frame: :func:`taskology.tasks.lidar.decode_boxes` (score >= :data:`AP_SCORE`, for the
   precision-recall curve);
2. each box of t gets its motion to t+1 from the tracking model (``object_motion`` at its centre cell); the
   boxes scored >= :data:`TRACK_SCORE` are moved to t+1 with it and the predicted ego-motion
   (:func:`taskology.tasks.tracking.propagate`) and matched, class by class, to the boxes of t+1 scored
   >= :data:`TRACK_SCORE` (:func:`taskology.tasks.tracking.associate`: BEV IoU, Hungarian); a matched box of t+1
   continues the track, an unmatched one starts a new track. Ids are unique in the sequence.

Every frame's boxes are written to ``<out_dir>/detections/<sequence>.npz`` (the format of
:mod:`taskology.eval3d.records`), and the returned metrics are computed against the labelled boxes a LiDAR can see
(those the tasks train on, :func:`taskology.tasks.lidar.visible_boxes`):

- ``detection``: exact BEV and 3D AP per class (:func:`taskology.eval3d.evaluate_detections`, R40);
- ``tracking``: MOTA, IDF1 and ID switches per class (:func:`taskology.eval3d.evaluate_tracking`, motmetrics)
  and the box motion error of matched objects in metres (:func:`taskology.eval3d.box_motion_error`).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from taskology.engine.batches import collate
from taskology.eval3d import FrameDetections, box_motion_error, evaluate_detections, evaluate_tracking
from taskology.eval3d.records import sequence_path, write_sequence
import taskology.tasks.lidar as lidar
from taskology.tasks.tracking import associate, ego_motion_from_lidar, propagate

#: lowest score of a box kept for the AP curve.
AP_SCORE = 0.05
#: lowest score of a box that is tracked (enters MOTA).
TRACK_SCORE = 0.3
#: frames (or pairs) per model call.
CHUNK = 8


def _frames(dataset: Any) -> dict[str, list[tuple[int, int]]]:
    """sequence -> [(frame, dataset index)] in frame order."""
    out: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for index, sample_id in enumerate(dataset.sample_ids):
        sequence, frame = sample_id.rsplit(":", 1)
        out[sequence].append((int(frame), index))
    return {s: sorted(v) for s, v in out.items()}


def _predict(runner: Any, dataset: Any, indices: list[int]) -> list[tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """(sample, outputs) per index, outputs as float32 numpy of one sample."""
    out = []
    for lo in range(0, len(indices), CHUNK):
        samples = [dataset[i] for i in indices[lo:lo + CHUNK]]
        outputs = runner.predict(collate(samples))
        for b, sample in enumerate(samples):
            out.append((sample, {k: v[b].float().cpu().numpy() for k, v in outputs.items()}))
    return out


def _ground_truth(sample: dict[str, Any]) -> FrameDetections:
    boxes, classes = lidar.unpadded(sample["gt_boxes"], sample["gt_class"])
    tracks = sample["gt_track"].numpy()[: len(boxes)]
    return FrameDetections(boxes, np.array([lidar.CLASS_NAMES[k] for k in classes], dtype=str), track_ids=tracks)


def track_split(detection: Any, tracking: Any, split: str = "test", out_dir: Path | None = None) -> dict[str, dict[str, float]]:
    """Detections and tracks of every sequence of ``split`` from the two runners' models (module docstring);
    returns ``{"detection": {...}, "tracking": {...}}`` and writes the records under ``out_dir`` when given."""
    grid = detection.task.grid
    frames_data, pairs_data = detection.data.evaluation(split), tracking.data.evaluation(split)
    frames, pairs = _frames(frames_data), _frames(pairs_data)
    records: list[tuple[FrameDetections, FrameDetections]] = []
    sequences: dict[str, list[tuple[FrameDetections, FrameDetections]]] = {}
    motion_samples: list[tuple[FrameDetections, FrameDetections, FrameDetections]] = []
    h, w = lidar.output_shape(grid)
    for sequence, order in frames.items():
        predicted = _predict(detection, frames_data, [i for _, i in order])
        decoded = [lidar.decode_boxes(out["heatmap"], out["box"], grid, score_threshold=AP_SCORE)
                   for _, out in predicted]
        truth = [_ground_truth(sample) for sample, _ in predicted]
        pair_index = dict(pairs.get(sequence, []))
        pair_outputs = dict(zip([f for f, _ in order if f in pair_index],
                                _predict(tracking, pairs_data, [pair_index[f] for f, _ in order if f in pair_index])))
        motion = [np.full((len(d[0]), 3), np.nan, np.float32) for d in decoded]
        tracks = [np.full(len(d[0]), -1, np.int64) for d in decoded]
        next_id = 0
        for n, (frame, _) in enumerate(order):
            boxes, classes, scores = decoded[n]
            fresh = (tracks[n] < 0) & (scores >= TRACK_SCORE)
            tracks[n][fresh] = np.arange(next_id, next_id + int(fresh.sum()))
            next_id += int(fresh.sum())
            if frame not in pair_outputs or n + 1 >= len(order) or order[n + 1][0] != frame + 1:
                continue
            sample, out = pair_outputs[frame]
            cells = np.clip(np.floor(lidar.output_cells(boxes[:, :2], grid)).astype(np.int64), 0, [h - 1, w - 1])
            motion[n] = out["object_motion"][:, cells[:, 0], cells[:, 1]].T.astype(np.float32)
            lidar_motion = _pose(out["ego_rotation"], out["ego_translation"])
            ego = ego_motion_from_lidar(lidar_motion, sample["lidar_from_ego"].double().numpy())
            moved = propagate(boxes, motion[n], ego)
            later_boxes, later_classes, later_scores = decoded[n + 1]
            for k in range(len(lidar.CLASS_NAMES)):
                mine = np.flatnonzero((classes == k) & (scores >= TRACK_SCORE))
                theirs = np.flatnonzero((later_classes == k) & (later_scores >= TRACK_SCORE))
                links = associate(moved[mine], later_boxes[theirs])
                tracks[n + 1][theirs[links >= 0]] = tracks[n][mine[links[links >= 0]]]
            gt_t = _ground_truth(sample)
            known = sample["gt_motion_mask"].numpy()[: len(gt_t)] > 0
            later = gt_t.boxes[known].copy()
            later[:, :2] += sample["gt_motion"].numpy()[: len(gt_t)][known, :2]
            gt_next = FrameDetections(later, gt_t.classes[known], track_ids=gt_t.track_ids[known])
            motion_samples.append((_named(decoded[n], tracks[n], motion[n]), gt_t, gt_next))
        mine = [_named(decoded[n], tracks[n], motion[n]) for n in range(len(order))]
        sequences[sequence] = list(zip(mine, truth))
        records += sequences[sequence]
        if out_dir is not None:
            write_sequence(sequence_path(Path(out_dir), sequence), mine)
    return {"detection": evaluate_detections(records, classes=lidar.CLASS_NAMES),
            "tracking": {**evaluate_tracking(sequences, classes=lidar.CLASS_NAMES, score_threshold=TRACK_SCORE),
                         **box_motion_error(motion_samples, classes=lidar.CLASS_NAMES, score_threshold=TRACK_SCORE)}}


def _named(decoded: tuple[np.ndarray, np.ndarray, np.ndarray], tracks: np.ndarray, motion: np.ndarray) -> FrameDetections:
    boxes, classes, scores = decoded
    return FrameDetections(boxes, np.array([lidar.CLASS_NAMES[k] for k in classes], dtype=str), scores,
                           track_ids=tracks, motion=motion)


def _pose(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    from taskology.geometry.rigid import so3_exp

    pose = np.eye(4)
    pose[:3, :3] = so3_exp(np.asarray(rotation, dtype=np.float64).reshape(1, 3))[0]
    pose[:3, 3] = np.asarray(translation, dtype=np.float64)
    return pose


__all__ = ["track_split", "AP_SCORE", "TRACK_SCORE"]
