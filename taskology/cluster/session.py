"""Making or connecting the Dask cluster the engine runs on; the same engine code for every kind.

- ``local`` (default): a :class:`distributed.LocalCluster` on 127.0.0.1 with worker *processes*, one
  single-threaded worker per actor. The worker processes are forks of one server process that imported
  torch, Numba and the engine once (:func:`fork_local_workers`: about 0.1 s a worker instead of ~3 s of
  imports each). Each worker gets ``OMP_NUM_THREADS``/``NUMBA_NUM_THREADS``/``MKL_NUM_THREADS`` in its
  environment and :class:`ThreadLimitPlugin` sets torch's and Numba's thread counts. With G GPUs, worker ``i`` sees only GPU
  ``i mod G`` (``CUDA_VISIBLE_DEVICES``) and advertises the resource ``GPU=1``; the supervisor places
  task actors by GPU (:func:`~taskology.cluster.supervision.choose_worker`), at most ``ceil(T/G)`` a GPU.
  The GPUs are ``ClusterSpec.gpus``, else ``TASKOLOGY_GPUS`` (e.g. ``0,2``; ``none``), else those the
  driver sees (its ``CUDA_VISIBLE_DEVICES``, else all of them).
- ``tcp://HOST:PORT`` / ``tls://HOST:PORT``: an existing scheduler (workers started by
  ``dask worker``, SLURM via dask-jobqueue, Kubernetes via dask-kubernetes; see docs/cluster.md).
- TLS: with certificate files configured, :func:`~taskology.cluster.certificates.tls_security` requires
  encryption, so a plaintext client or worker is refused by the scheduler. When the scheduler refuses this
  client's certificate, the error line says why (:mod:`taskology.cluster.certificates`).
- Teardown: the workers of a local cluster carry :class:`QuietTeardownPlugin`, which drops the one
  log record Dask writes when a closing worker's own heartbeat is cut off (a race inside
  ``Worker.close``), so a run that ends well ends without a traceback.

Example:
    >>> with open_cluster(ClusterSpec(address="local", n_workers=2)) as session:  # doctest: +SKIP
    ...     print(session.dashboard_link, session.worker_addresses())
"""
from __future__ import annotations

import copy
import logging
import os
import re
import sys
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from taskology.cluster.certificates import TLSFiles, tls_failure_message, tls_security
from taskology.errors import ClusterError
from taskology.runtime import tune_malloc


@dataclass(frozen=True)
class ClusterSpec:
    """Where the engine runs.

    Attributes:
        address: ``"local"`` or ``"tcp://HOST:PORT"`` / ``"tls://HOST:PORT"`` of a running scheduler.
        n_workers: local worker processes (default: one per actor, given to :func:`open_cluster`).
        threads_per_worker: compute threads per worker (torch/OMP/Numba); Dask threads stay 1.
        dashboard: start (local) / print the dashboard link.
        tls: certificate files; ``None`` for plaintext TCP (loopback or trusted networks only).
        gpus: GPU ids for local workers (worker i gets ``gpus[i % len(gpus)]``); ``None``: the
            ``TASKOLOGY_GPUS`` environment variable, else :func:`detect_gpus`.
        connect_timeout_s: how long to try reaching a remote scheduler.
        spare_workers: extra local workers beyond one per actor (when ``n_workers`` is None): a lost
            actor is recreated on a warm spare at once while the nanny restarts the dead process.
    """

    address: str = "local"
    n_workers: int | None = None
    threads_per_worker: int = 1
    dashboard: bool = True
    tls: TLSFiles | None = None
    gpus: tuple[int | str, ...] | None = None
    connect_timeout_s: float = 10.0
    spare_workers: int = 1


