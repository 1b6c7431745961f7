"""The splits manifest (``splits.json`` next to the shards): train with per-task label masks,
mediator, validation, test.

Decisions (documented here once):

- **test** = whole held-out sequences (``test_sequences`` of them, drawn by seed).
- **val** = whole held-out sequences too (``val_sequences``, default 0), drawn after test from the
  remaining ones with their own seeded draw, so adding a validation split leaves test unchanged. Choices
  (relation weights, schedules) are made on val; test is only for the final figures.
- **mediator** is decided at **frame level, as one contiguous block per sequence**: in every
  non-test sequence, ``round(mediator_fraction * F)`` consecutive frames starting at a seeded random
  frame are mediator frames; the rest are train frames. Contiguous blocks keep frame pairs
  ``(t, t+1)`` inside one split and work with few sequences. Train and mediator are disjoint by
  construction, and test sequences contribute to neither.
- **labels**: per task, ``fraction`` of the train frames are labeled (at least one frame when the
  fraction is > 0), drawn with a seed derived from ``(seed, task name)`` so adding a task does not
  change the others' masks. Pair tasks (those whose samples are frame pairs, e.g. motion) draw whole
  pairs ``(t, t+1)`` of train frames, so their labeled frames come in pairs.

Example:
    >>> # make_splits(Path("data/sim"), tasks={"depth": 0.02, "normals": 0.02}, test_sequences=1)
"""
from __future__ import annotations

import json
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

import numpy as np

from taskology.data.labels import SPLITS
from taskology.data.shard import Shard, shard_paths
from taskology.errors import ConfigError, DataError

MANIFEST_NAME = "splits.json"
MANIFEST_VERSION = 1

FrameRef = tuple[str, int]


