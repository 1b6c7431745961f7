"""Torch datasets over a split of a shard directory, yielding only the layers a task may see.

- ``train``: the task's labeled frames (or labeled pairs for pair tasks), inputs + its labels.
- ``mediator``: the mediator frames (or pairs), inputs only.
- ``test``: every frame (or pair) of the test sequences, every layer.

Asking for a layer the split hides (``layers=["camera/depth"]`` in the mediator split, another task's
label in train) is a :class:`~taskology.errors.DataError`, never a silent leak. Every sample carries
``sample_id = "<sequence_id>:<frame>"`` (the first frame of a pair).

Training layout of the yielded tensors (``KEYS`` maps schema layers to keys)::

    rgb (3, H, W) float32 0..1      depth (1, H, W) float32 m     normals (3, H, W) float32 (a view)
    semantic (H, W) int64           instance (H, W) int32         K (3, 3) float32
    cam_from_ego, world_from_ego, lidar_from_ego (4, 4) float32
    lidar_points (p, 4) float32     lidar_semantic (p,) int64     lidar_instance (p,) int32
    boxes (o, 7) float64            velocity (o, 3) float32       track_id, class_id (o,) int64

Pairs add the same keys with ``_next`` for frame t+1 (static calibration is not repeated) and,
where ego poses are visible, ``ego_next_from_ego`` and (with a camera) ``cam_next_from_cam`` =
``cam_{t+1}_from_cam_t`` (4, 4) float32. Ragged keys (lidar, objects) have a per-sample length; batch
with :func:`collate_frames`, which stacks dense keys and lists ragged ones.

Shard files are opened lazily in ``__getitem__`` and kept per process (h5py handles are not
fork-safe), so the dataset works with ``DataLoader(num_workers>0)``.

Example:
    >>> # ds = FrameDataset(SplitManifest.load("data/sim"), "train", "depth")
    >>> # batch = collate_frames([ds[0], ds[1]]); batch["rgb"].shape -> (2, 3, H, W)
"""
from __future__ import annotations

import os
from typing import Any, Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from taskology.data.labels import visible_layers
from taskology.data.read_kernels import rgb_chw_float
from taskology.data.schema import LAYERS
from taskology.data.shard import Shard
from taskology.data.splits import SplitManifest
from taskology.errors import DataError

#: schema layer -> key in the yielded samples (offsets are consumed, never yielded).
KEYS: dict[str, str] = {
    "camera/rgb": "rgb", "camera/depth": "depth", "camera/normals": "normals", "camera/semantic": "semantic",
    "camera/instance": "instance", "camera/K": "K", "camera/cam_from_ego": "cam_from_ego",
    "ego/world_from_ego": "world_from_ego", "lidar/points": "lidar_points", "lidar/semantic": "lidar_semantic",
    "lidar/instance": "lidar_instance", "lidar/lidar_from_ego": "lidar_from_ego", "objects/track_id": "track_id",
    "objects/class_id": "class_id", "objects/box": "boxes", "objects/velocity": "velocity",
}
#: keys with a per-sample length (listed, not stacked, by collate_frames).
RAGGED_KEYS: frozenset[str] = frozenset(
    KEYS[n] + suffix for n in KEYS if LAYERS[n].shape[0] in ("P", "O") for suffix in ("", "_next"))
#: layers with one value per sequence (calibration), read once per shard.
STATIC_LAYERS: frozenset[str] = frozenset(
    n for n in KEYS if not LAYERS[n].per_frame and LAYERS[n].shape[0] not in ("P", "O"))


def to_training_layout(name: str, values: np.ndarray) -> torch.Tensor:
    """Convert one layer of one frame from its on-disk layout to the training layout (see module doc).

    The conversion runs in NumPy / serial Numba (:mod:`taskology.data.read_kernels`) rather than torch
    ops: per-sample work in a data loader must not spin torch's intra-op thread pool, which is very
    slow on a loaded machine.
    """
    if name == "camera/rgb":
        return torch.from_numpy(rgb_chw_float(values))                            # (3, H, W) float32 0..1
    if name == "camera/depth":
        return torch.from_numpy(np.ascontiguousarray(values)[None])               # (1, H, W)
    if name == "camera/normals":
        # (3, H, W) strided view (the strides of Tensor.permute, at half its dispatch cost); collate's stack
        # makes it dense
        return torch.from_numpy(values.transpose(2, 0, 1))
    if name == "objects/box":
        return torch.from_numpy(np.ascontiguousarray(values))  # float64: box geometry stays double
    if values.dtype == np.float64:
        return torch.from_numpy(values.astype(np.float32))
    if name == "camera/instance" or name == "lidar/instance":
        return torch.from_numpy(values)  # int32 track ids (-1 = none); an int64 copy buys nothing
    if values.dtype.kind in "iu" and values.dtype != np.int64:
        return torch.from_numpy(values.astype(np.int64))
    return torch.from_numpy(np.ascontiguousarray(values))


