"""Can the images tell which way a facade faces? A plane-induced photometric check on validation pairs.
Run: python experiments/normals/diagnose_facade_parallax.py --config consistency [RUN_DIR ...] [--radius 2] [--split val] [--set KEY=VALUE ...]

For every facade pixel (building, wall, fence, by the labels) of the ``--split`` pairs, the patch around it
(``--radius``, default 2: 5x5 pixels) is taken as a plane through the pixel's 3D point with the normal of
either of the vehicle's two horizontal axes (:func:`facades.facade_axes`, this study's copy), carried
to frame t+1 by the ego-motion and compared with frame t+1 (mean L1 of the colours). If the right axis (the
one the true normal is nearer) gave a clearly lower error, a relation could teach normals the axis from
parallax. The check runs with the true depth and ego-motion, with the depth scaled by 2 and 0.5 (showing that
the warp itself works: the true depth must give the lowest error), and, per ``RUN_DIR``, with the depth and
motion networks of that run. ``--config`` is the preset the runs were trained from (a shipped preset's name or
a YAML file) and ``--set`` its overrides; the world is the preset's (simulated under ``data.root`` if it is not
there yet).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from facades import facade_axes

from taskology.config import load_config
from taskology.data.datasets import FrameDataset
from taskology.data.schema import FACADE_CLASS_IDS
from taskology.engine.batches import collate
from taskology.engine.checkpoints import checkpoint_path, checkpoint_steps, load_checkpoint
from taskology.engine.registry import Registry
from taskology.engine.task_data import PreparedDataset, manifest_for
from taskology.errors import TaskologyError
from taskology.experiment import ensure_world
from taskology.geometry.camera import points_from_depth_torch, project_points_torch
from taskology.geometry.rigid import so3_exp_torch

#: what the check reads: every camera input, the true depth and normals, the labels (facades)
LAYERS = ("camera/rgb", "camera/K", "camera/cam_from_ego", "camera/depth", "camera/normals", "camera/semantic")


def shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` moved so that pixel p holds what was at p + (dy, dx) (wrapping; callers mask the border)."""
    return torch.roll(image, shifts=(-dy, -dx), dims=(2, 3))


def plane_warp_errors(batch, depth: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor,
                      radius: int) -> torch.Tensor:
    """(B, 2, H, W): per pixel and axis, the mean L1 colour error of its patch warped to frame t+1 as a plane."""
    rgb, rgb_next, K = batch["rgb"], batch["rgb_next"], batch["K"].to(depth.dtype)
    b, _, h, w = rgb.shape
    rays = points_from_depth_torch(torch.ones_like(depth), K)
    point = rays * depth
    axes = facade_axes(batch["cam_from_ego"].to(depth.dtype), K, h, w)
    errors = []
    for a in range(2):
        normal = axes[:, a]
        offset = (normal * point).sum(1, keepdim=True)           # the plane n . X = offset
        total, count = torch.zeros_like(depth), torch.zeros_like(depth)
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                ray = shifted(rays, dy, dx)
                cos = (normal * ray).sum(1, keepdim=True)
                z = offset / torch.where(cos.abs() > 1e-4, cos, torch.full_like(cos, 1e-4))
                moved = torch.einsum("bij,bjhw->bihw", rotation, ray * z) + translation.view(b, 3, 1, 1)
                uv, z_next = project_points_torch(moved, K)
                grid = torch.stack([2 * uv[:, 0] / (w - 1) - 1, 2 * uv[:, 1] / (h - 1) - 1], dim=-1)
                warped = F.grid_sample(rgb_next, grid, align_corners=True, padding_mode="border")
                ok = (grid.abs() <= 1).all(-1).unsqueeze(1) & (z > 0) & (z_next > 0.1)
                inside = torch.zeros_like(ok)
                inside[:, :, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = True
                ok &= inside
                total += (warped - shifted(rgb, dy, dx)).abs().mean(1, keepdim=True) * ok
                count += ok
        errors.append(total / count.clamp_min(1))
    return torch.cat(errors, dim=1)


def report(label: str, errors: torch.Tensor, truth: torch.Tensor, facade: torch.Tensor) -> None:
    right = errors.argmin(1, keepdim=True) == truth
    margin = (errors[:, :1] - errors[:, 1:]).abs()
    print(f"{label}: facade warp error {float(errors[:, :1][facade].mean()):.4f} / {float(errors[:, 1:][facade].mean()):.4f} "
          f"(forward / left axis); the lower error picks the right axis on {float(right[facade].float().mean()):.2f} "
          f"of facade pixels; the two differ by more than 0.01 on {float((margin > 0.01)[facade].float().mean()):.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="*")
    parser.add_argument("--config", required=True, help="the preset the runs were trained from (name or YAML file)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="the runs' overrides of the preset (repeatable)")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--radius", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, list(args.overrides))
        root = ensure_world(config)
        data = PreparedDataset(FrameDataset(manifest_for(root, config), args.split, None, layers=LAYERS, pairs=True),
                               None)
        if len(data) == 0:
            raise TaskologyError(f"{root}: the {args.split} split has no frame pairs")
        batch = collate([data[i] for i in range(len(data))])
    except TaskologyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    truth_normals = batch["normals"]
    h, w = truth_normals.shape[-2:]
    ids = torch.tensor(sorted(FACADE_CLASS_IDS)).view(1, -1, 1, 1)
    facade = (batch["semantic"].unsqueeze(1) == ids).any(1, keepdim=True) & (truth_normals.norm(dim=1, keepdim=True) > 0.5)
    axes = facade_axes(batch["cam_from_ego"].float(), batch["K"].float(), h, w)
    truth = (truth_normals.unsqueeze(1) * axes).sum(2).argmax(1, keepdim=True)
    pose = batch["cam_next_from_cam"].float()
    depth = batch["depth"].clamp_min(0.1)
    print(f"{len(data)} {args.split} pairs of {root}; facade pixels: {float(facade.float().mean()):.2f}; patch radius {args.radius}")
    for scale, label in ((1.0, "true depth and ego-motion"), (2.0, "2 x true depth"), (0.5, "0.5 x true depth")):
        report(label, plane_warp_errors(batch, scale * depth, pose[:, :3, :3], pose[:, :3, 3], args.radius), truth, facade)
    registry = Registry.current()
    for run in args.runs:
        out = {}
        for name in ("depth", "motion"):
            steps = checkpoint_steps(run, name)
            if not steps:
                print(f"error: {run}: no checkpoint of task {name!r}", file=sys.stderr)
                return 2
            task = registry.build_task(name, config)
            model = task.build_model()
            model.load_state_dict(load_checkpoint(checkpoint_path(run, name, steps[-1]))["model"])
            model.eval()
            with torch.no_grad():
                out[name] = task.forward(model, batch)
        predicted = out["depth"]["depth"]
        report(f"{run}: depth network, true ego-motion",
               plane_warp_errors(batch, predicted, pose[:, :3, :3], pose[:, :3, 3], args.radius), truth, facade)
        report(f"{run}: depth and motion networks",
               plane_warp_errors(batch, predicted, so3_exp_torch(out["motion"]["rotation"].float()),
                                 out["motion"]["translation"].float(), args.radius), truth, facade)
    return 0


if __name__ == "__main__":
    sys.exit(main())
