"""The collective run on a Dask cluster: one :class:`~taskology.engine.actor.TaskActor` per task (and a
:class:`~taskology.sim.actor.SimActor` feeding the mediator pool), supervised and recovered by the
:class:`~taskology.engine.supervisor.Supervisor` (lost actors recreated from their newest checkpoints; a lost
scheduler or a spent restart policy ends the run with one line naming the ``--resume`` command).

State on disk (``run_dir``): ``config.yaml`` (resolved), ``manifest.json`` (tasks, targets, restarts,
last statuses; atomic), ``checkpoints/<task>/``, ``tensorboard/<task>/``, ``mediator/`` (SimActor
shards). ``run_distributed(config, run_dir, resume=True)`` continues a run whose driver died.

Example:
    >>> run_distributed(load_config("demo"), Path("runs/x"), resume=False)  # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from taskology.cluster.session import ClusterSession, cluster_spec_from_config, describe, open_cluster
from taskology.cluster.supervision import RestartPolicy
from taskology.engine.exchange import ExchangePolicy, publication_phase
from taskology.engine.supervisor import ActorSlot, RestartsExhausted, SchedulerLost, Supervisor
from taskology.errors import ConfigError


class _ReportedByTheSupervisor(logging.Filter):
    """Drops the client's records of a lost scheduler: "Failed to reconnect to scheduler", and the cancelled
    reconnect or close (an empty message with a ``CancelledError`` traceback) when the driver gives up on
    it. While a supervisor watches the scheduler, it reports the loss itself (one line, with the command
    that resumes the run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Failed to reconnect to scheduler"):
            return False
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, asyncio.CancelledError)


def exchange_policy_from_config(exchange: Any, task: str | None = None, tasks: Sequence[str] = ()) -> ExchangePolicy:
    """:class:`ExchangePolicy` from the ``exchange`` section of an experiment config; for ``task`` of the
    enabled ``tasks``, its publication phase (:func:`~taskology.engine.exchange.publication_phase`)."""
    every = int(exchange.publish_every_steps)
    phase = publication_phase(task, tasks, every) if task is not None else 0
    return ExchangePolicy(publish_every_steps=every, publish_phase_steps=phase,
                          refresh_every_s=float(exchange.refresh_every_s),
                          max_staleness_steps=exchange.max_staleness_steps,
                          max_staleness_s=exchange.max_staleness_s, payload_dtype=str(exchange.payload_dtype),
                          lockstep_lag_steps=exchange.lockstep_lag_steps)


def run_distributed(config: Any, run_dir: Path, resume: bool = False, *, with_sim: bool | None = None,
                    live: bool = True, runner_cls: Any = None, timeout_s: float | None = None,
                    spare_workers: int = 1, registry: Any = None,
                    restart_policy: RestartPolicy | None = None) -> dict[str, Any]:
    """Train every enabled task of ``config`` as its own actor on the configured cluster.

    One seed trains into ``run_dir``; several seeds one after the other into ``run_dir/seed_<s>/`` (the
    layout of the in-process run, so ``taskology eval`` reads both).

    Args:
        config: resolved :class:`taskology.config.ExperimentConfig`; ``None`` with ``resume`` reads
            ``run_dir/config.yaml``.
        run_dir: the run directory.
        resume: continue the run in ``run_dir`` (actors resume from their newest checkpoints).
        with_sim: run a SimActor feeding a live mediator pool (``<seed dir>/mediator``) in collective mode;
            ``False``: the fixed mediator split of ``data.root``; ``None``: ``config.exchange.live_mediator``.
        live: show the live terminal table.
        runner_cls: the trainable class (default :class:`taskology.engine.runner.TaskRunner`).
        registry: the tasks and relations the runners use (default: a snapshot of the registries now, which
            travels to the workers with the actors: a task registered only in this process reaches them too).
        timeout_s: give up (ClusterError) when a seed's run takes longer.
        spare_workers: warm spare worker processes of a local cluster (fast recovery).
        restart_policy: how often a lost actor is recreated (default :class:`RestartPolicy`).

    Returns:
        seed -> the supervisor's summary (also in ``<seed dir>/manifest.json``).

    Raises:
        ClusterError: one line: the scheduler was lost (with the ``--resume`` command), an actor was lost
            more often than ``restart_policy`` allows, or the cluster could not be made or reached.
    """
    from taskology.config import load_config, save_config

    run_dir = Path(run_dir)
    if config is None:
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"--resume {run_dir}: expected a run directory with config.yaml, found none")
        config = load_config(run_dir / "config.yaml")
    seeds = [int(s) for s in config.train.seeds]
    seed_dirs = [(seeds[0], run_dir)] if len(seeds) == 1 else [(s, run_dir / f"seed_{s}") for s in seeds]
    if not resume:
        for _seed, seed_dir in seed_dirs:
            ckpts = seed_dir / "checkpoints"
            if ckpts.is_dir() and any(ckpts.iterdir()):
                raise ConfigError(f"{seed_dir}: already holds a run (checkpoints/); continue it with "
                                  f"--resume {run_dir} or choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    if str(config.cluster.address) == "none":
        raise ConfigError("cluster.address none runs in-process; run_distributed needs local or tcp://HOST:PORT")
    extra: dict[str, Any] = {}
    if runner_cls is None:
        from taskology.engine.registry import Registry
        from taskology.engine.runner import TaskRunner as runner_cls

        extra["registry"] = registry if registry is not None else Registry.current()
    tasks = config.enabled_tasks()
    collective = config.train.mode == "collective"
    if with_sim is None:
        with_sim = bool(config.exchange.live_mediator)
    use_sim = with_sim and collective
    spec = replace(cluster_spec_from_config(config.cluster), spare_workers=spare_workers)
    policy = restart_policy if restart_policy is not None else RestartPolicy(
        max_restarts=int(config.cluster.max_restarts), backoff_s=float(config.cluster.restart_backoff_s))
    resume_command = f"taskology train --resume {run_dir} --cluster {config.cluster.address}"
    previous_term = _sigterm_as_interrupt()
    client_log, reported = logging.getLogger("distributed.client"), _ReportedByTheSupervisor()
    client_log.addFilter(reported)
    try:
        session = open_cluster(spec, n_actors=len(tasks) + int(use_sim))
        print(describe(session), flush=True)
        close_s = 20.0
        try:
            return {str(seed): _run_seed(session, config, seed_dir, seed, tasks, runner_cls, use_sim, live,
                                         timeout_s, extra, policy) for seed, seed_dir in seed_dirs}
        except SchedulerLost as exc:
            close_s = 5.0  # nothing left to close but this end
            again = " (or the address of a new scheduler)" if spec.address.startswith(("tcp://", "tls://")) else ""
            raise SchedulerLost(f"{exc}; its workers and actors went with it, the checkpoints are kept: "
                                f"resume with `{resume_command}`{again}") from exc
        except RestartsExhausted as exc:
            raise RestartsExhausted(f"{exc}; the checkpoints are kept: once the cause is fixed, continue with "
                                    f"`{resume_command}`") from exc
        finally:
            session.close(timeout_s=close_s)
    except KeyboardInterrupt:
        print(f"interrupted: actors stopped at their final checkpoints, cluster closed; continue with "
              f"`taskology train --resume {run_dir}`", flush=True)
        raise
    finally:
        client_log.removeFilter(reported)
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)


