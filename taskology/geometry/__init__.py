"""3D geometry: Numba kernels, their NumPy references and differentiable torch twins.

Conventions (docs/conventions.md): transforms are 4x4 ``dst_from_src`` float64; camera frame is OpenCV
(x right, y down, z forward); ego/LiDAR frame x forward, y left, z up; boxes are (N,7)
``(x, y, z, l, w, h, yaw)`` float64 in the ego frame; normals point towards the camera.

Modules: :mod:`.rigid` (transforms, SO(3)), :mod:`.kabsch` (rigid fits), :mod:`.camera`
(unproject, project, normals from depth), :mod:`.warp` (differentiable photometric warp),
:mod:`.boxes` / :mod:`.box_iou` / :mod:`.boxes_match` (3D boxes). Names are re-exported here lazily,
so ``import taskology.geometry`` stays cheap (no torch import until a torch twin is used).
``taskology.geometry.kabsch`` is the submodule; its function is ``taskology.geometry.kabsch.kabsch``.

Example:
    >>> import numpy as np
    >>> from taskology.geometry import box_iou_bev
    >>> box = np.array([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.3]])
    >>> float(box_iou_bev(box, box)[0, 0])
    1.0
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["transform_points", "transform_points_per_object", "compose", "invert", "so3_exp", "so3_log",
                     "so3_exp_torch", "transform_points_torch", "pose_from_axis_angle_torch"], "rigid"),
    **dict.fromkeys(["kabsch_batched", "KabschBatchResult", "DegeneratePointSetError"], "kabsch"),
    **dict.fromkeys(["points_from_depth", "project_points", "normals_from_depth", "points_from_depth_torch",
                     "project_points_torch", "normals_from_depth_torch"], "camera"),
    **dict.fromkeys(["warp_frame", "WarpResult"], "warp"),
    **dict.fromkeys(["box_corners", "points_in_boxes", "points_in_boxes_mask", "transform_boxes", "box_motion",
                     "box_poses", "validate_boxes"], "boxes"),
    **dict.fromkeys(["box_iou_bev", "box_iou_3d", "nms_bev"], "box_iou"),
    **dict.fromkeys(["match_boxes"], "boxes_match"),
    **dict.fromkeys(["BevGrid", "bev_pillars", "augment_sweep"], "pillars"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'taskology.geometry' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
