"""Ground truth of the motion task from simulator poses, instance masks and object boxes.

Definitions (all transforms ``dst_from_src``; frames of docs/conventions.md):

- ego-motion ``cam_{t+1}_from_cam_t = cam_from_ego @ inv(world_from_ego[t+1]) @ world_from_ego[t]
  @ inv(cam_from_ego)``;
- object translation of a pixel of frame t that shows object ``k`` (``instance == k``): the world
  displacement of the object's box centre between t and t+1, ``c_w(t+1) - c_w(t)`` with
  ``c_w = world_from_ego @ box_centre_ego``, expressed in camera t+1 axes:
  ``R_{cam_{t+1}_from_world} @ (c_w(t+1) - c_w(t))``. For an object that translates without turning this
  is exactly the translation :func:`taskology.geometry.warp.warp_frame` must add after ego-motion to
  move the pixel's 3D point to where it is at t+1; turning objects are approximated by their centre.
  Static pixels (``instance == -1``) have zero object translation.
- ``object_translation_valid``: pixels with ``instance == -1``, or whose track exists in both frames.
- ``movable``: pixels of an object whose class is in ``MOVABLE_CLASS_IDS``.

Example:
    >>> I = np.eye(4)
    >>> out = motion_targets(world_from_ego=I, world_from_ego_next=I, cam_from_ego=I,
    ...     instance=np.full((2, 2), -1, np.int32), track_id=np.zeros(0, np.int32),
    ...     class_id=np.zeros(0, np.uint8), box=np.zeros((0, 7)), track_id_next=np.zeros(0, np.int32),
    ...     box_next=np.zeros((0, 7)))
    >>> out["cam_next_from_cam"].tolist() == I.tolist(), float(np.abs(out["object_translation"]).max())
    (True, 0.0)
"""
from __future__ import annotations

import numpy as np

from taskology.data.schema import MOVABLE_CLASS_IDS
from taskology.geometry.rigid import invert


def ego_motion(world_from_ego: np.ndarray, world_from_ego_next: np.ndarray, cam_from_ego: np.ndarray) -> np.ndarray:
    """(4, 4) float64 ``cam_{t+1}_from_cam_t`` from the ego poses at t, t+1 and the camera mount."""
    return cam_from_ego @ invert(world_from_ego_next) @ world_from_ego @ invert(cam_from_ego)


def motion_targets(*, world_from_ego: np.ndarray, world_from_ego_next: np.ndarray, cam_from_ego: np.ndarray,
                   instance: np.ndarray, track_id: np.ndarray, class_id: np.ndarray, box: np.ndarray,
                   track_id_next: np.ndarray, box_next: np.ndarray) -> dict[str, np.ndarray]:
    """Motion labels of one frame pair.

    Args:
        world_from_ego, world_from_ego_next: (4, 4) float64 ego poses at t and t+1.
        cam_from_ego: (4, 4) float64 camera mount.
        instance: (H, W) int32 track id per pixel of frame t, -1 = no object.
        track_id, class_id, box: objects of frame t, (O,), (O,), (O, 7) ego-frame boxes.
        track_id_next, box_next: objects of frame t+1, (O',), (O', 7).

    Returns:
        ``cam_next_from_cam`` (4, 4) float32, ``object_translation`` (3, H, W) float32 metres,
        ``object_translation_valid`` (1, H, W) bool, ``movable`` (1, H, W) bool.
    """
    height, width = instance.shape
    cam_next = ego_motion(world_from_ego, world_from_ego_next, cam_from_ego)
    rot_cam_next_from_world = (cam_from_ego @ invert(world_from_ego_next))[:3, :3]
    translation = np.zeros((3, height, width), np.float32)
    valid = instance < 0
    movable = np.zeros((height, width), bool)
    next_centre = {int(t): box_next[i, :3] for i, t in enumerate(track_id_next)}
    for i, tid in enumerate(track_id):
        pixels = instance == tid
        if not pixels.any():
            continue
        if int(class_id[i]) in MOVABLE_CLASS_IDS:
            movable |= pixels
        if int(tid) not in next_centre:
            continue
        centre_w = world_from_ego[:3, :3] @ box[i, :3] + world_from_ego[:3, 3]
        centre_w_next = world_from_ego_next[:3, :3] @ next_centre[int(tid)] + world_from_ego_next[:3, 3]
        shift = rot_cam_next_from_world @ (centre_w_next - centre_w)
        translation[:, pixels] = shift.astype(np.float32)[:, None]
        valid |= pixels
    return {"cam_next_from_cam": cam_next.astype(np.float32), "object_translation": translation,
            "object_translation_valid": valid[None], "movable": movable[None]}
