"""``TaskRunner``: one task's training loop, the same code in-process and inside a Dask actor.

One :meth:`TaskRunner.train_step` = one optimizer step on

- a labelled batch of the task's own training frames (supervised losses, ``loss/<name>``), plus
- in collective mode, a mediator batch: the task's outputs on it are tied to its peers' outputs
  (obtained from a :class:`~taskology.engine.protocol.PeerView`: fresh in-process, cached and possibly
  stale when distributed) by every enabled relation involving the task (``consistency/<name>``,
  weighted by ``relations.<name>.weight`` times a warm-up schedule: 0 for the first
  ``train.consistency_start_step`` steps, then a linear ramp over ``train.consistency_ramp_steps``).
  Peers' outputs are detached; only this task learns.

Mode ``alone`` (``collective=False``) is the same runner with no relations and no mediator data.
State (:meth:`state_dict`) holds the model, the optimizer, the step, the RNG states (torch, numpy,
python) and the data-stream positions, so a restored runner continues bit-for-bit.

Example (see tests/engine/test_runner.py for a runnable one on tiny shards):
    runner = TaskRunner(task_name="depth", config=cfg, data_root=Path("data/sim"), run_dir=Path("runs/x"),
                        peer_view=InProcessPeerView({}), seed=0)
    scalars = runner.train_step()        # {"loss/total": ..., "loss/depth_log_l1": ..., ...}
    runner.save_checkpoint(Path("runs/x/depth.pt"))
"""
from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from taskology.engine.batches import BatchStream, collate, to_device
from taskology.engine.protocol import PeerView, Predictions, peers_needed
from taskology.engine.task_data import TaskData, open_task_data
from taskology.errors import ConfigError
from taskology.losses import RELATIONS
from taskology.losses.relation import Relation, evaluate_for_receiver
from taskology.tasks import Task, add_metric_state, build_task

_log = logging.getLogger(__name__)

#: dtype of published predictions (protocol.Predictions: compact).
PUBLISH_DTYPE = np.float16


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> cuda when available else cpu; ``"cuda"`` without a GPU is a ConfigError."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {device!r} requested but no CUDA device is available; use auto or cpu")
    return torch.device(device)


def task_kwargs(task_name: str, config: Any) -> dict[str, Any]:
    """Constructor keyword arguments of a task from its config entry (``width``)."""
    return {"width": int(config.tasks[task_name].width)}


def consistency_scale(step: int, start: int, ramp: int) -> float:
    """Multiplier of every relation weight at optimizer step ``step`` (0-based, the step being taken):
    0 before ``start``, then a linear ramp to 1 over ``ramp`` steps.

    Example:
        >>> [consistency_scale(s, 2, 4) for s in (0, 1, 2, 4, 6, 9)]
        [0.0, 0.0, 0.25, 0.75, 1.0, 1.0]
    """
    if step < start:
        return 0.0
    if ramp <= 0:
        return 1.0
    return min(1.0, (step - start + 1) / ramp)


