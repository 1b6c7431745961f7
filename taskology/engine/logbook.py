"""Per-task training logs of a run: a JSON-lines scalar log and TensorBoard scalars.

Layout (shared with the distributed engine): ``<run_dir>/tensorboard/<task>/`` (event files) and
``<run_dir>/logs/<task>.jsonl`` (one ``{"step", "time", **scalars}`` object per logged step).
Evaluation results go to ``<run_dir>/metrics.json`` via :func:`taskology.atomic.write_json_atomic`.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping


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
