"""Opening a task's datasets from the data store (``taskology.data``: shards + ``splits.json``).

Split manifest: ``data_root/splits.json`` is used when it matches the experiment (same split seed,
mediator fraction, test-sequence count and label fraction for every enabled task); otherwise the
manifest is drawn in memory with :func:`taskology.data.splits.make_splits` from the config (same seed,
so every runner of the run gets the same split) and written only if no ``splits.json`` exists yet.
This lets one shard directory serve several label fractions (the consistency benchmark).

Samples are prepared for training: motion labels are derived with
:func:`taskology.tasks.motion_targets.motion_targets`, ragged layers (objects) are dropped after that,
so every yielded value is a fixed-shape tensor (or the ``sample_id`` string).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from taskology.data.datasets import FrameDataset, to_training_layout
from taskology.data.shard import Shard
from taskology.data.splits import SplitManifest, make_splits
from taskology.engine.task_data import TaskData
from taskology.errors import DataError
from taskology.tasks.motion_targets import motion_targets

#: camera inputs every runner reads (no LiDAR: the camera tasks do not use it).
CAMERA_INPUTS = ("camera/rgb", "camera/K", "camera/cam_from_ego")
#: layers each task reads from its labelled frames.
TASK_LAYERS: dict[str, tuple[str, ...]] = {
    "depth": CAMERA_INPUTS + ("camera/depth",),
    "normals": CAMERA_INPUTS + ("camera/normals",),
    "segmentation": CAMERA_INPUTS + ("camera/semantic",),
    "motion": CAMERA_INPUTS + ("ego/world_from_ego", "camera/instance", "objects/track_id", "objects/class_id",
                               "objects/box"),
}
_log = logging.getLogger(__name__)
_RAGGED_DROPPED = ("boxes", "track_id", "class_id", "velocity")


def manifest_for(data_root: Path, config: Any) -> SplitManifest:
    """The split manifest of ``data_root`` matching ``config`` (see the module docstring)."""
    data_root = Path(data_root)
    fractions = {name: float(entry.label_fraction) for name, entry in config.tasks.items() if entry.enabled}
    want = dict(test_sequences=int(config.data.test_sequences), val_sequences=int(config.data.val_sequences),
                mediator_fraction=float(config.data.mediator_fraction), seed=int(config.data.split_seed))
    path = data_root / "splits.json"
    if path.is_file():
        manifest = SplitManifest.load(data_root)
        if (manifest.seed == want["seed"] and abs(manifest.mediator_fraction - want["mediator_fraction"]) < 1e-12
                and len(manifest.test) == want["test_sequences"] and len(manifest.val) == want["val_sequences"]
                and all(abs(manifest.label_fractions.get(t, -1.0) - f) < 1e-12 for t, f in fractions.items())):
            return manifest
        return make_splits(data_root, fractions, write=False, **want)
    manifest = make_splits(data_root, fractions, write=False, **want)
    manifest.save(if_absent=True)  # a concurrent run (other label fractions) may have written one first
    return manifest


def prepare_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """Derive motion labels where their layers are present; drop ragged layers. Returns a new dict."""
    out = dict(sample)
    if "instance" in sample and "world_from_ego_next" in sample and "boxes" in sample:
        targets = motion_targets(
            world_from_ego=sample["world_from_ego"].double().numpy(),
            world_from_ego_next=sample["world_from_ego_next"].double().numpy(),
            cam_from_ego=sample["cam_from_ego"].double().numpy(),
            instance=sample["instance"].numpy(), track_id=sample["track_id"].numpy(),
            class_id=sample["class_id"].numpy(), box=sample["boxes"].double().numpy(),
            track_id_next=sample["track_id_next"].numpy(), box_next=sample["boxes_next"].double().numpy())
        for key, value in targets.items():
            out[key] = torch.from_numpy(value)
    for key in _RAGGED_DROPPED:
        out.pop(key, None)
        out.pop(key + "_next", None)
    return out


class PreparedDataset:
    """A :class:`FrameDataset` whose samples go through :func:`prepare_sample`; knows its sample ids."""

    def __init__(self, base: FrameDataset) -> None:
        self.base = base
        self.sample_ids = [f"{s}:{f}" for s, f in base.samples]

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return prepare_sample(self.base[index])


class ShardPoolDataset:
    """Mediator pairs (t, t+1) over every frame of the given shards: camera inputs + ``sample_id``.

    Used for a live pool (shards the simulator keeps producing and retires); no split manifest involved.
    A pool must survive its shards vanishing (the SimActor unlinks the oldest while readers still use
    them), so:

    - every shard is opened (and its handle kept) when the pool is built: a shard retired afterwards
      stays readable through the open handle (POSIX keeps an unlinked inode alive while it is open);
    - a listed shard that is missing or unreadable by then is skipped and named in :attr:`skipped`;
    - a shard whose (re)opening fails later (e.g. after the pool was pickled) is marked dead, and its
      samples are served by the samples of a live shard (the returned ``sample_id`` is the one served);
      only a pool with no live shard at all raises :class:`DataError`.

    Attributes:
        paths: the readable shards (in the given order).
        skipped: ``"<path>: <reason>"`` of the listed shards that could not be opened.
        samples: ``(shard index into paths, sequence id, frame t)`` per sample.
        sample_ids: ``"<sequence>:<t>"`` per sample.
    """

    def __init__(self, shard_paths: Sequence[Path]) -> None:
        self.paths: list[Path] = []
        self.skipped: list[str] = []
        self.samples: list[tuple[int, str, int]] = []
        self._open: dict[int, Shard] = {}
        self._dead: set[int] = set()
        for path in (Path(p) for p in shard_paths):
            try:
                shard = Shard.open(path)
            except (DataError, OSError) as exc:
                self.skipped.append(f"{path}: {exc}")
                continue
            if "camera" not in shard.groups:
                shard.close()
                raise DataError(f"{path}: mediator shards need the camera group; found {sorted(shard.groups)}")
            k = len(self.paths)
            self.paths.append(path)
            self._open[k] = shard
            self.samples += [(k, shard.sequence_id, f) for f in range(shard.num_frames - 1)]
        if self.skipped:
            _log.warning("mediator pool: skipped %d vanished/unreadable shard(s): %s", len(self.skipped),
                         "; ".join(self.skipped[:3]))
        self.sample_ids = [f"{s}:{f}" for _, s, f in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def _shard(self, k: int) -> Shard | None:
        """The open shard ``k``, (re)opened if needed; None (and ``k`` marked dead) when it is gone."""
        if k in self._dead:
            return None
        shard = self._open.get(k)
        if shard is None:
            try:
                shard = self._open[k] = Shard.open(self.paths[k])
            except (DataError, OSError) as exc:
                self._dead.add(k)
                _log.warning("mediator pool: %s vanished (%s); serving the other shards", self.paths[k], exc)
                return None
        return shard

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.samples)
        for probe in range(n):  # the sample itself, else the next sample of a live shard
            k, sequence_id, frame = self.samples[(index + probe) % n]
            shard = self._shard(k)
            if shard is not None:
                break
        else:
            raise DataError(f"mediator pool: all {len(self.paths)} shard(s) vanished "
                            f"({', '.join(str(p) for p in self.paths[:3])}); expected at least one readable shard")
        return {"sample_id": f"{sequence_id}:{frame}",
                "rgb": to_training_layout("camera/rgb", shard.read("camera/rgb", frame)),
                "rgb_next": to_training_layout("camera/rgb", shard.read("camera/rgb", frame + 1)),
                "K": to_training_layout("camera/K", shard.read("camera/K")),
                "cam_from_ego": to_training_layout("camera/cam_from_ego", shard.read("camera/cam_from_ego"))}

    def close(self) -> None:
        """Close the shard handles (retired shards' disk space is freed once closed)."""
        for shard in self._open.values():
            shard.close()
        self._open = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = {}
        return state


def open_store_task_data(task: Any, *, data_root: Path, config: Any, seed: int, with_mediator: bool) -> TaskData:
    """Train (labelled), mediator (pairs, inputs) and test datasets of ``task`` under ``data_root``."""
    name = task.name
    if name not in TASK_LAYERS:
        raise DataError(f"no data recipe for task {name!r}; known: {sorted(TASK_LAYERS)}")
    manifest = manifest_for(Path(data_root), config)
    pairs = bool(task.pair)
    train = PreparedDataset(FrameDataset(manifest, "train", name, layers=TASK_LAYERS[name], pairs=pairs))
    mediator = None
    if with_mediator or manifest.mediator:
        mediator = PreparedDataset(FrameDataset(manifest, "mediator", None, layers=CAMERA_INPUTS, pairs=True))
    splits = {split: PreparedDataset(FrameDataset(manifest, split, name, layers=TASK_LAYERS[name], pairs=pairs))
              for split in ("val", "test") if manifest.frames(split)}
    return TaskData(train=train, mediator=mediator, splits=splits,
                    open_mediator=lambda paths: ShardPoolDataset(paths))


__all__ = ["open_store_task_data", "manifest_for", "prepare_sample", "PreparedDataset", "ShardPoolDataset"]
