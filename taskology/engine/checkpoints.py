"""Checkpoints: their names, atomic saves, ``weights_only`` loads, and the RNG states they carry.

One layout for every run, in-process or distributed::

    <run_dir>/checkpoints/<task>/step_00000123.pt             runner state (torch.save, loaded weights_only)
    <run_dir>/checkpoints/<task>/step_00000123.exchange.json  distributed runs: the actor's exchange state
    <run_dir>/checkpoints/<task>/step_00000123.pub.npz        distributed runs: its latest publication

A file is written to a temporary name and renamed (:func:`taskology.atomic.atomic_path`), so a crash leaves
the previous checkpoint whole and never a half-written one under a checkpoint's name. The side files of a
step are written before its ``.pt``: a step counts (:meth:`CheckpointDir.steps`) once its ``.pt`` exists. A
write that finds the disk full raises :class:`taskology.atomic.DiskFullError` (an ``OSError``), one line
naming the file; the earlier checkpoints are untouched and no temp file is left.

Loading never unpickles: ``torch.load(..., weights_only=True)`` and ``np.load(..., allow_pickle=False)``; a
runner's RNG states are therefore stored as tensors and primitives (:func:`rng_state`). Before that, the
zip archive's CRC-32 of every member is checked (``torch.load`` does not check them, so overwritten tensor
bytes would load silently).

Resuming takes the newest *readable* step: its ``.pt`` loads and holds a runner state (a mapping with
``step`` equal to the file's step, ``model`` and ``optimizer``; ``task``, where present, equal to the
folder's task), and its side files, where present, read back (a step without side files resumes with an
empty exchange state: the in-process run writes none). Newer steps that do not read back are renamed
``<name>.corrupt`` (kept for inspection, no longer counted) and one logged line names each file, says why in
a few words and which step the run resumes from (:meth:`CheckpointDir.newest_readable`, and for the
in-process run :func:`latest_common_step`). A folder without checkpoints starts from step 0; a folder
whose checkpoints are all unreadable is a :class:`~taskology.errors.DataError` naming the folder (nothing
is renamed then, and nothing restarts from step 0 on its own).

Example:
    >>> checkpoint_path(Path("runs/x"), "depth", 123).as_posix()
    'runs/x/checkpoints/depth/step_00000123.pt'
"""
from __future__ import annotations

import json
import logging
import random
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from taskology.atomic import atomic_path, write_bytes_atomic
from taskology.engine.protocol import Predictions
from taskology.errors import DataError

#: the name of a complete runner checkpoint (temporary files of a crashed writer never match it)
CHECKPOINT_NAME = re.compile(r"^step_(\d{8})\.pt$")
#: the name of a side file of a step (:meth:`CheckpointDir.save_side`)
SIDE_NAME = re.compile(r"^step_(\d{8})\.(exchange\.json|pub\.npz)$")
#: the entries every runner state holds (a runner may add more)
STATE_KEYS = ("step", "model", "optimizer")
#: suffix of a checkpoint file set aside at resume because it does not read back
CORRUPT_SUFFIX = ".corrupt"

_log = logging.getLogger(__name__)


class UnreadableCheckpoint(DataError):
    """A checkpoint file or side file that does not read back: ``path``, ``reason`` (a few words).

    Example:
        >>> str(UnreadableCheckpoint(Path("c/step_00000004.pt"), "empty file"))
        'c/step_00000004.pt: unreadable checkpoint: empty file'
    """

    def __init__(self, path: Path, reason: str, what: str = "checkpoint") -> None:
        super().__init__(f"{path}: unreadable {what}: {reason}")
        self.path, self.reason, self.what = Path(path), reason, what

    def __reduce__(self) -> tuple[Any, ...]:  # pickles through Dask like any exception
        return type(self), (self.path, self.reason, self.what)


def checkpoint_path(run_dir: Path, task: str, step: int) -> Path:
    """Where ``task``'s checkpoint of optimizer step ``step`` lives under ``run_dir``."""
    return Path(run_dir) / "checkpoints" / task / f"step_{step:08d}.pt"


def checkpoint_steps(run_dir: Path, task: str) -> list[int]:
    """Steps with a complete checkpoint of ``task`` in ``run_dir``, ascending."""
    return CheckpointDir(Path(run_dir) / "checkpoints" / task).steps()


