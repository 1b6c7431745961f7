"""The :class:`Supervisor`: creates the actors of a collective run on a Dask cluster, starts them, polls them,
recovers the lost ones and hands out the live mediator pool.

Dask actors are not resilient: when the worker holding one dies (SIGKILL, OOM, lost node), calls fail
with "Worker holding Actor was lost". The supervisor polls every actor's ``status()``; a lost (or failed)
actor is recreated on a live worker (a LocalCluster's nanny restarts the dead process; on a remote cluster
it waits for any live worker), where it resumes from its newest checkpoint. Peers get the new handle. What
to do (restart now, wait, give up) and where (which worker) are pure decisions in
:mod:`taskology.cluster.supervision`.

Ends: a lost scheduler (every worker goes with it) stops the run with :class:`SchedulerLost` within
``poll_s + call_timeout_s + scheduler_grace_s`` of the loss (21 s with the defaults, plus 5 s for the driver
to close); an actor lost more often than the restart policy allows stops it with :class:`RestartsExhausted`,
naming the actor and its restarts. Either way the checkpoints on disk are complete and ``manifest.json``
records the state and the error. :func:`taskology.engine.distributed.run_distributed` builds the slots and
runs the supervisor.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from taskology.atomic import write_json_atomic
from taskology.cluster.session import ClusterSession
from taskology.cluster.supervision import RestartPolicy, SchedulerWatch, choose_worker, gpu_loads, gpu_task_cap
from taskology.engine.actor import pool_token
from taskology.errors import ClusterError


class SchedulerUnreachable(Exception):
    """The scheduler did not answer this time (it may still come back: see :class:`SchedulerWatch`)."""


class SchedulerLost(ClusterError):
    """The scheduler is gone, and every actor with it: the run stops (it can be resumed)."""


class RestartsExhausted(ClusterError):
    """An actor was lost more often than the restart policy allows: the run stops (it can be resumed)."""


@dataclass
class ActorSlot:
    """One supervised actor: how to (re)create it, and its current handle."""

    name: str
    cls: Any
    kwargs: dict[str, Any]
    kind: str = "task"  # "task" or "sim"
    needs_gpu: bool = False
    future: Any = None
    handle: Any = None
    worker: str | None = None
    restarts: int = 0
    lost_since: float | None = None
    last_status: dict[str, Any] = field(default_factory=dict)
    lost_work_steps: list[int] = field(default_factory=list)


class Supervisor:
    """Creates, starts, polls and recovers actors on a :class:`ClusterSession`.

    Args:
        session: the connected cluster.
        slots: the actors (task actors and at most one sim actor).
        target_steps: optimizer steps every task must reach.
        policy: restart policy.
        run_dir: manifest goes to ``run_dir/manifest.json``.
        poll_s: seconds between polls.
        call_timeout_s: a status call slower than this counts as lost.
        mediator_every_s: how often the SimActor's shard list is pushed to the task actors.
        scheduler_grace_s: seconds without an answer from the scheduler before it counts as lost.
        on_poll: called with the supervisor after every poll (the live view).
    """

    def __init__(self, session: ClusterSession, slots: list[ActorSlot], *, target_steps: int,
                 policy: RestartPolicy, run_dir: Path, poll_s: float = 0.5, call_timeout_s: float = 10.0,
                 mediator_every_s: float = 5.0, wait_free_s: float = 20.0, scheduler_grace_s: float = 10.0,
                 on_poll: Callable[[Supervisor], None] | None = None) -> None:
        self.session = session
        self.slots = {s.name: s for s in slots}
        self.target_steps = int(target_steps)
        self.policy = policy
        self.run_dir = Path(run_dir)
        self.poll_s = poll_s
        self.call_timeout_s = call_timeout_s
        self.mediator_every_s = mediator_every_s
        self.wait_free_s = wait_free_s
        self.dead_workers: set[str] = set()  # addresses that lost an actor (never reused: a restarted
        # worker process gets a new address)
        self.on_poll = on_poll
        self.worker_gpu: dict[str, str] = {}  # address -> "HOST/GPU" of every GPU worker seen (kept after
        # it dies: the GPUs known, for the per-GPU bound, include one whose worker is being restarted)
        self.events: list[str] = []
        self.scheduler_watch = SchedulerWatch(grace_s=scheduler_grace_s)
        self.scheduler_lost = False
        self._pool: list[str] = []
        self._pool_pushed_at = 0.0

    # ---- creation ------------------------------------------------------------------------------
    @property
    def tasks(self) -> dict[str, ActorSlot]:
        return {n: s for n, s in self.slots.items() if s.kind == "task"}

    def _scheduler_workers(self) -> dict[str, Any]:
        """Every worker the scheduler knows, asked now (at most ``call_timeout_s``). Not through
        ``client.scheduler_info()``: that swallows a connection error and answers with whatever the client
        holds (an empty record once it has closed). Raises :class:`SchedulerUnreachable` when there is no
        answer, :class:`SchedulerLost` once :class:`SchedulerWatch` gives the scheduler up."""
        client = self.session.client
        status = str(client.status)
        gave_up = status in ("closing", "closed")  # the client stopped reconnecting
        detail = ("the connection broke and the client gave up reconnecting" if gave_up else
                  "the connection broke and reconnecting has not worked" if status == "connecting" else
                  f"the client is {status}")
        if status == "running":
            try:
                info = client.sync(client.scheduler.identity, n_workers=-1, callback_timeout=self.call_timeout_s)
                self.scheduler_watch.observe(True, time.time())
                return dict(info.get("workers", {}))
            except Exception as exc:  # noqa: BLE001 - any failure to answer is "no answer"
                detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no answer'}"
        if self.scheduler_watch.observe(False, time.time(), client_closed=gave_up):
            self.scheduler_lost = True
            silent = time.time() - float(self.scheduler_watch.unreachable_since or time.time())
            self._event(f"scheduler {self.session.address} lost ({detail})")
            raise SchedulerLost(f"scheduler {self.session.address} was lost (no answer for {silent:.0f} s: {detail})")
        raise SchedulerUnreachable(detail)

    def _live_workers(self, running_only: bool = True) -> dict[str, dict[str, float]]:
        """Workers the scheduler knows (``running_only``: only those accepting work, for placement;
        otherwise every known one, for deciding an actor's worker is gone)."""
        info = self._scheduler_workers()
        return {addr: dict(w.get("resources", {}) or {}) for addr, w in info.items()
                if not running_only or w.get("status", "running") == "running"}

    def _occupied(self, live: Mapping[str, Any]) -> dict[str, int]:
        occ: dict[str, int] = {}
        for s in self.slots.values():
            if s.handle is not None and s.worker in live:
                occ[s.worker] = occ.get(s.worker, 0) + 1
        return occ

    def _choose(self, slot: ActorSlot, live: Mapping[str, Mapping[str, float]], allow_shared: bool) -> str | None:
        """Where ``slot`` goes now (:func:`choose_worker`): by GPU for a GPU actor, at most
        ``ceil(T/G)`` GPU actors a GPU while ``allow_shared`` is False."""
        unknown = [a for a, r in live.items() if r.get("GPU", 0) and a not in self.worker_gpu]
        if unknown:
            self.worker_gpu.update(self.session.worker_gpus(unknown))
        live = {a: r for a, r in live.items() if not r.get("GPU", 0) or a in self.worker_gpu}
        placed = [(s.worker, s.needs_gpu) for s in self.slots.values() if s.handle is not None and s.worker in live]
        cap = gpu_task_cap(sum(s.needs_gpu for s in self.slots.values()), len(set(self.worker_gpu.values())))
        return choose_worker(live, self._occupied(live), slot.needs_gpu, allow_shared=allow_shared,
                             worker_gpus=self.worker_gpu, gpu_load=gpu_loads(placed, self.worker_gpu), gpu_cap=cap)

    def create(self, slot: ActorSlot, wait_for_worker_s: float = 120.0) -> None:
        """Create ``slot``'s actor on a chosen live worker: a free one (for a GPU actor, on a GPU below
        its share) if one appears within ``wait_free_s`` (a nanny restarts a killed worker in seconds),
        else the least occupied; on a remote cluster without any live worker, wait up to
        ``wait_for_worker_s``."""
        started = time.time()
        deadline = started + wait_for_worker_s
        while True:
            try:
                live = {a: r for a, r in self._live_workers().items() if a not in self.dead_workers}
            except SchedulerUnreachable:  # wait for it to answer (or to count as lost)
                time.sleep(0.5)
                continue
            worker = self._choose(slot, live, allow_shared=time.time() - started > self.wait_free_s)
            if worker is not None:
                handle, future = self._create_on(slot, worker, deadline)
                if handle is None:  # that worker died meanwhile: choose again
                    self._event(f"{slot.name}: worker {worker} died during creation; choosing another")
                    continue
                slot.future, slot.handle, slot.worker, slot.lost_since = future, handle, worker, None
                return
            if time.time() > deadline:
                raise ClusterError(f"no live worker to place actor {slot.name} on after {wait_for_worker_s:.0f} s "
                                   f"(scheduler {self.session.address})")
            time.sleep(0.5)

    def _create_on(self, slot: ActorSlot, worker: str, deadline: float) -> tuple[Any, Any]:
        """Submit ``slot``'s actor to ``worker`` and wait for it (a slow constructor is fine until
        ``deadline``); ``(None, None)`` if the worker died meanwhile. A constructor that raises on a live
        worker is a real error (bad config, unreadable checkpoint): :class:`ClusterError`."""
        future = self.session.client.submit(slot.cls, actor=True, workers=[worker], allow_other_workers=False,
                                            pure=False, **slot.kwargs)
        while True:
            try:
                return future.result(timeout=2.0), future
            except TimeoutError:
                alive = self._worker_known(worker)
                if alive and time.time() < deadline:
                    continue
                future.cancel()
                if not alive:
                    self.dead_workers.add(worker)
                    return None, None
                raise ClusterError(f"actor {slot.name} was not created on {worker} before the deadline") from None
            except Exception as exc:  # noqa: BLE001
                future.cancel()
                if not self._worker_known(worker):
                    self.dead_workers.add(worker)
                    return None, None
                first = str(exc).splitlines()[0] if str(exc) else ""
                raise ClusterError(f"actor {slot.name} failed to start on {worker}: {type(exc).__name__}: {first}") \
                    from exc

    def _worker_known(self, worker: str) -> bool:
        """Whether the scheduler still knows ``worker`` (True while it does not answer: no verdict yet)."""
        try:
            return worker in self._live_workers(running_only=False)
        except SchedulerUnreachable:
            return True

    def _task_handles(self) -> dict[str, Any]:
        return {n: s.handle for n, s in self.tasks.items() if s.handle is not None}

    def _start_slot(self, slot: ActorSlot) -> None:
        if slot.kind == "task":
            slot.handle.set_peers(self._task_handles()).result(timeout=self.call_timeout_s)
            if self._pool:
                slot.handle.set_mediator_pool(self._pool).result(timeout=self.call_timeout_s)
            slot.handle.start(self.target_steps).result(timeout=self.call_timeout_s)
        else:
            slot.handle.start().result(timeout=self.call_timeout_s)

    def start(self, first_pool_timeout_s: float = 120.0) -> None:
        """Create every actor, wire peers, start them. With a SimActor, the task actors start on its first
        shard(s) (waiting up to ``first_pool_timeout_s``; then on the fixed mediator split): switching
        from the fixed split to the live pool later would leave peers without common samples for a
        publication round."""
        for slot in self.slots.values():
            self.create(slot)
        for slot in sorted(self.slots.values(), key=lambda s: s.kind != "sim"):
            if slot.kind == "task" and not self._pool:
                self._wait_first_pool(first_pool_timeout_s)
            self._start_slot(slot)
        self.write_manifest("running")

    def _wait_first_pool(self, timeout_s: float) -> None:
        sims = [s for s in self.slots.values() if s.kind == "sim" and s.handle is not None]
        if not sims:
            return
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                offered = list(sims[0].handle.shards().result(timeout=self.call_timeout_s))
            except Exception:  # noqa: BLE001 - the sim is lost; poll() recovers it, tasks use the fixed split
                return
            if offered:
                self._pool = offered
                self._pool_pushed_at = time.time()
                sims[0].handle.taken(offered).result(timeout=self.call_timeout_s)
                return
            time.sleep(0.2)
        self._event(f"sim: no shard after {timeout_s:.0f} s; tasks start on the fixed mediator split")

    def _event(self, text: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')} {text}")

    # ---- supervision ---------------------------------------------------------------------------
    def _recover(self, slot: ActorSlot, reason: str, fatal: bool = False) -> None:
        now = time.time()
        if slot.lost_since is None:
            slot.lost_since = now
            if slot.worker is not None and not reason.startswith("failed"):
                self.dead_workers.add(slot.worker)
            self._event(f"{slot.name}: lost on {slot.worker} ({reason})")
        decision = self.policy.decide(slot.restarts, slot.lost_since, now, fatal=fatal)
        if decision.action == "give_up" and fatal:
            raise RestartsExhausted(f"{slot.kind} {slot.name} {decision.reason}: {reason}")
        if decision.action == "give_up":
            kept = slot.last_status.get("checkpoint_step")
            raise RestartsExhausted(f"{slot.kind} {slot.name} was {decision.reason}, after {slot.restarts} "
                                    f"restart{'s' if slot.restarts != 1 else ''}; last loss: {reason}"
                                    + (f"; its newest checkpoint is step {kept}" if kept is not None else ""))
        if decision.action == "wait":
            return
        last_step = int(slot.last_status.get("step", 0) or 0)
        if slot.handle is not None and slot.worker in self._live_workers(running_only=False):
            try:  # merely unresponsive, or failed: make sure it stops writing before its successor starts
                slot.handle.stop().result(timeout=self.call_timeout_s)
            except Exception:  # noqa: BLE001 - best effort; its checkpoints are atomic either way
                pass
        if slot.future is not None:
            slot.future.release()
        slot.handle = slot.future = None
        self.create(slot)
        slot.restarts += 1
        try:
            self._start_slot(slot)
            if slot.kind == "task":
                resumed = int(slot.handle.current_step().result(timeout=self.call_timeout_s))
                slot.lost_work_steps.append(max(last_step - resumed, 0))
                slot.last_status = {**slot.last_status, "step": resumed, "state": "training"}
                self._rewire_peers(slot)
        except Exception as exc:  # noqa: BLE001 - its new worker died too: the next poll recovers again
            self._event(f"{slot.name}: restart on {slot.worker} did not start ({type(exc).__name__}); retrying")
            self.dead_workers.add(str(slot.worker))
            if slot.future is not None:
                slot.future.release()
            slot.handle = slot.future = None
            return
        self._event(f"{slot.name}: restarted on {slot.worker} (restart {slot.restarts})")
        self.write_manifest("running")

    def _rewire_peers(self, slot: ActorSlot) -> None:
        handles = self._task_handles()
        for other in self.tasks.values():
            if other is not slot and other.handle is not None:
                try:
                    other.handle.set_peers(handles).result(timeout=self.call_timeout_s)
                except Exception:  # noqa: BLE001 - that one is lost too; its own recovery wires it
                    pass

    def poll(self) -> None:
        """One round: status of every actor; recover lost/failed ones; push the mediator pool."""
        futures: dict[str, Any] = {}
        known = self._live_workers(running_only=False)
        for name, slot in self.slots.items():
            if slot.handle is not None and slot.worker not in known:  # the scheduler already knows
                futures[name] = RuntimeError(f"worker {slot.worker} is gone")
                continue
            try:
                futures[name] = slot.handle.status() if slot.handle is not None else None
            except Exception as exc:  # noqa: BLE001 - "Worker holding Actor was lost"
                futures[name] = exc
        deadline = time.time() + self.call_timeout_s  # one wait for all: lost actors cost it once
        for name, fut in futures.items():
            slot = self.slots[name]
            try:
                if fut is None or isinstance(fut, Exception):
                    raise fut if isinstance(fut, Exception) else RuntimeError("no actor")
                status = fut.result(timeout=max(deadline - time.time(), 0.1))
            except Exception as exc:  # noqa: BLE001
                self._recover(slot, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                continue
            slot.last_status = status
            failed = status.get("state") == "failed" or status.get("phase") == "failed"
            if failed:
                error = str(status.get("error") or status.get("errors"))
                self._recover(slot, f"failed: {error.splitlines()[0] if error else '?'}",
                              fatal=bool(status.get("fatal", False)))
        self._push_mediator_pool()

    def _published_since_push(self) -> bool:
        """Every task actor has published after taking up the last pool pushed (or there was none yet).

        The actor reports the pool it had taken up at its last publication: a step count read before
        the push could not tell a publication made on the old pool just before the actor applied the
        new one (between two steps) from one made on the new pool, and advancing then left consumers
        with peer rows for no sample of their pool."""
        if not self._pool:
            return True
        token = pool_token(self._pool)
        return all(slot.last_status.get("published_pool") == token for slot in self.tasks.values())

    def _push_mediator_pool(self) -> None:
        """Hand the task actors a newer mediator pool, paced by the exchange: only once every task has
        published on the current pool, and replacing at most half of it (see :func:`advance_pool`), so
        the samples peers have predictions for stay in every consumer's pool."""
        sims = [s for s in self.slots.values() if s.kind == "sim" and s.handle is not None]
        if not sims or time.time() - self._pool_pushed_at < self.mediator_every_s:
            return
        if not self._published_since_push():
            return
        self._pool_pushed_at = time.time()
        try:
            offered = list(sims[0].handle.shards().result(timeout=self.call_timeout_s))
        except Exception:  # noqa: BLE001 - the sim is lost; poll() recovers it
            return
        pool = advance_pool(self._pool, offered)
        if pool and pool != self._pool:
            self._pool = pool
            for slot in self.tasks.values():
                try:
                    slot.handle.set_mediator_pool(pool).result(timeout=self.call_timeout_s)
                except Exception:  # noqa: BLE001
                    pass
        if self._pool:
            try:  # back-pressure: the sim runs at most max_ahead shards past what the tasks hold (also
                # tells a recreated SimActor, which starts knowing nothing taken)
                sims[0].handle.taken(self._pool).result(timeout=self.call_timeout_s)
            except Exception:  # noqa: BLE001 - the sim is lost; poll() recovers it
                pass

    def finished(self) -> bool:
        return all(s.last_status.get("state") == "done" and int(s.last_status.get("step", 0)) >= self.target_steps
                   for s in self.tasks.values())

    def run(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Poll until every task reaches the target (or ``timeout_s``); stop all actors; return summary.

        Ctrl-C (KeyboardInterrupt) stops every actor (each writes its final checkpoint), records
        ``state: interrupted`` in the manifest and re-raises."""
        deadline = None if timeout_s is None else time.time() + timeout_s
        try:
            while not self.finished():
                if deadline is not None and time.time() > deadline:
                    raise ClusterError(f"run did not finish in {timeout_s:.0f} s: "
                                       + ", ".join(f"{n} at step {s.last_status.get('step')}"
                                                   for n, s in self.tasks.items()))
                time.sleep(self.poll_s)
                try:
                    self.poll()
                except SchedulerUnreachable:
                    continue
                if self.on_poll is not None:
                    self.on_poll(self)
        except KeyboardInterrupt:
            self._event("interrupted: stopping every actor (final checkpoints)")
            self.stop()
            self.write_manifest("interrupted")
            raise
        except SchedulerLost as exc:
            self.write_manifest("scheduler_lost", error=str(exc))
            raise
        except ClusterError as exc:
            self.write_manifest("failed", error=str(exc))  # the actors stop below, at their final checkpoints
            raise
        finally:
            self.stop()
        self.write_manifest("done")
        return self.summary()

    def stop(self, timeout_s: float | None = None) -> None:
        """Ask every actor to stop at once, then wait for all of them together (at most ``timeout_s``,
        default ``call_timeout_s + 30``): one hung or lost actor does not delay the others. Nothing to
        ask once the scheduler is lost (the workers closed with it)."""
        if self.scheduler_lost:
            return
        deadline = time.time() + (self.call_timeout_s + 30 if timeout_s is None else timeout_s)
        pending = []
        for slot in self.slots.values():
            if slot.handle is None:
                continue
            try:
                pending.append(slot.handle.stop())
            except Exception:  # noqa: BLE001 - already gone
                pass
        for future in pending:
            try:
                future.result(timeout=max(deadline - time.time(), 0.1))
            except Exception:  # noqa: BLE001 - already gone or too slow; checkpoints are atomic either way
                pass

    def summary(self) -> dict[str, Any]:
        return {"target_steps": self.target_steps, "events": list(self.events),
                "actors": {n: {"kind": s.kind, "restarts": s.restarts, "worker": s.worker,
                               "gpu": self.worker_gpu.get(str(s.worker)) if s.needs_gpu else None,
                               "lost_work_steps": list(s.lost_work_steps), "status": s.last_status}
                           for n, s in self.slots.items()}}

    def write_manifest(self, state: str, error: str | None = None) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        extra = {"error": error} if error is not None else {}
        write_json_atomic(self.run_dir / "manifest.json", {"state": state, "updated": time.time(),
                                                           "cluster": self.session.address, **extra,
                                                           **self.summary()}, default=str)


def advance_pool(current: list[str], offered: list[str]) -> list[str]:
    """The next mediator pool: ``offered`` (the SimActor's newest shards, oldest first), but replacing at
    most half of ``current`` (the oldest go first) so consecutive pools overlap.

    Example:
        >>> advance_pool([], ["s3", "s4"])
        ['s3', 's4']
        >>> advance_pool(["s1", "s2", "s3", "s4"], ["s5", "s6", "s7", "s8"])
        ['s3', 's4', 's5', 's6']
        >>> advance_pool(["s1", "s2"], ["s2", "s3"])
        ['s2', 's3']
    """
    if not current:
        return list(offered)
    new = [p for p in offered if p not in current]
    if not new:
        return list(current)
    take = new[:max(1, len(current) // 2)]
    return (list(current) + take)[-max(len(offered), 1):]


__all__ = ["ActorSlot", "RestartsExhausted", "SchedulerLost", "SchedulerUnreachable", "Supervisor", "advance_pool"]
