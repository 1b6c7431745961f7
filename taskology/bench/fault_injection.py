"""What ``taskology bench faults`` fires inside Dask workers, and what a worker reports about the actors it holds.

- :class:`FaultPlugin`, a :class:`~distributed.diagnostics.plugin.WorkerPlugin` the bench registers on the
  scheduler, so it is set up in every worker, restarted ones too. It wraps a function once per process for
  each :class:`Injection`: ``nan_publication`` puts NaN into every floating output of one publication of one
  task (``TaskRunner.predict_mediator``, on the publishing side), ``enospc_checkpoint`` makes one checkpoint
  write of one task fail half-way with ``OSError(ENOSPC)`` (``torch.save``: half the bytes reach the
  temp file, as on a full disk). Each fires once across all processes: :func:`fire_once` creates its
  marker file with ``O_EXCL`` (a restarted worker finds it and does not fire again); the marker holds
  when, where and at which step it fired. The product carries no test hooks; these wrappers live here.
- :func:`worker_snapshot`, run on every worker through ``client.run``: its pid, the actors it holds (task
  actors' status, the SimActor's) and the training threads alive in it (a thread of an actor whose key
  the scheduler released and that has not stopped yet).

The processes and the run they take part in: :mod:`taskology.bench.fault_campaign`.

Example:
    >>> Injection("enospc_checkpoint", task="depth", at_step=30).marker_name
    'enospc_checkpoint-depth.fired'
"""
from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from distributed.diagnostics.plugin import WorkerPlugin

#: name prefixes of a TaskActor's training thread (taskology.engine.actor) and a SimActor's generator thread
TRAIN_THREAD_PREFIX = "taskology-train-"
SIM_THREAD_PREFIX = "SimActor["


@dataclass(frozen=True)
class Injection:
    """One fault fired inside a worker, once: ``kind`` (``nan_publication``, ``enospc_checkpoint``, or
    ``probe`` for tests), the task it hits, and the first step at which it may fire."""

    kind: str
    task: str = ""
    at_step: int = 0

    @property
    def marker_name(self) -> str:
        return f"{self.kind}-{self.task or 'any'}.fired"


def fire_once(marker: Path, record: dict[str, Any]) -> bool:
    """Create ``marker`` holding ``record`` (JSON) if it does not exist: True for the one caller, across
    every process, that created it; False for every other."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, json.dumps({**record, "time": time.time(), "pid": os.getpid()}).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def read_markers(marker_dir: Path) -> dict[str, dict[str, Any]]:
    """marker name -> its record, for every fault that fired."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(marker_dir).glob("*.fired")) if Path(marker_dir).is_dir() else []:
        try:
            out[path.name] = json.loads(path.read_text() or "{}")
        except ValueError:  # created, record not written yet (or its writer died)
            out[path.name] = {}
    return out


def probe_value() -> str:
    """What the ``probe`` injection wraps (tests of the fire-once mechanism)."""
    return "original"


def _install_probe(marker: Path, injection: Injection) -> None:
    module = sys.modules[__name__]
    original = module.probe_value
    if getattr(original, "_taskology_fault", False):
        return

    def probe() -> str:
        return "fired" if fire_once(marker, {"kind": injection.kind}) else original()

    probe._taskology_fault = True  # type: ignore[attr-defined]
    module.probe_value = probe  # type: ignore[attr-defined]


def _install_nan_publication(marker: Path, injection: Injection) -> None:
    import numpy as np

    from taskology.engine.runner import TaskRunner

    original = TaskRunner.predict_mediator
    if getattr(original, "_taskology_fault", False):
        return

    def predict_mediator(self: Any, *args: Any, **kwargs: Any) -> Any:
        predictions = original(self, *args, **kwargs)
        if (self.task_name != injection.task or int(self.step) < injection.at_step or not predictions.outputs
                or marker.exists()):
            return predictions
        outputs = {k: np.full_like(v, np.nan) if np.issubdtype(np.asarray(v).dtype, np.floating) else v
                   for k, v in predictions.outputs.items()}
        poisoned = sorted(k for k, v in outputs.items() if np.issubdtype(np.asarray(v).dtype, np.floating))
        if not poisoned or not fire_once(marker, {"kind": injection.kind, "task": self.task_name,
                                                  "step": int(self.step), "outputs": poisoned,
                                                  "rows": len(predictions.sample_ids)}):
            return predictions
        return dataclasses.replace(predictions, outputs=outputs)

    predict_mediator._taskology_fault = True  # type: ignore[attr-defined]
    TaskRunner.predict_mediator = predict_mediator  # type: ignore[method-assign]