def latest_common_step(run_dir: Path, tasks: list[str]) -> int | None:
    """The newest step for which every task has a readable checkpoint (:func:`check_checkpoint`).

    None when the tasks share no step (the in-process run then starts from step 0). A newer common step
    passed over because a file does not read back is logged in one line (files, reasons, the step chosen);
    when no common step reads back, a DataError names ``run_dir/checkpoints``.
    """
    common: set[int] | None = None
    for task in tasks:
        steps = set(checkpoint_steps(run_dir, task))
        common = steps if common is None else common & steps
    if not common:
        return None
    skipped: list[str] = []
    for step in sorted(common, reverse=True):
        problems = []
        for task in tasks:
            try:
                check_checkpoint(checkpoint_path(run_dir, task, step), step=step, task=task)
            except UnreadableCheckpoint as exc:
                problems.append(f"{task}/{exc.path.name} ({exc.reason})")
        if not problems:
            if skipped:
                _log.warning("%s: resuming from step %d: passed over unreadable %s", Path(run_dir) / "checkpoints",
                             step, "; ".join(skipped))
            return step
        skipped += problems
    raise DataError(f"{Path(run_dir) / 'checkpoints'}: no step with a readable checkpoint of every task "
                    f"({len(common)} common step(s); newest: {skipped[0]}); repair or remove them to start from step 0")


