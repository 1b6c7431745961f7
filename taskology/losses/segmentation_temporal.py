"""``segmentation_temporal`` (geometry): a surface keeps its class from frame t to frame t+1.

The logic relations tell segmentation what a class implies about geometry; a 2 %-label normals or depth
network cannot tell it where its class *boundaries* and small classes are wrong
(experiments/segmentation/README.md). This relation uses the peers' geometry
only to find correspondences and lets segmentation teach itself across time, where the two frames see
the same surface:

- The peer depth of frame t, the peer ego-motion and object motion carry each pixel of frame t to
  frame t+1 (:func:`taskology.geometry.warp.warp_frame`, the warp of ``photometric``). The receiver's
  class probabilities on frame t+1 (its own outputs there, computed without gradient: they are the
  target) are sampled at those points, and so is the colour of frame t+1.
- A correspondence is trusted only where the geometry explains the appearance: the warp is valid (in
  front of camera t+1, inside the image) and the photometric error of the warped colour against frame t
  (the SSIM/L1 mix of ``photometric``) is below ``photometric_tolerance``. Occlusions, wrong depth and
  wrong motion show up as a large error there, and teach nothing.
- Where the warped frame-t+1 prediction is confident (its largest probability at least
  ``confidence``), its class is the pseudo-label of frame t's pixel; the loss is the cross-entropy of
  frame t's logits against it, averaged over the trusted pixels (0 where there are none).

It is a pseudo-label loss (FixMatch-style confidence threshold) whose "augmentation" is the change of
viewpoint between frames, with the correspondence supplied by the peers: depth and motion are hard
inputs to a test and a sampling position, so the relation teaches segmentation only
(``Relation.receivers``), and the engine passes the receiver's frame-t+1 outputs as ``logits_next``
(``Relation.next_frame_targets``).

Near zero on ground truth (one-hot classes that the true geometry carries from frame to frame); positive
when frame t's classes disagree with what frame t+1 shows at the corresponding surface.

Options (``relations.segmentation_temporal.options``): ``confidence`` (default 0.9) and
``photometric_tolerance`` (default 0.1). Set before any training run, from the simulator's ground truth
at 32x96 (the test fixture of ``tests/losses/test_relations.py``): with the true geometry the warped colour
error has median 0.024 and 69 % of the valid pixels are below 0.1, while a pixel of another sequence
differs by 0.24 (median). With the true geometry 51 % of all pixels are taught and 99.9 % of their
pseudo-labels are right; with the depth halved the check keeps 33 % of the pixels, 99.7 % right, where
no check would keep 60 %, 97.8 % right.

Example:
    >>> from taskology.tasks.segmentation import SegmentationTask
    >>> seg = SegmentationTask(width=4, class_ids=(1, 14))
    >>> logits = torch.tensor([[4.0, 0.0]]).reshape(1, 2, 1, 1).expand(1, 2, 4, 4).contiguous()
    >>> K = torch.tensor([[[4.0, 0, 1.5], [0, 4.0, 1.5], [0, 0, 1]]])
    >>> outputs = {"segmentation": {"logits": logits, "logits_next": logits},
    ...            "depth": {"depth": torch.full((1, 1, 4, 4), 5.0)},
    ...            "motion": {"rotation": torch.zeros(1, 3), "translation": torch.zeros(1, 3),
    ...                       "object_translation": torch.zeros(1, 3, 4, 4)}}
    >>> rgb = torch.rand(1, 3, 4, 4)
    >>> batch = {"rgb": rgb, "rgb_next": rgb, "K": K}
    >>> round(float(segmentation_temporal_loss(outputs, batch, {"segmentation": seg})), 4)   # agrees: -log p
    0.0181
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from taskology.geometry.warp import warp_frame
from taskology.losses.photometric import photometric_error
from taskology.tasks.base import Task
from taskology.tasks.motion import ego_motion_matrix


def temporal_targets(outputs: Mapping[str, Mapping[str, torch.Tensor]], batch: Mapping[str, Any], *,
                     confidence: float = 0.9, photometric_tolerance: float = 0.1
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pseudo-labels for frame t from the receiver's frame-t+1 probabilities carried by the peers' geometry.

    Returns ``(labels, mask, error)``: (B, H, W) long contiguous class indices, (B, 1, H, W) bool trusted
    and confident pixels, (B, 1, H, W) photometric error of the warped colour (for diagnostics)."""
    logits_next = outputs["segmentation"]["logits_next"].detach()
    depth = outputs["depth"]["depth"].detach().to(logits_next.dtype)
    motion = {k: v.detach().to(depth.dtype) for k, v in outputs["motion"].items()}
    rgb, rgb_next = batch["rgb"].to(depth.dtype), batch["rgb_next"].to(depth.dtype)
    probs_next = torch.softmax(logits_next, dim=1)
    pose = ego_motion_matrix({k: motion[k] for k in ("rotation", "translation")})
    warp = warp_frame(torch.cat([probs_next, rgb_next], dim=1), depth, batch["K"].to(depth.dtype), pose,
                      motion["object_translation"])
    carried, colour = warp.image[:, :-3], warp.image[:, -3:]
    error = photometric_error(rgb, colour)
    best, labels = carried.max(dim=1)
    mask = warp.valid & (error < photometric_tolerance) & (best[:, None] >= confidence)
    return labels, mask, error


def segmentation_temporal_loss(outputs: Mapping[str, Mapping[str, torch.Tensor]], batch: Mapping[str, Any],
                               tasks: Mapping[str, Task], *, confidence: float = 0.9,
                               photometric_tolerance: float = 0.1) -> torch.Tensor:
    """Mean cross-entropy of frame t's logits against the carried frame-t+1 pseudo-labels over the trusted
    pixels -> scalar >= 0 (module docstring). The options' valid ranges are declared in ``RELATIONS``."""
    logits = outputs["segmentation"]["logits"]
    labels, mask, _ = temporal_targets(outputs, batch, confidence=float(confidence),
                                       photometric_tolerance=float(photometric_tolerance))
    mask = mask[:, 0].to(logits.dtype)
    nll = F.cross_entropy(logits, labels, reduction="none")                    # (B, H, W)
    return (nll * mask).sum() / mask.sum().clamp_min(1.0)
