"""Which layers are labels of which task, and which are inputs every task may see.

This table is the single definition of label visibility: the splits manifest draws a label mask per
task, and the torch datasets yield a layer only if :func:`visible_layers` allows it in that split.

Example:
    >>> TASK_LABELS["depth"]
    ('camera/depth',)
    >>> "camera/depth" in visible_layers("mediator", "depth")
    False
"""
from __future__ import annotations

from taskology.data.schema import LAYERS
from taskology.errors import ConfigError, DataError

#: layers every task may see in every split (sensor inputs and calibration).
INPUT_LAYERS: tuple[str, ...] = ("camera/rgb", "camera/K", "camera/cam_from_ego", "lidar/points",
                                 "lidar/offsets", "lidar/lidar_from_ego")

_OBJECTS = ("objects/track_id", "objects/class_id", "objects/box", "objects/velocity", "objects/offsets")

#: task -> its label layers (visible to that task on its labeled train frames, and in test).
TASK_LABELS: dict[str, tuple[str, ...]] = {
    "depth": ("camera/depth",),
    "normals": ("camera/normals",),
    "segmentation": ("camera/semantic",),
    "motion": ("ego/world_from_ego", "camera/instance", *_OBJECTS),
    "detection": (*_OBJECTS, "lidar/semantic", "lidar/instance"),
    "tracking": (*_OBJECTS, "lidar/semantic", "lidar/instance"),
}

#: tasks whose samples are frame pairs (t, t+1); their label mask is drawn pair by pair.
PAIR_TASKS: frozenset[str] = frozenset({"motion", "tracking"})

SPLITS: tuple[str, ...] = ("train", "mediator", "val", "test")


def check_task(task: str) -> str:
    """Return ``task`` if it is in :data:`TASK_LABELS`, else a ConfigError listing the known tasks."""
    if task not in TASK_LABELS:
        raise ConfigError(f"unknown task {task!r}; available: {', '.join(sorted(TASK_LABELS))}")
    return task


def visible_layers(split: str, task: str | None) -> frozenset[str]:
    """Layers a ``task`` may see in ``split``: train -> inputs + its labels; mediator -> inputs; val and
    test -> everything. ``task`` is required for train."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
    if split in ("val", "test"):
        return frozenset(LAYERS)
    if split == "mediator":
        return frozenset(INPUT_LAYERS)
    if task is None:
        raise DataError("the train split needs a task: labels are visible per task")
    return frozenset(INPUT_LAYERS) | frozenset(TASK_LABELS[check_task(task)])
