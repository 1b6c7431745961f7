"""``python -m taskology.cluster.gpu_worker``: worker processes started from a command line get one GPU
each (a faked GPU list; loopback only, bounded, shut down)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from taskology.cluster.gpu_worker import gpu_for_worker, machine_gpus, worker_arguments
from taskology.cluster.session import visible_gpu
from taskology.errors import ClusterError


def test_process_i_gets_gpu_i_mod_g() -> None:
    gpus = ("3", "5", "GPU-aa")
    assert [gpu_for_worker(f"node-7-{i}", gpus, "node-7") for i in range(5)] == ["3", "5", "GPU-aa", "3", "5"]
    assert gpu_for_worker("node-7", gpus, "node-7") == "3"  # one process: no index appended
    with pytest.raises(ClusterError, match="worker n-0: no GPU"):
        gpu_for_worker("n-0", (), "n")


def test_arguments_added_only_when_missing_and_only_with_gpus() -> None:
    base = ["tcp://s:8786", "--nthreads", "1"]
    assert worker_arguments(base, (), "h") == base  # no GPU: a plain CPU worker
    given = worker_arguments(base + ["--name", "mine", "--resources", "GPU=2"], ("0",), "h")
    assert given.count("--name") == 1 and given.count("--resources") == 1 and given[-2:] == \
        ["--preload", "taskology.cluster.gpu_worker"]


def test_machine_gpus_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert machine_gpus() == ("4", "6")  # as SLURM set them
    monkeypatch.setenv("TASKOLOGY_GPUS", "1")
    assert machine_gpus() == ("1",)  # the user's choice first
    monkeypatch.setenv("TASKOLOGY_GPUS", "1;2")
    with pytest.raises(ClusterError, match=r"^TASKOLOGY_GPUS \(environment\): expected GPU ids"):
        machine_gpus()


@pytest.mark.timeout(90)
def test_command_line_workers_are_pinned_one_gpu_each_and_advertise_it(tmp_path: Path) -> None:
    with LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1", scheduler_port=0,
                      dashboard_address=None) as cluster, \
            Client(cluster) as client:
        env = {**os.environ, "TASKOLOGY_GPUS": "3,5", "OMP_NUM_THREADS": "1"}
        log = open(tmp_path / "worker.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "taskology.cluster.gpu_worker", cluster.scheduler_address,
                                 "--nworkers", "3", "--nthreads", "1", "--no-dashboard", "--death-timeout", "30",
                                 "--local-directory", str(tmp_path)], stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            client.wait_for_workers(3, timeout=60)
            workers = client.scheduler_info(n_workers=-1)["workers"]
            gpus = client.run(visible_gpu)
            host = socket.gethostname()
            seen = sorted((workers[a]["name"], g, workers[a]["resources"].get("GPU")) for a, g in gpus.items())
            assert seen == [(f"{host}-0", "3", 1), (f"{host}-1", "5", 1), (f"{host}-2", "3", 1)]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
