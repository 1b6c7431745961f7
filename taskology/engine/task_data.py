"""The datasets one :class:`~taskology.engine.runner.TaskRunner` reads, opened from a data root.

- ``train``: the task's labelled training frames (pairs for pair tasks), its labels in training layout
  (motion labels are derived by :func:`taskology.tasks.motion_targets.motion_targets`);
- ``mediator``: frame pairs (t, t+1) with inputs only (``rgb``, ``rgb_next``, ``K``, ``cam_from_ego``)
  and ``sample_id`` (``"<sequence>:<t>"``); it exposes ``sample_ids`` (list, one per index);
- evaluation splits (``test``: held-out sequences, every label).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from taskology.errors import ConfigError


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


def open_task_data(task: Any, *, data_root: Path, config: Any, seed: int, with_mediator: bool) -> TaskData:
    """Open the train / mediator / test datasets of ``task`` under ``data_root``."""
    from taskology.engine.store_data import open_store_task_data

    return open_store_task_data(task, data_root=data_root, config=config, seed=seed, with_mediator=with_mediator)
