"""``TaskRunner``: one task's training loop, the same code in-process and inside a Dask actor.

One :meth:`TaskRunner.train_step` is one optimizer step, four named parts:

1. :meth:`~TaskRunner._supervised_loss`: the task's losses on a batch of its own labelled frames
   (``loss/<name>``);
2. :meth:`~TaskRunner._peer_targets`: in collective mode, once the relations have started, a mediator batch
   and the peers' outputs on it, from a :class:`~taskology.engine.protocol.PeerView` (fresh in-process,
   cached and possibly stale in a distributed run; their age is logged as ``staleness/*``);
3. :meth:`~TaskRunner._add_relation_losses`: every enabled relation that feeds the task, each with only this
   task's outputs carrying gradient (``consistency/<name>``), weighted by ``relations.<name>.weight``, its
   receiver and label-fraction factors and a warm-up (:func:`consistency_scale`);
4. :meth:`~TaskRunner._optimizer_step`: the step at the scheduled learning rate (:func:`lr_factor`, times
   :attr:`~TaskRunner.lr_scale`), unless the loss or the gradient is not finite: then
   :class:`~taskology.engine.faults.NonFiniteLoss` is raised and nothing is applied (what follows is the
   caller's decision, :class:`~taskology.engine.faults.DivergencePolicy`).

Mode ``alone`` (``collective=False``) is the same runner with no relations. State (:meth:`state_dict`) holds
the model, the optimizer, the step, the learning-rate scale, the RNG states and the data-stream positions, so
a restored runner continues bit-for-bit.

Example (see tests/engine/test_runner.py for a runnable one on tiny shards):
    runner = TaskRunner(task_name="depth", config=cfg, data_root=Path("data/sim"), run_dir=Path("runs/x"),
                        peer_view=InProcessPeerView({}), seed=0)
    scalars = runner.train_step()        # {"loss/total": ..., "loss/depth_log_l1": ..., ...}
    runner.save_checkpoint(Path("runs/x/depth.pt"))
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from taskology.engine.batches import BatchStream, collate, to_device
from taskology.engine.checkpoints import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from taskology.engine.faults import NonFiniteLoss
from taskology.engine.mediator import MediatorSource, close_dataset
from taskology.engine.protocol import PeerOutputs, PeerView, Predictions, peers_needed
from taskology.engine.registry import Registry
from taskology.engine.task_data import TaskData, open_task_data
from taskology.errors import ConfigError
from taskology.losses.relation import evaluate_for_receiver
from taskology.tasks import Task, add_metric_state

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


def staleness_scalars(peers: Iterable[PeerOutputs | None]) -> dict[str, float]:
    """``staleness/steps_mean`` and ``staleness/seconds_mean`` over every row of the peer outputs used
    (0 when none).

    Example:
        >>> staleness_scalars([PeerOutputs({}, [0, 4], [1.0, 3.0]), None])
        {'staleness/steps_mean': 2.0, 'staleness/seconds_mean': 2.0}
    """
    steps = [float(s) for p in peers if p is not None for s in p.staleness_steps]
    seconds = [float(s) for p in peers if p is not None for s in p.staleness_s]
    return {"staleness/steps_mean": float(np.mean(steps)) if steps else 0.0,
            "staleness/seconds_mean": float(np.mean(seconds)) if seconds else 0.0}


class TaskRunner:
    """Trains one task (see the module docstring).

    Args:
        task_name: a task of ``registry`` that the config lists.
        config: the resolved :class:`taskology.config.ExperimentConfig`.
        data_root: directory of the shards and their ``splits.json``.
        run_dir: where this run writes (checkpoints and logs go below it).
        peer_view: where peers' predictions come from.
        seed: seeds the model initialisation and the data order.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or a torch.device.
        collective: train with the relations on mediator data (False: ``alone`` mode).
        data: the datasets to use instead of opening ``data_root`` (tests, benchmarks).
        registry: the tasks and relations of the run (default: :meth:`Registry.current`).
    """

    def __init__(self, *, task_name: str, config: Any, data_root: Path, run_dir: Path, peer_view: PeerView,
                 seed: int, device: str | torch.device = "cpu", collective: bool = True,
                 data: TaskData | None = None, registry: Registry | None = None) -> None:
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
        self.registry = registry if registry is not None else Registry.current()
        # Task objects of every enabled task: relations read their constants (e.g. class ids).
        self.tasks: dict[str, Task] = {name: self.registry.build_task(name, config) for name in config.enabled_tasks()}
        self.tasks.setdefault(task_name, self.registry.build_task(task_name, config))
        self.task = self.tasks[task_name]
        self.relations = self.registry.relations_for(task_name, config) if self.collective else []
        self.peers_needed = sorted(peers_needed([(r.name, r.tasks) for r, _ in self.relations], task_name))

        torch.manual_seed(self.seed)
        self.model = self.task.build_model().to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=float(self.task_config.lr),
                                           weight_decay=float(self.task_config.weight_decay))
        self.step = 0
        #: multiplier of the scheduled learning rate (lowered by a rollback after a non-finite loss; saved)
        self.lr_scale = 1.0
        self.data = data if data is not None else open_task_data(
            self.task, data_root=self.data_root, config=config, registry=self.registry,
            with_mediator=bool(self.relations))
        self.train_stream = BatchStream(self.data.train, batch_size=int(self.task_config.batch_size),
                                        seed=self.seed, name=f"{task_name} train split of {self.data_root}")
        if self.relations and self.data.mediator is None:
            raise ConfigError(f"{self.task_name}: collective training needs a mediator split; none in {self.data_root}")
        #: the mediator pool this runner predicts on and (fed by a relation) draws its relation batches from
        self.mediator = None if self.data.mediator is None else MediatorSource(
            self.data.mediator, batch_size=int(config.train.mediator_batch_size), seed=self.seed + 1,
            name=f"mediator split of {self.data_root}", draws=bool(self.relations))

    # -- training -----------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """One optimizer step; returns the logged scalars (``loss/*``, ``consistency/*``, ``staleness/*``)."""
        start = time.perf_counter()
        self.model.train()
        total, scalars = self._supervised_loss()
        scale = consistency_scale(self.step, int(self.config.train.consistency_start_step),
                                  int(self.config.train.consistency_ramp_steps))
        peers: dict[str, PeerOutputs | None] = {}
        if self.relations and scale > 0:
            mediator = to_device(self._mediator_batch(), self.device)
            peers = self._peer_targets(mediator)
            total = self._add_relation_losses(total, mediator, peers, scale, scalars)
        lr = self._optimizer_step(total, scalars)
        scalars.update({"loss/total": float(total.detach()), "train/lr": lr})
        if self.relations:
            scalars["consistency/scale"] = scale
        scalars.update(staleness_scalars(peers.values()))
        scalars["time/step_s"] = time.perf_counter() - start
        return scalars

    def _supervised_loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        """The sum of the task's supervised losses on its next labelled batch, and each as ``loss/<name>``."""
        labelled = to_device(self.train_stream.next_batch(), self.device)
        losses = self.task.supervised_loss(self._forward(labelled), labelled)
        total = sum(losses.values(), torch.zeros((), device=self.device))
        return total, {f"loss/{k}": float(v.detach()) for k, v in losses.items()}

    def _peer_targets(self, mediator: Mapping[str, Any]) -> dict[str, PeerOutputs | None]:
        """Every needed peer's outputs on the ``mediator`` batch, on this runner's device (None where the peer
        has no usable prediction for some row)."""
        targets: dict[str, PeerOutputs | None] = {}
        for peer in self.peers_needed:
            found = self.peer_view.peer_outputs(peer, mediator)
            targets[peer] = None if found is None else PeerOutputs(
                {k: v.to(self.device) for k, v in found.outputs.items()}, found.staleness_steps, found.staleness_s)
        return targets

    def _add_relation_losses(self, total: torch.Tensor, mediator: Mapping[str, Any],
                             peers: Mapping[str, PeerOutputs | None], scale: float,
                             scalars: dict[str, float]) -> torch.Tensor:
        """``total`` plus ``scale`` times every relation that feeds this task at its weight, evaluated on this
        task's outputs on ``mediator`` (the only ones carrying gradient); a relation whose peer has no usable
        prediction is skipped (``skipped/<name>``)."""
        own = self._forward(mediator)
        own_with_next = self._with_next_frame_targets(own, mediator)
        for relation, weight in self.relations:
            related = {t: peers[t] for t in relation.tasks if t != self.task_name}
            if any(outputs is None for outputs in related.values()):
                scalars[f"skipped/{relation.name}"] = 1.0
                continue
            value = evaluate_for_receiver(relation, self.task_name,
                                          own_with_next if relation.next_frame_targets else own,
                                          {t: p.outputs for t, p in related.items() if p is not None}, mediator,
                                          self.tasks, self.config.relations[relation.name].options)
            total = total + scale * weight * value
            scalars[f"consistency/{relation.name}"] = float(value.detach())
        return total

    def _optimizer_step(self, total: torch.Tensor, scalars: Mapping[str, float]) -> float:
        """Backpropagate ``total`` and step the optimizer at this step's learning rate (returned); raise
        :class:`NonFiniteLoss` instead, with no optimizer step, when the loss or the gradient is not finite."""
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self._check_finite(total, scalars)
        lr = self.lr_scale * float(self.task_config.lr) * lr_factor(self.step, int(self.config.train.steps),
                                                                    str(self.config.train.lr_schedule),
                                                                    float(self.config.train.lr_final_factor))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.step += 1
        return lr

    def _check_finite(self, total: torch.Tensor, scalars: Mapping[str, float]) -> None:
        """Raise :class:`NonFiniteLoss` (gradients cleared) unless ``total`` and the gradient norm are finite.

        A finite loss can still give a NaN gradient (a square root or a normalisation at zero), so both are
        checked. Cost: one norm over the gradients and one read-back of two scalars per step (the loss is
        read back for the log anyway)."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
        loss_ok, grad_ok = (bool(v) for v in torch.stack([torch.isfinite(total.detach()),
                                                          torch.isfinite(norm).to(total.device)]).tolist())
        if loss_ok and grad_ok:
            return
        self.optimizer.zero_grad(set_to_none=True)
        if not loss_ok:
            parts = [f"{k}={v:g}" for k, v in scalars.items()
                     if k.startswith(("loss/", "consistency/")) and not math.isfinite(v)]
            detail = f"loss is not finite ({', '.join(parts) or f'loss/total={float(total.detach()):g}'})"
        else:
            detail = f"gradient is not finite (norm {float(norm):g}; loss/total={float(total.detach()):.6g})"
        raise NonFiniteLoss(self.task_name, self.step, detail)

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

    # -- mediator data ------------------------------------------------------------------------------
    def set_mediator_pool(self, shard_paths: Sequence[Path]) -> bool:
        """Replace the mediator samples by all frames (pairs) of ``shard_paths`` (a live pool).

        Shards that vanished or are unreadable by now are skipped (the pool logs them); when none of
        ``shard_paths`` is readable the current pool is kept. Returns whether the pool was replaced. Until
        peers can answer a sample of the new pool, batches come from the pool left
        (:class:`~taskology.engine.mediator.MediatorSource`)."""
        pool = self.data.mediator_from_shards([Path(p) for p in shard_paths])
        if len(pool) == 0:
            _log.warning("%s: none of the %d mediator shard(s) offered is readable; keeping the current pool",
                         self.task_name, len(shard_paths))
            close_dataset(pool)
            return False
        if self.mediator is None:
            self.mediator = MediatorSource(pool, batch_size=int(self.config.train.mediator_batch_size),
                                           seed=self.seed + 1, name=f"mediator split of {self.data_root}",
                                           draws=bool(self.relations))
        else:
            self.mediator.replace(pool, self._answerable_ids() if self.relations else None)
        return True

    def _answerable_ids(self) -> set[str] | None:
        """Sample ids every needed peer can answer now (``None``: any sample, e.g. in-process peers)."""
        answerable: set[str] | None = None
        for peer in self.peers_needed:
            ids = self.peer_view.usable_ids(peer)
            if ids is not None:
                answerable = set(ids) if answerable is None else answerable & set(ids)
        return answerable

    def _mediator_batch(self) -> dict[str, Any]:
        """The next mediator batch, among samples every needed peer can answer (in-process: the stream's)."""
        assert self.mediator is not None
        return self.mediator.next_batch(self._answerable_ids(), self.step)

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
        if self.mediator is None:
            raise ConfigError(f"{self.task_name}: no mediator pool to predict on (set_mediator_pool first)")
        pool = self.mediator.pool
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
        """Model, optimizer, step, learning-rate scale, RNG states and stream positions (tensors and
        primitives only)."""
        return {"task": self.task_name, "step": self.step, "lr_scale": self.lr_scale,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": rng_state(self.device),
                "streams": {"train": self.train_stream.state_dict(),
                            "mediator": self.mediator.state_dict() if self.mediator is not None else {}}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (same task, same model shapes)."""
        if state.get("task") != self.task_name:
            raise ConfigError(f"checkpoint is for task {state.get('task')!r}, not {self.task_name!r}")
        self.step = int(state["step"])
        self.lr_scale = float(state.get("lr_scale", 1.0))  # checkpoints from before the scale existed: 1
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], self.device)
        self.train_stream.load_state_dict(state["streams"]["train"])
        if self.mediator is not None:
            self.mediator.load_state_dict(state["streams"]["mediator"])

    def save_checkpoint(self, path: Path) -> None:
        """Write :meth:`state_dict` to ``path`` atomically (:func:`~taskology.engine.checkpoints.save_checkpoint`)."""
        save_checkpoint(self.state_dict(), path)

    @classmethod
    def restore(cls, path: Path, **init_kwargs: Any) -> "TaskRunner":
        """A runner built with ``init_kwargs`` and the state of checkpoint ``path`` (weights_only load)."""
        state = load_checkpoint(Path(path))
        runner = cls(**init_kwargs)
        runner.load_state_dict(state)
        return runner


__all__ = ["TaskRunner", "consistency_scale", "lr_factor", "resolve_device", "staleness_scalars", "PUBLISH_DTYPE"]
