"""Which layers every task may see, and which only the task they label.

The inputs (sensor data and calibration, :data:`INPUT_LAYERS`) are visible in every split. Every other layer is
a label: in the train split a task sees only its own labels (its ``label_layers``), on its labelled frames; in
the mediator split nobody sees any; in the held-out val and test splits every layer is visible. The torch
datasets yield a layer only if :func:`visible_layers` allows it, so a hidden label can never leak into
training. Which layers label which task is the task's own declaration (``taskology.tasks``); this module
knows no task.

Example:
    >>> "camera/depth" in visible_layers("mediator")
    False
    >>> "camera/depth" in visible_layers("train", labels=("camera/depth",))
    True
"""
from __future__ import annotations

from typing import Sequence

from taskology.data.schema import LAYERS
from taskology.errors import DataError

#: layers every task may see in every split (sensor inputs and calibration).
INPUT_LAYERS: tuple[str, ...] = ("camera/rgb", "camera/K", "camera/cam_from_ego", "lidar/points",
                                 "lidar/offsets", "lidar/lidar_from_ego")

SPLITS: tuple[str, ...] = ("train", "mediator", "val", "test")


def visible_layers(split: str, labels: Sequence[str] = ()) -> frozenset[str]:
    """Layers visible in ``split`` to a task whose label layers are ``labels``: train -> inputs + its labels;
    mediator -> inputs; val and test -> everything."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
    if split in ("val", "test"):
        return frozenset(LAYERS)
    if split == "mediator":
        return frozenset(INPUT_LAYERS)
    unknown = sorted(set(labels) - set(LAYERS))
    if unknown:
        raise DataError(f"unknown label layers {unknown}; schema layers: {sorted(LAYERS)}")
    return frozenset(INPUT_LAYERS) | frozenset(labels)