class FrameDataset(Dataset):
    """Frames (or frame pairs) of one split, restricted to the layers ``task`` may see there.

    Args:
        manifest: the splits manifest of the shard directory.
        split: ``"train"``, ``"mediator"``, ``"val"`` or ``"test"``.
        task: the consuming task (required for train: selects its label mask).
        labels: the task's label layers (visible to it in the train split).
        layers: schema layer names to load (default: every visible layer present in the shards).
            A hidden layer is a DataError.
        pairs: yield pairs (t, t+1) (pair tasks, the mediator).
    """

    def __init__(self, manifest: SplitManifest, split: str, task: str | None = None, *,
                 labels: Iterable[str] = (), layers: Iterable[str] | None = None, pairs: bool = False) -> None:
        self.manifest, self.split = manifest, split
        if split == "train" and task is None:
            raise DataError("the train split needs a task: labels are visible per task")
        self.task = task
        self.visible = visible_layers(split, tuple(labels))
        self.pairs = bool(pairs)
        present = self._present_layers()
        if layers is None:
            chosen = [n for n in KEYS if n in self.visible and n in present]
        else:
            chosen = list(layers)
            for name in chosen:
                if name not in LAYERS:
                    raise DataError(f"unknown layer {name!r}; schema layers: {sorted(LAYERS)}")
                if name not in self.visible:
                    who = f"task {task!r}" if task else "any task"
                    raise DataError(f"layer {name!r} is hidden from {who} in the {split} split "
                                    f"(visible: {sorted(self.visible)})")
                if name not in present:
                    raise DataError(f"{manifest.root}: layer {name!r} is not in every shard of the {split} split")
            chosen = [n for n in chosen if n in KEYS]  # offsets are consumed, not yielded
        self.layers: tuple[str, ...] = tuple(chosen)
        #: (layer, key, static) per yielded layer, in layer order: built once, not per sample.
        self._plan: tuple[tuple[str, str, bool], ...] = tuple((n, KEYS[n], n in STATIC_LAYERS) for n in chosen)
        self.samples: list[tuple[str, int]] = self._samples()
        self._shards: dict[str, Shard] = {}
        self._static: dict[tuple[str, str], np.ndarray] = {}
        self._pid = -1

    def _sequences(self) -> list[str]:
        if self.split in ("val", "test"):
            return list(self.manifest.val if self.split == "val" else self.manifest.test)
        return sorted(self.manifest.train if self.split == "train" else self.manifest.mediator)

    def _present_layers(self) -> set[str]:
        present: set[str] | None = None
        for s in self._sequences():
            with Shard.open(self.manifest.shard_path(s)) as shard:
                layers = set(shard.layers)
            present = layers if present is None else present & layers
        return present or set()

    def _samples(self) -> list[tuple[str, int]]:
        if self.split == "train":
            assert self.task is not None
            frames = self.manifest.labeled_frames(self.task)
        else:
            frames = self.manifest.frames(self.split)
        if not self.pairs:
            return frames
        members = set(frames)
        return [(s, f) for s, f in frames if (s, f + 1) in members]

    def __len__(self) -> int:
        return len(self.samples)

    def _shard(self, sequence_id: str) -> Shard:
        if self._pid != os.getpid():  # new process (DataLoader worker): never reuse a forked handle
            self._shards, self._static, self._pid = {}, {}, os.getpid()
        shard = self._shards.get(sequence_id)
        if shard is None:
            shard = self._shards[sequence_id] = Shard.open(self.manifest.shard_path(sequence_id))
        return shard

    def __getitem__(self, index: int) -> dict[str, Any]:
        sequence_id, frame = self.samples[index]
        shard = self._shard(sequence_id)
        sample: dict[str, Any] = {"sample_id": f"{sequence_id}:{frame}"}
        for name, key, static in self._plan:
            if static:
                sample[key] = self._static_layer(shard, sequence_id, name)
            else:
                sample[key] = to_training_layout(name, shard.read(name, frame))
        if self.pairs:
            for name, key, static in self._plan:
                if not static:
                    sample[key + "_next"] = to_training_layout(name, shard.read(name, frame + 1))
            if "ego/world_from_ego" in self.visible and "ego" in shard.groups:
                world_from_ego = shard.read("ego/world_from_ego", [frame, frame + 1])  # (2, 4, 4) float64
                ego_next_from_ego = np.linalg.solve(world_from_ego[1], world_from_ego[0])
                sample["ego_next_from_ego"] = torch.from_numpy(ego_next_from_ego.astype(np.float32))
                if "camera" in shard.groups:
                    cam_from_ego = shard.read("camera/cam_from_ego")  # float64: exact pose algebra
                    cam_next_from_cam = cam_from_ego @ ego_next_from_ego @ np.linalg.inv(cam_from_ego)
                    sample["cam_next_from_cam"] = torch.from_numpy(cam_next_from_cam.astype(np.float32))
        return sample

    def _static_layer(self, shard: Shard, sequence_id: str, name: str) -> torch.Tensor:
        """A static layer (calibration) in training layout, read and converted once per shard and
        process; every call returns a fresh copy (callers may modify it)."""
        key = (sequence_id, name)
        cached = self._static.get(key)
        if cached is None:
            cached = self._static[key] = to_training_layout(name, shard.read(name)).numpy()
        return torch.from_numpy(cached.copy())  # (a NumPy copy of a 4x4 is ~3x cheaper than Tensor.clone)

    def close(self) -> None:
        for shard in self._shards.values():
            shard.close()
        self._shards = {}

    def __getstate__(self) -> dict[str, Any]:  # pickled to spawned workers without open handles
        state = self.__dict__.copy()
        state["_shards"], state["_static"], state["_pid"] = {}, {}, -1
        return state


def collate_frames(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples of :class:`FrameDataset`: dense tensors stacked on a new axis 0, ragged keys and
    ``sample_id`` as lists."""
    if not samples:
        raise DataError("cannot collate an empty list of samples")
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key == "sample_id" or key in RAGGED_KEYS:
            batch[key] = values
        else:
            batch[key] = torch.stack(values)
    return batch


__all__ = ["FrameDataset", "collate_frames", "to_training_layout", "KEYS", "RAGGED_KEYS"]
