"""Dask workers started from a command line, one GPU each: ``python -m taskology.cluster.gpu_worker``.

``dask worker --nworkers N`` (and ``dask ssh``, which runs it on every host) starts N processes that all
see every GPU of the machine, so every task actor would train on GPU 0. This wrapper takes the same
arguments and adds what one GPU per task needs:

- ``--name HOST`` (unless given): Dask names the processes ``HOST-0 .. HOST-(N-1)``;
- ``--resources GPU=1`` (unless given) when the machine has a GPU, so the supervisor places task
  actors by GPU (:func:`taskology.cluster.supervision.choose_worker`);
- ``--preload taskology.cluster.gpu_worker``: in process ``HOST-i``, before anything touches CUDA,
  :func:`dask_setup` sets ``CUDA_VISIBLE_DEVICES`` to GPU ``i mod G`` of the machine's G GPUs
  (``TASKOLOGY_GPUS`` if set, else the entries of ``CUDA_VISIBLE_DEVICES`` as SLURM or the user set
  them, else ``nvidia-smi -L``). A restarted process keeps its name, hence its GPU.

With no GPU found the worker starts as a plain CPU worker (no resource, no pinning).

Example (what ``dask ssh --remote-dask-worker taskology.cluster.gpu_worker`` runs on a 4-GPU host):
    >>> worker_arguments(["10.0.0.5:8786", "--nthreads", "1", "--nworkers", "5"], ("0", "1", "2", "3"), "node7")
    ['10.0.0.5:8786', '--nthreads', '1', '--nworkers', '5', '--name', 'node7', '--resources', 'GPU=1', \
'--preload', 'taskology.cluster.gpu_worker']
    >>> gpu_for_worker("node7-4", ("0", "1", "2", "3"), base="node7")
    '0'
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from typing import Any, Sequence

from taskology.cluster.session import GPU_LIST_VARIABLE, parse_gpu_list
from taskology.errors import ClusterError

# the launcher hands its GPU list and the name it gave to its worker processes
WORKER_GPUS_VARIABLE = "TASKOLOGY_WORKER_GPUS"
WORKER_NAME_VARIABLE = "TASKOLOGY_WORKER_NAME"


def gpu_for_worker(name: str, gpus: Sequence[str], base: str) -> str:
    """GPU of the worker process called ``name`` started as ``--name base``: the index Dask appended
    (``base-3`` -> 3; a single process keeps ``base``: 0), modulo the number of GPUs."""
    if not gpus:
        raise ClusterError(f"worker {name}: no GPU to pin it to")
    index = str(name)[len(base) + 1:] if str(name).startswith(f"{base}-") else ""
    return str(gpus[int(index) % len(gpus) if index.isdigit() else 0])


def machine_gpus() -> tuple[str, ...]:
    """GPUs of this machine for its workers, without creating a CUDA context: ``TASKOLOGY_GPUS``, else
    ``CUDA_VISIBLE_DEVICES`` (SLURM sets it to the job's GPUs), else one per line of ``nvidia-smi -L``."""
    for variable in (GPU_LIST_VARIABLE, "CUDA_VISIBLE_DEVICES"):
        if os.environ.get(variable) is not None:
            return tuple(str(g) for g in parse_gpu_list(os.environ[variable], f"{variable} (environment)"))
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(str(i) for i, _ in enumerate(line for line in listing.splitlines() if line.startswith("GPU ")))


def worker_arguments(argv: Sequence[str], gpus: Sequence[str], hostname: str) -> list[str]:
    """The ``dask worker`` arguments: ``argv`` plus a name, the ``GPU`` resource and the pinning preload
    (each only when not given already; without GPUs, ``argv`` unchanged)."""
    args = list(argv)
    if not gpus:
        return args
    given = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    if "--name" not in given:
        args += ["--name", hostname]
    if "--resources" not in given:
        args += ["--resources", "GPU=1"]
    return args + ["--preload", __name__]


def dask_setup(worker: Any) -> None:
    """Preload hook, run in each worker process at start: pin it to its GPU."""
    gpus = [g for g in os.environ.get(WORKER_GPUS_VARIABLE, "").split(",") if g]
    if gpus:
        base = os.environ.get(WORKER_NAME_VARIABLE, "")
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_for_worker(str(worker.name), gpus, base)


def main(argv: Sequence[str] | None = None) -> None:
    from distributed.cli.dask_worker import main as dask_worker

    try:
        gpus = machine_gpus()
    except ClusterError as exc:
        print(f"taskology.cluster.gpu_worker: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    args = worker_arguments(sys.argv[1:] if argv is None else argv, gpus, socket.gethostname())
    os.environ[WORKER_GPUS_VARIABLE] = ",".join(gpus)
    names = [a.split("=", 1)[1] if "=" in a else args[i + 1] for i, a in enumerate(args)
             if a == "--name" or a.startswith("--name=")]
    os.environ[WORKER_NAME_VARIABLE] = names[-1] if names else ""
    dask_worker.main(args=args, prog_name="python -m taskology.cluster.gpu_worker")


if __name__ == "__main__":
    main()
