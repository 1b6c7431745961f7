"""Cluster sessions: unreachable scheduler, TLS refusal of plaintext and of certificates from another CA or
expired ones (with the one-line error the user sees), quiet worker teardown, a cluster started from the
command line running a job through tcp://127.0.0.1:PORT. Loopback only, bounded, always shut down."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from distributed import Client, LocalCluster, Worker

import fake_runner
from certificate_files import make_ca, make_signed, needs_openssl
from taskology.cluster.session import (ClusterSpec, QuietTeardownPlugin, TLSFiles, cluster_spec_from_config,
                                       is_teardown_noise, open_cluster, tls_security, worker_environments)
from taskology.cluster.supervision import RestartPolicy
from taskology.engine.actor import TaskActor
from taskology.engine.supervisor import ActorSlot, Supervisor
from taskology.engine.exchange import ExchangePolicy
from taskology.errors import ClusterError

DASK = Path(sys.executable).with_name("dask")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_worker_environments_pin_threads_and_one_gpu_each() -> None:
    envs = worker_environments(4, 3, [0, 1])
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0", "1"]
    assert all(e["OMP_NUM_THREADS"] == e["NUMBA_NUM_THREADS"] == e["MKL_NUM_THREADS"] == "3" for e in envs)
    assert worker_environments(2, 0, [])[1] == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                                                 "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
                                                 "CUDA_VISIBLE_DEVICES": ""}


def test_spec_from_config_sections(tmp_path: Path) -> None:
    from taskology.config import ExperimentConfig

    cfg = ExperimentConfig()
    spec = cluster_spec_from_config(cfg.cluster)
    assert spec.address == "local" and spec.tls is None and spec.threads_per_worker == 1


def test_unreachable_scheduler_is_one_line_cluster_error() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.time()
    with pytest.raises(ClusterError) as info:
        open_cluster(ClusterSpec(address=address, connect_timeout_s=1.0))
    message = str(info.value)
    assert message.startswith(f"cannot reach scheduler at {address}: ") and "\n" not in message
    assert time.time() - start < 15


def test_bad_addresses_are_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="expected none, local, tcp://HOST:PORT"):
        open_cluster(ClusterSpec(address="udp://1.2.3.4:5"))
    with pytest.raises(ClusterError, match="is TLS but cluster.tls has no certificate"):
        open_cluster(ClusterSpec(address="tls://127.0.0.1:1"))
    with pytest.raises(ClusterError, match=r"cluster.tls.ca_file: expected a PEM file"):
        tls_security(TLSFiles(tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem"))


def make_certificate(tmp_path: Path) -> TLSFiles:
    """A self-signed certificate for 127.0.0.1 acting as its own CA (openssl CLI)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=taskology-test", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return TLSFiles(cert, cert, key)


def _env() -> dict[str, str]:
    """Workers and scheduler need the trainable's code, like any Dask deployment: here tests/cluster."""
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def _worker(args: list[str], tmp_path: Path, name: str) -> subprocess.Popen:
    log = open(tmp_path / f"{name}.log", "wb")
    return subprocess.Popen([str(DASK), "worker", *args, "--nthreads", "1", "--no-dashboard", "--name", name,
                             "--local-directory", str(tmp_path / name), "--death-timeout", "20"],
                            stdout=log, stderr=subprocess.STDOUT, env=_env())


@needs_openssl
@pytest.mark.timeout(120)
def test_tls_scheduler_refuses_plaintext_clients_and_workers(tmp_path: Path) -> None:
    tls = make_certificate(tmp_path)
    security = tls_security(tls)
    with LocalCluster(n_workers=0, processes=False, host="127.0.0.1", security=security, protocol="tls://",
                      dashboard_address=None, scheduler_port=0) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://127.0.0.1:")
        host_port = address[len("tls://"):]
        with pytest.raises(OSError):
            Client(f"tcp://{host_port}", timeout=2)  # plaintext TCP to a TLS listener
        with pytest.raises((OSError, TypeError, ValueError)):
            Client(address, timeout=2)  # TLS address without certificates
        plain = _worker([f"tcp://{host_port}"], tmp_path, "plain")
        secure = _worker([address, "--tls-ca-file", str(tls.ca_file), "--tls-cert", str(tls.cert_file),
                          "--tls-key", str(tls.key_file)], tmp_path, "secure")
        try:
            with Client(address, security=security, timeout=10) as client:
                client.wait_for_workers(1, timeout=60)  # the TLS worker (positive control) joins
                time.sleep(2.0)
                names = [w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()]
                assert names == ["secure"]  # the plaintext worker never got in
                assert client.submit(lambda x: x + 1, 41).result(timeout=30) == 42
        finally:
            for proc in (plain, secure):
                proc.terminate()
            for proc in (plain, secure):
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()


