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


def kubernetes_cluster_spec(*, n_actors: int, image: str, claim_name: str, mount_path: str = "/shared",
                            cpus_per_actor: int = 4, memory: str = "16Gi", gpus_per_actor: int = 1,
                            spare: int = 1, name: str = "taskology", make_spec: Any = None) -> dict[str, Any]:
    """A ``DaskCluster`` resource for the dask-kubernetes operator (``KubeCluster(custom_cluster_spec=...)``):
    ``n_actors + spare`` worker pods, each one single-threaded Dask worker (the actor thread) with
    ``cpus_per_actor`` CPUs for torch and ``gpus_per_actor`` GPUs advertised as the ``GPU`` resource; the
    scheduler pod gets CPU only (``make_cluster_spec`` gives it the workers' limits, GPUs included); both
    mount the persistent volume claim ``claim_name`` (run dirs and data root) at ``mount_path``.

    ``make_spec``: ``dask_kubernetes.operator.make_cluster_spec`` (imported when ``None``).

    Example (with the operator installed and a ``taskology-runs`` claim):
        >>> from dask_kubernetes.operator import KubeCluster     # doctest: +SKIP
        >>> spec = kubernetes_cluster_spec(n_actors=5, image="registry.example/taskology:0.1",
        ...                                claim_name="taskology-runs")   # doctest: +SKIP
        >>> KubeCluster(custom_cluster_spec=spec).scheduler_address   # doctest: +SKIP
    """
    if n_actors < 1 or spare < 0 or cpus_per_actor < 1 or gpus_per_actor < 0:
        raise ClusterError(f"kubernetes: need n_actors >= 1, spare >= 0, cpus_per_actor >= 1, gpus_per_actor >= 0; "
                           f"found {n_actors}, {spare}, {cpus_per_actor}, {gpus_per_actor}")
    if make_spec is None:
        try:
            from dask_kubernetes.operator import make_cluster_spec as make_spec
        except ImportError as exc:
            raise ClusterError("kubernetes: dask-kubernetes is not installed (pip install dask-kubernetes)") from exc
    limits = {"cpu": str(int(cpus_per_actor)), "memory": memory}
    if gpus_per_actor:
        limits["nvidia.com/gpu"] = str(int(gpus_per_actor))
    command = "dask worker --nthreads 1" + (f" --resources GPU={int(gpus_per_actor)}" if gpus_per_actor else "")
    spec = make_spec(name=name, image=image, n_workers=int(n_actors) + int(spare), resources={"limits": limits},
                     worker_command=command)
    scheduler, worker = spec["spec"]["scheduler"]["spec"], spec["spec"]["worker"]["spec"]
    scheduler["containers"][0]["resources"] = {"limits": {"cpu": "1", "memory": "4Gi"}}
    for pod in (scheduler, worker):
        pod.setdefault("volumes", []).append({"name": "runs", "persistentVolumeClaim": {"claimName": claim_name}})
        for container in pod["containers"]:
            container.setdefault("volumeMounts", []).append({"name": "runs", "mountPath": mount_path})
    return spec
