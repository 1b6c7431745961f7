"""One frame of a shard as a PNG: rgb | depth | normals | semantic | LiDAR bird's-eye view with boxes.

Used by ``taskology inspect --png`` and the simulator's ``--preview``. Rendering uses matplotlib's
Agg backend (no display needed); the PNG is written atomically.

Example:
    >>> # render_frame_png(Path("data/sim/seq0000.h5"), 0, Path("frame0.png"))
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from taskology.data.shard import Shard
from taskology.errors import DataError

#: CARLA >= 0.9.14 semantic palette (tag id -> RGB), the colours CARLA's CityScapesPalette uses.
CARLA_PALETTE: dict[int, tuple[int, int, int]] = {
    0: (0, 0, 0), 1: (128, 64, 128), 2: (244, 35, 232), 3: (70, 70, 70), 4: (102, 102, 156),
    5: (190, 153, 153), 6: (153, 153, 153), 7: (250, 170, 30), 8: (220, 220, 0), 9: (107, 142, 35),
    10: (152, 251, 152), 11: (70, 130, 180), 12: (220, 20, 60), 13: (255, 0, 0), 14: (0, 0, 142),
    15: (0, 0, 70), 16: (0, 60, 100), 17: (0, 80, 100), 18: (0, 0, 230), 19: (119, 11, 32),
    20: (110, 190, 160), 21: (170, 120, 50), 22: (55, 90, 80), 23: (45, 60, 150), 24: (157, 234, 50),
    25: (81, 0, 81), 26: (150, 100, 100), 27: (230, 150, 140), 28: (180, 165, 180),
}


def palette_lut() -> np.ndarray:
    """(256, 3) uint8 lookup table from semantic tag id to colour (unknown ids: magenta)."""
    lut = np.tile(np.array([255, 0, 255], np.uint8), (256, 1))
    for tag, colour in CARLA_PALETTE.items():
        lut[tag] = colour
    return lut


def colorize_semantic(semantic: np.ndarray) -> np.ndarray:
    """(H, W) uint8 tag ids -> (H, W, 3) uint8 CARLA colours."""
    return palette_lut()[semantic]


def colorize_normals(normals: np.ndarray) -> np.ndarray:
    """(H, W, 3) unit normals (camera frame) -> (H, W, 3) float in [0, 1]; invalid (zero) pixels black."""
    valid = np.linalg.norm(normals, axis=-1, keepdims=True) > 0.5
    return np.where(valid, (normals + 1.0) / 2.0, 0.0).clip(0.0, 1.0)


def box_corners_bev(boxes: np.ndarray) -> np.ndarray:
    """(O, 7) boxes (x, y, z, l, w, h, yaw) -> (O, 4, 2) xy corners of the footprint, ego frame, metres."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    half = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]], dtype=np.float64) * 0.5
    local = half[None] * boxes[:, None, 3:5]                   # (O, 4, 2)
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (O, 2, 2)
    return np.einsum("oij,okj->oki", rot, local) + boxes[:, None, :2]


def render_frame_png(shard_path: Path, frame: int, out_png: Path, *, bev_range_m: float = 50.0) -> Path:
    """Write frame ``frame`` of ``shard_path`` as a PNG to ``out_png``; returns ``out_png``.

    Panels (those whose groups exist): rgb, depth (magma, near bright; invalid black), normals
    ((n + 1) / 2), semantic (CARLA palette), LiDAR bird's-eye view (points in the ego frame coloured by
    height, x forward up, y left to the left) with object footprints.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon

    out_png = Path(out_png)
    with Shard.open(shard_path) as shard:
        if not 0 <= frame < shard.num_frames:
            raise DataError(f"{shard_path}: frame {frame} out of range 0..{shard.num_frames - 1}")
        layers = shard.frame(frame)
        title = f"{shard.sequence_id}  frame {frame}/{shard.num_frames}"
        groups = shard.groups
    image_panels: list[tuple[str, np.ndarray, dict]] = []
    if "camera" in groups:
        depth = layers["camera/depth"]
        valid = depth > 0
        inv = np.where(valid, 1.0 / np.maximum(depth, 1e-3), 0.0)
        hi = np.percentile(inv[valid], 99) if valid.any() else 1.0
        depth_rgb = plt.get_cmap("magma")(np.clip(inv / max(hi, 1e-6), 0, 1))[..., :3] * valid[..., None]
        image_panels = [
            ("rgb", layers["camera/rgb"], {}),
            (f"depth (m, {depth[valid].min() if valid.any() else 0:.1f}..{depth.max():.1f}; black = invalid)",
             depth_rgb, {}),
            ("normals (camera frame)", colorize_normals(layers["camera/normals"]), {}),
            ("semantic (CARLA palette)", colorize_semantic(layers["camera/semantic"]), {}),
        ]
    has_bev = "lidar" in groups or "objects" in groups
    rows = max(len(image_panels), 1)
    aspect = layers["camera/rgb"].shape[1] / layers["camera/rgb"].shape[0] if image_panels else 1.0
    fig = plt.figure(figsize=(3.0 * aspect * 0.8 + (6.0 if has_bev else 0.0), 2.4 * rows + 0.6), dpi=100)
    grid = fig.add_gridspec(rows, 2 if has_bev else 1, width_ratios=[aspect * 0.8, 2.0] if has_bev else [1])
    for row, (name, img, _) in enumerate(image_panels):
        ax = fig.add_subplot(grid[row, 0])
        ax.imshow(img, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if has_bev:
        ax = fig.add_subplot(grid[:, 1] if image_panels else grid[0, 0])
        if "lidar" in groups and len(layers["lidar/points"]):
            pts = layers["lidar/points"].astype(np.float64)
            ego_from_lidar = np.linalg.inv(layers["lidar/lidar_from_ego"])
            xyz = pts[:, :3] @ ego_from_lidar[:3, :3].T + ego_from_lidar[:3, 3]
            ax.scatter(-xyz[:, 1], xyz[:, 0], c=xyz[:, 2], s=1.5, cmap="viridis", vmin=-2.5, vmax=4.0,
                       linewidths=0)
        if "objects" in groups:
            for corners, cls in zip(box_corners_bev(layers["objects/box"]), layers["objects/class_id"]):
                colour = np.array(CARLA_PALETTE.get(int(cls), (255, 0, 255))) / 255.0
                ax.add_patch(Polygon(np.column_stack([-corners[:, 1], corners[:, 0]]), closed=True, fill=False,
                                     edgecolor=colour, linewidth=1.2))
        ax.plot([0], [0], marker="^", color="red", markersize=6)
        ax.set_xlim(-bev_range_m, bev_range_m)
        ax.set_ylim(-bev_range_m, bev_range_m)
        ax.set_aspect("equal")
        ax.set_title("LiDAR BEV (ego frame, x forward up, m)", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    from taskology.atomic import save_figure_atomic

    return save_figure_atomic(fig, out_png, format="png")
