"""Endless, resumable batch streams over a map-style dataset.

A :class:`BatchStream` walks seeded random permutations of a dataset, epoch after epoch, and collates
samples into batches of tensors (strings such as ``sample_id`` become lists). Its position (epoch,
offset) is part of a runner's checkpoint, so a restored runner sees exactly the batches it would have
seen. Samples are loaded in the calling process (h5py handles are opened lazily by the datasets).

Example:
    >>> data = [{"x": torch.tensor([float(i)]), "sample_id": f"s:{i}"} for i in range(5)]
    >>> stream = BatchStream(data, batch_size=2, seed=0)
    >>> batch = stream.next_batch()
    >>> batch["x"].shape, len(batch["sample_id"])
    (torch.Size([2, 1]), 2)
    >>> again = BatchStream(data, batch_size=2, seed=0)
    >>> again.load_state_dict({"epoch": 0, "offset": 0}); again.next_batch()["sample_id"] == batch["sample_id"]
    True
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from taskology.errors import DataError


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack per-sample tensors/arrays along a new batch axis; strings and other objects become lists."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        first = values[0]
        if isinstance(first, torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(first, np.ndarray):
            out[key] = torch.from_numpy(np.stack(values))
        elif isinstance(first, (int, float)) and not isinstance(first, bool):
            out[key] = torch.tensor(values)
        else:
            out[key] = list(values)
    return out


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Move the tensors of ``batch`` to ``device`` (non-tensors unchanged)."""
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


class BatchStream:
    """Seeded endless batches over ``dataset`` (any object with ``__len__`` and ``__getitem__``).

    Args:
        dataset: the samples (dicts).
        batch_size: samples per batch (capped at the dataset size).
        seed: seed of the per-epoch permutations (epoch ``e`` uses ``seed`` and ``e``).
        name: what the stream reads, for error messages.
    """

    def __init__(self, dataset: Any, *, batch_size: int, seed: int, name: str = "dataset") -> None:
        if len(dataset) == 0:
            raise DataError(f"{name}: no samples to train on (empty split); expected at least one frame")
        self.dataset = dataset
        self.batch_size = min(int(batch_size), len(dataset))
        self.seed = int(seed)
        self.name = name
        self.epoch = 0
        self.offset = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))

    def next_indices(self) -> list[int]:
        """Dataset indices of the next batch (wraps into the next epoch's permutation)."""
        picked: list[int] = []
        while len(picked) < self.batch_size:
            if self.offset >= len(self._order):
                self.epoch += 1
                self.offset = 0
                self._order = self._permutation(self.epoch)
            take = min(self.batch_size - len(picked), len(self._order) - self.offset)
            picked.extend(int(i) for i in self._order[self.offset:self.offset + take])
            self.offset += take
        return picked

    def next_batch(self) -> dict[str, Any]:
        return collate([self.dataset[i] for i in self.next_indices()])

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.offset = int(state["offset"])
        self._order = self._permutation(self.epoch)