def _install_enospc_checkpoint(marker: Path, injection: Injection) -> None:
    import torch

    original = torch.save
    if getattr(original, "_taskology_fault", False):
        return
    pattern = re.compile(rf"/checkpoints/{re.escape(injection.task)}/\.?step_(\d{{8}})\.pt")

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> Any:
        name = str(f) if isinstance(f, (str, os.PathLike)) else str(getattr(f, "name", ""))
        found = pattern.search(name)
        if found is None or int(found.group(1)) < injection.at_step or marker.exists():
            return original(obj, f, *args, **kwargs)
        final = str(Path(name).parent / f"step_{found.group(1)}.pt")
        if not fire_once(marker, {"kind": injection.kind, "task": injection.task, "step": int(found.group(1)),
                                  "path": final, "written": name}):
            return original(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        original(obj, buffer, *args, **kwargs)
        half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as handle:
                handle.write(half)
        else:
            f.write(half)
            f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)

    save._taskology_fault = True  # type: ignore[attr-defined]
    torch.save = save  # type: ignore[assignment]


INSTALLERS: dict[str, Callable[[Path, Injection], None]] = {
    "probe": _install_probe, "nan_publication": _install_nan_publication,
    "enospc_checkpoint": _install_enospc_checkpoint}


class FaultPlugin(WorkerPlugin):
    """Installs each :class:`Injection` in every worker process (restarted ones too); their markers go to
    ``marker_dir``. Installs that import torch run in a background thread: a worker whose start takes
    longer than the nanny allows is killed."""

    name = "taskology-bench-faults"

    def __init__(self, marker_dir: str | os.PathLike[str], injections: Sequence[Injection]) -> None:
        unknown = [i.kind for i in injections if i.kind not in INSTALLERS]
        if unknown:
            raise ValueError(f"unknown injection kind(s) {unknown}; available: {', '.join(INSTALLERS)}")
        self.marker_dir = str(marker_dir)
        self.injections = tuple(injections)

    def setup(self, worker: Any) -> None:
        light = [i for i in self.injections if i.kind == "probe"]
        heavy = [i for i in self.injections if i.kind != "probe"]
        self._install(light)
        if heavy:
            threading.Thread(target=self._install, args=(heavy,), name="taskology-bench-faults", daemon=True).start()

    def _install(self, injections: Sequence[Injection]) -> None:
        for injection in injections:
            INSTALLERS[injection.kind](Path(self.marker_dir) / injection.marker_name, injection)


def is_installed(kind: str) -> bool:
    """Whether ``kind``'s wrapper is in place in this process (run on a worker)."""
    if kind == "probe":
        return bool(getattr(sys.modules[__name__].probe_value, "_taskology_fault", False))
    if kind == "nan_publication":
        from taskology.engine.runner import TaskRunner

        return bool(getattr(TaskRunner.predict_mediator, "_taskology_fault", False))
    import torch

    return bool(getattr(torch.save, "_taskology_fault", False))


# ---- what a worker holds -----------------------------------------------------------------------------
#: TaskActor status fields the bench keeps (those the engine may add, e.g. dropped_publications, included)
TASK_FIELDS = ("state", "error", "step", "target", "checkpoint_step", "restored_from", "published_step",
               "dropped_publications", "rollbacks", "fetch_errors")


def worker_snapshot(dask_worker: Any = None) -> dict[str, Any]:
    """This worker's pid, the actors it holds (``{"kind": "task", "task", <TASK_FIELDS>, "loss"}`` or
    ``{"kind": "sim", "phase", "shards_done", "next_index", "in_progress"}``) and the names of the actors'
    training and generator threads alive in it (run through ``client.run``)."""
    actors = []
    for actor in list(getattr(dask_worker.state, "actors", {}).values()):
        if actor is None:
            continue
        try:
            status = actor.status()
        except Exception as exc:  # noqa: BLE001 - report, do not fail the snapshot
            status = {"state": "unreadable", "error": f"{type(exc).__name__}: {exc}"}
        if hasattr(actor, "task_name"):
            entry = {"kind": "task", "task": actor.task_name, **{k: status.get(k) for k in TASK_FIELDS if k in status}}
            entry["loss"] = (status.get("scalars") or {}).get("loss/total")
            if entry.get("error"):
                entry["error"] = str(entry["error"]).splitlines()[0]
        else:
            entry = {"kind": "sim", **{k: status.get(k) for k in ("phase", "shards_done", "next_index", "in_progress",
                                                                  "errors", "quarantined")}}
        actors.append(entry)
    threads = sorted(t.name for t in threading.enumerate()
                     if t.name.startswith((TRAIN_THREAD_PREFIX, SIM_THREAD_PREFIX)) and t.is_alive())
    return {"pid": os.getpid(), "actors": actors, "threads": threads}


__all__ = ["FaultPlugin", "Injection", "SIM_THREAD_PREFIX", "TRAIN_THREAD_PREFIX", "fire_once", "is_installed",
           "read_markers", "worker_snapshot"]