@dataclass
class SplitManifest:
    """Assignment of the frames of a shard directory to train / mediator / test, plus label masks.

    Attributes:
        root: directory holding the shards and ``splits.json``.
        seed: seed of every random draw.
        files: sequence id -> shard file name (relative to root).
        num_frames: sequence id -> F.
        test: held-out sequence ids.
        train: sequence id -> sorted train frames.
        mediator: sequence id -> sorted mediator frames.
        labels: task -> sequence id -> sorted labeled train frames.
        label_fractions: task -> requested labeled fraction of the train frames.
        mediator_fraction: requested fraction of each non-test sequence given to the mediator.
        val: held-out validation sequence ids (may be empty).
    """

    root: Path
    seed: int
    files: dict[str, str]
    num_frames: dict[str, int]
    test: tuple[str, ...]
    train: dict[str, tuple[int, ...]]
    mediator: dict[str, tuple[int, ...]]
    labels: dict[str, dict[str, tuple[int, ...]]]
    label_fractions: dict[str, float]
    mediator_fraction: float
    extra: dict[str, Any] = field(default_factory=dict)
    val: tuple[str, ...] = ()

    # ------------------------------------------------------------------ queries
    def frames(self, split: str) -> list[FrameRef]:
        """All ``(sequence_id, frame)`` of ``split``, sorted."""
        if split == "train":
            return [(s, f) for s in sorted(self.train) for f in self.train[s]]
        if split == "mediator":
            return [(s, f) for s in sorted(self.mediator) for f in self.mediator[s]]
        if split in ("val", "test"):
            return [(s, f) for s in (self.val if split == "val" else self.test) for f in range(self.num_frames[s])]
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")

    def labeled_frames(self, task: str) -> list[FrameRef]:
        """Train frames whose labels ``task`` may see, sorted."""
        if task not in self.labels:
            raise DataError(f"{self.path}: no label mask for task {task!r}; tasks with masks: {sorted(self.labels)}")
        return [(s, f) for s in sorted(self.labels[task]) for f in self.labels[task][s]]

    def label_fraction(self, task: str) -> float:
        """Realised labeled fraction of the train frames for ``task``."""
        total = len(self.frames("train"))
        return len(self.labeled_frames(task)) / total if total else 0.0

    def shard_path(self, sequence_id: str) -> Path:
        if sequence_id not in self.files:
            raise DataError(f"{self.path}: unknown sequence {sequence_id!r}")
        return self.root / self.files[sequence_id]

    @property
    def path(self) -> Path:
        return self.root / MANIFEST_NAME

    # ------------------------------------------------------------------ (de)serialisation
    def to_json(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION, "seed": self.seed, "mediator_fraction": self.mediator_fraction,
            "label_fractions": self.label_fractions,
            "sequences": {s: {"file": self.files[s], "num_frames": self.num_frames[s]} for s in sorted(self.files)},
            "test": list(self.test),
            **({"val": list(self.val)} if self.val else {}),
            "train": {s: list(v) for s, v in sorted(self.train.items())},
            "mediator": {s: list(v) for s, v in sorted(self.mediator.items())},
            "labels": {t: {s: list(v) for s, v in sorted(m.items())} for t, m in sorted(self.labels.items())},
            **({"extra": self.extra} if self.extra else {}),
        }

    def save(self, if_absent: bool = False) -> bool:
        """Write ``root/splits.json`` atomically (temp file, fsync, rename). With ``if_absent`` only when
        no manifest exists, atomically too (hard link), so concurrent runs sharing a data root never
        replace each other's manifest. Returns whether this call wrote it."""
        text = json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n"
        tmp = self.path.with_name(f".{MANIFEST_NAME}.tmp-{os.getpid()}")
        try:
            with open(tmp, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            if not if_absent:
                os.replace(tmp, self.path)
                return True
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return False
            return True
        finally:
            if tmp.exists():
                tmp.unlink()

    @classmethod
    def load(cls, root: Path | str) -> SplitManifest:
        """Read and validate ``root/splits.json``; DataError naming the file on any inconsistency."""
        root = Path(root)
        path = root / MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise DataError(f"{path}: splits manifest not found (create it with make_splits)") from exc
        except ValueError as exc:
            raise DataError(f"{path}: expected JSON, found a parse error: {exc}") from exc
        try:
            if data["version"] != MANIFEST_VERSION:
                raise DataError(f"{path}: expected manifest version {MANIFEST_VERSION}, found {data['version']}")
            manifest = cls(
                root=root, seed=int(data["seed"]),
                files={s: str(v["file"]) for s, v in data["sequences"].items()},
                num_frames={s: int(v["num_frames"]) for s, v in data["sequences"].items()},
                test=tuple(data["test"]),
                train={s: tuple(int(f) for f in v) for s, v in data["train"].items()},
                mediator={s: tuple(int(f) for f in v) for s, v in data["mediator"].items()},
                labels={t: {s: tuple(int(f) for f in v) for s, v in m.items()} for t, m in data["labels"].items()},
                label_fractions={t: float(v) for t, v in data["label_fractions"].items()},
                mediator_fraction=float(data["mediator_fraction"]), extra=dict(data.get("extra", {})),
                val=tuple(data.get("val", ())))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise DataError(f"{path}: expected a splits manifest, found a malformed entry ({exc!r})") from exc
        manifest.check()
        return manifest

    def check(self) -> None:
        """Consistency: frames in range, train/mediator disjoint, val and test disjoint from them and from
        each other, labels ⊆ train."""
        where = self.path
        for s in (*self.train, *self.mediator, *self.test, *self.val):
            if s not in self.num_frames:
                raise DataError(f"{where}: sequence {s!r} is used but not listed under 'sequences'")
        both = set(self.test) & set(self.val)
        if both:
            raise DataError(f"{where}: sequence(s) {sorted(both)} are both val and test")
        for split, table in (("train", self.train), ("mediator", self.mediator)):
            for s, frames in table.items():
                for held, name in ((self.test, "test"), (self.val, "val")):
                    if s in held:
                        raise DataError(f"{where}: {name} sequence {s!r} also appears in {split}")
                if frames and (min(frames) < 0 or max(frames) >= self.num_frames[s]):
                    raise DataError(f"{where}: {split} frames of {s!r} out of range 0..{self.num_frames[s] - 1}")
        for s in self.train:
            shared = set(self.train[s]) & set(self.mediator.get(s, ()))
            if shared:
                raise DataError(f"{where}: frames {sorted(shared)[:5]} of {s!r} are both train and mediator")
        for task, table in self.labels.items():
            for s, frames in table.items():
                outside = set(frames) - set(self.train.get(s, ()))
                if outside:
                    raise DataError(f"{where}: task {task!r} has labels on non-train frames {sorted(outside)[:5]} "
                                    f"of {s!r}")


def _task_rng(seed: int, task: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(task.encode())])


def _draw_labels(train: dict[str, tuple[int, ...]], task: str, fraction: float,
                 seed: int, pair: bool) -> dict[str, tuple[int, ...]]:
    frames = [(s, f) for s in sorted(train) for f in train[s]]
    target = 0 if fraction <= 0 else max(1, round(fraction * len(frames)))
    rng = _task_rng(seed, task)
    chosen: set[FrameRef] = set()
    if pair:
        members = set(frames)
        starts = [(s, f) for s, f in frames if (s, f + 1) in members]
        if target and not starts:
            raise DataError(f"task {task!r} needs frame pairs but no two consecutive train frames exist")
        for k in rng.permutation(len(starts)):
            if len(chosen) >= target:
                break
            s, f = starts[k]
            chosen.update({(s, f), (s, f + 1)})
    else:
        chosen = {frames[k] for k in rng.choice(len(frames), size=min(target, len(frames)), replace=False)}
    out: dict[str, tuple[int, ...]] = {s: () for s in sorted(train)}
    for s, f in sorted(chosen):
        out[s] += (f,)
    return out


