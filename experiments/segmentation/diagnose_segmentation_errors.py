"""Where does a segmentation network lose its mIoU, and could pixel affinities win it back? On validation.
Run: python experiments/segmentation/diagnose_segmentation_errors.py --config consistency RUN [RUN ...] [--geometry RUN] [--split val] [--set KEY=VALUE ...]

For one or more trained runs (``checkpoints/segmentation/step_*.pt``), on the frames of ``--split``
(default ``val``; never use it on test to make choices; ``train``: the frames labelled for segmentation at the
preset's label fraction, to see how well the labels were fitted), this prints:

- per class: its share of the pixels, IoU, recall and the two classes it is most often taken for. mIoU
  weighs every class alike, so a class of 0.1 % of the pixels counts as much as the road;
- how many of the errors lie on or near a class boundary (within 1 and 2 pixels);
- with ``--geometry RUN`` (a run holding depth and normals checkpoints, e.g. a collective run): what a
  dense-CRF-like smoothing would change. Ten mean-field iterations over the 4-neighbourhood,
  ``q <- softmax(logits + alpha * sum_j w_ij q_j)``, with the affinity ``w_ij`` from colour alone, from
  the depth and normals networks alone, from both, and from colour and the simulator's geometry (an upper
  bound for what better geometry could add). A relation that taught segmentation "neighbours on one
  surface share a class" could at best approach what this post-hoc smoothing does.

``--config`` is the preset the runs were trained from (a shipped preset's name or a YAML file) and ``--set``
its overrides; the world is the preset's (simulated under ``data.root`` if it is not there yet).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from taskology.config import load_config
from taskology.data.datasets import FrameDataset
from taskology.data.schema import SEMANTIC_CLASSES
from taskology.engine.batches import collate
from taskology.engine.checkpoints import checkpoint_path, checkpoint_steps, load_checkpoint
from taskology.engine.registry import Registry
from taskology.engine.task_data import manifest_for
from taskology.errors import TaskologyError
from taskology.experiment import ensure_world

#: 4-neighbourhood offsets (dy, dx)
NEIGHBOURS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def load_outputs(run: Path, name: str, config, batch) -> tuple[object, dict[str, torch.Tensor]]:
    steps = checkpoint_steps(run, name)
    if not steps:
        raise TaskologyError(f"{run}: no checkpoint of task {name!r}")
    task = Registry.current().build_task(name, config)
    model = task.build_model()
    model.load_state_dict(load_checkpoint(checkpoint_path(run, name, steps[-1]))["model"])
    model.eval()
    with torch.no_grad():
        return task, task.forward(model, batch)


def miou(pred: torch.Tensor, truth: torch.Tensor, classes: int) -> float:
    """Mean IoU over the classes present in ``truth`` (the metric's own convention; -1 = unlabelled).

    Example:
        >>> miou(torch.tensor([[0, 0, 1, 1]]), torch.tensor([[0, 1, 1, -1]]), 3)   # class 0: 1/2, class 1: 1/2
        0.5
    """
    labelled, ious = truth >= 0, []
    for c in range(classes):
        p, g = (pred == c) & labelled, (truth == c) & labelled
        if bool(g.any()):
            ious.append(int((p & g).sum()) / int((p | g).sum()))
    return sum(ious) / len(ious)


def boundary(truth: torch.Tensor) -> torch.Tensor:
    """Pixels (B, H, W) with a 4-neighbour of another class.

    Example:
        >>> boundary(torch.tensor([[[0, 0, 1], [0, 0, 1]]])).int().tolist()
        [[[0, 1, 1], [0, 1, 1]]]
    """
    b = torch.zeros_like(truth, dtype=torch.bool)
    dx, dy = truth[:, :, 1:] != truth[:, :, :-1], truth[:, 1:] != truth[:, :-1]
    b[:, :, 1:] |= dx
    b[:, :, :-1] |= dx
    b[:, 1:] |= dy
    b[:, :-1] |= dy
    return b


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` at the neighbour (y + dy, x + dx); wraps at the border (callers zero those weights)."""
    return torch.roll(x, shifts=(-dy, -dx), dims=(2, 3))


def affinities(rgb, depth, normals, sigma_colour, sigma_log_depth, normal_scale) -> list[torch.Tensor]:
    """Weights (B, 1, H, W) to each of :data:`NEIGHBOURS`; a factor is left out where its scale is None."""
    out = []
    for dy, dx in NEIGHBOURS:
        w = torch.ones_like(rgb[:, :1])
        if sigma_colour is not None:
            w = w * torch.exp(-((rgb - shifted(rgb, dy, dx)) ** 2).sum(1, keepdim=True) / (2 * sigma_colour ** 2))
        if sigma_log_depth is not None:
            step = depth.log() - shifted(depth, dy, dx).log()
            w = w * torch.exp(-step ** 2 / (2 * sigma_log_depth ** 2))
        if normal_scale is not None:
            w = w * torch.exp(-(1 - (normals * shifted(normals, dy, dx)).sum(1, keepdim=True)) / normal_scale)
        inside = torch.ones_like(w)
        if dx:
            inside[..., -1 if dx > 0 else 0] = 0
        if dy:
            inside[..., -1 if dy > 0 else 0, :] = 0
        out.append(w * inside)
    return out


def mean_field(logits: torch.Tensor, weights: list[torch.Tensor], alpha: float, iterations: int = 10) -> torch.Tensor:
    q = logits.softmax(1)
    for _ in range(iterations):
        message = sum(w * shifted(q, dy, dx) for w, (dy, dx) in zip(weights, NEIGHBOURS))
        q = (logits + alpha * message).softmax(1)
    return q


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--config", required=True, help="the preset the runs were trained from (name or YAML file)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="the runs' overrides of the preset (repeatable)")
    parser.add_argument("--geometry", type=Path, default=None, help="a run with depth and normals checkpoints")
    parser.add_argument("--split", default="val", choices=("val", "test", "train"))  # train: how well the labels were fitted
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, list(args.overrides))
        root = ensure_world(config)
        if args.split == "train" and args.geometry is not None:
            raise TaskologyError("--geometry needs the simulator's depth and normals: use it with val or test")
        if args.split == "train":  # the frames labelled for segmentation, with their labels only
            dataset = FrameDataset(manifest_for(root, config), "train", "segmentation", labels=("camera/semantic",),
                                   layers=("camera/rgb", "camera/semantic"))
        else:
            layers = ("camera/rgb", "camera/K", "camera/depth", "camera/normals", "camera/semantic")
            dataset = FrameDataset(manifest_for(root, config), args.split, layers=layers)
        if len(dataset) == 0:
            raise TaskologyError(f"{root}: the {args.split} split has no frames")
        batch = collate([dataset[i] for i in range(len(dataset))])
        segs = [load_outputs(run, "segmentation", config, batch) for run in args.runs]
        geometry = None
        if args.geometry is not None:
            geometry = (load_outputs(args.geometry, "depth", config, batch)[1]["depth"].clamp_min(1e-3),
                        load_outputs(args.geometry, "normals", config, batch)[1]["normals"])
    except TaskologyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(dataset)} {args.split} frames of {root}")
    for run, (task, out) in zip(args.runs, segs):
        logits = out["logits"]
        truth = task.contiguous_labels(batch["semantic"])
        labelled, classes = truth >= 0, logits.shape[1]
        pred = logits.argmax(1)
        names = [SEMANTIC_CLASSES.get(c, c) for c in task.class_ids]
        base = miou(pred, truth, classes)
        print(f"\n{run}: mIoU {base:.4f}, pixel accuracy {float((pred == truth)[labelled].float().mean()):.4f}")
        for c, name in enumerate(names):
            g = (truth == c) & labelled
            if not bool(g.any()):
                continue
            iou = int(((pred == c) & g).sum()) / int((((pred == c) & labelled) | g).sum())
            taken = torch.bincount(pred[g], minlength=classes).float() / g.sum()
            other = [k for k in taken.argsort(descending=True).tolist() if k != c][:2]
            print(f"  {name:>14}: share {float(g.float().mean()):.3f}, IoU {iou:.3f}, recall {float(taken[c]):.3f}; "
                  f"taken for {names[other[0]]} {float(taken[other[0]]):.2f}, {names[other[1]]} {float(taken[other[1]]):.2f}")
        wrong = (pred != truth) & labelled
        edge = boundary(truth)
        near = F.max_pool2d(edge.float().unsqueeze(1), 5, 1, 2)[:, 0] > 0
        print(f"  errors on a class boundary: {float((wrong & edge).sum() / wrong.sum()):.3f} of errors "
              f"({float(edge.float().mean()):.3f} of pixels); within 2 px: {float((wrong & near).sum() / wrong.sum()):.3f} "
              f"({float(near.float().mean()):.3f} of pixels)")
        if geometry is None:
            continue
        depth, normals = geometry
        true_depth = torch.where(batch["depth"] > 0, batch["depth"], torch.full_like(batch["depth"], 1e3))
        rgb = batch["rgb"]
        for label, weights in (("colour", affinities(rgb, depth, normals, 0.05, None, None)),
                               ("depth + normals networks", affinities(rgb, depth, normals, None, 0.05, 0.05)),
                               ("colour + networks", affinities(rgb, depth, normals, 0.05, 0.05, 0.05)),
                               ("colour + simulator geometry", affinities(rgb, true_depth, batch["normals"], 0.05, 0.05, 0.05))):
            gains = []
            for alpha in (1.0, 3.0, 10.0):
                smoothed = miou(mean_field(logits, weights, alpha).argmax(1), truth, classes)
                gains.append(f"alpha {alpha:g}: {smoothed:.4f} ({100 * (smoothed / base - 1):+.1f} %)")
            print(f"  mean-field smoothing, affinity from {label}: " + "; ".join(gains))
    return 0


if __name__ == "__main__":
    sys.exit(main())
