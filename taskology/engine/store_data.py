"""Opening a task's datasets from the data store (``taskology.data``: shards + ``splits.json``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from taskology.engine.task_data import TaskData
from taskology.errors import NotYetAvailable


def open_store_task_data(task: Any, *, data_root: Path, config: Any, seed: int, with_mediator: bool) -> TaskData:
    try:
        from taskology.data import datasets  # noqa: F401
    except ImportError as exc:
        raise NotYetAvailable("the data store's torch datasets (taskology.data.datasets) are not available yet") from exc
    raise NotYetAvailable("adapter to taskology.data.datasets pending")
