"""The cluster recipes in examples/cluster/ (and scripts/gpu_check.sh): the shell scripts parse
(``bash -n``), their ``--dry-run`` prints commands that the real command lines accept (``dask
scheduler``/``worker``/``ssh``, ``taskology train``, parsed by their own click definitions), the SLURM
workers match what the dask-jobqueue recipe starts, bad input is one line and a non-zero exit; the
Kubernetes example prints its DaskCluster."""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from taskology.cluster.gpu_worker import worker_arguments

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "cluster"
SCRIPTS = ("slurm.sbatch", "dask_ssh.sh")


def dry_run(script: str, *args: str, env: dict[str, str] | None = None) -> list[list[str]]:
    """The commands ``script --dry-run`` prints, split as the shell would (trailing ``&`` dropped)."""
    base = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    done = subprocess.run(["bash", str(EXAMPLES / script), "--dry-run", *args], capture_output=True, text=True,
                          timeout=30, env={**base, **(env or {})}, cwd="/tmp")
    assert done.returncode == 0, done.stderr
    return [[w for w in shlex.split(line) if w != "&"] for line in done.stdout.splitlines() if line.strip()]


def accepts(command: object, args: list[str]) -> None:
    """``args`` parse as the click command ``command`` parses them (no work done)."""
    command.make_context("test", list(args), resilient_parsing=False)  # type: ignore[attr-defined]


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.mark.parametrize("script", [EXAMPLES / s for s in SCRIPTS] + [ROOT / "scripts" / "gpu_check.sh"])
def test_scripts_parse(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_gpu_check_refuses_an_unknown_step_before_doing_anything(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path / "out"), "placment"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and not (tmp_path / "out").exists()
    assert done.stderr.strip() == ("gpu_check.sh: second argument: expected 'placement' (step 0 only) or nothing, "
                                   "found 'placment'")


def test_slurm_dry_run_one_worker_per_gpu_a_cpu_worker_then_train_on_the_scheduler() -> None:
    from distributed.cli.dask_scheduler import main as dask_scheduler
    from distributed.cli.dask_worker import main as dask_worker

    from taskology.cli import train

    lines = dry_run("slurm.sbatch", "six-tasks", "train.steps=20",
                    env={"SLURM_JOB_ID": "77", "SLURM_JOB_NUM_NODES": "3", "GPUS_PER_NODE": "2",
                         "SLURM_CPUS_PER_TASK": "12", "RUN_DIR": "/shared/runs/x"})
    by_tool = {" ".join(words[:2]): words for words in lines}
    scheduler = by_tool["dask scheduler"]
    accepts(dask_scheduler, scheduler[2:])
    host, port = option(scheduler, "--host"), option(scheduler, "--port")
    assert option(scheduler, "--scheduler-file") == "/shared/runs/x/scheduler.json"
    srun = next(words for words in lines if words[0] == "srun")
    assert "--nodes=3" in srun and "--ntasks-per-node=1" in srun and "--export=ALL,OMP_NUM_THREADS=4" in srun
    gpu_worker = srun[srun.index("python"):]
    assert gpu_worker[:3] == ["python", "-m", "taskology.cluster.gpu_worker"]
    # what each node runs: 2 processes, one Dask thread, pinned one GPU each, advertising GPU=1
    worker = worker_arguments(gpu_worker[3:], ("0", "1"), "node5")
    accepts(dask_worker, worker)
    assert option(worker, "--nworkers") == "2" and option(worker, "--nthreads") == "1"
    assert option(worker, "--resources") == "GPU=1" and option(worker, "--preload") == "taskology.cluster.gpu_worker"
    cpu = next(words for words in lines if words[0] == "env")
    assert cpu[1] == "CUDA_VISIBLE_DEVICES=" and "--resources" not in cpu  # the SimActor's worker: no GPU
    accepts(dask_worker, cpu[cpu.index("worker") + 1:])
    wait = next(words for words in lines if words[:2] == ["python", "-c"])
    assert f"tcp://{host}:{port}" in wait[2] and "wait_for_workers(7," in wait[2]  # 3 nodes x 2 GPUs + 1 CPU
    assert by_tool["taskology train"][2:] == ["six-tasks", "train.steps=20", "--cluster", f"tcp://{host}:{port}",
                                              "--run-dir", "/shared/runs/x"]
    accepts(train, by_tool["taskology train"][2:])
    assert [w[0] for w in lines][-1] == "taskology"  # training starts last, after every worker joined


def test_slurm_workers_are_the_workers_of_the_dask_jobqueue_recipe() -> None:
    jobqueue = pytest.importorskip("dask_jobqueue")
    from taskology.cluster.recipes import slurm_cluster_kwargs

    kwargs = slurm_cluster_kwargs(queue="gpu")
    kwargs["scheduler_options"] = {"host": "127.0.0.1", "dashboard_address": ":0"}
    cluster = jobqueue.SLURMCluster(**kwargs)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    jobqueue_worker = shlex.split(next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line))
    srun = next(words for words in dry_run("slurm.sbatch", "demo", env={"GPUS_PER_NODE": "4"}) if words[0] == "srun")
    ours = worker_arguments(srun[srun.index("python") + 3:], ("0", "1", "2", "3"), "node5")
    for name in ("--nthreads", "--resources"):  # one Dask thread (the actor thread), the GPU resource
        assert option(ours, name) == option(jobqueue_worker, name), name


