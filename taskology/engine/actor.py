"""``TaskActor``: one task's :class:`~taskology.engine.runner.TaskRunner` living on a Dask worker.

Created with ``client.submit(TaskActor, ..., actor=True, workers=[address])``. A worker process has one
actor thread shared by all its actors, so every method here is short: training runs in a background
thread started by :meth:`TaskActor.start`, peers are fetched by a second background thread
(:class:`~taskology.engine.exchange.PeerFetcher`), and the methods only read/swap state under a lock.

Checkpoints (:mod:`taskology.engine.checkpoints`: ``<run_dir>/checkpoints/<task>/step_00000123.pt``, atomic,
plus ``step_00000123.exchange.json`` and the latest publication ``step_00000123.pub.npz``) are written
every ``checkpoint_every_steps`` steps or ``checkpoint_every_s`` seconds, whichever comes first, and at
the end; the newest ``keep_checkpoints`` are kept. A TaskActor created where checkpoints exist resumes
from the newest readable one (``runner_cls.restore``; newer unreadable ones are set aside, with one logged
line: :meth:`~taskology.engine.checkpoints.CheckpointDir.newest_readable`), so recovery = create the actor
again. A checkpoint that cannot be written (a full disk) does not stop training (:meth:`TaskActor._checkpoint`).

Faults of NaN and infinity (:mod:`taskology.engine.faults`): a peer publication holding one is dropped on
receipt (counted: ``status()["dropped_publications"]``). A step whose own loss or gradient is not finite is not
applied; the first time (``DivergencePolicy.max_rollbacks``) the actor rolls back to its newest checkpoint
(before the first one: to its start state) at the learning rate times ``DivergencePolicy.lr_factor`` (0.5),
writes that state as a checkpoint again (with the lowered rate and the rollback count) and trains on
(``status()["rollbacks"]``); the next time it stops, state ``failed`` with a one-line
:class:`~taskology.errors.TrainingDiverged` error naming the task and the step, and ``status()["fatal"]``
True (a restart from a checkpoint cannot help).

An actor whose driver died (the scheduler released it; :class:`~taskology.cluster.release.ReleaseWatch`)
stops after the current step without writing a checkpoint (a resumed driver's new actor owns the folder
now), state ``released``; its threads are registered under the run directory so that a new driver waits for
them (:func:`~taskology.cluster.release.await_orphans`).

TensorBoard event files go to ``<run_dir>/tensorboard/<task>/``.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
import threading
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any, Mapping


from taskology.cluster.release import ReleaseWatch, register
from taskology.engine.checkpoints import CheckpointDir, load_checkpoint
from taskology.engine.exchange import (DistributedPeerView, ExchangePolicy, PeerFetcher, PredictionCache,
                                       PublicationBox, StalenessLog, compact_predictions)
from taskology.engine.faults import DivergencePolicy, NonFiniteLoss
from taskology.engine.protocol import Predictions
from taskology.errors import TrainingDiverged

_log = logging.getLogger(__name__)

def pool_token(shard_paths: list[str]) -> str:
    """A short name of a mediator pool (its shard list, in order): the supervisor compares the token an
    actor reports with its last publication against the pool it pushed.

    Example:
        >>> pool_token(["a.h5", "b.h5"]) == pool_token(["a.h5", "b.h5"]) != pool_token(["b.h5", "a.h5"])
        True
    """
    return hashlib.sha1("\n".join(map(str, shard_paths)).encode()).hexdigest()[:16]


def checkpoint_due(step: int, last_step: int, now: float, last_time: float,
                   every_steps: int | None, every_s: float | None) -> bool:
    """Checkpoint when ``every_steps`` steps or ``every_s`` seconds have passed since the last one.

    Example:
        >>> checkpoint_due(20, 10, 5.0, 0.0, every_steps=10, every_s=None)
        True
        >>> checkpoint_due(15, 10, 5.0, 0.0, every_steps=10, every_s=60.0)
        False
    """
    if step <= last_step:
        return False
    if every_steps and step - last_step >= every_steps:
        return True
    return bool(every_s) and now - last_time >= float(every_s)  # type: ignore[arg-type]


def _current_worker() -> Any:
    """The Dask worker running this code, or ``None`` outside one."""
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


class TaskActor:
    """Trains one task on the worker that holds it; serves its predictions to peers.

    Args:
        task_name: the task.
        runner_cls: a class with the TaskRunner API (``__init__(**runner_kwargs, peer_view=...)``,
            ``restore(path, **kwargs)``, ``train_step``, ``predict_mediator``, ``save_checkpoint``, ...).
        runner_kwargs: keyword arguments of ``runner_cls`` except ``peer_view``.
        run_dir: the run directory (checkpoints and TensorBoard files go below it).
        policy: exchange policy (publish/refetch/staleness).
        checkpoint_every_steps, checkpoint_every_s: checkpoint cadence (either may be None).
        keep_checkpoints: how many checkpoints to keep.
        log_every: TensorBoard scalars every this many steps (0 disables TensorBoard).
        divergence: what to do when the task's loss is not finite (default: one rollback at half the
            learning rate, then stop).
    """

    def __init__(self, *, task_name: str, runner_cls: Any, runner_kwargs: Mapping[str, Any], run_dir: str,
                 policy: ExchangePolicy, checkpoint_every_steps: int | None = 100,
                 checkpoint_every_s: float | None = 60.0, keep_checkpoints: int = 2, log_every: int = 10,
                 device: str = "cpu", divergence: DivergencePolicy | None = None) -> None:
        self.task_name = task_name
        self.policy = policy
        self.run_dir = Path(run_dir)
        self.checkpoints = CheckpointDir(self.run_dir / "checkpoints" / task_name, keep_checkpoints)
        self.every_steps, self.every_s = checkpoint_every_steps, checkpoint_every_s
        self.log_every = log_every
        self.cache = PredictionCache(policy)
        self.fetcher = PeerFetcher(self.cache)
        self.box = PublicationBox()
        self._stop = threading.Event()
        view = DistributedPeerView(self.cache, device, stop=self._stop)
        self.view = view
        kwargs = dict(runner_kwargs, peer_view=view)
        resume = self.checkpoints.newest_readable(task_name)  # logs and sets aside unreadable newer steps
        self.restored_from: int | None = None
        self.last_published_step: int | None = None
        state: dict[str, Any] = {}
        if resume is not None:
            resume_step, state, pub = resume
            self.runner = runner_cls.restore(self.checkpoints.path(resume_step), **kwargs)
            self.restored_from = int(self.runner.step)
            if pub is not None:
                self.box.publish(pub)
            self.last_published_step = state.get("last_published_step")
            # staleness and relation counts cover the whole run, not only this incarnation
            self.cache.log = StalenessLog.from_dict(state.get("staleness_log", {}))
        else:
            self.runner = runner_cls(**kwargs)
        #: bytes fetched by earlier incarnations (the run's total is reported; bytes/s is this incarnation's)
        self._bytes_before = int(state.get("exchange_bytes", 0))
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pending_pool: list[str] | None = None
        self._pools_applied = 0  # live mediator pools this incarnation switched to
        self._handled_pool: str | None = None  # pool_token of the last pool the training thread took up
        self._published_pool: str | None = None  # ... and of the one it had taken up at its last publication
        self._state = "idle"
        self._error: str | None = None
        self._target = 0
        self._scalars: dict[str, float] = {}
        self._step = int(self.runner.step)
        self._rate: deque[tuple[float, int]] = deque(maxlen=20)
        self._exchange_s = 0.0
        self._train_s = 0.0
        #: (wall time start() launched training, wall time the last step ended or None, step at start)
        self._window: tuple[float, float | None, int] = (time.time(), None, self._step)
        self._last_ckpt_step = self._step
        self._last_ckpt_time = time.time()
        #: checkpoint writes that failed (OSError: a full disk, ...), the last one's line, (step, time) of the
        #: last attempt while it failed (the next attempt comes after a back-off: :meth:`_retry_after`)
        self._ckpt_failures = 0
        self._ckpt_streak = 0  # failures in a row (the back-off of the next attempt)
        self._ckpt_last_error: str | None = None
        self._ckpt_failed_at: tuple[int, float] | None = None
        self._writer: Any = None
        #: relation terms the runner evaluated / skipped (``consistency/<name>`` / ``skipped/<name>``)
        self._relation_terms: dict[str, int] = dict(state.get("relation_terms", {}))
        self._relation_skips: dict[str, int] = dict(state.get("relation_skips", {}))
        #: step of the first evaluated term per relation (before it: no peer publication yet)
        self._first_term_step: dict[str, int] = dict(state.get("first_term_step", {}))
        self.divergence = divergence if divergence is not None else DivergencePolicy()
        #: rollbacks after a non-finite loss over the run (saved beside checkpoints), and the last fault in words
        self._rollbacks = int(state.get("rollbacks", 0))
        self._last_fault: str | None = None
        self._fatal = False  # stopped on an error a restart cannot fix (TrainingDiverged)
        #: alone mode (``collective=False``) has no mediator pool and no peers: nothing to publish
        self.publishes = bool(getattr(self.runner, "collective", True))
        #: what a rollback before the first checkpoint returns to (a copy of the weights until that checkpoint)
        self._start_state: dict[str, Any] | None = (
            copy.deepcopy(self.runner.state_dict()) if self.restored_from is None else None)
        self._watch = ReleaseWatch(self, self._on_release, name=f"taskology-watch-{task_name}")

    # ---- actor methods (short) -------------------------------------------------------------
    def start(self, target_steps: int) -> str:
        """Train (in a background thread) until ``runner.step == target_steps``; returns the state."""
        with self._lock:
            self._target = int(target_steps)
            if self._thread is not None and self._thread.is_alive():
                return self._state
            if self._watch.released.is_set():
                return "released"  # its driver is gone: a new driver's actor trains this task
            self._stop.clear()
            self._state = "training"
            self._window = (time.time(), None, int(self.runner.step))
            self._thread = threading.Thread(target=self._train_loop, name=f"taskology-train-{self.task_name}",
                                            daemon=True)
            self._thread.start()
            register(self.run_dir, self._thread)
            self.fetcher.start()
            self._watch.start()
            return self._state

    def join(self, timeout_s: float | None = None) -> str:
        """Wait for the training thread to end (in-process use; on a cluster poll :meth:`status`)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout=timeout_s)
        with self._lock:
            return self._state

    def stop(self, timeout_s: float = 30.0) -> str:
        """Stop training after the current step (writes a final checkpoint) and stop fetching."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        self.fetcher.stop()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        with self._lock:
            if self._state == "training":
                self._state = "stopped"
            return self._state

    def _on_release(self) -> None:
        """The worker let go of this actor (its driver is gone): stop after the current step, write nothing."""
        if self._thread is not None and self._thread.is_alive():
            _log.warning("%s: released by its driver while training (step %d); stopping without a checkpoint",
                         self.task_name, self.runner.step)
        self._stop.set()
        self.fetcher.stop()

    def set_peers(self, peers: Mapping[str, Any]) -> None:
        """Actor handles of the peers this task reads (replaced after a peer is recreated).

        A handle unpickled here is not bound to this worker, and the fetch thread cannot find the worker
        itself (``get_worker`` is thread-local), so bind each handle to the worker holding this actor."""
        peers = {k: v for k, v in peers.items() if k != self.task_name}
        worker = _current_worker()
        for handle in peers.values():
            if worker is not None and getattr(handle, "_worker", "absent") is None:
                handle._worker = worker
        self.fetcher.set_peers(peers)

    def set_mediator_pool(self, shard_paths: list[str]) -> None:
        """New mediator shard list; applied by the training thread between two steps."""
        with self._lock:
            self._pending_pool = list(shard_paths)

    def current_step(self) -> int:
        return self._step

    def latest_predictions(self, since_step: int = -1) -> Predictions | None:
        """The newest publication if made after ``since_step``, else ``None``."""
        return self.box.latest(since_step)

    def predictions_since(self, since_step: int = -1) -> list[Predictions]:
        """Every retained publication made after ``since_step``, oldest first."""
        return self.box.since(since_step)

    def status(self) -> dict[str, Any]:
        """Step, state, speed, latest scalars (losses, consistency, staleness), exchange figures."""
        with self._lock:
            rate = 0.0
            if len(self._rate) >= 2:
                (t0, s0), (t1, s1) = self._rate[0], self._rate[-1]
                rate = (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0
            return {"task": self.task_name, "state": self._state, "error": self._error, "step": self._step,
                    "target": self._target, "steps_per_s": rate, "scalars": dict(self._scalars),
                    "staleness": self.cache.log.scalars(), "published_step": self.box.last_step,
                    "checkpoint_step": self._last_ckpt_step, "restored_from": self.restored_from,
                    "checkpoint_failures": self._ckpt_failures, "checkpoint_last_error": self._ckpt_last_error,
                    "exchange_bytes_per_s": self.fetcher.meter.bytes_per_s(),
                    "exchange_bytes": self._bytes_before + self.fetcher.meter.bytes_total, "fetch_errors": dict(self.fetcher.errors),
                    "fetch_last_error": dict(self.fetcher.last_error),
                    "exchange_s_on_training_thread": self._exchange_s, "train_s": self._train_s,
                    "relation_terms": dict(self._relation_terms), "relation_skips": dict(self._relation_skips),
                    "relation_first_step": dict(self._first_term_step),
                    "lockstep_wait_s": self.view.wait_s, "lockstep_timeouts": dict(self.view.timeouts),
                    "mediator_pools_applied": self._pools_applied, "published_pool": self._published_pool,
                    "window": {"started": self._window[0], "ended": self._window[1], "from_step": self._window[2]},
                    "dropped_publications": self.cache.log.dropped_total(), "rollbacks": self._rollbacks,
                    "last_fault": self._last_fault, "fatal": self._fatal, "pid": os.getpid()}

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Metrics on ``split``; call when training is stopped or done."""
        return dict(self.runner.evaluate(split))

    # ---- background training ---------------------------------------------------------------
    def _train_loop(self) -> None:
        try:
            lockstep = self.policy.lockstep_lag_steps is not None
            if self.publishes and lockstep and self.last_published_step is None:
                self._publish(int(self.runner.step))  # the initial model: peers at step 0 wait for it
            while not self._stop.is_set() and self.runner.step < self._target:
                with self._lock:
                    pool, self._pending_pool = self._pending_pool, None
                if pool is not None:
                    applied = self.runner.set_mediator_pool(pool) is not False
                    with self._lock:
                        self._pools_applied += int(applied)
                        self._handled_pool = pool_token(pool)  # taken up, applied or (unreadable) not
                self.view.consumer_step = int(self.runner.step)
                t0 = time.perf_counter()
                try:
                    scalars = self.runner.train_step()
                except NonFiniteLoss as fault:
                    self._roll_back(fault)  # or raises TrainingDiverged
                    continue
                t1 = time.perf_counter()
                step = int(self.runner.step)
                self._count_relations(scalars, step)
                if self.publishes and self.policy.should_publish(step, self.last_published_step):
                    self._publish(step)
                t2 = time.perf_counter()
                with self._lock:
                    self._step = step
                    self._scalars = {k: float(v) for k, v in scalars.items()}
                    self._rate.append((time.time(), step))
                    self._train_s += t1 - t0
                    self._exchange_s += t2 - t1
                self._log_tensorboard(step, scalars)
                if not self._watch.released.is_set() and checkpoint_due(
                        step, self._last_ckpt_step, time.time(), self._last_ckpt_time, self.every_steps, self.every_s):
                    self._checkpoint(step)
            with self._lock:
                self._window = (self._window[0], time.time(), self._window[2])
            if self._watch.released.is_set():
                with self._lock:
                    self._state = "released"
                return
            self._checkpoint(int(self.runner.step))
            with self._lock:
                self._state = "done" if self.runner.step >= self._target else "stopped"
        except Exception as exc:  # noqa: BLE001 - reported through status(); the supervisor decides
            with self._lock:
                self._state = "failed"
                self._fatal = isinstance(exc, TrainingDiverged)
                self._error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"

    def _count_relations(self, scalars: Mapping[str, float], step: int) -> None:
        with self._lock:
            for key in scalars:
                name = key.split("/", 1)[1] if "/" in key else key
                if key.startswith("consistency/") and name != "scale":
                    self._relation_terms[name] = self._relation_terms.get(name, 0) + 1
                    self._first_term_step.setdefault(name, step)
                elif key.startswith("skipped/"):
                    self._relation_skips[name] = self._relation_skips.get(name, 0) + 1

    def _publish(self, step: int) -> None:
        predictions = self.runner.predict_mediator()
        if predictions is not None and predictions.sample_ids:
            self.box.publish(compact_predictions(predictions, self.policy.payload_dtype))
        self.last_published_step = step
        with self._lock:
            self._published_pool = self._handled_pool

    def _roll_back(self, fault: NonFiniteLoss) -> None:
        """Carry out :attr:`divergence`'s decision on a step whose loss was not finite (nothing was applied):
        roll back to the newest checkpoint (or the start state) at a lowered learning rate and write that state
        as a checkpoint again, or raise :class:`TrainingDiverged`."""
        if self.divergence.decide(self._rollbacks) == "stop":
            raise TrainingDiverged(f"{self.task_name}: {fault.detail} at step {fault.step} after {self._rollbacks} "
                                   f"rollback(s) (learning rate x{self.divergence.lr_scale(self._rollbacks):g}); "
                                   f"stopped, newest checkpoint: step {self._last_ckpt_step}") from fault
        found = self.checkpoints.newest_readable(self.task_name)  # the one a restart would resume from
        side: dict[str, Any] = {}
        pub = None
        if found is not None:
            ckpt_step, side, pub = found
            state = load_checkpoint(self.checkpoints.path(ckpt_step))
        else:
            assert self._start_state is not None, "no checkpoint and no start state to roll back to"
            state = self._start_state
        self.runner.load_state_dict(state)
        self.runner.lr_scale = self.divergence.lr_scale(self._rollbacks + 1)
        step = int(self.runner.step)
        if pub is not None:
            self.box.publish(pub)  # older than what the box holds: the diverging run's publications are cleared
        self.last_published_step = side.get("last_published_step")
        message = (f"{self.task_name}: {fault.detail} at step {fault.step}; rolled back to "
                   f"{'the checkpoint of step' if found is not None else 'the start state, step'} {step}, "
                   f"learning rate x{self.runner.lr_scale:g}")
        _log.warning(message)
        with self._lock:
            self._rollbacks += 1
            self._last_fault = message
            self._step = step
            self._rate.clear()
        self._checkpoint(step, force=True)

    def _checkpoint(self, step: int, force: bool = False) -> None:
        """Write the checkpoint of ``step``: its side files, then the ``.pt`` that completes it; then prune.

        A write that fails with an ``OSError`` (a full disk: :class:`~taskology.atomic.DiskFullError`, one line
        naming the file) does not stop training: each failed attempt is logged in one line, counted in
        ``status()["checkpoint_failures"]`` and kept in ``status()["checkpoint_last_error"]``, and the newest
        checkpoint written stays the one to resume from. The next attempt backs off: after the k-th failure in
        a row it comes 2^(k-1) steps (or seconds) later, at most one checkpoint interval: a disk that had a
        moment's shortage costs one step's exposure, not an interval, and one that stays full is not retried
        at every step. The final checkpoint, at the end or on stop, is always attempted. Other errors fail
        the task.
        """
        if step <= self._last_ckpt_step and self.checkpoints.latest() is not None and not force:
            return
        failed, final = self._ckpt_failed_at, self._stop.is_set() or step >= self._target
        if failed is not None and not force and (failed[0] == step or not final and not checkpoint_due(
                step, failed[0], time.time(), failed[1], *self._retry_after())):
            return  # the last attempt failed: the next comes after a back-off (the final one in any case)
        with self._lock:
            terms, skips, first = dict(self._relation_terms), dict(self._relation_skips), dict(self._first_term_step)
        try:
            self.checkpoints.save_side(step, {"last_published_step": self.last_published_step, "step": step,
                                              "exchange_bytes": self._bytes_before + self.fetcher.meter.bytes_total,
                                              "staleness_log": self.cache.log.to_dict(),
                                              "relation_terms": terms, "relation_skips": skips,
                                              "first_term_step": first, "rollbacks": self._rollbacks},
                                       self.box.latest())
            self.runner.save_checkpoint(self.checkpoints.path(step))
        except OSError as exc:
            self._checkpoint_failed(step, exc)
            return
        self.checkpoints.prune()
        self._start_state = None  # a checkpoint exists now: rollbacks go to it
        with self._lock:
            self._last_ckpt_step = step
            self._last_ckpt_time = time.time()
            self._ckpt_failed_at = None
            self._ckpt_streak = 0

    def _retry_after(self) -> tuple[int | None, float | None]:
        """Steps and seconds from a failed checkpoint to the next attempt: 2^(k-1) after the k-th failure in a
        row, at most the checkpoint interval."""
        wait = 2 ** max(self._ckpt_streak - 1, 0)
        return (min(wait, self.every_steps) if self.every_steps else None,
                min(float(wait), float(self.every_s)) if self.every_s else None)

    def _checkpoint_failed(self, step: int, exc: OSError) -> None:
        line = (f"{self.task_name}: checkpoint of step {step} not written: {(str(exc).splitlines() or [''])[0]}; "
                f"training goes on from step {step}, resume would start from step {self._last_ckpt_step}")
        _log.warning(line)
        with self._lock:
            self._ckpt_failures += 1
            self._ckpt_streak += 1
            self._ckpt_last_error = line
            self._ckpt_failed_at = (step, time.time())

    def _log_tensorboard(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.log_every or step % self.log_every:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard" / self.task_name))
        for k, v in {**scalars, **self.cache.log.scalars()}.items():
            self._writer.add_scalar(k, float(v), step)
        self._writer.add_scalar("exchange/bytes_per_s", self.fetcher.meter.bytes_per_s(), step)
