"""Checkpoints: their names, atomic saves, ``weights_only`` loads, and the RNG states they carry.

One layout for every run, in-process or distributed::

    <run_dir>/checkpoints/<task>/step_00000123.pt             runner state (torch.save, loaded weights_only)
    <run_dir>/checkpoints/<task>/step_00000123.exchange.json  distributed runs: the actor's exchange state
    <run_dir>/checkpoints/<task>/step_00000123.pub.npz        distributed runs: its latest publication

A file is written to a temporary name and renamed (:func:`taskology.atomic.atomic_path`), so a crash leaves
the previous checkpoint whole and never a half-written one under a checkpoint's name. Loading never
unpickles: ``torch.load(..., weights_only=True)`` and ``np.load(..., allow_pickle=False)``; a runner's RNG
states are therefore stored as tensors and primitives (:func:`rng_state`).

Example:
    >>> checkpoint_path(Path("runs/x"), "depth", 123).as_posix()
    'runs/x/checkpoints/depth/step_00000123.pt'
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from taskology.atomic import atomic_path, write_bytes_atomic
from taskology.engine.protocol import Predictions
from taskology.errors import DataError

#: the name of a complete runner checkpoint (temporary files of a crashed writer never match it)
CHECKPOINT_NAME = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_path(run_dir: Path, task: str, step: int) -> Path:
    """Where ``task``'s checkpoint of optimizer step ``step`` lives under ``run_dir``."""
    return Path(run_dir) / "checkpoints" / task / f"step_{step:08d}.pt"


def checkpoint_steps(run_dir: Path, task: str) -> list[int]:
    """Steps with a complete checkpoint of ``task`` in ``run_dir``, ascending."""
    return CheckpointDir(Path(run_dir) / "checkpoints" / task).steps()


def latest_common_step(run_dir: Path, tasks: list[str]) -> int | None:
    """The newest step for which every task has a checkpoint (None if there is none)."""
    common: set[int] | None = None
    for task in tasks:
        steps = set(checkpoint_steps(run_dir, task))
        common = steps if common is None else common & steps
    return max(common) if common else None


def save_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """``torch.save(state)`` to ``path`` atomically (temp file, fsync, rename)."""
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as handle:
        torch.save(dict(state), handle)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with a DataError naming the file when it is unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # noqa: BLE001 - corrupt/truncated files raise many kinds of errors
        raise DataError(f"{path}: unreadable checkpoint: {type(exc).__name__}: {exc}") from exc


class CheckpointDir:
    """``<run_dir>/checkpoints/<task>/``: numbered atomic checkpoints with their exchange side files."""

    def __init__(self, root: Path, keep: int = 2) -> None:
        self.root = Path(root)
        self.keep = max(int(keep), 1)

    def path(self, step: int) -> Path:
        return self.root / f"step_{step:08d}.pt"

    def steps(self) -> list[int]:
        """Steps with a complete checkpoint, ascending (temp files of a crashed writer are ignored)."""
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := CHECKPOINT_NAME.match(p.name)))

    def latest(self) -> Path | None:
        steps = self.steps()
        return self.path(steps[-1]) if steps else None

    def save_side(self, step: int, exchange_state: Mapping[str, Any], publication: Predictions | None) -> None:
        """Write the exchange state (JSON) and the latest publication (npz, no pickle) atomically."""
        base = self.path(step).with_suffix("")
        write_bytes_atomic(base.with_suffix(".exchange.json"), json.dumps(dict(exchange_state)).encode())
        if publication is not None:
            arrays = {f"out_{k}": v for k, v in publication.outputs.items()}
            with atomic_path(base.with_suffix(".pub.npz")) as tmp:
                np.savez(tmp, sample_ids=np.asarray(publication.sample_ids, dtype=str),
                         meta=np.asarray([publication.step, publication.wall_time], dtype=np.float64), **arrays)

    def load_side(self, step: int, task: str) -> tuple[dict[str, Any], Predictions | None]:
        """The exchange state and publication :meth:`save_side` wrote for ``step`` (empty / None if absent)."""
        base = self.path(step).with_suffix("")
        state: dict[str, Any] = {}
        js = base.with_suffix(".exchange.json")
        if js.is_file():
            state = json.loads(js.read_text())
        pub = None
        npz = base.with_suffix(".pub.npz")
        if npz.is_file():
            with np.load(npz, allow_pickle=False) as z:
                outputs = {k[4:]: z[k] for k in z.files if k.startswith("out_")}
                pub = Predictions(task, int(z["meta"][0]), float(z["meta"][1]), [str(s) for s in z["sample_ids"]],
                                  outputs)
        return state, pub

    def prune(self) -> None:
        """Delete all but the newest ``keep`` checkpoints (and their side files)."""
        for step in self.steps()[:-self.keep]:
            base = self.path(step).with_suffix("")
            for p in (self.path(step), base.with_suffix(".exchange.json"), base.with_suffix(".pub.npz")):
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


__all__ = ["CHECKPOINT_NAME", "CheckpointDir", "checkpoint_path", "checkpoint_steps", "latest_common_step",
           "load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]
