"""Torch datasets: label visibility per split (the leak test), training layout, pairs, workers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from taskology.data.datasets import FrameDataset, collate_frames
from taskology.data.labels import INPUT_LAYERS
from taskology.data.schema import LAYERS
from taskology.data.shard import Shard
from taskology.data.splits import SplitManifest, make_splits
from taskology.errors import DataError

INPUT_KEYS = {"sample_id", "rgb", "K", "cam_from_ego", "lidar_points", "lidar_from_ego"}
LABEL_KEYS = {"depth", "normals", "semantic", "instance", "world_from_ego", "lidar_semantic", "lidar_instance",
              "track_id", "class_id", "boxes", "velocity"}
#: label layers of the tasks these tests draw masks for (as a task class declares them)
LABELS = {"depth": ("camera/depth",), "normals": ("camera/normals",), "segmentation": ("camera/semantic",),
          "motion": ("ego/world_from_ego", "camera/instance", "objects/track_id", "objects/class_id", "objects/box",
                     "objects/velocity", "objects/offsets")}


@pytest.fixture
def manifest(dataset_root: Path) -> SplitManifest:
    return make_splits(dataset_root, {"depth": 0.25, "normals": 0.5, "motion": 0.4, "detection": 0.3},
                       pairs=("motion",), test_sequences=1, mediator_fraction=0.5, seed=2)


def test_train_yields_only_labeled_frames_and_own_labels(manifest: SplitManifest) -> None:
    ds = FrameDataset(manifest, "train", "depth", labels=LABELS["depth"])
    labeled = {f"{s}:{f}" for s, f in manifest.labeled_frames("depth")}
    seen = [ds[i] for i in range(len(ds))]
    assert {s["sample_id"] for s in seen} == labeled and len(seen) == len(labeled)
    for sample in seen:
        assert set(sample) == INPUT_KEYS | {"depth"}  # no other task's labels
    with pytest.raises(DataError, match="camera/normals.*hidden"):
        FrameDataset(manifest, "train", "depth", labels=LABELS["depth"], layers=["camera/rgb", "camera/normals"])
    with pytest.raises(DataError, match="objects/box.*hidden"):
        FrameDataset(manifest, "train", "segmentation", labels=LABELS["segmentation"], layers=["objects/box"])


def test_mediator_yields_inputs_only(manifest: SplitManifest) -> None:
    ds = FrameDataset(manifest, "mediator")
    assert {s for s in (ds[i]["sample_id"] for i in range(len(ds)))} == {
        f"{s}:{f}" for s, f in manifest.frames("mediator")}
    for i in range(len(ds)):
        assert set(ds[i]) == INPUT_KEYS
    for layer in sorted(set(LAYERS) - set(INPUT_LAYERS)):  # every label of every task
        with pytest.raises(DataError, match="hidden"):
            FrameDataset(manifest, "mediator", layers=[layer])
    with pytest.raises(DataError, match="needs a task"):
        FrameDataset(manifest, "train")


def test_test_split_yields_everything_in_training_layout(manifest: SplitManifest) -> None:
    ds = FrameDataset(manifest, "test")
    assert len(ds) == 6
    sample = ds[4]
    assert set(sample) == INPUT_KEYS | LABEL_KEYS
    sequence_id, frame = sample["sample_id"].split(":")
    with Shard.open(manifest.shard_path(sequence_id)) as shard:
        raw = shard.frame(int(frame))
    assert sample["rgb"].shape == (3, 32, 96) and sample["rgb"].dtype == torch.float32
    assert torch.equal(sample["rgb"], torch.from_numpy(raw["camera/rgb"]).permute(2, 0, 1).float() / 255)
    assert sample["depth"].shape == (1, 32, 96) and torch.equal(sample["depth"][0], torch.from_numpy(raw["camera/depth"]))
    assert sample["normals"].shape == (3, 32, 96)
    assert torch.equal(sample["normals"][:, 5, 7], torch.from_numpy(raw["camera/normals"][5, 7]))
    assert sample["semantic"].dtype == torch.int64 and sample["semantic"].shape == (32, 96)
    assert torch.equal(sample["semantic"], torch.from_numpy(raw["camera/semantic"].astype(np.int64)))
    assert sample["K"].dtype == torch.float32 and sample["K"].shape == (3, 3)
    assert sample["boxes"].dtype == torch.float64 and torch.equal(sample["boxes"], torch.from_numpy(raw["objects/box"]))
    assert torch.equal(sample["lidar_points"], torch.from_numpy(raw["lidar/points"]))


def test_motion_pairs_and_relative_pose(manifest: SplitManifest) -> None:
    ds = FrameDataset(manifest, "train", "motion", labels=LABELS["motion"], pairs=True)
    labeled = set(manifest.labeled_frames("motion"))
    assert len(ds) >= 1
    for i in range(len(ds)):
        sample = ds[i]
        s, f = sample["sample_id"].split(":")
        assert (s, int(f)) in labeled and (s, int(f) + 1) in labeled
    sample = ds[0]
    assert {"rgb_next", "instance_next", "boxes_next", "world_from_ego_next"} <= set(sample)
    assert "depth" not in sample and "depth_next" not in sample
    s, f = sample["sample_id"].split(":")
    f = int(f)
    # fixture poses: world_from_ego[f] = Rz(0.05 f) with translation (1.5 f, 0.2 f, 0), so the ego
    # turns by +0.05 rad per frame and a static world point turns by -0.05 rad in the ego frame.
    point_ego_t = np.array([10.0, 2.0, 1.0, 1.0])
    c, sn = np.cos(0.05 * f), np.sin(0.05 * f)
    world = np.array([[c, -sn, 0, 1.5 * f], [sn, c, 0, 0.2 * f], [0, 0, 1, 0], [0, 0, 0, 1]]) @ point_ego_t
    c1, s1 = np.cos(0.05 * (f + 1)), np.sin(0.05 * (f + 1))
    t1 = np.array([1.5 * (f + 1), 0.2 * (f + 1), 0])
    expected = np.concatenate([np.array([[c1, s1, 0], [-s1, c1, 0], [0, 0, 1]]) @ (world[:3] - t1), [1]])
    got = sample["ego_next_from_ego"].double().numpy() @ point_ego_t
    assert np.allclose(got, expected, atol=1e-4)
    cam_from_ego = sample["cam_from_ego"].double().numpy()
    got_cam = sample["cam_next_from_cam"].double().numpy() @ (cam_from_ego @ point_ego_t)
    assert np.allclose(got_cam, cam_from_ego @ expected, atol=1e-4)
    # mediator pairs carry both frames' inputs but no pose (it is a motion label)
    med = FrameDataset(manifest, "mediator", pairs=True)
    assert set(med[0]) == INPUT_KEYS | {k + "_next" for k in INPUT_KEYS - {"sample_id", "K", "cam_from_ego",
                                                                             "lidar_from_ego"}}


def test_dataloader_workers_and_collate(manifest: SplitManifest) -> None:
    ds = FrameDataset(manifest, "mediator", layers=["camera/rgb", "lidar/points"])
    ds[0]  # opens a handle in the parent: workers must not reuse it
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_frames)
    ids = []
    for batch in loader:
        assert batch["rgb"].shape[1:] == (3, 32, 96)
        assert isinstance(batch["lidar_points"], list) and batch["lidar_points"][0].shape[1] == 4
        ids += batch["sample_id"]
    assert sorted(ids) == sorted(f"{s}:{f}" for s, f in manifest.frames("mediator"))
    ds.close()


def test_input_layers_are_yielded_everywhere_and_no_registered_task_takes_a_label_as_input() -> None:
    from taskology.tasks import TASKS

    assert {"camera/rgb", "camera/K", "lidar/points"} <= set(INPUT_LAYERS)
    for name, task in TASKS.items():
        assert task.declaration_problem() is None, name
        assert set(task.input_layers) <= set(INPUT_LAYERS) and not set(INPUT_LAYERS) & set(task.label_layers), name


def _reference_layout(name: str, values: np.ndarray) -> torch.Tensor:
    """The training layout written with plain torch ops (independent of the fast path)."""
    t = torch.from_numpy(np.array(values))
    if name == "camera/rgb":
        return t.permute(2, 0, 1).to(torch.float32) / 255.0
    if name == "camera/depth":
        return t[None]
    if name == "camera/normals":
        return t.permute(2, 0, 1)
    if name in ("objects/box", "camera/instance", "lidar/instance"):
        return t
    if t.dtype == torch.float64:
        return t.to(torch.float32)
    if not t.dtype.is_floating_point and t.dtype != torch.int64:
        return t.to(torch.int64)
    return t


def test_every_yielded_tensor_equals_the_plain_torch_layout(manifest: SplitManifest) -> None:
    from taskology.data.datasets import KEYS

    ds = FrameDataset(manifest, "test")
    for index in (0, 3, 5):
        sample = ds[index]
        sequence_id, frame = sample["sample_id"].split(":")
        with Shard.open(manifest.shard_path(sequence_id)) as shard:
            raw = shard.frame(int(frame))
        for name, key in KEYS.items():
            got, want = sample[key], _reference_layout(name, raw[name])
            assert got.dtype == want.dtype and got.shape == want.shape, key
            assert torch.equal(got, want), key  # bit-exact (rgb: IEEE float32 v / 255)
        assert sample["normals"].stride() == (1, 96 * 3, 3)  # the strided (3, H, W) view, as before
    first = ds[0]
    first["K"][0, 0] = -1.0  # calibration tensors are fresh copies: editing one leaves the cache intact
    first["cam_from_ego"].zero_()
    again = ds[0]
    assert again["K"][0, 0] > 0 and again["cam_from_ego"][3, 3] == 1.0
