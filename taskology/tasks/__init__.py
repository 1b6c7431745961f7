"""Perception tasks: one module per task; the registry ``TASKS`` maps a name to its task class.

Example:
    >>> sorted(TASKS)
    ['depth', 'detection', 'motion', 'normals', 'segmentation', 'tracking']
    >>> build_task("depth", width=8).name
    'depth'
"""
from __future__ import annotations

from typing import Any

from taskology.errors import ConfigError
from taskology.tasks.base import MetricState, Task, add_metric_state
from taskology.tasks.depth import DepthTask
from taskology.tasks.detection import DetectionTask
from taskology.tasks.motion import MotionTask
from taskology.tasks.normals import NormalsTask
from taskology.tasks.segmentation import SegmentationTask
from taskology.tasks.tracking import TrackingTask

#: task name -> task class (a plain dict; adding a task is one module + one line here).
TASKS: dict[str, type[Task]] = {
    "depth": DepthTask,
    "normals": NormalsTask,
    "segmentation": SegmentationTask,
    "motion": MotionTask,
    "detection": DetectionTask,
    "tracking": TrackingTask,
}


def task_class(name: str) -> type[Task]:
    """Registry lookup whose error lists the available names."""
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}") from None


def build_task(name: str, **kwargs: Any) -> Task:
    """Instantiate task ``name`` with its keyword arguments (e.g. ``width``)."""
    return task_class(name)(**kwargs)


__all__ = ["TASKS", "Task", "MetricState", "add_metric_state", "task_class", "build_task"]
