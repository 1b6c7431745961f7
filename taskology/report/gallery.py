"""The report's PNG gallery: per held-out test sample and per task one row
``rgb | ground truth | alone | collective``.

Colourings (each row shares one range across ground truth and both predictions):

- depth: ``magma_r`` colour map on metres, range 0 .. 95th percentile of the valid ground truth
  (near is bright); invalid ground-truth pixels black;
- normals: ``(n + 1) / 2`` as RGB (camera frame; x right = red, y down = green, z forward = blue);
- segmentation: CARLA palette on tag ids (predictions: argmax mapped back to CARLA ids); ground
  truth not in the task's classes black;
- motion: magnitude of the per-pixel object translation (metres, ``viridis``), range 0 .. max of
  the ground truth (at least 0.5 m).

Predictions come from each arm's newest checkpoint of the task (first seed), evaluated with the task's
own ``forward`` on the test split of the run's data root.

Example:
    >>> depth_range(np.array([[0.0, 2.0], [4.0, 10.0]], np.float32))
    (0.0, 9.4)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from taskology.data.preview import colorize_normals, colorize_semantic
from taskology.report.plots import pyplot

GALLERY_COLUMNS: tuple[str, ...] = ("rgb", "ground truth", "alone", "collective")
#: the tasks drawn in the gallery: the camera tasks (the LiDAR tasks have their own pictures,
#: :mod:`taskology.report.bev`).
GALLERY_TASKS: tuple[str, ...] = ("depth", "normals", "segmentation", "motion")
#: minimum top of the motion colour range, metres.
MOTION_MIN_RANGE_M = 0.5


def depth_range(gt_depth: np.ndarray) -> tuple[float, float]:
    """(0, 95th percentile of the valid (> 0) ground-truth depth) in metres; (0, 1) if none is valid."""
    valid = gt_depth[gt_depth > 0]
    if valid.size == 0:
        return 0.0, 1.0
    return 0.0, round(float(np.percentile(valid, 95)), 6)


def colour_depth(depth: np.ndarray, vmax: float, valid: np.ndarray | None = None) -> np.ndarray:
    """(H, W) metres -> (H, W, 3) float RGB in [0, 1] (magma_r over 0..vmax); ``~valid`` black."""
    from matplotlib import colormaps

    rgb = colormaps["magma_r"](np.clip(depth / max(vmax, 1e-6), 0.0, 1.0))[..., :3]
    if valid is not None:
        rgb = np.where(valid[..., None], rgb, 0.0)
    return rgb


def colour_magnitude(vectors: np.ndarray, vmax: float) -> np.ndarray:
    """(3, H, W) vectors -> (H, W, 3) float RGB of their length over 0..vmax (viridis)."""
    from matplotlib import colormaps

    length = np.linalg.norm(vectors, axis=0)
    return colormaps["viridis"](np.clip(length / max(vmax, 1e-6), 0.0, 1.0))[..., :3]


def semantic_from_logits(logits: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """(C, H, W) logits -> (H, W) uint8 CARLA tag ids of the argmax class.

    Example:
        >>> semantic_from_logits(np.array([[[0.0]], [[1.0]]]), (1, 14)).tolist()
        [[14]]
    """
    return np.asarray(class_ids, dtype=np.uint8)[np.argmax(logits, axis=0)]


def row_images(task: Any, sample: Mapping[str, torch.Tensor],
               predictions: Mapping[str, Mapping[str, torch.Tensor] | None]) -> dict[str, np.ndarray | None]:
    """The images of one gallery row: ``GALLERY_COLUMNS`` -> (H, W, 3) float RGB (None: not available).

    Args:
        task: the task object (its ``name``; segmentation: its ``class_ids``).
        sample: one test sample in training layout, unbatched (``rgb`` (3, H, W), labels).
        predictions: arm name -> that arm's outputs for the sample, unbatched (None: no such arm).
    """
    rgb = sample["rgb"].permute(1, 2, 0).numpy().clip(0.0, 1.0)
    images: dict[str, np.ndarray | None] = {"rgb": rgb}
    name = task.name
    if name == "depth":
        gt = sample["depth"][0].numpy()
        _, vmax = depth_range(gt)
        images["ground truth"] = colour_depth(gt, vmax, valid=gt > 0)
        render = lambda out: colour_depth(out["depth"][0].numpy(), vmax)  # noqa: E731
    elif name == "normals":
        images["ground truth"] = colorize_normals(sample["normals"].permute(1, 2, 0).numpy())
        render = lambda out: colorize_normals(out["normals"].permute(1, 2, 0).numpy())  # noqa: E731
    elif name == "segmentation":
        gt = sample["semantic"].numpy().astype(np.int64)
        known = np.isin(gt, np.asarray(task.class_ids))
        images["ground truth"] = np.where(known[..., None], colorize_semantic(gt.astype(np.uint8)), 0) / 255.0
        render = lambda out: colorize_semantic(  # noqa: E731
            semantic_from_logits(out["logits"].numpy(), task.class_ids)) / 255.0
    elif name == "motion":
        gt = sample["object_translation"].numpy()
        vmax = max(float(np.linalg.norm(gt, axis=0).max()), MOTION_MIN_RANGE_M)
        images["ground truth"] = colour_magnitude(gt, vmax)
        render = lambda out: colour_magnitude(out["object_translation"].numpy(), vmax)  # noqa: E731
    else:
        images["ground truth"] = None
        render = lambda out: None  # noqa: E731
    for arm in GALLERY_COLUMNS[2:]:
        out = predictions.get(arm)
        images[arm] = None if out is None else render(out)
    return images


def _caption(task_name: str, column: str, sample: Mapping[str, Any], out: Mapping[str, torch.Tensor] | None) -> str:
    """Short per-cell caption: the ego translation for motion, else the column name."""
    if task_name == "motion":
        if column == "ground truth" and "cam_next_from_cam" in sample:
            t = sample["cam_next_from_cam"][:3, 3].double().norm()
            return f"ground truth (ego |t| {float(t):.2f} m)"
        if out is not None and "translation" in out:
            return f"{column} (ego |t| {float(out['translation'].double().norm()):.2f} m)"
    return column


def draw_gallery(rows: Sequence[tuple[str, Any, Mapping[str, Any], Mapping[str, Mapping[str, torch.Tensor] | None]]],
                 out_png: Path) -> Path:
    """Draw gallery rows into ``out_png``.

    Args:
        rows: (row label, task object, unbatched sample, arm -> unbatched outputs or None) per row.
        out_png: where the PNG goes.
    """
    plt = pyplot()
    first = rows[0][2]["rgb"]
    height, width = int(first.shape[-2]), int(first.shape[-1])
    cell_w = 3.0
    cell_h = cell_w * height / width + 0.3
    fig, axes = plt.subplots(len(rows), len(GALLERY_COLUMNS), figsize=(cell_w * len(GALLERY_COLUMNS), cell_h * len(rows)),
                             squeeze=False)
    for r, (label, task, sample, predictions) in enumerate(rows):
        images = row_images(task, sample, predictions)
        for c, column in enumerate(GALLERY_COLUMNS):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            image = images.get(column)
            if image is None:
                ax.imshow(np.full((height, width, 3), 0.85))
                ax.text(0.5, 0.5, f"no {column} prediction" if column in GALLERY_COLUMNS[2:] else "n/a",
                        ha="center", va="center", transform=ax.transAxes, fontsize=8)
            else:
                ax.imshow(image, interpolation="nearest")
            ax.set_title(_caption(task.name, column, sample, predictions.get(column)), fontsize=7, pad=2)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.tight_layout(pad=0.3, h_pad=0.4, w_pad=0.2)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def pick_indices(n_available: int, n_wanted: int) -> list[int]:
    """``n_wanted`` indices spread evenly over ``range(n_available)`` (all if fewer).

    Example:
        >>> pick_indices(10, 3)
        [0, 4, 9]
    """
    if n_available <= 0:
        return []
    if n_available <= n_wanted:
        return list(range(n_available))
    return sorted({int(round(x)) for x in np.linspace(0, n_available - 1, n_wanted)})
