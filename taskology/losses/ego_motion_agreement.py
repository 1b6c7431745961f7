"""``ego_motion_agreement`` (rigid motion across modalities): the camera and the LiDAR ride one vehicle.

The camera ``motion`` task predicts ``cam_{t+1}_from_cam_t``; the ``tracking`` task predicts
``lidar_{t+1}_from_lidar_t``. Both sensors are bolted to the same rigid body, so with the mount
``cam_from_lidar = cam_from_ego @ inverse(lidar_from_ego)`` (calibration, in every batch):

    cam_from_lidar @ lidar_motion @ inverse(cam_from_lidar) = cam_motion

The loss is the L1 distance of the two sides' translations (metres) plus the L1 distance of their rotation
matrices (entry-wise: about the rotation angle in radians for small angles, no logarithm needed), averaged over
the batch. Both tasks receive it: a metric LiDAR ego-motion teaches the camera its translation scale, a camera
that resolves small rotations teaches the LiDAR. Zero on ground truth (both sides are the true motion).

Example:
    >>> import torch
    >>> motion = {"rotation": torch.zeros(1, 3), "translation": torch.tensor([[0.0, 0.0, 1.0]])}
    >>> tracking = {"ego_rotation": torch.zeros(1, 3), "ego_translation": torch.tensor([[1.0, 0.0, 0.0]])}
    >>> cam_from_ego = torch.tensor([[[0.0, -1, 0, 0], [0, 0, -1, 1.5], [1, 0, 0, 0], [0, 0, 0, 1]]])
    >>> batch = {"cam_from_ego": cam_from_ego, "lidar_from_ego": torch.eye(4)[None]}
    >>> float(ego_motion_agreement_loss({"motion": motion, "tracking": tracking}, batch, {}))  # x forward = z
    0.0
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from taskology.geometry.rigid import pose_from_axis_angle_torch
from taskology.tasks.base import Task


def camera_motion_from_lidar(lidar_motion: torch.Tensor, cam_from_ego: torch.Tensor,
                             lidar_from_ego: torch.Tensor) -> torch.Tensor:
    """(B, 4, 4) ``cam_{t+1}_from_cam_t`` implied by ``lidar_{t+1}_from_lidar_t`` and the two mounts."""
    cam_from_lidar = cam_from_ego.to(lidar_motion.dtype) @ torch.linalg.inv(lidar_from_ego.to(lidar_motion.dtype))
    return cam_from_lidar @ lidar_motion @ torch.linalg.inv(cam_from_lidar)


def ego_motion_agreement_terms(outputs: Mapping[str, Mapping[str, torch.Tensor]],
                               batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``translation`` (m) and ``rotation`` (matrix L1) disagreement of the two ego-motions, batch means."""
    motion, tracking = outputs["motion"], outputs["tracking"]
    camera = pose_from_axis_angle_torch(motion["rotation"], motion["translation"])
    lidar_motion = pose_from_axis_angle_torch(tracking["ego_rotation"], tracking["ego_translation"])
    implied = camera_motion_from_lidar(lidar_motion.to(camera.dtype), batch["cam_from_ego"], batch["lidar_from_ego"])
    return {"translation": (implied[:, :3, 3] - camera[:, :3, 3]).abs().sum(dim=1).mean(),
            "rotation": (implied[:, :3, :3] - camera[:, :3, :3]).abs().sum(dim=(1, 2)).mean()}


def ego_motion_agreement_loss(outputs: Mapping[str, Mapping[str, torch.Tensor]], batch: Mapping[str, Any],
                              tasks: Mapping[str, Task]) -> torch.Tensor:
    """Translation + rotation disagreement (module docstring) -> scalar."""
    terms = ego_motion_agreement_terms(outputs, batch)
    return terms["translation"] + terms["rotation"]
