"""experiments/normals/diagnose_facade_parallax.py: its plane warp tells a facade's orientation where parallax is large,
so its "no" at 32x96 is the images' answer, not the check's."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import diagnose_facade_parallax as parallax


def test_a_side_wall_seen_while_driving_forward_matches_the_side_plane_better_the_larger_the_patch() -> None:
    # camera looking along the vehicle's forward axis (+z), its x axis the vehicle's right; a wall 3 m to the
    # left (x = -3, normal +x: the "left" axis facing the camera); the camera moves 1 m forward
    h, w = 48, 64
    K = torch.tensor([[[40.0, 0, 31.5], [0, 40.0, 23.5], [0, 0, 1]]])
    cam_from_ego = torch.tensor([[[0.0, -1, 0, 0], [0, 0, -1, 1.5], [1, 0, 0, 0], [0, 0, 0, 1]]])
    rays = torch.linalg.inv(K[0]) @ torch.stack([*torch.meshgrid(torch.arange(w, dtype=torch.float32),
                                                                  torch.arange(h, dtype=torch.float32), indexing="xy"),
                                                 torch.ones(h, w)]).reshape(3, -1)
    rays = rays.reshape(1, 3, h, w)
    left = rays[:, :1] < -0.2                                   # pixels that see the wall
    depth = torch.where(left, -3.0 / rays[:, :1].clamp(max=-1e-3), torch.ones_like(rays[:, :1]))
    texture = F.avg_pool2d(torch.rand(1, 3, h + 2, w + 2, generator=torch.Generator().manual_seed(0)), 3, 1)
    # frame t+1 by backward mapping through the true plane: X' on the wall, X = X' + (0, 0, 1) in frame t
    source = rays * depth + torch.tensor([0.0, 0, 1]).view(1, 3, 1, 1)
    uv = (K[0] @ source.reshape(3, -1)).reshape(1, 3, h, w)
    uv = uv[:, :2] / uv[:, 2:]
    grid = torch.stack([2 * uv[:, 0] / (w - 1) - 1, 2 * uv[:, 1] / (h - 1) - 1], dim=-1)
    rgb_next = F.grid_sample(texture, grid, align_corners=True)
    batch = {"rgb": texture, "rgb_next": rgb_next, "K": K, "cam_from_ego": cam_from_ego}
    wall = left.clone()
    wall[..., :8], wall[..., 20:] = False, False                # inside the wall, clear of its edges
    wall[..., :8, :], wall[..., -8:, :] = False, False
    ratios = []
    for radius in (2, 6):
        errors = parallax.plane_warp_errors(batch, depth, torch.eye(3).unsqueeze(0), torch.tensor([[0.0, 0, -1]]), radius)
        frontal, side = float(errors[:, 0:1][wall].mean()), float(errors[:, 1:2][wall].mean())
        ratios.append(frontal / side)
    # even a 1 m step beside a wall 3 m away moves a 5x5 patch's pixels apart by under half a pixel between the
    # two planes (measured: 1.2x); a 13x13 patch separates them clearly (1.8x)
    assert 1.05 < ratios[0] < ratios[1] and ratios[1] > 1.5, ratios


def test_the_check_runs_on_the_true_geometry_and_on_a_runs_networks(tiny_world, tiny_run, capsys) -> None:
    sets = [f"--set={o}" for o in tiny_world.overrides]
    assert parallax.main(["--config", "consistency", *sets, str(tiny_run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"7 val pairs of {tiny_world.root}; facade pixels: ")
    assert [line.split(":")[0] for line in lines[1:]] == [
        "true depth and ego-motion", "2 x true depth", "0.5 x true depth", str(tiny_run), str(tiny_run)]
