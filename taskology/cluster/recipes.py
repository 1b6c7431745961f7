"""Cluster recipes for batch systems: the arguments that give taskology what it needs on each.

What every worker needs (docs/cluster.md): one worker process per actor with one Dask thread (the actor
thread; training runs in its own thread), the compute threads of the job for torch, one GPU per task
actor advertised as the ``GPU`` resource, the project's Python environment and a shared file system.

Example (on a SLURM login node, with ``pip install dask-jobqueue``):
    >>> from taskology.cluster.recipes import start_slurm_cluster        # doctest: +SKIP
    >>> cluster = start_slurm_cluster(n_actors=5, queue="gpu", account="proj",
    ...                               venv="/shared/taskology/.venv")   # doctest: +SKIP
    >>> cluster.scheduler_address    # hand it to: taskology train ... --cluster tcp://NODE:PORT
    ...                              # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from taskology.errors import ClusterError


def slurm_cluster_kwargs(*, queue: str, account: str | None = None, walltime: str = "04:00:00",
                         cpus_per_actor: int = 4, memory: str = "32GB", gpus_per_actor: int = 1,
                         venv: str | Path | None = None, scheduler_host: str = "0.0.0.0",
                         extra_directives: Sequence[str] = ()) -> dict[str, Any]:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster`` for taskology: one job = one worker process =
    one actor, ``--nthreads 1`` (the actor thread), ``cpus_per_actor`` CPUs for torch, one GPU each.

    Example:
        >>> kw = slurm_cluster_kwargs(queue="gpu", venv="/shared/venv")
        >>> kw["cores"], kw["processes"], kw["job_cpu"], kw["job_extra_directives"]
        (1, 1, 4, ['--gres=gpu:1'])
        >>> kw["worker_extra_args"], kw["job_script_prologue"]
        (['--resources', 'GPU=1'], ['source /shared/venv/bin/activate'])
    """
    if cpus_per_actor < 1 or gpus_per_actor < 0:
        raise ClusterError(f"slurm: cpus_per_actor must be >= 1 and gpus_per_actor >= 0, found "
                           f"{cpus_per_actor} and {gpus_per_actor}")
    directives = [f"--gres=gpu:{gpus_per_actor}"] if gpus_per_actor else []
    kwargs: dict[str, Any] = {
        "queue": queue, "walltime": walltime, "memory": memory,
        # Dask threads = cores / processes = 1: the actor thread; torch gets the job's CPUs (job_cpu)
        "cores": 1, "processes": 1, "job_cpu": int(cpus_per_actor),
        "job_extra_directives": directives + list(extra_directives),
        "worker_extra_args": ["--resources", "GPU=1"] if gpus_per_actor else [],
        "job_script_prologue": [f"source {Path(venv) / 'bin' / 'activate'}"] if venv else [],
        "scheduler_options": {"host": scheduler_host},
    }
    if account:
        kwargs["account"] = account
    return kwargs


def start_slurm_cluster(n_actors: int, spare: int = 1, **kwargs: Any) -> Any:
    """A ``SLURMCluster`` (see :func:`slurm_cluster_kwargs`) scaled to ``n_actors + spare`` jobs; the
    spare lets the supervisor recreate a pre-empted actor at once."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as exc:
        raise ClusterError("slurm: dask-jobqueue is not installed (pip install dask-jobqueue)") from exc
    cluster = SLURMCluster(**slurm_cluster_kwargs(**kwargs))
    cluster.scale(jobs=int(n_actors) + int(spare))
    return cluster