def cluster_spec_from_config(cluster: Any) -> ClusterSpec:
    """:class:`ClusterSpec` from the ``cluster`` section of an experiment config (attribute access)."""
    tls_cfg = getattr(cluster, "tls", None)
    tls = None
    if tls_cfg is not None and getattr(tls_cfg, "ca_file", None):
        tls = TLSFiles(Path(tls_cfg.ca_file), Path(tls_cfg.cert_file), Path(tls_cfg.key_file))
    return ClusterSpec(address=str(getattr(cluster, "address", "local") or "local"),
                       n_workers=getattr(cluster, "n_workers", None),
                       threads_per_worker=int(getattr(cluster, "threads_per_worker", 1) or 1),
                       dashboard=bool(getattr(cluster, "dashboard", True)), tls=tls)


def worker_environments(n_workers: int, threads_per_worker: int,
                        gpus: Sequence[int | str]) -> list[dict[str, str]]:
    """Environment of each local worker process: thread limits, and one GPU each when there are GPUs.

    Example:
        >>> [e["CUDA_VISIBLE_DEVICES"] for e in worker_environments(3, 1, [0, 1])]
        ['0', '1', '0']
        >>> worker_environments(1, 2, [])[0]["CUDA_VISIBLE_DEVICES"], worker_environments(1, 2, [])[0]["OMP_NUM_THREADS"]
        ('', '2')
    """
    threads = str(max(int(threads_per_worker), 1))
    envs = []
    for i in range(n_workers):
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
               "NUMBA_NUM_THREADS": threads, "CUDA_VISIBLE_DEVICES": str(gpus[i % len(gpus)]) if gpus else ""}
        envs.append(env)
    return envs


TEARDOWN_STATUSES = frozenset({"closing", "closing_gracefully", "closed"})
_HEARTBEAT_FAILED = "Failed to communicate with scheduler during heartbeat"


def is_teardown_noise(message: str, worker_status: str) -> bool:
    """Whether a worker's log record is the heartbeat cut off by its own close (not a fault).

    ``Worker.close`` stops the heartbeat timer but not a heartbeat already waiting for the scheduler's
    answer; closing the worker's connections then fails that one with ``CommClosedError``, which Dask
    logs as an error with a traceback. The same message from a running worker is a real fault and stays.

    Example:
        >>> is_teardown_noise("Failed to communicate with scheduler during heartbeat.", "closing")
        True
        >>> is_teardown_noise("Failed to communicate with scheduler during heartbeat.", "running")
        False
    """
    return message.startswith(_HEARTBEAT_FAILED) and worker_status in TEARDOWN_STATUSES


class _TeardownNoiseFilter(logging.Filter):
    def __init__(self, worker: Any) -> None:
        super().__init__()
        self._worker = weakref.ref(worker)

    def filter(self, record: logging.LogRecord) -> bool:
        worker = self._worker()
        status = getattr(getattr(worker, "status", None), "name", "closed") if worker is not None else "closed"
        return not is_teardown_noise(record.getMessage(), status)


class QuietTeardownPlugin(WorkerPlugin):
    """Drops, in each worker process, the log records :func:`is_teardown_noise` names (and only those)."""

    name = "taskology-quiet-teardown"

    def setup(self, worker: Any) -> None:
        logger = logging.getLogger("distributed.worker")
        for old in [f for f in logger.filters if isinstance(f, _TeardownNoiseFilter)]:
            logger.removeFilter(old)
        logger.addFilter(_TeardownNoiseFilter(worker))


