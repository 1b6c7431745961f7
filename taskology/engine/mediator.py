"""The mediator samples one runner draws its relation batches from.

A :class:`MediatorSource` holds the current pool (the fixed mediator split of the data store, or a live pool
of simulator shards that is replaced while training runs), a seeded :class:`~taskology.engine.batches.BatchStream`
over it, and the rule for which samples may be drawn:

- where every needed peer can answer any sample (in-process peers), the next batch is the stream's;
- where peers answer only samples they have published (the distributed exchange), a batch whose samples
  they cannot all answer is replaced by a seeded draw among the samples they can, so relation terms are
  not skipped for want of a peer row;
- right after a live pool is replaced, peers may still hold rows only for the pool left (they published on
  it, or their rows for the new shards are not fetched yet). The pool left is then kept open (its retired
  shards stay readable through the open handles) and drawn from until the new pool has an answerable
  sample. At most two pools are open.

Example:
    >>> data = [{"sample_id": f"s:{i}", "x": float(i)} for i in range(6)]
    >>> pool = type("Pool", (list,), {"sample_ids": [f"s:{i}" for i in range(6)]})(data)
    >>> source = MediatorSource(pool, batch_size=2, seed=1, name="demo", draws=True)
    >>> batch = source.next_batch(answerable={"s:4", "s:5"}, step=0)
    >>> sorted(batch["sample_id"])
    ['s:4', 's:5']
"""
from __future__ import annotations

from typing import Any

import numpy as np

from taskology.engine.batches import BatchStream, collate


class MediatorSource:
    """The current mediator pool of a runner, its stream and the pool left last (module docstring).

    Args:
        pool: a dataset of mediator samples with ``sample_ids`` (one id per index).
        batch_size: samples per drawn batch.
        seed: seeds the stream's permutations and the draws among answerable samples (with the step).
        name: what the stream reads, for error messages.
        draws: whether batches are drawn at all (a runner fed by no relation only predicts on the pool).
    """

    def __init__(self, pool: Any, *, batch_size: int, seed: int, name: str, draws: bool) -> None:
        self.pool = pool
        #: the pool left last, kept open while the current pool has no answerable sample; else None
        self.previous: Any = None
        self.stream: BatchStream | None = None
        self._batch_size, self._seed, self._name = int(batch_size), int(seed), name
        if draws:
            self._open_stream()

    def _open_stream(self) -> None:
        old = self.stream.state_dict() if self.stream is not None else None
        self.stream = BatchStream(self.pool, batch_size=self._batch_size, seed=self._seed, name=self._name)
        if old is not None:
            self.stream.epoch = old["epoch"]  # keep epoch numbering; start the new pool fresh

    def replace(self, pool: Any, answerable: set[str] | None) -> None:
        """Make ``pool`` the current pool. With ``answerable`` (the samples every needed peer can answer now;
        None: any), keep the pool left open if the new one has none of them, or the older one kept before
        if only that one has; close every other."""
        old, self.pool = self.pool, pool
        if self.stream is not None:
            self._open_stream()
        keep = None
        if answerable is not None and self.stream is not None and old is not None:
            older = self.previous
            keep = old if (older is None or _has_any(old, answerable) or not _has_any(older, answerable)) else older
        for dataset in (old, self.previous):
            if dataset is not None and dataset is not keep:
                close_dataset(dataset)  # frees retired shards' inodes
        self.previous = keep

    def next_batch(self, answerable: set[str] | None, step: int) -> dict[str, Any]:
        """The next batch: the stream's, or with ``answerable`` a seeded draw (keyed on ``step``) among the
        answerable samples of the current pool, or of the pool left while the current one has none."""
        assert self.stream is not None, "a source built with draws=False draws no batches"
        if answerable is None:
            return self.stream.next_batch()
        pool = self.pool
        ids = list(pool.sample_ids)
        allowed = set(ids) & answerable
        indices = self.stream.next_indices()
        if allowed and self.previous is not None:
            close_dataset(self.previous)  # the current pool is answerable: the old one is done
            self.previous = None
        elif not allowed and self.previous is not None:
            previous_ids = list(self.previous.sample_ids)
            previous_allowed = set(previous_ids) & answerable
            if previous_allowed:
                pool, ids, allowed = self.previous, previous_ids, previous_allowed
        if pool is self.pool and (not allowed or all(ids[i] in allowed for i in indices)):
            return collate([pool[i] for i in indices])  # nothing better to draw from / all answerable
        choices = np.asarray([i for i, sid in enumerate(ids) if sid in allowed])
        rng = np.random.default_rng([self._seed, step, 1])
        picked = rng.choice(choices, size=min(len(indices), len(choices)), replace=False)
        return collate([pool[int(i)] for i in picked])

    def state_dict(self) -> dict[str, int]:
        """The stream's position (empty when the source draws nothing)."""
        return self.stream.state_dict() if self.stream is not None else {}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if self.stream is not None and state:
            self.stream.load_state_dict(state)


def _has_any(dataset: Any, ids: set[str]) -> bool:
    return any(sid in ids for sid in dataset.sample_ids)


def close_dataset(dataset: Any) -> None:
    """Close ``dataset``'s open files when it has a ``close`` method."""
    close = getattr(dataset, "close", None)
    if close is not None:
        close()


__all__ = ["MediatorSource", "close_dataset"]
