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


def _checks_kubernetes_spec(spec: dict) -> None:
    worker = spec["spec"]["worker"]
    assert worker["replicas"] == 6  # 5 actors + 1 spare
    container = worker["spec"]["containers"][0]
    args = " ".join(container["args"])
    assert "--nthreads 1" in args and "--resources GPU=1" in args
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    scheduler = spec["spec"]["scheduler"]["spec"]
    assert "nvidia.com/gpu" not in scheduler["containers"][0]["resources"]["limits"]  # no GPU wasted on it
    for pod in (worker["spec"], scheduler):
        assert {"name": "runs", "persistentVolumeClaim": {"claimName": "runs-pvc"}} in pod["volumes"]
        assert {"name": "runs", "mountPath": "/shared"} in pod["containers"][0]["volumeMounts"]


def _make_spec_like_dask_kubernetes(name, image, n_workers, resources, worker_command):
    """The shape of dask-kubernetes 2026.3.0's ``make_cluster_spec`` output (the parts the recipe uses;
    checked against the real one, see the test below, when it is installed)."""
    def container(kind, args):
        return {"name": kind, "image": image, "args": args, "env": None, "resources": resources}
    return {"apiVersion": "kubernetes.dask.org/v1", "kind": "DaskCluster", "metadata": {"name": name},
            "spec": {"worker": {"replicas": n_workers,
                                "spec": {"containers": [container("worker", worker_command.split() + ["--name", "$(DASK_WORKER_NAME)"])]}},
                     "scheduler": {"spec": {"containers": [container("scheduler", ["dask", "scheduler"])]},
                                   "service": {"type": "ClusterIP"}}}}


def test_kubernetes_spec_single_threaded_gpu_workers_cpu_scheduler_shared_volume() -> None:
    from taskology.cluster.recipes import kubernetes_cluster_spec

    spec = kubernetes_cluster_spec(n_actors=5, image="reg/taskology:0.1", claim_name="runs-pvc",
                                   make_spec=_make_spec_like_dask_kubernetes)
    _checks_kubernetes_spec(spec)
    cpu_only = kubernetes_cluster_spec(n_actors=2, image="x", claim_name="c", gpus_per_actor=0,
                                       make_spec=_make_spec_like_dask_kubernetes)
    assert "GPU" not in " ".join(cpu_only["spec"]["worker"]["spec"]["containers"][0]["args"])
    with pytest.raises(ClusterError, match="kubernetes: need n_actors >= 1"):
        kubernetes_cluster_spec(n_actors=0, image="x", claim_name="c", make_spec=_make_spec_like_dask_kubernetes)


def test_kubernetes_spec_with_the_real_operator_client() -> None:
    pytest.importorskip("dask_kubernetes")
    from taskology.cluster.recipes import kubernetes_cluster_spec

    _checks_kubernetes_spec(kubernetes_cluster_spec(n_actors=5, image="reg/taskology:0.1", claim_name="runs-pvc"))
