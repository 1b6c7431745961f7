"""The SLURM recipe, checked against the real dask-jobqueue: the job script it would submit."""
from __future__ import annotations

import pytest

from taskology.cluster.recipes import slurm_cluster_kwargs
from taskology.errors import ClusterError

jobqueue = pytest.importorskip("dask_jobqueue")


def job_script(**kw: object) -> str:
    kwargs = slurm_cluster_kwargs(**kw)
    kwargs["scheduler_options"] = {"host": "127.0.0.1", "dashboard_address": ":0"}  # loopback in tests
    cluster = jobqueue.SLURMCluster(**kwargs)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


@pytest.mark.timeout(60)
def test_slurm_job_is_one_single_threaded_worker_with_a_gpu_and_the_venv() -> None:
    script = job_script(queue="gpu", account="proj", cpus_per_actor=6, venv="/shared/taskology/.venv")
    lines = script.splitlines()
    assert "#SBATCH -p gpu" in lines and "#SBATCH -A proj" in lines
    assert "#SBATCH --cpus-per-task=6" in lines and "#SBATCH --gres=gpu:1" in lines
    assert "source /shared/taskology/.venv/bin/activate" in lines
    worker = next(line for line in lines if "dask_worker" in line or "dask worker" in line)
    assert worker.count("--nthreads") == 1 and "--nthreads 1 " in worker + " "  # the actor thread only
    assert "--resources GPU=1" in worker and "--nanny" in worker


@pytest.mark.timeout(60)
def test_slurm_cpu_only_job_has_no_gpu_request() -> None:
    script = job_script(queue="cpu", gpus_per_actor=0)
    assert "--gres" not in script and "--resources" not in script and "#SBATCH -A" not in script


def test_bad_slurm_sizes_are_refused() -> None:
    with pytest.raises(ClusterError, match="cpus_per_actor"):
        slurm_cluster_kwargs(queue="gpu", cpus_per_actor=0)
