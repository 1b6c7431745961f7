"""Actors that outlive their driver: stop their threads, and let the next driver wait for them.

A Dask actor lives on its worker as long as a client holds it. When the driver that created it dies
(SIGKILL, a lost machine), the scheduler sees the connection close and releases the driver's keys; the
worker drops the actor object, but the threads the actor started (training, fetching peers, the
simulator's generator) would run on, writing checkpoints and shards into the run directory that a resumed
driver is about to use. Two guards:

- :class:`ReleaseWatch`: a daemon thread per actor checks every ``poll_s`` seconds whether its worker still
  holds the actor and, once it does not, calls ``on_release`` (which stops the actor's work);
- :func:`register` / :func:`await_orphans`: an actor registers its background threads under its run
  directory; a driver starting on a run directory waits, on every worker, until no registered thread of
  that directory is alive, and stops with one line naming the worker and the thread if one outlives the wait.

Outside a Dask worker (in-process runs, tests) a watch does nothing: nothing can release the object.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any, Callable

from taskology.errors import ClusterError

_log = logging.getLogger(__name__)

#: run directory -> background threads of actors working in it (this process)
_THREADS: dict[str, weakref.WeakSet[threading.Thread]] = {}
_THREADS_LOCK = threading.Lock()


def _key(run_dir: Any) -> str:
    return os.path.realpath(os.fspath(run_dir))


def register(run_dir: Any, thread: threading.Thread) -> None:
    """Count ``thread`` (started by an actor) as working in ``run_dir`` until it ends."""
    with _THREADS_LOCK:
        _THREADS.setdefault(_key(run_dir), weakref.WeakSet()).add(thread)


def alive_threads(run_dir: Any) -> list[str]:
    """Names of the registered threads of ``run_dir`` (or a folder inside it) still running in this process.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> gate = threading.Event()
        >>> thread = threading.Thread(target=gate.wait, name="taskology-train-depth"); thread.start()
        >>> register(os.path.join(folder, "mediator"), thread); alive_threads(folder)
        ['taskology-train-depth']
        >>> gate.set(); thread.join(); alive_threads(folder)
        []
    """
    key = _key(run_dir)
    with _THREADS_LOCK:
        threads = [t for folder, group in _THREADS.items() if folder == key or folder.startswith(key + os.sep)
                   for t in group]
    return sorted(t.name for t in threads if t.is_alive())


def _worker() -> Any:
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def _held(worker: Any, actor: object) -> bool | None:
    """Whether ``worker`` holds ``actor`` (``None``: could not tell this time)."""
    try:
        return any(held is actor for held in list(worker.state.actors.values()))
    except (AttributeError, RuntimeError):  # an older worker layout, or the dict changed while copied
        return None


class ReleaseWatch:
    """Calls ``on_release()`` once the Dask worker running this code no longer holds ``actor``.

    Start it from an actor method (not ``__init__``: the worker stores the actor after construction). It
    counts the actor as released only after it has seen it held, so a watch started early waits.

    Args:
        actor: the actor object (``on_release`` is usually its bound method, so the watch holds it anyway; the
            watch's thread ends once it fires or the worker closes).
        on_release: what stops the actor's work (and says so if it was still working: a driver that ends
            normally stops its actors before releasing them); called once, from the watch's thread.
        name: the thread's name (in logs and :func:`alive_threads`).
        poll_s: seconds between checks.
    """

    def __init__(self, actor: object, on_release: Callable[[], None], name: str, poll_s: float = 0.5) -> None:
        self._actor = actor
        self._on_release = on_release
        self.name = name
        self.poll_s = float(poll_s)
        self.released = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Start watching (once); ``False`` outside a Dask worker, where nothing is watched."""
        worker = _worker()
        if worker is None:
            return False
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, args=(worker,), name=self.name, daemon=True)
            self._thread.start()
        return True

    def _watch(self, worker: Any) -> None:
        seen = False
        while not self.released.is_set():
            held = _held(worker, self._actor)
            if held:
                seen = True
            elif held is False and seen:
                self.released.set()
                _log.debug("%s: the worker released the actor", self.name)
                self._on_release()
                return
            if getattr(worker, "status", None) is not None and str(worker.status).endswith("closed"):
                return
            time.sleep(self.poll_s)


def await_orphans(client: Any, run_dir: Any, timeout_s: float = 120.0, poll_s: float = 0.5) -> float:
    """Wait until no worker of ``client`` runs a registered thread of ``run_dir`` (the actors of a driver
    that died, stopping after their :class:`ReleaseWatch` fired); returns the seconds waited.

    Raises:
        ClusterError: one line naming the worker and its threads still alive after ``timeout_s``.
    """
    start = time.monotonic()
    while True:
        # a worker that cannot answer (closing, unreachable) holds no thread this process could wait for
        answers = client.run(alive_threads, str(run_dir), on_error="return")
        alive = {address: names for address, names in answers.items() if isinstance(names, list) and names}
        waited = time.monotonic() - start
        if not alive:
            if waited > poll_s:
                _log.warning("%s: the actors of an earlier driver stopped after %.1f s", run_dir, waited)
            return waited
        if waited > timeout_s:
            address, names = sorted(alive.items())[0]
            raise ClusterError(f"{run_dir}: threads of an earlier driver's actors still run on worker {address} "
                               f"after {timeout_s:.0f} s ({', '.join(names)}); restart that worker, then resume")
        time.sleep(poll_s)


__all__ = ["ReleaseWatch", "alive_threads", "await_orphans", "register"]