def make_splits(root: Path | str, tasks: dict[str, float], *, pairs: Collection[str] = (),
                test_sequences: int = 1, val_sequences: int = 0,
                mediator_fraction: float = 0.5, seed: int = 0, write: bool = True,
                overwrite: bool = False) -> SplitManifest:
    """Assign the frames of the shards in ``root`` to splits and draw a label mask per task.

    Args:
        root: directory of shards (each is opened and validated).
        tasks: task name -> labeled fraction of the train frames, in [0, 1].
        pairs: the tasks whose samples are frame pairs: their labels are drawn pair by pair.
        test_sequences: number of whole sequences held out for test (fewer than the shards).
        val_sequences: number of whole sequences held out for validation (test + val < shards).
        mediator_fraction: fraction of each non-test sequence's frames (one contiguous block) for the
            mediator, in [0, 1).
        seed: seed of every draw; same inputs and seed, same manifest.
        write: also write ``root/splits.json`` atomically.
        overwrite: replace an existing, different ``splits.json`` (otherwise DataError).

    Returns:
        The manifest.
    """
    root = Path(root)
    unknown = sorted(set(pairs) - set(tasks))
    if unknown:
        raise ConfigError(f"pairs names tasks without a label fraction: {unknown}")
    for task, fraction in tasks.items():
        if not 0.0 <= float(fraction) <= 1.0:
            raise ConfigError(f"label fraction of task {task!r} must be in [0, 1], found {fraction}")
    if not 0.0 <= mediator_fraction < 1.0:
        raise ConfigError(f"mediator_fraction must be in [0, 1), found {mediator_fraction}")
    paths = shard_paths(root)
    if test_sequences < 0 or test_sequences >= len(paths):
        raise DataError(f"{root}: test_sequences must be in 0..{len(paths) - 1} (found {len(paths)} shards), "
                        f"found {test_sequences}")
    if val_sequences < 0 or test_sequences + val_sequences >= len(paths):
        raise DataError(f"{root}: val_sequences must be in 0..{len(paths) - 1 - test_sequences} ({len(paths)} shards, "
                        f"{test_sequences} for test), found {val_sequences}")
    files, num_frames = {}, {}
    for path in paths:
        with Shard.open(path) as shard:
            if shard.sequence_id in files:
                raise DataError(f"{path}: sequence id {shard.sequence_id!r} also used by {files[shard.sequence_id]}")
            files[shard.sequence_id] = path.name
            num_frames[shard.sequence_id] = shard.num_frames
    ids = sorted(files)
    rng = np.random.default_rng(seed)
    test = tuple(sorted(ids[k] for k in rng.choice(len(ids), size=test_sequences, replace=False)))
    rest = [s for s in ids if s not in test]
    val_rng = np.random.default_rng([seed, zlib.crc32(b"val")])
    val = tuple(sorted(rest[k] for k in val_rng.choice(len(rest), size=val_sequences, replace=False)))
    train, mediator = {}, {}
    for s in ids:
        if s in test or s in val:
            continue
        n = num_frames[s]
        n_med = min(n, math.floor(mediator_fraction * n + 0.5))
        start = int(rng.integers(0, n - n_med + 1))
        mediator[s] = tuple(range(start, start + n_med))
        train[s] = tuple(f for f in range(n) if not start <= f < start + n_med)
    labels = {t: _draw_labels(train, t, float(fr), seed, t in pairs) for t, fr in sorted(tasks.items())}
    manifest = SplitManifest(root=root, seed=seed, files=files, num_frames=num_frames, test=test, train=train,
                             mediator=mediator, labels=labels,
                             label_fractions={t: float(v) for t, v in sorted(tasks.items())},
                             mediator_fraction=float(mediator_fraction), val=val)
    manifest.check()
    if write:
        if manifest.path.exists() and not overwrite:
            try:
                same = json.loads(manifest.path.read_text()) == json.loads(json.dumps(manifest.to_json()))
            except ValueError:
                same = False
            if not same:
                raise DataError(f"{manifest.path}: a different splits manifest exists; pass overwrite=True "
                                "to replace it")
        manifest.save()
    return manifest
