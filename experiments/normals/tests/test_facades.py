"""experiments/normals/facades.py (copied from commit 05b8e3d): the vehicle's axes face the camera at every pixel,
and a normal snaps to the nearer of them (the hand cases of the street-grid prior's tests at that commit)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import facades

# camera looking along the vehicle's forward (x) axis, its x axis the vehicle's right: forward in the camera
# is +z, left is -x
CAM_FROM_EGO = torch.tensor([[[0.0, -1, 0, 0], [0, 0, -1, 1.5], [1, 0, 0, 0], [0, 0, 0, 1]]])
K = torch.tensor([[[10.0, 0, 3], [0, 10.0, 0], [0, 0, 1]]])              # pixel (0, 0): ray (-0.3, 0, 1)


def test_each_axis_is_signed_per_pixel_to_face_the_camera() -> None:
    axes = facades.facade_axes(CAM_FROM_EGO, K, 1, 7)                    # columns 0..6: rays x = -0.3 .. +0.3
    assert axes.shape == (1, 2, 3, 1, 7)
    for column, side in ((0, 1.0), (6, -1.0)):   # left of the centre a wall along the street faces right (+x)
        torch.testing.assert_close(axes[0, 0, :, 0, column], torch.tensor([0.0, 0, -1]))   # across: toward the camera
        torch.testing.assert_close(axes[0, 1, :, 0, column], torch.tensor([side, 0, 0]))   # along: toward the camera
    torch.testing.assert_close(axes[0, 1, :, 0, 3], torch.tensor([-1.0, 0, 0]))          # on the axis: not flipped
    torch.testing.assert_close(axes.norm(dim=2), torch.ones(1, 2, 1, 7))


def test_a_normal_snaps_to_the_nearer_axis() -> None:
    axes = facades.facade_axes(CAM_FROM_EGO, K, 1, 1)                    # (0, 0, -1) and (1, 0, 0) at pixel (0, 0)

    def snapped(normal: list[float]) -> list[float]:
        n = F.normalize(torch.tensor(normal).view(1, 3, 1, 1), dim=1)
        return facades.snap_to_axes(n, axes)[0, :, 0, 0].tolist()

    assert snapped([0.9, 0.0, -0.1]) == [1.0, 0.0, 0.0]                   # nearly along the street
    assert snapped([0.1, 0.2, -0.9]) == [0.0, 0.0, -1.0]                  # nearly across it
    assert snapped([-1.0, 0.0, 0.0]) == [0.0, 0.0, -1.0]                  # facing away: 90 deg from one, 180 from the other