@pytest.mark.timeout(150)
def test_command_line_cluster_runs_a_supervised_job(tmp_path: Path) -> None:
    sched_file = tmp_path / "scheduler.json"
    sched_log = open(tmp_path / "scheduler.log", "wb")
    scheduler = subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", str(sched_file)], stdout=sched_log, stderr=subprocess.STDOUT,
                                 env=_env())
    workers: list[subprocess.Popen] = []
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        workers = [_worker(["--scheduler-file", str(sched_file)], tmp_path, f"w{i}") for i in range(3)]
        with open_cluster(ClusterSpec(address=address, connect_timeout_s=30), wait_for_workers=False) as session:
            session.client.wait_for_workers(3, timeout=90)  # worker processes start slowly on 2 busy cores
            assert session.cluster is None and len(session.worker_addresses()) == 3
            slots = [ActorSlot(name=n, cls=TaskActor, kwargs=dict(
                task_name=n, runner_cls=fake_runner.FakeRunner, run_dir=str(tmp_path / "run"),
                runner_kwargs={"task_name": n, "seed": i, "peers": (p,), "step_sleep_s": 0.01},
                policy=ExchangePolicy(publish_every_steps=5, refresh_every_s=0.1, max_staleness_steps=None),
                checkpoint_every_steps=25, checkpoint_every_s=None, log_every=0))
                for i, (n, p) in enumerate((("a", "b"), ("b", "a")))]
            sup = Supervisor(session, slots, target_steps=60, policy=RestartPolicy(max_restarts=0),
                             run_dir=tmp_path / "run", poll_s=0.2)
            sup.start()
            assert sup.slots["a"].worker != sup.slots["b"].worker
            summary = sup.run(timeout_s=90)
        for n in "ab":
            st = summary["actors"][n]["status"]
            assert st["state"] == "done" and st["step"] == 60 and st["exchange_bytes"] > 0
            assert summary["actors"][n]["restarts"] == 0
    finally:
        for proc in [*workers, scheduler]:
            proc.terminate()
        for proc in [*workers, scheduler]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _join(address: str, security: object, scheduler: object) -> bool:
    """Whether a worker presenting ``security`` gets into the scheduler (gives up after 2 s)."""
    try:
        async with Worker(address, security=security, nthreads=1, death_timeout=2, dashboard=False,
                          host="127.0.0.1") as worker:
            return worker.address in scheduler.workers  # type: ignore[attr-defined]
    except (TimeoutError, asyncio.TimeoutError, OSError):
        return False


@needs_openssl
@pytest.mark.timeout(120)
def test_tls_scheduler_refuses_a_foreign_ca_and_an_expired_certificate_with_one_clear_line(tmp_path: Path) -> None:
    ca, other_ca = make_ca(tmp_path, "ca"), make_ca(tmp_path, "other-ca")
    server = make_signed(tmp_path, ca, "scheduler")
    foreign = make_signed(tmp_path, other_ca, "foreign")
    cases = {"foreign": (TLSFiles(ca[0], foreign.cert_file, foreign.key_file), "is not trusted"),  # trusts the
             # scheduler's CA but presents a certificate of another CA
             "expired": (make_signed(tmp_path, ca, "expired", expired=True), "has expired")}
    with LocalCluster(n_workers=0, processes=False, host="127.0.0.1", security=tls_security(server), protocol="tls://",
                      dashboard_address="127.0.0.1:0", scheduler_port=0, silence_logs=logging.CRITICAL) as cluster:
        address = cluster.scheduler_address
        assert cluster.sync(_join, address, tls_security(server), cluster.scheduler)  # positive control
        for name, (tls, verdict) in cases.items():
            with pytest.raises(OSError):  # refused at the TLS layer, whatever the project says about it
                Client(address, security=tls_security(tls), timeout=3)
            assert not cluster.sync(_join, address, tls_security(tls), cluster.scheduler), name
            start = time.time()
            with pytest.raises(ClusterError) as info:
                open_cluster(ClusterSpec(address=address, tls=tls, connect_timeout_s=3), wait_for_workers=False)
            assert time.time() - start < 15
            assert str(info.value).startswith(f"cannot reach scheduler at {address}: this client's certificate")
            assert verdict in str(info.value) and str(tls.cert_file) in str(info.value)
            # what the user sees: `taskology train --cluster tls://...` with these files
            from taskology.cli import cli

            result = CliRunner().invoke(cli, ["train", f"cluster.tls.ca_file={tls.ca_file}",
                                              f"cluster.tls.cert_file={tls.cert_file}",
                                              f"cluster.tls.key_file={tls.key_file}", "--cluster", address,
                                              "--run-dir", str(tmp_path / f"run-{name}")], prog_name="taskology")
            lines = result.stderr.strip().splitlines()
            assert result.exit_code == 2 and len(lines) == 1, (result.exit_code, result.stderr)
            assert lines[0].startswith(f"taskology: error: cannot reach scheduler at {address}: ")
            assert verdict in lines[0]
            assert "Traceback" not in result.output
        assert not cluster.scheduler.workers