def save_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """``torch.save(state)`` to ``path`` atomically (temp file, fsync, rename); a full disk raises
    :class:`~taskology.atomic.DiskFullError` naming ``path`` (the file there, if any, unchanged)."""
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as handle:
        torch.save(dict(state), handle)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` after checking the archive's CRC-32s; an unreadable file is an
    :class:`UnreadableCheckpoint` (a DataError) naming it and saying why in a few words."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise UnreadableCheckpoint(path, "empty file")
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except FileNotFoundError:
        raise DataError(f"{path}: checkpoint not found") from None
    except zipfile.BadZipFile:
        raise UnreadableCheckpoint(path, "not a whole zip archive (truncated or overwritten)") from None
    except OSError as exc:
        raise UnreadableCheckpoint(path, f"cannot be read ({exc.strerror or exc})") from exc
    if bad_member is not None:
        raise UnreadableCheckpoint(path, f"CRC-32 mismatch in {bad_member} (bytes overwritten)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt files raise many kinds of errors
        first = (str(exc).splitlines() or [""])[0][:120]
        raise UnreadableCheckpoint(path, f"torch.load failed ({type(exc).__name__}: {first})") from exc


def state_problem(state: Any, step: int | None = None, task: str | None = None) -> str | None:
    """Why ``state`` is not a runner state (of ``step``, of ``task``), in a few words; None when it is one.

    Example:
        >>> state_problem({"step": 4, "model": {}, "optimizer": {}}, step=4)
        >>> state_problem({"weights": torch.zeros(2)})
        'holds no step, model, optimizer (not a runner state)'
        >>> state_problem({"step": 3, "model": {}, "optimizer": {}}, step=4)
        'holds step 3, not 4'
    """
    if not isinstance(state, Mapping):
        return f"holds a {type(state).__name__}, not a runner state"
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        return f"holds no {', '.join(missing)} (not a runner state)"
    if not isinstance(state["model"], Mapping) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        return "its model entry is not a mapping of tensors"
    if isinstance(state["step"], bool) or not isinstance(state["step"], int):
        return f"its step is a {type(state['step']).__name__}, not an int"
    if step is not None and state["step"] != step:
        return f"holds step {state['step']}, not {step}"
    if task is not None and "task" in state and state["task"] != task:
        return f"is a checkpoint of task {state['task']!r}, not {task!r}"
    return None


def check_checkpoint(path: Path, *, step: int | None = None, task: str | None = None) -> None:
    """Raise :class:`UnreadableCheckpoint` unless ``path`` loads (:func:`load_checkpoint`) and holds a runner
    state of ``step`` and ``task`` (:func:`state_problem`)."""
    problem = state_problem(load_checkpoint(path), step, task)
    if problem is not None:
        raise UnreadableCheckpoint(Path(path), problem)


class CheckpointDir:
    """``<run_dir>/checkpoints/<task>/``: numbered atomic checkpoints with their exchange side files."""

    def __init__(self, root: Path, keep: int = 2) -> None:
        self.root = Path(root)
        self.keep = max(int(keep), 1)

    def path(self, step: int) -> Path:
        return self.root / f"step_{step:08d}.pt"

    def side_paths(self, step: int) -> tuple[Path, Path]:
        """The exchange state (JSON) and publication (npz) files of ``step``."""
        base = self.path(step).with_suffix("")
        return base.with_suffix(".exchange.json"), base.with_suffix(".pub.npz")

    def steps(self) -> list[int]:
        """Steps with a complete checkpoint, ascending (temp files of a crashed writer are ignored)."""
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := CHECKPOINT_NAME.match(p.name)))

    def latest(self) -> Path | None:
        steps = self.steps()
        return self.path(steps[-1]) if steps else None

    def save_side(self, step: int, exchange_state: Mapping[str, Any], publication: Predictions | None) -> None:
        """Write the exchange state (JSON) and the latest publication (npz, no pickle) atomically. Call it
        before writing the step's ``.pt``, which marks the step complete."""
        js, npz = self.side_paths(step)
        write_bytes_atomic(js, json.dumps(dict(exchange_state)).encode())
        if publication is not None:
            arrays = {f"out_{k}": v for k, v in publication.outputs.items()}
            with atomic_path(npz) as tmp:
                np.savez(tmp, sample_ids=np.asarray(publication.sample_ids, dtype=str),
                         meta=np.asarray([publication.step, publication.wall_time], dtype=np.float64), **arrays)

    def load_side(self, step: int, task: str) -> tuple[dict[str, Any], Predictions | None]:
        """The exchange state and publication :meth:`save_side` wrote for ``step`` (empty / None if absent);
        a side file that exists but does not read back is an :class:`UnreadableCheckpoint` naming it."""
        js, npz = self.side_paths(step)
        state: dict[str, Any] = {}
        if js.is_file():
            try:
                state = json.loads(js.read_text())
            except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                raise UnreadableCheckpoint(js, f"{type(exc).__name__}: {str(exc)[:80]}", "exchange state") from exc
            if not isinstance(state, dict):
                raise UnreadableCheckpoint(js, f"holds a JSON {type(state).__name__}, not an object", "exchange state")
        pub = None
        if npz.is_file():
            try:
                with np.load(npz, allow_pickle=False) as z:
                    outputs = {k[4:]: z[k] for k in z.files if k.startswith("out_")}  # reading checks CRC-32s
                    meta, ids = z["meta"], [str(s) for s in z["sample_ids"]]
                pub = Predictions(task, int(meta[0]), float(meta[1]), ids, outputs)
            except Exception as exc:  # noqa: BLE001 - a damaged npz raises zipfile, OS, value and key errors
                raise UnreadableCheckpoint(npz, f"{type(exc).__name__}: {str(exc)[:80]}", "publication") from exc
        return state, pub

    def newest_readable(self, task: str | None = None) -> tuple[int, dict[str, Any], Predictions | None] | None:
        """The step to resume from, with its side state and publication: the newest step whose checkpoint
        holds a runner state (:func:`check_checkpoint`) and whose side files read back.

        Unreadable newer steps have their files renamed ``<name>.corrupt`` and are named, with the reason
        and the step chosen instead, in one logged warning. None when there is no checkpoint; a DataError
        naming this folder (nothing renamed) when none reads back.
        """
        steps = self.steps()
        skipped: list[tuple[int, UnreadableCheckpoint]] = []
        for step in reversed(steps):
            try:
                check_checkpoint(self.path(step), step=step, task=task)
                state, pub = self.load_side(step, task or self.root.name)
            except UnreadableCheckpoint as exc:
                skipped.append((step, exc))
                continue
            if skipped:
                for bad_step, _ in skipped:
                    self._set_aside(bad_step)
                _log.warning("%s: resuming from step %d: %s", self.root, step, "; ".join(
                    f"{exc.path.name} unreadable ({exc.reason}), set aside as {exc.path.name}{CORRUPT_SUFFIX}"
                    for _, exc in skipped))
            return step, state, pub
        if not skipped:
            return None
        newest = skipped[0][1]
        raise DataError(f"{self.root}: none of the {len(steps)} checkpoint(s) is readable (newest: "
                        f"{newest.path.name}, {newest.reason}); repair or remove them to start this task from step 0")

    def _set_aside(self, step: int) -> None:
        """Rename every file of ``step`` to ``<name>.corrupt`` (the step no longer counts)."""
        for p in (self.path(step), *self.side_paths(step)):
            if p.exists():
                p.replace(p.with_name(p.name + CORRUPT_SUFFIX))

    def prune(self) -> None:
        """Delete all but the newest ``keep`` checkpoints with their side files, and side files left without
        a checkpoint (a save that failed after them) older than the newest kept one."""
        steps = self.steps()
        for step in steps[:-self.keep]:
            for p in (self.path(step), *self.side_paths(step)):
                p.unlink(missing_ok=True)
        if not steps:
            return
        for p in self.root.iterdir():
            m = SIDE_NAME.match(p.name)
            if m and int(m.group(1)) < steps[-1] and int(m.group(1)) not in steps:
                p.unlink(missing_ok=True)


# -- RNG states as tensors and primitives (a weights_only load cannot hold arbitrary objects) ------------
def rng_state(device: torch.device) -> dict[str, Any]:
    """The torch (and, on ``device`` cuda, CUDA), NumPy-global and Python ``random`` states."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                       "gauss": gauss if gauss is not None else float("nan")}}


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached"]))
    python = state["python"]
    gauss = python["gauss"]
    gauss = None if isinstance(gauss, float) and np.isnan(gauss) else gauss
    random.setstate((python["version"], tuple(int(x) for x in python["internal"].tolist()), gauss))


__all__ = ["CHECKPOINT_NAME", "CORRUPT_SUFFIX", "CheckpointDir", "STATE_KEYS", "UnreadableCheckpoint",
           "check_checkpoint", "checkpoint_path", "checkpoint_steps", "latest_common_step", "load_checkpoint",
           "rng_state", "save_checkpoint", "set_rng_state", "state_problem"]
