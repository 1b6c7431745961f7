"""``segmentation_motion``: only movable classes move on their own.

With ``p_static`` the softmax probability of the non-movable classes (everything outside
``MOVABLE_CLASS_IDS``) and ``m = |object_translation|`` (metres, motion task), the loss is
``mean(p_static * tanh(m / MOTION_SCALE_M))``: object motion must vanish on static classes (feeds
motion) and pixels that move independently must be movable (feeds segmentation). Zero on ground
truth: static pixels have no object motion and moving pixels are movable.

Option ``segmentation_tolerance_m`` (``relations.segmentation_motion.options``, default 0): when
segmentation is the receiver, motion below this magnitude teaches it nothing:
``mean(p_static * tanh(relu(m - tol) / MOTION_SCALE_M))``, so the motion network's noise on static
scenery does not drain probability from the static classes. Motion, as receiver, keeps the full term.

Example:
    >>> from taskology.tasks.segmentation import SegmentationTask
    >>> seg = SegmentationTask(width=4, class_ids=(1, 14))                  # road (static), car
    >>> logits = torch.tensor([10.0, -10.0]).view(1, 2, 1, 1)              # road
    >>> moving = {"object_translation": torch.tensor([0.0, 0, 1]).view(1, 3, 1, 1)}
    >>> loss = segmentation_motion_loss({"segmentation": {"logits": logits}, "motion": moving}, {},
    ...                                 {"segmentation": seg})
    >>> round(float(loss), 3)
    1.0
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from taskology.data.schema import MOVABLE_CLASS_IDS
from taskology.tasks.base import Task

#: object motion (metres per frame) at which tanh saturates ~0.76: 0.1 m is a slow pedestrian step.
MOTION_SCALE_M = 0.1


def segmentation_motion_loss(outputs: Mapping[str, Mapping[str, torch.Tensor]], batch: Mapping[str, Any],
                             tasks: Mapping[str, Task], *, receiver: str | None = None,
                             segmentation_tolerance_m: float = 0.0) -> torch.Tensor:
    """``mean(p_static * tanh(|object_translation| / 0.1 m))`` -> scalar in [0, 1] (hinged at
    ``segmentation_tolerance_m`` for the segmentation receiver, module docstring; its valid range is
    declared once, in ``RELATIONS``)."""
    logits = outputs["segmentation"]["logits"]
    translation = outputs["motion"]["object_translation"].to(logits.dtype)   # (B, 3, H, W)
    magnitude = torch.sqrt((translation ** 2).sum(dim=1, keepdim=True) + 1e-12)
    p_static = 1.0 - tasks["segmentation"].class_probability(logits, MOVABLE_CLASS_IDS)
    if receiver == "segmentation" and segmentation_tolerance_m > 0:
        magnitude = (magnitude - float(segmentation_tolerance_m)).clamp_min(0.0)
    return (p_static * torch.tanh(magnitude / MOTION_SCALE_M)).mean()