def lr_factor(step: int, steps: int, schedule: str, final: float) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based) of a ``steps``-step run: 1 for
    ``"constant"``; for ``"cosine"``, half a cosine from 1 at step 0 to ``final`` at the last step (and
    ``final`` beyond it, e.g. a resumed run given more steps than it was planned with).

    Example:
        >>> [round(lr_factor(s, 5, "cosine", 0.0), 3) for s in (0, 1, 2, 3, 4, 9)]
        [1.0, 0.854, 0.5, 0.146, 0.0, 0.0]
        >>> lr_factor(3, 5, "constant", 0.0)
        1.0
    """
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}")
    progress = min(1.0, step / max(steps - 1, 1))
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def enabled_tasks(config: Any) -> list[str]:
    return [name for name, entry in config.tasks.items() if entry.enabled]


def relations_for(task_name: str, config: Any) -> list[tuple[Relation, float]]:
    """Enabled relations that feed ``task_name`` (it is taught, every related task is enabled and its
    weight for this receiver, ``weight * receivers.get(task, 1) * train.relation_factor(its label
    fraction, its task section)``, is not 0), with that weight."""
    active = set(enabled_tasks(config))
    entry_task = config.tasks[task_name]
    label_scale = config.train.relation_factor(float(entry_task.label_fraction), entry_task)
    chosen = []
    for name, entry in config.relations.items():
        weight = entry.weight_for(task_name) * label_scale
        if not entry.enabled or weight == 0:
            continue
        if name not in RELATIONS:
            raise ConfigError(f"relations.{name}: unknown relation; available: {', '.join(sorted(RELATIONS))}")
        relation = RELATIONS[name]
        if task_name in relation.teaches and set(relation.tasks) <= active:
            chosen.append((relation, weight))
    return chosen


class TaskRunner:
    """Trains one task (see the module docstring).

    Args:
        task_name: a name of :data:`taskology.tasks.TASKS`.
        config: the resolved :class:`taskology.config.ExperimentConfig`.
        data_root: directory of the shards and their ``splits.json``.
        run_dir: where this run writes (checkpoints and logs go below it).
        peer_view: where peers' predictions come from.
        seed: seeds the model initialisation and the data order.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or a torch.device.
        collective: train with the relations on mediator data (False: ``alone`` mode).
        data: the datasets to use instead of opening ``data_root`` (tests, benchmarks).
    """

    def __init__(self, *, task_name: str, config: Any, data_root: Path, run_dir: Path, peer_view: PeerView,
                 seed: int, device: str | torch.device = "cpu", collective: bool = True,
                 data: TaskData | None = None) -> None:
        if task_name not in config.tasks:
            raise ConfigError(f"tasks.{task_name}: not in the experiment; configured: {', '.join(config.tasks)}")
        self.task_name = task_name
        self.config = config
        self.data_root = Path(data_root)
        self.run_dir = Path(run_dir)
        self.peer_view = peer_view
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.collective = bool(collective)
        self.task_config = config.tasks[task_name]
        # Task objects of every enabled task: relations read their constants (e.g. class ids).
        self.tasks: dict[str, Task] = {name: build_task(name, **task_kwargs(name, config))
                                       for name in enabled_tasks(config)}
        self.tasks.setdefault(task_name, build_task(task_name, **task_kwargs(task_name, config)))
        self.task = self.tasks[task_name]
        self.relations = relations_for(task_name, config) if self.collective else []
        self.peers_needed = sorted(peers_needed([(r.name, r.tasks) for r, _ in self.relations], task_name))

        torch.manual_seed(self.seed)
        self.model = self.task.build_model().to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=float(self.task_config.lr),
                                           weight_decay=float(self.task_config.weight_decay))
        self.step = 0
        self.data = data if data is not None else open_task_data(
            self.task, data_root=self.data_root, config=config, seed=self.seed, with_mediator=bool(self.relations))
        self.train_stream = BatchStream(self.data.train, batch_size=int(self.task_config.batch_size),
                                        seed=self.seed, name=f"{task_name} train split of {self.data_root}")
        self.mediator_stream: BatchStream | None = None
        #: the live pool left last, kept open while the current pool has no sample peers can answer yet
        #: (see :meth:`set_mediator_pool`); ``None`` when not needed
        self._previous_mediator: Any = None
        if self.relations:
            self._open_mediator_stream(self.data.mediator)

    # -- data ---------------------------------------------------------------------------------------
    def _open_mediator_stream(self, dataset: Any) -> None:
        if dataset is None:
            raise ConfigError(f"{self.task_name}: collective training needs a mediator split; none in {self.data_root}")
        old = self.mediator_stream.state_dict() if self.mediator_stream is not None else None
        self.mediator_stream = BatchStream(dataset, batch_size=int(self.config.train.mediator_batch_size),
                                           seed=self.seed + 1, name=f"mediator split of {self.data_root}")
        if old is not None:
            self.mediator_stream.epoch = old["epoch"]  # keep epoch numbering; start the new pool fresh

    def set_mediator_pool(self, shard_paths: Sequence[Path]) -> bool:
        """Replace the mediator samples by all frames (pairs) of ``shard_paths`` (a live pool).

        Shards that vanished or are unreadable by now are skipped (the pool logs them); when none of
        ``shard_paths`` is readable the current pool is kept. Returns whether the pool was replaced.

        With a peer view that says which samples peers can answer (the distributed exchange), the pool
        left is kept open (its retired shards stay readable through the open handles) until the new pool
        has a sample every needed peer can answer: right after a switch the cache may hold peer rows only
        for the old samples (a peer published on the old pool, or its rows for the new shards are not
        fetched yet), and :meth:`_mediator_batch` then draws from the old pool instead of a batch whose
        relation terms would all be skipped. Of the pool left and an older one still kept, the one with
        answerable samples is kept (the newer when both or neither have); at most two pools are open."""
        pool = self.data.mediator_from_shards([Path(p) for p in shard_paths])
        if len(pool) == 0:
            _log.warning("%s: none of the %d mediator shard(s) offered is readable; keeping the current pool",
                         self.task_name, len(shard_paths))
            _close(pool)
            return False
        old, self.data.mediator = self.data.mediator, pool
        if self.relations:
            self._open_mediator_stream(self.data.mediator)
        keep = None
        answerable = self._answerable_ids() if self.relations else None  # None: no need (alone, in-process)
        if answerable is not None and old is not None:
            older = self._previous_mediator
            keep = old if (older is None or _has_any(old, answerable) or not _has_any(older, answerable)) else older
        for dataset in (old, self._previous_mediator):
            if dataset is not None and dataset is not keep:
                _close(dataset)  # frees retired shards' inodes
        self._previous_mediator = keep
        return True

    def _answerable_ids(self) -> set[str] | None:
        """Sample ids every needed peer can answer now (``None``: any sample, the in-process view)."""
        answerable: set[str] | None = None
        for peer in self.peers_needed:
            ids = self.peer_view.usable_ids(peer)
            if ids is not None:
                answerable = set(ids) if answerable is None else answerable & set(ids)
        return answerable

    def _mediator_batch(self) -> dict[str, Any]:
        """The next mediator batch: the stream's, unless the peer view says which samples it can answer
        (the distributed exchange: peers' published rows) and the stream's next batch has others; then a
        seeded draw among the pool samples every needed peer can answer. When no sample of the pool is
        answerable yet but one of the pool left last is (just after a live pool switch, see
        :meth:`set_mediator_pool`), the draw is among those. In-process every sample can be answered, so
        this is always the stream's batch (the reference behaviour)."""
        assert self.mediator_stream is not None
        answerable = self._answerable_ids()
        if answerable is None:
            return self.mediator_stream.next_batch()
        pool = self.data.mediator
        ids = list(pool.sample_ids)
        allowed = set(ids) & answerable
        indices = self.mediator_stream.next_indices()
        if allowed and self._previous_mediator is not None:
            _close(self._previous_mediator)  # the current pool is answerable: the old one is done
            self._previous_mediator = None
        elif not allowed and self._previous_mediator is not None:
            previous_ids = list(self._previous_mediator.sample_ids)
            previous_allowed = set(previous_ids) & answerable
            if previous_allowed:
                pool, ids, allowed = self._previous_mediator, previous_ids, previous_allowed
        if pool is self.data.mediator and (not allowed or all(ids[i] in allowed for i in indices)):
            return collate([pool[i] for i in indices])  # nothing better to draw from / all answerable
        choices = np.asarray([i for i, sid in enumerate(ids) if sid in allowed])
        rng = np.random.default_rng([self.seed + 1, self.step, 1])
        picked = rng.choice(choices, size=min(len(indices), len(choices)), replace=False)
        return collate([pool[int(i)] for i in picked])

    # -- training -----------------------------------------------------------------------------------
    def _forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return self.task.forward(self.model, batch)

    def _with_next_frame_targets(self, own: dict[str, torch.Tensor], mediator: Mapping[str, Any]
                                 ) -> dict[str, torch.Tensor]:
        """``own`` plus this task's outputs on frame t+1 as ``<output>_next`` (no gradient: targets), when a
        relation it receives asks for them (``Relation.next_frame_targets``); else ``own`` itself."""
        if not any(relation.next_frame_targets for relation, _ in self.relations):
            return own
        if "rgb_next" not in mediator:
            raise ConfigError(f"tasks.{self.task_name}: a relation it receives needs frame t+1 (rgb_next), "
                              f"which the mediator batch does not carry")
        with torch.no_grad():
            following = self.task.forward(self.model, {**mediator, "rgb": mediator["rgb_next"]})
        return {**own, **{f"{key}_next": value for key, value in following.items()}}

    def train_step(self) -> dict[str, float]:
        """One optimizer step; returns the logged scalars (``loss/*``, ``consistency/*``, ``staleness/*``)."""
        start = time.perf_counter()
        self.model.train()
        labelled = to_device(self.train_stream.next_batch(), self.device)
        supervised = self.task.supervised_loss(self._forward(labelled), labelled)
        total = sum(supervised.values(), torch.zeros((), device=self.device))
        scalars: dict[str, float] = {f"loss/{k}": float(v.detach()) for k, v in supervised.items()}
        staleness_steps: list[float] = []
        staleness_s: list[float] = []
        scale = consistency_scale(self.step, int(self.config.train.consistency_start_step),
                                  int(self.config.train.consistency_ramp_steps))
        if self.relations and scale > 0:
            assert self.mediator_stream is not None
            mediator = to_device(self._mediator_batch(), self.device)
            own = self._forward(mediator)
            own_with_next = self._with_next_frame_targets(own, mediator)
            peer_cache: dict[str, Any] = {}
            used: dict[str, dict[str, torch.Tensor]] = {}  # the peer outputs the relations are tied to
            for relation, weight in self.relations:
                peers = {}
                for peer in relation.tasks:
                    if peer == self.task_name:
                        continue
                    if peer not in peer_cache:
                        peer_cache[peer] = self.peer_view.peer_outputs(peer, mediator)
                        if peer_cache[peer] is not None:
                            staleness_steps.extend(float(s) for s in peer_cache[peer].staleness_steps)
                            staleness_s.extend(float(s) for s in peer_cache[peer].staleness_s)
                    if peer_cache[peer] is None:
                        break
                    if peer not in used:  # once per peer and step, however many relations it feeds
                        used[peer] = {k: v.to(self.device) for k, v in peer_cache[peer].outputs.items()}
                    peers[peer] = used[peer]
                else:
                    value = evaluate_for_receiver(relation, self.task_name,
                                                  own_with_next if relation.next_frame_targets else own,
                                                  peers, mediator, self.tasks,
                                                  self.config.relations[relation.name].options)
                    total = total + scale * weight * value
                    scalars[f"consistency/{relation.name}"] = float(value.detach())
                    continue
                scalars[f"skipped/{relation.name}"] = 1.0
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        lr = float(self.task_config.lr) * lr_factor(self.step, int(self.config.train.steps),
                                                    str(self.config.train.lr_schedule),
                                                    float(self.config.train.lr_final_factor))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.step += 1
        scalars["loss/total"] = float(total.detach())
        scalars["train/lr"] = lr
        if self.relations:
            scalars["consistency/scale"] = scale
        scalars["staleness/steps_mean"] = float(np.mean(staleness_steps)) if staleness_steps else 0.0
        scalars["staleness/seconds_mean"] = float(np.mean(staleness_s)) if staleness_s else 0.0
        scalars["time/step_s"] = time.perf_counter() - start
        return scalars

    # -- inference ----------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Eval-mode named outputs of the model for ``batch`` (moved to this runner's device), no gradient."""
        was_training = self.model.training
        self.model.eval()
        try:
            return {k: v.detach() for k, v in self._forward(to_device(batch, self.device)).items()}
        finally:
            self.model.train(was_training)

    def predict_mediator(self, sample_ids: Sequence[str] | None = None, batch_size: int | None = None) -> Predictions:
        """Outputs (float16 numpy) on mediator samples ``sample_ids`` (all of the pool when ``None``)."""
        pool = self.data.mediator
        if pool is None:
            raise ConfigError(f"{self.task_name}: no mediator pool to predict on (set_mediator_pool first)")
        ids = list(pool.sample_ids) if sample_ids is None else list(sample_ids)
        index = {sid: i for i, sid in enumerate(pool.sample_ids)}
        unknown = [s for s in ids if s not in index]
        if unknown:
            raise KeyError(f"{self.task_name}: sample ids not in the mediator pool: {unknown[:5]}")
        size = int(batch_size or self.config.exchange.predict_batch_size)
        chunks: dict[str, list[np.ndarray]] = {}
        step, wall = self.step, time.time()
        served: list[str] = []  # a live pool may serve another sample for one whose shard vanished
        for lo in range(0, len(ids), size):
            batch = collate([pool[index[s]] for s in ids[lo:lo + size]])
            served.extend(batch["sample_id"])
            for name, value in self.predict(batch).items():
                chunks.setdefault(name, []).append(value.float().cpu().numpy().astype(PUBLISH_DTYPE))
        outputs = {k: np.concatenate(v) for k, v in chunks.items()}
        return Predictions(task=self.task_name, step=step, wall_time=wall, sample_ids=served, outputs=outputs)

    @torch.no_grad()
    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Dataset-level metrics of the task on ``split`` (every frame of it, fixed order)."""
        dataset = self.data.evaluation(split)
        size = int(self.task_config.batch_size)
        state: dict[str, torch.Tensor] = {}
        for lo in range(0, len(dataset), size):
            batch = to_device(collate([dataset[i] for i in range(lo, min(lo + size, len(dataset)))]), self.device)
            add_metric_state(state, self.task.metrics(self.predict(batch), batch))
        return self.task.finalize_metrics(state) if state else {}

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer, step, RNG states and stream positions (tensors and primitives only)."""
        return {
            "task": self.task_name,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
                "numpy": _numpy_global_state(),
                "python": _python_state(random),
            },
            "streams": {"train": self.train_stream.state_dict(),
                        "mediator": self.mediator_stream.state_dict() if self.mediator_stream else {}},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (same task, same model shapes)."""
        if state.get("task") != self.task_name:
            raise ConfigError(f"checkpoint is for task {state.get('task')!r}, not {self.task_name!r}")
        self.step = int(state["step"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if self.device.type == "cuda" and rng["cuda"]:
            torch.cuda.set_rng_state_all(rng["cuda"])
        _set_numpy_global_state(rng["numpy"])
        _set_python_state(random, rng["python"])
        self.train_stream.load_state_dict(state["streams"]["train"])
        if self.mediator_stream is not None and state["streams"]["mediator"]:
            self.mediator_stream.load_state_dict(state["streams"]["mediator"])

    def save_checkpoint(self, path: Path) -> None:
        """Write :meth:`state_dict` to ``path`` atomically (:func:`taskology.atomic.atomic_path`)."""
        from taskology.atomic import atomic_path

        with atomic_path(Path(path)) as tmp, open(tmp, "wb") as handle:
            torch.save(self.state_dict(), handle)

    @classmethod
    def restore(cls, path: Path, **init_kwargs: Any) -> "TaskRunner":
        """A runner built with ``init_kwargs`` and the state of checkpoint ``path`` (weights_only load)."""
        state = load_checkpoint(Path(path))
        runner = cls(**init_kwargs)
        runner.load_state_dict(state)
        return runner


def load_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with a DataError naming the file when it is unreadable."""
    from taskology.errors import DataError

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # noqa: BLE001 - corrupt/truncated files raise many kinds of errors
        raise DataError(f"{path}: unreadable checkpoint: {type(exc).__name__}: {exc}") from exc


# -- RNG state as tensors/primitives (weights_only checkpoints cannot hold arbitrary objects) ----------
def _python_state(rng: Any) -> dict[str, Any]:
    version, internal, gauss = rng.getstate()
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss if gauss is not None else float("nan")}


def _set_python_state(rng: Any, state: Mapping[str, Any]) -> None:
    gauss = state["gauss"]
    gauss = None if isinstance(gauss, float) and np.isnan(gauss) else gauss
    rng.setstate((state["version"], tuple(int(x) for x in state["internal"].tolist()), gauss))


def _numpy_global_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _set_numpy_global_state(state: Mapping[str, Any]) -> None:
    np.random.set_state((state["name"], state["keys"].numpy().astype(np.uint32), state["pos"],
                         state["has_gauss"], state["cached"]))


def _has_any(dataset: Any, ids: set[str]) -> bool:
    return any(sid in ids for sid in dataset.sample_ids)


def _close(dataset: Any) -> None:
    close = getattr(dataset, "close", None)
    if close is not None:
        close()
