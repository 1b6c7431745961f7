"""Tracking by detection over whole sequences: with models that output the truth, every figure is perfect; the
records on disk round-trip; a wrong ego-motion breaks the tracks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from taskology.config import load_config
from taskology.engine.peers import InProcessPeerView
from taskology.engine.runner import TaskRunner
from taskology.engine.tracks import track_split
from taskology.eval3d.records import read_sequence
from taskology.geometry.rigid import so3_log
import taskology.tasks.lidar as lidar
from simdata import LIDAR_FRAMES


def _runners(root: Path, tmp_path: Path) -> dict[str, TaskRunner]:
    config = load_config(None, ["tasks={detection: {width: 4}, tracking: {width: 4}}", "relations={}",
                                "data.test_sequences=2", "data.val_sequences=0", "train.mode=alone"])
    return {name: TaskRunner(task_name=name, config=config, data_root=root, run_dir=tmp_path,
                             peer_view=InProcessPeerView({}), seed=0, collective=False) for name in ("detection", "tracking")}


def _truthful(runners: dict[str, TaskRunner], ego_error: float = 0.0) -> None:
    grid = runners["detection"].task.grid
    h, w = lidar.output_shape(grid)

    def detect(batch):
        return lidar.label_outputs(batch["gt_boxes"], batch["gt_class"], grid)

    def track(batch):
        n = batch["gt_boxes"].shape[0]
        motion = torch.zeros(n, 3, h * w)
        for b in range(n):
            mask = batch["gt_motion_mask"][b] > 0
            motion[b, :, batch["gt_index"][b][mask]] = batch["gt_motion"][b][mask].T
        pose = batch["lidar_motion"].double().numpy()
        return {"ego_rotation": torch.tensor(np.stack([so3_log(p[:3, :3]) for p in pose])).float(),
                "ego_translation": batch["lidar_motion"][:, :3, 3] + torch.tensor([ego_error, 0.0, 0.0]),
                "object_motion": motion.reshape(n, 3, h, w)}

    runners["detection"].predict = detect
    runners["tracking"].predict = track


def test_truthful_models_give_perfect_ap_mota_and_motion(lidar_root: Path, tmp_path: Path) -> None:
    runners = _runners(lidar_root, tmp_path)
    _truthful(runners)
    figures = track_split(runners["detection"], runners["tracking"], "test", tmp_path)
    det, trk = figures["detection"], figures["tracking"]
    assert det["vehicle/num_gt"] >= 5
    assert det["vehicle/ap_bev@0.7"] == pytest.approx(1.0) and det["vehicle/ap_3d@0.7"] == pytest.approx(1.0)
    assert trk["vehicle/mota"] == pytest.approx(1.0) and trk["vehicle/id_switches"] == 0
    assert trk["vehicle/idf1"] == pytest.approx(1.0)
    assert trk["vehicle/motion_error_m"] < 1e-3
    files = sorted((tmp_path / "detections").glob("*.npz"))
    assert len(files) == 2
    frames = read_sequence(files[0])
    ids = [set(f.track_ids.tolist()) for f in frames]
    assert len(frames) == LIDAR_FRAMES and ids[0] & ids[-1], "objects seen throughout keep their track id"


def test_a_wrong_ego_motion_breaks_the_tracks(lidar_root: Path, tmp_path: Path) -> None:
    runners = _runners(lidar_root, tmp_path)
    _truthful(runners, ego_error=4.0)          # every box moved 4 m off: no overlap at t+1
    trk = track_split(runners["detection"], runners["tracking"], "test", None)["tracking"]
    assert trk["vehicle/mota"] < 0.9 and trk["vehicle/id_switches"] > 0
    assert not (tmp_path / "detections").exists()
