"""The datasets one :class:`~taskology.engine.runner.TaskRunner` reads, opened from the data store.

What a task reads follows from its declaration (:class:`~taskology.tasks.base.Task`): its ``input_layers``
and ``label_layers`` (read from its labelled training frames and from the evaluation splits), whether it
takes frame ``pair`` s, and :meth:`~taskology.tasks.base.Task.prepare` (labels derived per sample, e.g.
motion's). The mediator samples carry the input layers of every enabled task (any peer must be able to
predict on them) as frame pairs (t, t+1), and ``sample_id`` (``"<sequence>:<t>"``).

- ``train``: the task's labelled training frames, inputs and its labels in training layout;
- ``mediator``: frame pairs with inputs only (a fixed split of ``data_root``, or a live pool of shards
  the simulator keeps writing: :class:`ShardPoolDataset`);
- evaluation splits (``val``, ``test``: held-out sequences, every label).

Split manifest: ``data_root/splits.json`` is used when it matches the experiment (same split seed,
mediator fraction, test and validation sequence counts and label fraction for every enabled task);
otherwise the manifest is drawn in memory with :func:`taskology.data.splits.make_splits` from the config
(same seed, so every runner of the run gets the same split) and written only if no ``splits.json`` exists
yet. One shard directory so serves several label fractions (the consistency benchmark).
"""
from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from taskology.data.datasets import KEYS, RAGGED_KEYS, STATIC_LAYERS, FrameDataset, to_training_layout
from taskology.data.shard import Shard
from taskology.data.splits import SplitManifest, make_splits
from taskology.engine.registry import Registry
from taskology.errors import ConfigError, DataError
from taskology.runtime import numba_single_thread
from taskology.tasks.base import Task

_log = logging.getLogger(__name__)