def test_dask_ssh_dry_run_pins_workers_to_gpus_on_every_host(tmp_path: Path) -> None:
    from distributed.cli.dask_ssh import main as dask_ssh
    from distributed.cli.dask_worker import main as dask_worker

    hostfile = tmp_path / "hosts"
    hostfile.write_text("# the first host also runs the scheduler\ngpu-a\n\ngpu-b slots=2\n")
    lines = dry_run("dask_ssh.sh", str(hostfile), "demo", "train.steps=50",
                    env={"GPUS_PER_HOST": "2", "REMOTE_PYTHON": "/opt/venv/bin/python", "RUN_DIR": "/shared/r"})
    ssh = lines[0]
    assert ssh[:2] == ["dask", "ssh"]
    accepts(dask_ssh, ssh[2:])
    assert option(ssh, "--scheduler") == "gpu-a" and option(ssh, "--nworkers") == "3"  # 2 GPUs + 1 for the sim
    assert option(ssh, "--nthreads") == "1" and option(ssh, "--remote-dask-worker") == "taskology.cluster.gpu_worker"
    # what dask ssh then runs on each host (distributed.deploy.old_ssh.start_worker's command line)
    remote = ["gpu-a:8786", "--nthreads", "1", "--nworkers", "3", "--host", "gpu-b", "--memory-limit", "0"]
    worker = worker_arguments(remote, ("0", "1"), "gpu-b")
    accepts(dask_worker, worker)
    assert option(worker, "--name") == "gpu-b" and option(worker, "--resources") == "GPU=1"
    assert "wait_for_workers(6," in lines[1][2] and "tcp://gpu-a:8786" in lines[1][2]  # 2 hosts x 3
    assert lines[2] == ["taskology", "train", "demo", "train.steps=50", "--cluster", "tcp://gpu-a:8786",
                        "--run-dir", "/shared/r"]


@pytest.mark.parametrize("script,args,env,message", [
    ("dask_ssh.sh", ["/nonexistent/hosts", "demo"], {}, "HOSTFILE: expected a file with one host per line"),
    ("dask_ssh.sh", ["HOSTS", "demo"], {"GPUS_PER_HOST": "four"}, "GPUS_PER_HOST and SCHEDULER_PORT must be whole"),
    ("dask_ssh.sh", ["demo"], {}, "usage: bash examples/cluster/dask_ssh.sh"),
    ("slurm.sbatch", ["demo"], {"GPUS_PER_NODE": "2x"}, "must be whole numbers; found '2x'"),
    ("slurm.sbatch", [], {}, "usage: sbatch examples/cluster/slurm.sbatch"),
])
def test_bad_input_is_one_line_and_a_non_zero_exit(script: str, args: list[str], env: dict[str, str], message: str,
                                                    tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text("node1\n")
    args = [str(tmp_path / "hosts") if a == "HOSTS" else a for a in args]
    done = subprocess.run(["bash", str(EXAMPLES / script), "--dry-run", *args], capture_output=True, text=True,
                          timeout=30, env={"PATH": "/usr/bin:/bin", **env})
    assert done.returncode == 2 and done.stdout == ""
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def _load_kubernetes_example():
    import importlib.util

    spec = importlib.util.spec_from_file_location("kubernetes_example", EXAMPLES / "kubernetes.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_kubernetes_dry_run_prints_one_gpu_pod_per_task_and_a_spare(capsys: pytest.CaptureFixture[str]) -> None:
    from test_recipes import _make_spec_like_dask_kubernetes

    example = _load_kubernetes_example()
    assert example.main(["--tasks", "4", "--image", "reg/taskology:0.1", "--claim", "runs-pvc", "--dry-run"],
                        make_spec=_make_spec_like_dask_kubernetes) == 0
    out = capsys.readouterr().out
    resource = yaml.safe_load(out)
    assert resource["kind"] == "DaskCluster" and resource["spec"]["worker"]["replicas"] == 5  # 4 tasks + 1 spare
    container = resource["spec"]["worker"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "--nthreads 1 --resources GPU=1" in " ".join(container["args"])
    sim_group = out.splitlines()[0]
    assert sim_group.startswith("# then: KubeCluster.add_worker_group(") and "nvidia.com/gpu" not in sim_group


def test_kubernetes_without_dask_kubernetes_is_one_line() -> None:
    pytest.importorskip("yaml")
    try:
        import dask_kubernetes  # noqa: F401
        pytest.skip("dask-kubernetes is installed")
    except ImportError:
        pass
    done = subprocess.run([sys.executable, str(EXAMPLES / "kubernetes.py"), "--tasks", "2", "--image", "i",
                           "--claim", "c", "--dry-run"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip() == \
        "kubernetes.py: error: kubernetes: dask-kubernetes is not installed (pip install dask-kubernetes)"
