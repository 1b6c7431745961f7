"""Per-task training logs of a run: a JSON-lines scalar log and TensorBoard scalars.

Layout (shared with the distributed engine): ``<run_dir>/tensorboard/<task>/`` (event files) and
``<run_dir>/logs/<task>.jsonl`` (one ``{"step", "time", **scalars}`` object per logged step).
Evaluation results go to ``<run_dir>/metrics.json`` via :func:`write_json_atomic`.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping


def write_json_atomic(path: Path, data: Any, default: Callable[[Any], Any] = float) -> Path:
    """Write ``data`` as indented JSON (sorted keys) to ``path`` atomically (temp file + fsync +
    os.replace); ``default`` turns what JSON cannot hold into what it can (``float``: NumPy scalars)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=default)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


class TaskLog:
    """Scalar log of one task: JSON lines + TensorBoard (``tensorboard=False`` skips the latter)."""

    def __init__(self, run_dir: Path, task: str, *, tensorboard: bool = True) -> None:
        self.task = task
        self.jsonl = Path(run_dir) / "logs" / f"{task}.jsonl"
        self.jsonl.parent.mkdir(parents=True, exist_ok=True)
        self._writer: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(Path(run_dir) / "tensorboard" / task))

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        record = {"step": int(step), "time": time.time(),
                  **{k: (float(v) if math.isfinite(float(v)) else None) for k, v in scalars.items()}}
        with open(self.jsonl, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in scalars.items():
                self._writer.add_scalar(key, float(value), int(step))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_log(path: Path) -> list[dict[str, Any]]:
    """Records of a ``.jsonl`` scalar log (a torn last line from a crash is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