def test_teardown_noise_is_only_a_closing_workers_own_heartbeat() -> None:
    message = "Failed to communicate with scheduler during heartbeat."
    assert [is_teardown_noise(message, s) for s in ("closing", "closing_gracefully", "closed")] == [True] * 3
    assert not is_teardown_noise(message, "running") and not is_teardown_noise(message, "paused")
    assert not is_teardown_noise("Unexpected exception during heartbeat. Closing worker.", "closing")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _close_during_heartbeat(quiet: bool) -> list[str]:
    """A real worker closed while its heartbeat waits for a (slowed) scheduler: the errors it logs."""
    logger = logging.getLogger("distributed.worker")
    records = _Records()
    logger.addHandler(records)
    try:
        with LocalCluster(n_workers=1, processes=False, protocol="tcp://", host="127.0.0.1",
                          dashboard_address="127.0.0.1:0", threads_per_worker=1) as cluster, Client(cluster) as client:
            if quiet:
                client.register_plugin(QuietTeardownPlugin())
            answer = cluster.scheduler.handlers["heartbeat_worker"]

            async def slow_answer(*args: object, **kwargs: object) -> object:
                await asyncio.sleep(2.0)
                return answer(*args, **kwargs)

            cluster.scheduler.handlers["heartbeat_worker"] = slow_answer
            worker = next(iter(cluster.workers.values()))

            async def race() -> None:
                beat = asyncio.ensure_future(worker.heartbeat())
                await asyncio.sleep(0.5)  # the heartbeat waits for its answer now
                await worker.close()
                await beat

            client.sync(race)
    finally:
        logger.removeHandler(records)
        for added in [f for f in logger.filters if type(f).__name__ == "_TeardownNoiseFilter"]:
            logger.removeFilter(added)
    return [r.getMessage() for r in records.records if r.levelno >= logging.ERROR]


@pytest.mark.timeout(60)
def test_a_worker_closing_during_its_heartbeat_logs_no_traceback_with_the_quiet_plugin() -> None:
    # the control shows the race is real: without the plugin Dask logs the CommClosedError traceback
    assert _close_during_heartbeat(quiet=False) == ["Failed to communicate with scheduler during heartbeat."]
    assert _close_during_heartbeat(quiet=True) == []


def _worker_view() -> tuple[int, bool, str]:
    return os.getppid(), "taskology.engine.runner" in sys.modules, os.environ.get("NUMBA_NUM_THREADS", "")


@pytest.mark.timeout(120)
def test_local_workers_are_forks_of_a_server_that_imported_the_engine_once() -> None:
    """A local cluster's workers are not this process's children but forks of the fork server, and hold the
    engine's modules before running anything of it; each still gets its own environment. A start method the
    user set in the Dask config stays."""
    import dask

    from taskology.cluster.session import fork_local_workers

    with open_cluster(ClusterSpec(address="local", n_workers=2, spare_workers=0, gpus=(), dashboard=False)) as session:
        views = list(session.client.run(_worker_view).values())
    assert len(views) == 2 and {parent for parent, _, _ in views} != {os.getpid()}
    assert len({parent for parent, _, _ in views}) == 1  # one server forked both
    assert all(preloaded and threads == "1" for _, preloaded, threads in views), views
    key = "distributed.worker.multiprocessing-method"
    with dask.config.set({key: "fork"}):
        assert fork_local_workers() is False and dask.config.get(key) == "fork"


def test_the_fork_servers_imports_touch_no_cuda() -> None:
    """Each forked worker chooses its GPU by ``CUDA_VISIBLE_DEVICES`` only if the fork server never touched
    CUDA: importing :data:`WORKER_PRELOAD` in a fresh interpreter calls no ``torch.cuda`` function."""
    from taskology.cluster.session import WORKER_PRELOAD

    script = (
        "import importlib, torch, torch.cuda\n"
        "calls = []\n"
        "for name in ('is_available', 'device_count', '_lazy_init', 'init', 'current_device', 'get_device_name',\n"
        "             'get_device_properties', 'mem_get_info'):\n"
        "    setattr(torch.cuda, name, lambda *a, _n=name, **k: calls.append(_n))\n"
        f"for module in {list(WORKER_PRELOAD)!r}:\n"
        "    importlib.import_module(module)\n"
        "print(calls, torch.cuda.is_initialized())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[] False", out.stdout