def _sigterm_as_interrupt() -> Any:
    """Make SIGTERM raise KeyboardInterrupt in the driver (same clean stop as Ctrl-C); returns the
    previous handler, or None when not on the main thread (signals cannot be set there)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, interrupt)


def _run_seed(session: ClusterSession, config: Any, run_dir: Path, seed: int, tasks: list[str], runner_cls: Any,
              use_sim: bool, live: bool, timeout_s: float | None, runner_extra: Mapping[str, Any],
              policy: RestartPolicy) -> dict[str, Any]:
    from taskology.cluster.live import LiveView
    from taskology.cluster.release import await_orphans
    from taskology.engine.actor import TaskActor

    device = str(config.train.device)
    if device == "auto":
        device = "cuda" if session.gpus or session.has_gpu_workers() else "cpu"
    slots = [ActorSlot(name=task, cls=TaskActor, needs_gpu=device.startswith("cuda"), kwargs=dict(
        task_name=task, runner_cls=runner_cls, run_dir=str(run_dir),
        policy=exchange_policy_from_config(config.exchange, task, tasks),
        runner_kwargs={"task_name": task, "config": config, "data_root": Path(config.data.root),
                       "run_dir": run_dir, "seed": seed, "device": device,
                       "collective": config.train.mode == "collective", **runner_extra},
        checkpoint_every_steps=int(config.train.checkpoint_every_steps) or None,
        checkpoint_every_s=float(config.train.checkpoint_every_s) or None,
        log_every=int(config.train.log_every), device=device)) for task in tasks]
    if use_sim:
        from taskology.sim.actor import SimActor, live_mediator_kwargs

        # the SimActor renders on the CPU (Numba, Embree): it takes no GPU, nor a GPU's share of tasks;
        # sim.backend decides what it renders with: the embedded simulator or a CARLA server
        slots.append(ActorSlot(name="sim", cls=SimActor, kind="sim", needs_gpu=False,
                               kwargs=live_mediator_kwargs(config, run_dir / "mediator")))
    view = LiveView(enabled=live)
    await_orphans(session.client, run_dir)  # a dead driver's actors stop once released: wait for them
    supervisor = Supervisor(session, slots, target_steps=int(config.train.steps), policy=policy,
                            run_dir=run_dir, on_poll=view.update,
                            mediator_every_s=float(config.exchange.pool_refresh_s))
    try:
        supervisor.start()
    except KeyboardInterrupt:
        supervisor.stop()
        supervisor.write_manifest("interrupted")
        raise
    on_gpus = [f"{name} {actor['gpu']}" for name, actor in supervisor.summary()["actors"].items() if actor["gpu"]]
    if on_gpus:
        print("GPUs: " + ", ".join(on_gpus), flush=True)
    with view:
        return supervisor.run(timeout_s=timeout_s)
