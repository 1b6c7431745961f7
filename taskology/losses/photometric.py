"""``photometric``: depth of frame t + ego-motion + object motion must warp frame t+1 onto frame t.

Frame t+1 is sampled where frame t's points land (:func:`taskology.geometry.warp.warp_frame`). The
per-pixel error mixes SSIM and L1 (``0.85 * (1 - SSIM) / 2 + 0.15 * |I_t - I_warped|``, Godard et al.,
Gordon et al. 2019). Masking (Monodepth2-style auto-masking, occlusion-aware):

- pixels the warp cannot explain (no depth, behind camera t+1, outside the image) are dropped;
- pixels whose warped error is not below the error of the *unwarped* frame t+1 are dropped
  (static-camera / occluded / disoccluded pixels, where a correct geometry cannot lower the error).

An edge-aware smoothness term on mean-normalised inverse depth (weight ``SMOOTHNESS_WEIGHT``) regularises
depth where colour is flat. Feeds depth and motion.

Option ``depth_scale_gradient`` (``relations.photometric.options``, default 1): the share of the warp's
gradient that reaches the *scale* of each depth map (its geometric mean), in [0, 1]. The warp ties depth's
scale to the translation it is given: taught by a motion peer whose translation is off by a factor, depth
is pulled to the same factor. At 0 the depth receiver learns only the *shape* of its map from the warp
(relative depth) and keeps the scale its labels give it; the loss value and the motion receiver's
gradient are unchanged (:func:`scale_gradient`).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from taskology.geometry.warp import warp_frame
from taskology.tasks.base import Task
from taskology.tasks.motion import ego_motion_matrix

SSIM_WEIGHT = 0.85
SMOOTHNESS_WEIGHT = 1e-3


def ssim_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(1 - SSIM) / 2`` over 3x3 windows (reflection padded): (B, C, H, W) x2 -> (B, C, H, W) in [0, 1]."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x ** 2
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y ** 2
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sigma_x + sigma_y + c2))
    return ((1 - ssim) / 2).clamp(0, 1)


def photometric_error(target: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) x2 -> (B, 1, H, W): SSIM/L1 mix averaged over channels."""
    l1 = (target - image).abs().mean(1, keepdim=True)
    return SSIM_WEIGHT * ssim_distance(target, image).mean(1, keepdim=True) + (1 - SSIM_WEIGHT) * l1


def edge_aware_smoothness(depth: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Mean |grad of normalised inverse depth| weighted by exp(-|grad image|): scalar."""
    disp = 1.0 / depth.clamp_min(1e-3)
    disp = disp / disp.mean(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    dx = (disp[..., :, 1:] - disp[..., :, :-1]).abs()
    dy = (disp[..., 1:, :] - disp[..., :-1, :]).abs()
    wx = torch.exp(-(image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True))
    wy = torch.exp(-(image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True))
    return (dx * wx).mean() + (dy * wy).mean()


def scale_gradient(depth: torch.Tensor, share: float) -> torch.Tensor:
    """``depth`` (B, 1, H, W) > 0 with the same values, whose gradient along each map's scale (a common
    factor on all its pixels) is multiplied by ``share``; the gradient along its shape is unchanged.

    ``d * (g / g_detached) ** (share - 1)`` with ``g`` the map's geometric mean: the factor is 1 in value.
    At ``share`` 1 the input is returned as is.

    Example:
        >>> d = torch.tensor([[[[2.0, 8.0]]]], requires_grad=True)
        >>> out = scale_gradient(d, 0.0)
        >>> out.detach().tolist(), torch.autograd.grad(out.log().sum(), d)[0].tolist()  # d log(d)/d log-scale = 0
        ([[[[2.0, 8.0]]]], [[[[0.0, 0.0]]]])
    """
    if share == 1.0:
        return depth
    log_mean = torch.log(depth).mean(dim=(1, 2, 3), keepdim=True)
    return depth * torch.exp((share - 1.0) * (log_mean - log_mean.detach()))


def photometric_terms(outputs: Mapping[str, Mapping[str, torch.Tensor]], batch: Mapping[str, Any],
                      depth_scale_gradient: float = 1.0) -> dict[str, torch.Tensor]:
    """The masked reconstruction error, the mask and the smoothness term (for tests and logging)."""
    depth = scale_gradient(outputs["depth"]["depth"], float(depth_scale_gradient))  # (B, 1, H, W)
    motion = outputs["motion"]
    rgb, rgb_next = batch["rgb"].to(depth.dtype), batch["rgb_next"].to(depth.dtype)
    pose = ego_motion_matrix({k: motion[k].to(depth.dtype) for k in ("rotation", "translation")})
    warp = warp_frame(rgb_next, depth, batch["K"].to(depth.dtype), pose,
                      motion["object_translation"].to(depth.dtype))
    error = photometric_error(rgb, warp.image)                             # (B, 1, H, W)
    identity_error = photometric_error(rgb, rgb_next)
    mask = (warp.valid & (error < identity_error)).to(depth.dtype)
    reconstruction = (error * mask).sum() / mask.sum().clamp_min(1.0)
    return {"reconstruction": reconstruction, "mask": mask, "smoothness": edge_aware_smoothness(depth, rgb)}


def photometric_loss(outputs: Mapping[str, Mapping[str, torch.Tensor]], batch: Mapping[str, Any],
                     tasks: Mapping[str, Task], depth_scale_gradient: float = 1.0) -> torch.Tensor:
    """Masked SSIM/L1 reconstruction error + edge-aware smoothness -> scalar (``depth_scale_gradient``:
    see the module docstring)."""
    terms = photometric_terms(outputs, batch, depth_scale_gradient)
    return terms["reconstruction"] + SMOOTHNESS_WEIGHT * terms["smoothness"]