class SampleDataset(Protocol):
    """A map-style dataset of dict samples that knows each sample's id."""

    sample_ids: Sequence[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


@dataclass
class TaskData:
    """Datasets of one task (see the module docstring).

    Attributes:
        train: labelled training samples.
        mediator: mediator samples (pairs, inputs only), or None when not needed.
        splits: evaluation split name -> dataset.
        open_mediator: builds a mediator dataset from shard paths (the live pool of a distributed run).
    """

    train: Any
    mediator: SampleDataset | None
    splits: dict[str, Any] = field(default_factory=dict)
    open_mediator: Callable[[list[Path]], SampleDataset] | None = None

    def evaluation(self, split: str) -> Any:
        if split not in self.splits:
            raise ConfigError(f"unknown evaluation split {split!r}; available: {', '.join(sorted(self.splits))}")
        return self.splits[split]

    def mediator_from_shards(self, shard_paths: list[Path]) -> SampleDataset:
        if self.open_mediator is None:
            raise ConfigError("this data source cannot open a mediator pool from shard paths")
        return self.open_mediator(shard_paths)


def manifest_for(data_root: Path, config: Any, registry: Registry | None = None) -> SplitManifest:
    """The split manifest of ``data_root`` matching ``config`` (see the module docstring)."""
    registry = registry if registry is not None else Registry.current()
    data_root = Path(data_root)
    fractions = {name: float(entry.label_fraction) for name, entry in config.tasks.items() if entry.enabled}
    want = dict(test_sequences=int(config.data.test_sequences), val_sequences=int(config.data.val_sequences),
                mediator_fraction=float(config.data.mediator_fraction), seed=int(config.data.split_seed))
    pairs = registry.pair_tasks() & set(fractions)
    path = data_root / "splits.json"
    if path.is_file():
        manifest = SplitManifest.load(data_root)
        if (manifest.seed == want["seed"] and abs(manifest.mediator_fraction - want["mediator_fraction"]) < 1e-12
                and len(manifest.test) == want["test_sequences"] and len(manifest.val) == want["val_sequences"]
                and all(abs(manifest.label_fractions.get(t, -1.0) - f) < 1e-12 for t, f in fractions.items())):
            return manifest
        return make_splits(data_root, fractions, pairs=pairs, write=False, **want)
    manifest = make_splits(data_root, fractions, pairs=pairs, write=False, **want)
    manifest.save(if_absent=True)  # a concurrent run (other label fractions) may have written one first
    return manifest


def prepared(sample: dict[str, Any], task: Task | None, *, augment: bool = False,
             input_tasks: Sequence[Task] = ()) -> dict[str, Any]:
    """``task.prepare(sample)`` (labels derived per sample) or, for a mediator sample (``task`` None), every
    one of ``input_tasks``' :meth:`~taskology.tasks.base.Task.prepare_inputs` in turn, then without ragged
    layers, so every value is a fixed-shape tensor (or the ``sample_id`` string)."""
    with numba_single_thread():  # one sample is small: a Numba thread pool launched per sample costs more than
        # the work, and its idle threads spin (6x the CPU of a training round measured with two per process)
        if task is not None:
            out = task.prepare(sample, augment=True) if augment and _takes_augment(type(task)) else task.prepare(sample)
        else:
            out = dict(sample)
            for each in input_tasks:
                out = each.prepare_inputs(out)
    for key in RAGGED_KEYS:
        out.pop(key, None)
    return out


@functools.lru_cache(maxsize=None)
def _takes_augment(cls: type) -> bool:
    """Whether ``cls.prepare`` has the ``augment`` keyword (a task written before it existed has not)."""
    return "augment" in inspect.signature(cls.prepare).parameters


class PreparedDataset:
    """A :class:`FrameDataset` whose samples go through :func:`prepared`; knows its sample ids.

    ``augment``: the samples are labelled training samples the task may augment; ``input_tasks``: for a
    mediator dataset (``task`` None), the tasks whose inputs each sample is prepared for."""

    def __init__(self, base: FrameDataset, task: Task | None, *, augment: bool = False,
                 input_tasks: Sequence[Task] = ()) -> None:
        self.base = base
        self.task = task
        self.augment = bool(augment)
        self.input_tasks = tuple(input_tasks)
        self.sample_ids = [f"{s}:{f}" for s, f in base.samples]

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return prepared(self.base[index], self.task, augment=self.augment, input_tasks=self.input_tasks)


class ShardPoolDataset:
    """Mediator pairs (t, t+1) over every frame of the given shards: ``layers`` + ``sample_id``.

    Used for a live pool (shards the simulator keeps producing and retires); no split manifest involved.
    A pool must survive its shards vanishing (the SimActor unlinks the oldest while readers still use
    them), so:

    - every shard is opened (and its handle kept) when the pool is built: a shard retired afterwards
      stays readable through the open handle (POSIX keeps an unlinked inode alive while it is open);
    - a listed shard that is missing or unreadable by then is skipped and named in :attr:`skipped`;
    - a shard whose (re)opening fails later (e.g. after the pool was pickled) is marked dead, and its
      samples are served by the samples of a live shard (the returned ``sample_id`` is the one served);
      only a pool with no live shard at all raises :class:`DataError`.

    Args:
        shard_paths: the shards of the pool.
        layers: the schema layers each sample carries (per-frame ones for t and t+1, ``<key>_next``).

    Attributes:
        paths: the readable shards (in the given order).
        skipped: ``"<path>: <reason>"`` of the listed shards that could not be opened.
        samples: ``(shard index into paths, sequence id, frame t)`` per sample.
        sample_ids: ``"<sequence>:<t>"`` per sample.
    """

    def __init__(self, shard_paths: Sequence[Path], layers: Sequence[str], input_tasks: Sequence[Task] = ()) -> None:
        self.layers = tuple(layer for layer in layers if layer in KEYS)  # offsets are consumed by the reads
        groups = {layer.split("/")[0] for layer in layers}
        self.input_tasks = tuple(input_tasks)
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
            missing = sorted(groups - set(shard.groups))
            if missing:
                shard.close()
                raise DataError(f"{path}: mediator shards need the {', '.join(missing)} group(s); "
                                f"found {sorted(shard.groups)}")
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
        sample: dict[str, Any] = {"sample_id": f"{sequence_id}:{frame}"}
        for layer in self.layers:
            key = KEYS[layer]
            if layer in STATIC_LAYERS:
                sample[key] = to_training_layout(layer, shard.read(layer))
            else:
                sample[key] = to_training_layout(layer, shard.read(layer, frame))
                sample[key + "_next"] = to_training_layout(layer, shard.read(layer, frame + 1))
        return prepared(sample, None, input_tasks=self.input_tasks)

    def close(self) -> None:
        """Close the shard handles (retired shards' disk space is freed once closed)."""
        for shard in self._open.values():
            shard.close()
        self._open = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = {}
        return state


def open_task_data(task: Task, *, data_root: Path, config: Any, with_mediator: bool,
                   registry: Registry | None = None) -> TaskData:
    """Train (labelled), mediator (pairs, inputs) and evaluation datasets of ``task`` under ``data_root``."""
    registry = registry if registry is not None else Registry.current()
    manifest = manifest_for(Path(data_root), config, registry)
    layers = task.input_layers + task.label_layers

    def split(name: str, owner: str | None) -> PreparedDataset:
        return PreparedDataset(FrameDataset(manifest, name, owner, labels=task.label_layers, layers=layers,
                                            pairs=task.pair), task, augment=name == "train")

    mediator_layers = registry.mediator_layers(config)
    # every enabled task prepares its inputs on a mediator sample (e.g. the LiDAR tasks' BEV grid)
    input_tasks = [task if name == task.name else registry.build_task(name, config) for name in config.enabled_tasks()]
    mediator = None
    if with_mediator or manifest.mediator:
        mediator = PreparedDataset(FrameDataset(manifest, "mediator", None, layers=mediator_layers, pairs=True),
                                   None, input_tasks=input_tasks)
    splits = {name: split(name, task.name) for name in ("val", "test") if manifest.frames(name)}
    return TaskData(train=split("train", task.name), mediator=mediator, splits=splits,
                    open_mediator=lambda paths: ShardPoolDataset(paths, mediator_layers, input_tasks))


__all__ = ["TaskData", "SampleDataset", "open_task_data", "manifest_for", "prepared", "PreparedDataset",
           "ShardPoolDataset"]
