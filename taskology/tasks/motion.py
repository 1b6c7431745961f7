"""Ego-motion and object motion from a frame pair (t, t+1).

Outputs (docs/conventions.md: ego-motion is ``cam_{t+1}_from_cam_t``):

- ``rotation`` (B, 3): axis-angle (radians) of ``cam_{t+1}_from_cam_t``;
- ``translation`` (B, 3): its translation, metres;
- ``object_translation`` (B, 3, H, W): per pixel of frame t, the extra 3D translation (metres, camera
  t+1 axes) of the scene point beyond what ego-motion explains; zero on static surfaces. This is the
  ``object_translation`` argument of :func:`taskology.geometry.warp.warp_frame` (added after the rigid
  motion); see :mod:`taskology.tasks.motion_targets` for the ground-truth definition.

A pair U-Net (6 input channels) predicts the dense field; a global head on its bottleneck predicts
ego-motion (small initial scale: motions between frames are small). Supervision: L1 on rotation
(radians) and translation (metres), L1 on the object-translation field where labelled. Metrics:
ego translation error (m, Euclidean), ego rotation error (deg, angle of R_pred^T R_gt), object-motion
end-point error (m) on pixels of movable objects.

Example:
    >>> task = MotionTask(width=4)
    >>> out = task.forward(task.build_model(), {"rgb": torch.rand(1, 3, 32, 96), "rgb_next": torch.rand(1, 3, 32, 96)})
    >>> out["rotation"].shape, out["object_translation"].shape
    (torch.Size([1, 3]), torch.Size([1, 3, 32, 96]))
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from taskology.geometry.rigid import pose_from_axis_angle_torch, so3_exp_torch
from taskology.tasks.base import MetricState, Task, mean_state
from taskology.tasks.motion_targets import motion_targets
from taskology.tasks.unet import CompactUNet


class MotionNet(nn.Module):
    """Pair U-Net: dense object-translation head + global ego-motion head (6 numbers)."""

    def __init__(self, *, width: int, rotation_scale: float, translation_scale: float,
                 object_scale: float) -> None:
        super().__init__()
        self.unet = CompactUNet(in_channels=6, out_channels=3, width=width)
        c = self.unet.bottleneck_channels
        self.ego_head = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ELU(inplace=True), nn.Conv2d(c, 6, 1))
        self.rotation_scale = rotation_scale
        self.translation_scale = translation_scale
        self.object_scale = object_scale

    def forward(self, rgb: torch.Tensor, rgb_next: torch.Tensor) -> dict[str, torch.Tensor]:
        dense, bottleneck = self.unet.forward_with_bottleneck(torch.cat([rgb, rgb_next], dim=1))
        ego = self.ego_head(bottleneck).mean(dim=(2, 3))                 # (B, 6)
        return {"rotation": ego[:, :3] * self.rotation_scale,            # (B, 3) radians
                "translation": ego[:, 3:] * self.translation_scale,      # (B, 3) metres
                "object_translation": dense * self.object_scale}         # (B, 3, H, W) metres


def ego_motion_matrix(outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """(B, 4, 4) ``cam_{t+1}_from_cam_t`` from the ``rotation`` / ``translation`` outputs."""
    return pose_from_axis_angle_torch(outputs["rotation"], outputs["translation"])


class MotionTask(Task):
    """Ego-motion + dense object translation from an RGB pair.

    Args:
        width: base channels of the U-Net.
        rotation_scale, translation_scale, object_scale: output scales (radians, metres, metres)
            applied to the raw heads.
    """

    name: ClassVar[str] = "motion"
    label_layers: ClassVar[tuple[str, ...]] = ("ego/world_from_ego", "camera/instance", "objects/track_id",
                                               "objects/class_id", "objects/box")
    pair: ClassVar[bool] = True

    def __init__(self, *, width: int = 16, rotation_scale: float = 0.01, translation_scale: float = 0.1,
                 object_scale: float = 0.1) -> None:
        self.width = width
        self.scales = dict(rotation_scale=rotation_scale, translation_scale=translation_scale,
                           object_scale=object_scale)

    def prepare(self, sample: Mapping[str, Any], *, augment: bool = False) -> dict[str, Any]:
        """The pair's labels from poses, instance masks and boxes (:func:`~taskology.tasks.motion_targets.motion_targets`):
        ``cam_next_from_cam``, ``object_translation``, ``object_translation_valid``, ``movable``."""
        out = dict(sample)
        if "instance" in sample and "world_from_ego_next" in sample and "boxes" in sample:
            targets = motion_targets(
                world_from_ego=sample["world_from_ego"].double().numpy(),
                world_from_ego_next=sample["world_from_ego_next"].double().numpy(),
                cam_from_ego=sample["cam_from_ego"].double().numpy(),
                instance=sample["instance"].numpy(), track_id=sample["track_id"].numpy(),
                class_id=sample["class_id"].numpy(), box=sample["boxes"].double().numpy(),
                track_id_next=sample["track_id_next"].numpy(), box_next=sample["boxes_next"].double().numpy())
            out.update({key: torch.from_numpy(value) for key, value in targets.items()})
        return out

    def build_model(self) -> nn.Module:
        return MotionNet(width=self.width, **self.scales)

    def forward(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return model(batch["rgb"], batch["rgb_next"])

    @staticmethod
    def _gt_rotation_translation(batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        pose = batch["cam_next_from_cam"]                                 # (B, 4, 4)
        return pose[:, :3, :3], pose[:, :3, 3]

    def supervised_loss(self, outputs: Mapping[str, torch.Tensor],
                        batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rot_gt, trans_gt = self._gt_rotation_translation(batch)
        rot_pred = so3_exp_torch(outputs["rotation"])
        losses = {
            # Frobenius distance of rotation matrices ~ angle for small angles, no log needed.
            "ego_rotation": (rot_pred - rot_gt.to(rot_pred.dtype)).abs().sum(dim=(1, 2)).mean(),
            "ego_translation": (outputs["translation"] - trans_gt.to(rot_pred.dtype)).abs().sum(dim=1).mean(),
        }
        valid = batch["object_translation_valid"].to(outputs["object_translation"].dtype)   # (B, 1, H, W)
        err = (outputs["object_translation"] - batch["object_translation"]).abs().sum(dim=1, keepdim=True)
        losses["object_translation"] = (err * valid).sum() / valid.sum().clamp_min(1.0)
        return losses

    def metrics(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> MetricState:
        rot_gt, trans_gt = self._gt_rotation_translation(batch)
        rot_pred = so3_exp_torch(outputs["rotation"].detach().double())
        rel = rot_pred.transpose(1, 2) @ rot_gt.double()
        cos = ((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
        state: MetricState = {}
        state.update(mean_state("ego_rotation_err_deg", torch.rad2deg(torch.acos(cos))))
        state.update(mean_state("ego_translation_err_m",
                                (outputs["translation"].detach().double() - trans_gt.double()).norm(dim=1)))
        epe = (outputs["object_translation"].detach().double() - batch["object_translation"].double()).norm(
            dim=1, keepdim=True)
        mask = batch["movable"].bool() & batch["object_translation_valid"].bool()
        state.update(mean_state("object_epe_m", epe, mask))
        return state
