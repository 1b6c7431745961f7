"""Synthetic tasks for ``taskology bench exchange``: the engine's own :class:`TaskActor` and exchange around a
runner whose step is a fixed compute stand-in plus ``k`` peer lookups.

:class:`SyntheticRunner` has the part of the :class:`~taskology.engine.runner.TaskRunner` API the actor uses
(``step``, ``collective``, ``train_step``, ``predict_mediator``, ``save_checkpoint``, ``restore``). Its step
sleeps ``compute_s`` (a GPU step: the device works, the Python thread waits) and then reads a mediator batch of
each peer's predictions through the actor's :class:`~taskology.engine.exchange.DistributedPeerView`, exactly
where a real runner evaluates its relations. Its publication is a fixed ``(samples, *output_shape)`` float32
array that the actor compacts to float16 and serves like any other.

:class:`MeasuredTaskActor` is :class:`TaskActor` unchanged except that it keeps what the bench reports per
event: the wall time and duration of every publication (on the training thread) and every fetch (on the fetch
thread, via a :class:`RecordingMeter` in place of the fetcher's :class:`TrafficMeter`).

Example (in one process, no peers):
    >>> from taskology.engine.exchange import ExchangePolicy
    >>> import shutil, tempfile
    >>> run_dir = tempfile.mkdtemp()
    >>> actor = MeasuredTaskActor(task_name="t0", runner_cls=SyntheticRunner, run_dir=run_dir,
    ...     runner_kwargs=dict(task_name="t0", peers=[], compute_s=0.0, samples=4, output_shape=(1, 2, 3)),
    ...     policy=ExchangePolicy(publish_every_steps=2), checkpoint_every_steps=None, checkpoint_every_s=None,
    ...     log_every=0)
    >>> actor.start(5)
    'training'
    >>> actor.join()
    'done'
    >>> m = actor.measurements()
    >>> [p[2] for p in m["publishes"]], m["payload_nbytes"]
    ([1, 3, 5], 48)
    >>> shutil.rmtree(run_dir)
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from taskology.engine.actor import TaskActor
from taskology.engine.exchange import TrafficMeter
from taskology.engine.protocol import Predictions


class SyntheticRunner:
    """One synthetic task: a fixed compute stand-in per step, then one mediator batch from each peer.

    Args:
        task_name: the task's name (its peers read it under this name).
        peers: the tasks it reads (each step looks up ``batch_size`` samples of each).
        compute_s: the compute stand-in, seconds slept per step (stands in for a GPU step).
        samples: mediator samples per publication (the pool every task predicts on).
        output_shape: one sample's prediction shape, e.g. ``(1, 64, 208)`` (a depth map), float32 here,
            float16 on the wire (the actor's compaction).
        batch_size: mediator samples a step reads from each peer.
        seed: seeds the prediction values and the batches drawn.
        peer_view: the actor's view of the peers' predictions.

    ``records`` holds ``(wall time the step started, seconds spent in peer lookups, peers answered)`` per step.
    """

    collective = True

    def __init__(self, *, task_name: str, peers: Sequence[str], compute_s: float, samples: int,
                 output_shape: Sequence[int], batch_size: int = 8, seed: int = 0, peer_view: Any = None) -> None:
        import torch

        torch.set_num_threads(1)  # as the engine's worker plugin does: one compute thread per worker process
        self.task_name = task_name
        self.peers = list(peers)
        self.compute_s = float(compute_s)
        self.batch_size = int(batch_size)
        self.peer_view = peer_view
        self.step = 0
        self._rng = np.random.default_rng(seed)
        self.sample_ids = [f"mediator:{i}" for i in range(int(samples))]
        self._prediction = self._rng.standard_normal((int(samples), *output_shape), dtype=np.float32)
        self.records: list[tuple[float, float, int]] = []

    def train_step(self) -> dict[str, float]:
        """Sleep ``compute_s``, then look up every peer's rows of one mediator batch (the relations' inputs)."""
        started = time.time()
        time.sleep(self.compute_s)
        t0 = time.perf_counter()
        answered = 0
        if self.peers:  # as the runner: one batch among the samples every peer can answer, then each peer's rows
            answerable = sorted(set.intersection(*(set(self.peer_view.usable_ids(p)) for p in self.peers)))
            if len(answerable) >= self.batch_size:
                batch = {"sample_id": [answerable[i] for i in self._rng.choice(len(answerable), self.batch_size,
                                                                                 replace=False)]}
                answered = sum(self.peer_view.peer_outputs(p, batch) is not None for p in self.peers)
        lookup_s = time.perf_counter() - t0
        self.step += 1
        self.records.append((started, lookup_s, answered))
        done = answered == len(self.peers)
        return {"consistency/synthetic" if done else "skipped/synthetic": 1.0}

    def predict_mediator(self) -> Predictions:
        """This step's prediction on every mediator sample (fixed values: the bench measures moving them)."""
        return Predictions(task=self.task_name, step=self.step, wall_time=time.time(),
                           sample_ids=list(self.sample_ids), outputs={"prediction": self._prediction})

    def state_dict(self) -> dict[str, Any]:
        """The step only (there are no weights; what the actor keeps as the start state of a rollback)."""
        return {"task": self.task_name, "step": self.step}

    def save_checkpoint(self, path: Path) -> None:
        """The step only (there are no weights); the actor writes one at the end of training."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"task": self.task_name, "step": self.step}))

    @classmethod
    def restore(cls, path: Path, **kwargs: Any) -> SyntheticRunner:
        runner = cls(**kwargs)
        runner.step = int(json.loads(Path(path).read_text())["step"])
        return runner


@dataclass
class RecordingMeter(TrafficMeter):
    """:class:`TrafficMeter` that also keeps ``(wall time at the end, bytes, seconds)`` of every fetch."""

    samples: list[tuple[float, int, float]] = field(default_factory=list)

    def record(self, nbytes: int, seconds: float) -> None:
        super().record(nbytes, seconds)
        self.samples.append((time.time(), int(nbytes), float(seconds)))


class MeasuredTaskActor(TaskActor):
    """:class:`TaskActor` that also records each publication and fetch (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fetcher.meter = RecordingMeter()
        self._publications: list[tuple[float, float, int]] = []

    def _publish(self, step: int) -> None:
        wall, t0 = time.time(), time.perf_counter()
        super()._publish(step)
        self._publications.append((wall, time.perf_counter() - t0, step))

    def measurements(self) -> dict[str, Any]:
        """Everything the bench reads, in one call; call after :meth:`stop`.

        ``steps``: the runner's records; ``publishes``: ``(wall start, seconds, step)``; ``fetches``:
        ``(wall end, bytes, seconds)``; ``received_up_to``: per peer, the newest publication step the cache
        holds; ``fetched_bytes``: the fetcher's own byte count; ``payload_nbytes``: one publication's bytes."""
        meter = self.fetcher.meter
        assert isinstance(meter, RecordingMeter)
        published = self.box.latest()
        peers: Sequence[str] = getattr(self.runner, "peers", [])
        return {"task": self.task_name, "pid": os.getpid(), "steps": list(self.runner.records),
                "publishes": list(self._publications), "fetches": list(meter.samples),
                "fetched_bytes": int(meter.bytes_total), "fetch_errors": dict(self.fetcher.errors),
                "received_up_to": {p: self.cache.latest_step(p) for p in peers},
                "payload_nbytes": published.nbytes() if published is not None else 0,
                "staleness": self.cache.log.scalars(), "relation_terms": dict(self._relation_terms),
                "relation_skips": dict(self._relation_skips)}