class ThreadLimitPlugin(WorkerPlugin):
    """Sets torch (and Numba, when loaded) thread counts in each worker process (and :func:`tune_malloc`),
    and warms the process:
    torch's first optimizer imports ``torch._dynamo`` (about 2.5 s here), which would otherwise delay the
    first actor created on the worker (and so every recovery).

    The work runs in a background thread: ``setup`` runs while the worker starts, and a worker whose
    start takes longer than the nanny's timeout is killed (importing torch on busy cores can). An actor
    created meanwhile simply waits on Python's import lock.
    """

    name = "taskology-thread-limit"

    def __init__(self, threads: int) -> None:
        self.threads = max(int(threads), 1)

    def setup(self, worker: Any) -> None:
        tune_malloc()
        threading.Thread(target=self._configure, name="taskology-worker-warmup", daemon=True).start()

    def _configure(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # warm-up import, see class doc
        try:
            import numba

            numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
        except Exception:  # noqa: BLE001 - numba optional at this point
            pass


#: what the server that forks local worker processes imports once (nothing here touches CUDA on import, so
#: each worker's ``CUDA_VISIBLE_DEVICES`` still decides which GPU it sees)
WORKER_PRELOAD = ("distributed", "numpy", "torch", "numba", "h5py", "taskology.engine.actor",
                  "taskology.engine.runner", "taskology.sim.actor")


def fork_local_workers() -> bool:
    """Let local worker processes (and the ones a nanny restarts) start as forks of a server process that
    imported :data:`WORKER_PRELOAD` once (Python's ``forkserver``, Dask's
    ``distributed.worker.multiprocessing-method``), instead of fresh interpreters that import torch and
    the engine each (~3 s of CPU a worker). The server is a clean single-threaded process started on
    first use; it ignores Ctrl-C and ends with this process. Returns whether it is in use: a method set in
    the Dask config other than the default ``spawn`` is the user's choice and stays."""
    import multiprocessing

    import dask
    from distributed.utils import get_mp_context

    key = "distributed.worker.multiprocessing-method"
    if dask.config.get(key) == "forkserver":
        return True
    if dask.config.get(key) != "spawn" or "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    dask.config.set({key: "forkserver"})
    get_mp_context().set_forkserver_preload(list(WORKER_PRELOAD))  # after Dask set its own list (once)
    return True


class _PerWorkerEnvCluster(LocalCluster):
    """LocalCluster whose worker ``i`` gets ``worker_envs[i % n]``, and the resource ``GPU=1`` when that
    environment names a GPU (a Nanny restarting a dead worker process reuses its spec, so a restarted
    worker keeps its GPU)."""

    def __init__(self, *, worker_envs: list[dict[str, str]], **kwargs: Any) -> None:
        self._worker_envs = worker_envs
        super().__init__(n_workers=0, **kwargs)

    def new_worker_spec(self) -> dict[Any, Any]:
        spec = super().new_worker_spec()
        out = {}
        for name, one in spec.items():
            one = copy.deepcopy(one)
            index = int(name) if str(name).isdigit() else len(self.worker_spec)
            env = dict(self._worker_envs[index % len(self._worker_envs)])
            one.setdefault("options", {})["env"] = env
            if env.get("CUDA_VISIBLE_DEVICES"):
                one["options"]["resources"] = {"GPU": 1}  # placement only: actors are pinned by address
            out[name] = one
        return out


class IgnoreSigintPlugin(WorkerPlugin):
    """Worker processes of a local cluster ignore SIGINT: a terminal Ctrl-C reaches the whole process
    group, and only the driver should act on it (stop the actors, let them checkpoint, close the
    cluster). Without this the workers die mid-step (no final checkpoint, a SimActor's temp file left)."""

    name = "taskology-ignore-sigint"

    def setup(self, worker: Any) -> None:
        import signal

        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the process's main thread (an in-process worker): nothing to do
            pass


GPU_LIST_VARIABLE = "TASKOLOGY_GPUS"
_GPU_ID = re.compile(r"\d+|(?:GPU|MIG)-[0-9A-Za-z/-]+")


def parse_gpu_list(text: str, where: str = GPU_LIST_VARIABLE) -> tuple[int | str, ...]:
    """GPU ids from a comma-separated list as ``CUDA_VISIBLE_DEVICES`` takes them (indices or
    ``GPU-``/``MIG-`` UUIDs); ``""`` or ``none``: no GPU. ``where`` names the source in the error.

    Example:
        >>> parse_gpu_list("0, 2,3")
        (0, 2, 3)
        >>> parse_gpu_list("none")
        ()
        >>> parse_gpu_list("0,x")
        Traceback (most recent call last):
        ...
        taskology.errors.ClusterError: TASKOLOGY_GPUS: expected GPU ids ... found '0,x' ('x' is not a GPU id)
    """
    stripped = text.strip()
    if stripped.lower() in ("", "none"):
        return ()
    ids: list[int | str] = []
    for token in (t.strip() for t in stripped.split(",")):
        problem = None
        if not _GPU_ID.fullmatch(token):
            problem = f"{token!r} is not a GPU id"
        elif (int(token) if token.isdigit() else token) in ids:
            problem = f"{token} is listed twice"
        if problem:
            raise ClusterError(f"{where}: expected GPU ids separated by commas (such as 0,1,3) or none, "
                               f"found {text!r} ({problem})")
        ids.append(int(token) if token.isdigit() else token)
    return tuple(ids)


def detect_gpus() -> tuple[int | str, ...]:
    """GPU ids this process may use (empty without CUDA): the entries of ``CUDA_VISIBLE_DEVICES`` when
    it is set (so a worker is given the physical GPU, not the driver's renumbered index), else
    ``0 .. count-1``."""
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001
        return ()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return tuple(range(count))
    try:
        return parse_gpu_list(visible, "CUDA_VISIBLE_DEVICES")[:count]
    except ClusterError:  # a form we do not parse (CUDA itself stops at the first bad entry)
        return tuple(range(count))


def local_gpus(spec_gpus: Sequence[int | str] | None) -> tuple[int | str, ...]:
    """GPUs for a local cluster: ``spec_gpus`` if given, else ``TASKOLOGY_GPUS`` (a faked list works
    too: tests place actors on "GPUs" of a CPU-only machine), else :func:`detect_gpus`."""
    if spec_gpus is not None:
        return tuple(spec_gpus)
    listed = os.environ.get(GPU_LIST_VARIABLE)
    if listed is not None:
        return parse_gpu_list(listed, f"{GPU_LIST_VARIABLE} (environment)")
    return detect_gpus()


def visible_gpu() -> str:
    """The GPU this process was given (run on a worker): its ``CUDA_VISIBLE_DEVICES``, ``"all"`` when
    unset. Reads the environment only: no CUDA context is created."""
    return os.environ.get("CUDA_VISIBLE_DEVICES", "all")


class ClusterSession:
    """A connected :class:`~distributed.Client` plus the LocalCluster it owns (if any); close() both."""

    def __init__(self, client: Client, cluster: LocalCluster | None, spec: ClusterSpec,
                 gpus: tuple[int | str, ...]) -> None:
        self.client = client
        self.cluster = cluster
        self.spec = spec
        self.gpus = gpus
        self._address = str(client.scheduler.address)

    @property
    def address(self) -> str:
        """The scheduler's address (known after the client lost it too: a closed client forgets it)."""
        return self._address

    @property
    def dashboard_link(self) -> str | None:
        try:
            return str(self.client.dashboard_link) if self.spec.dashboard else None
        except Exception:  # noqa: BLE001 - no dashboard (bokeh missing, disabled)
            return None

    def worker_addresses(self) -> list[str]:
        """Addresses of the workers alive now, sorted."""
        return sorted(self.client.scheduler_info(n_workers=-1)["workers"])

    def has_gpu_workers(self) -> bool:
        """Whether a live worker advertises the ``GPU`` resource (remote GPU workers start with
        ``--resources GPU=1``; local ones with a GPU get it)."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return any(float((w.get("resources") or {}).get("GPU", 0) or 0) > 0 for w in workers)

    def worker_gpus(self, addresses: Sequence[str]) -> dict[str, str]:
        """``address -> "HOST/GPU"`` for the given workers (what :func:`visible_gpu` says there, with the
        worker's host: GPU 0 of two machines are two GPUs). A worker that does not answer (it died
        meanwhile) is left out."""
        from distributed.comm import get_address_host

        if not addresses:
            return {}
        answers = self.client.run(visible_gpu, workers=list(addresses), on_error="return")
        return {address: f"{get_address_host(address)}/{answer}" for address, answer in answers.items()
                if isinstance(answer, str)}

    def close(self, timeout_s: float = 20.0) -> None:
        """Close the client, then the cluster we own (its workers first, then its scheduler); a slow or
        failing close is not an error (the run's results are on disk by now), only a warning on stderr."""
        for what, closer in (("client", self.client), ("cluster", self.cluster)):
            if closer is None:
                continue
            try:
                closer.close(timeout=timeout_s)
            except Exception as exc:  # noqa: BLE001
                print(f"taskology: warning: closing the Dask {what} failed: {type(exc).__name__}: {exc}",
                      file=sys.stderr)

    def __enter__(self) -> ClusterSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_cluster(spec: ClusterSpec, n_actors: int = 1, wait_for_workers: bool = True) -> ClusterSession:
    """Start a LocalCluster (``spec.address == "local"``) or connect to a scheduler; never hangs longer
    than ``spec.connect_timeout_s`` on an unreachable address (raises :class:`ClusterError`)."""
    security = tls_security(spec.tls) if spec.tls is not None else None
    if spec.address in ("local", "", None):
        n_workers = spec.n_workers or max(n_actors, 1) + max(spec.spare_workers, 0)
        gpus = local_gpus(spec.gpus)
        envs = worker_environments(n_workers, spec.threads_per_worker, gpus)
        fork_local_workers()
        try:
            cluster = _PerWorkerEnvCluster(
                worker_envs=envs, processes=True, threads_per_worker=1, host="127.0.0.1",
                # the scheduler's HTTP server runs either way (with dashboard=False it serves no dashboard):
                # a free port, never Dask's default 8787 with its warning when that one is taken
                dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": spec.dashboard}, silence_logs=40,
                security=security, protocol="tls://" if security else "tcp://", memory_limit=0)
            cluster.scale(n_workers)
            client = Client(cluster, security=security)
            client.register_plugin(ThreadLimitPlugin(spec.threads_per_worker))
            client.register_plugin(IgnoreSigintPlugin())
            client.register_plugin(QuietTeardownPlugin())
            if wait_for_workers:
                client.wait_for_workers(n_workers, timeout=120)
        except Exception as exc:
            raise ClusterError(f"cannot start a local Dask cluster with {n_workers} workers: "
                               f"{type(exc).__name__}: {exc}") from exc
        return ClusterSession(client, cluster, spec, tuple(gpus))
    if not (spec.address.startswith("tcp://") or spec.address.startswith("tls://")):
        raise ClusterError(f"cluster.address: expected none, local, tcp://HOST:PORT or tls://HOST:PORT, "
                           f"found {spec.address!r}")
    if spec.address.startswith("tls://") and security is None:
        raise ClusterError(f"cluster.address {spec.address} is TLS but cluster.tls has no certificate files")
    try:
        client = Client(spec.address, security=security, timeout=spec.connect_timeout_s)
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if spec.tls is not None:
            message = tls_failure_message(exc, spec.tls) or message
        raise ClusterError(f"cannot reach scheduler at {spec.address}: {message}") from exc
    try:
        client.register_plugin(ThreadLimitPlugin(spec.threads_per_worker))
        if wait_for_workers:
            client.wait_for_workers(1, timeout=max(spec.connect_timeout_s, 30))
    except Exception as exc:
        client.close()
        raise ClusterError(f"scheduler at {spec.address} has no live worker: {type(exc).__name__}: {exc}") from exc
    return ClusterSession(client, None, spec, ())


def describe(session: ClusterSession) -> str:
    """One line for the terminal: where we run, how many workers, the dashboard link."""
    kind = "local cluster" if session.cluster is not None else "scheduler"
    link = session.dashboard_link
    return (f"{kind} {session.address}: {len(session.worker_addresses())} workers"
            + (f", GPUs {list(session.gpus)}" if session.gpus else "") + (f"; dashboard {link}" if link else "")
            + f" (pid {os.getpid()})")
