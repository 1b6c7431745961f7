"""Bird's-eye-view (BEV) pictures of LiDAR detections and tracks, from plain arrays (matplotlib Agg).

Two pictures, each saved atomically (:func:`taskology.atomic.save_figure_atomic`):

- :func:`plot_bev_frame`: one frame seen from above. LiDAR points (ego frame) as small grey dots, the true boxes
  as black dashed outlines, the detected boxes as solid outlines coloured by track id with the id written beside
  them, the ego vehicle as a black box with an arrow pointing forward. x (forward) points up, y (left) points
  left, both in metres, so the picture is what a driver sees on a map that turns with the car.
- :func:`plot_track_strip`: one track over consecutive frames, one column per frame: a BEV crop centred on the
  tracked box and, when camera images are given, the camera image with the box projected into it.

Track colours are stable: :func:`track_colour` maps an id to a hue by Fibonacci hashing (``id * 0.618...`` modulo
1), so an id has the same colour in every frame, every picture and every run, and nearby ids get hues far
apart. Untracked boxes (id ``-1``) are drawn dark grey.

Conventions: boxes are ``(x, y, z, l, w, h, yaw)`` in the ego frame (``z`` at the centre, ``l`` along the
heading, yaw counter-clockwise from x), as in :mod:`taskology.eval3d.records`; camera intrinsics ``K`` (3, 3) and
``cam_from_ego`` (4, 4) map ego points to OpenCV camera pixels.

Example:
    >>> track_colour(7) == track_colour(7), track_colour(7) != track_colour(8)
    (True, True)
    >>> np.round(box_corners_bev(np.array([[1.0, 0.0, 0.5, 4.0, 2.0, 1.5, 0.0]]))[0], 2).tolist()
    [[3.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [3.0, -1.0]]
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from taskology.atomic import save_figure_atomic
from taskology.report.plots import pyplot

#: the Fibonacci hashing constant (golden ratio - 1): hue of track ``i`` is ``frac(i * GOLDEN)``.
GOLDEN = 0.6180339887498949
#: colour of untracked detections (track id -1).
UNTRACKED_COLOUR = (0.35, 0.35, 0.35)
#: true boxes: outline colour and line style.
TRUTH_COLOUR = "black"
TRUTH_STYLE = "--"
#: LiDAR points: colour and marker size (points^2) in a view of +-32 m (closer views: larger).
POINT_COLOUR = "0.55"
POINT_SIZE = 0.6
#: the ego vehicle drawn at the origin: (length, width) metres.
EGO_SIZE_M = (4.5, 1.9)
#: resolution of saved pictures.
DPI = 100
#: height added below a BEV frame for its legend, inches.
LEGEND_IN = 0.8


def track_colour(track_id: int) -> tuple[float, float, float]:
    """RGB in [0, 1] of a track id: a hue from Fibonacci hashing of the id (stable across frames and runs), two
    brightness levels alternating with the id; :data:`UNTRACKED_COLOUR` for ids < 0."""
    track_id = int(track_id)
    if track_id < 0:
        return UNTRACKED_COLOUR
    hue = (track_id * GOLDEN) % 1.0
    value = 0.85 if track_id % 2 == 0 else 0.65
    return colorsys.hsv_to_rgb(hue, 0.9, value)


def box_corners_bev(boxes: np.ndarray) -> np.ndarray:
    """(n, 4, 2) ego-frame ``(x, y)`` corners of boxes (n, 7), front-left, rear-left, rear-right, front-right."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    local = np.array([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]])
    half = local[None] * boxes[:, None, 3:5]  # (n, 4, 2) in the box frame
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = boxes[:, None, 0] + c * half[..., 0] - s * half[..., 1]
    y = boxes[:, None, 1] + s * half[..., 0] + c * half[..., 1]
    return np.stack([x, y], axis=-1)


def box_corners_3d(box: np.ndarray) -> np.ndarray:
    """(8, 3) ego-frame corners of one box: the four BEV corners at the bottom, then at the top."""
    box = np.asarray(box, dtype=np.float64).reshape(7)
    bev = box_corners_bev(box[None])[0]
    bottom = np.column_stack([bev, np.full(4, box[2] - box[5] / 2)])
    top = np.column_stack([bev, np.full(4, box[2] + box[5] / 2)])
    return np.vstack([bottom, top])


#: corner pairs of the 12 edges of :func:`box_corners_3d`.
BOX_EDGES: tuple[tuple[int, int], ...] = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4),
                                          (0, 4), (1, 5), (2, 6), (3, 7))


def project_box(box: np.ndarray, K: np.ndarray, cam_from_ego: np.ndarray, *, near_m: float = 0.1
                ) -> np.ndarray | None:
    """(8, 2) pixel ``(u, v)`` of the box corners in a pinhole camera, or None when a corner is behind the
    camera (closer than ``near_m`` along the optical axis)."""
    corners = box_corners_3d(box)
    cam = corners @ np.asarray(cam_from_ego, dtype=np.float64)[:3, :3].T + np.asarray(cam_from_ego)[:3, 3]
    if (cam[:, 2] < near_m).any():
        return None
    pixels = cam @ np.asarray(K, dtype=np.float64).T
    return pixels[:, :2] / pixels[:, 2:3]


def _bev_xy(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plot coordinates of ego ``(x, y)``: horizontal = y (left positive, the axis is inverted), vertical = x."""
    xy = np.asarray(xy, dtype=np.float64)
    return xy[..., 1], xy[..., 0]


def _draw_ego(ax: Any) -> None:
    from matplotlib.patches import FancyArrow, Polygon

    length, width = EGO_SIZE_M
    corners = box_corners_bev(np.array([[0.0, 0.0, 0.0, length, width, 1.5, 0.0]]))[0]
    h, v = _bev_xy(corners)
    ax.add_patch(Polygon(np.column_stack([h, v]), closed=True, facecolor="black", edgecolor="black", zorder=5))
    ax.add_patch(FancyArrow(0.0, length / 2, 0.0, 2.0, width=0.5, head_width=1.6, head_length=1.2,
                            color="black", zorder=5))


def _draw_boxes(ax: Any, boxes: np.ndarray, colours: Sequence[Any], *, style: str = "-",
                width: float | Sequence[float] = 1.6, labels: Sequence[str] | None = None, fontsize: float = 8.0,
                heading: bool = True) -> None:
    from matplotlib.patches import Polygon

    corners = box_corners_bev(boxes)
    widths = np.broadcast_to(np.asarray(width, dtype=np.float64), (len(corners),))
    for k, (corner, colour) in enumerate(zip(corners, colours)):
        h, v = _bev_xy(corner)
        ax.add_patch(Polygon(np.column_stack([h, v]), closed=True, fill=False, edgecolor=colour, linestyle=style,
                             linewidth=widths[k], zorder=4))
        if heading:  # a tick from the centre to the front edge shows the heading
            front = corner[[0, 3]].mean(axis=0)
            centre = np.asarray(boxes[k][:2], dtype=np.float64)
            fh, fv = _bev_xy(np.stack([centre, front]))
            ax.plot(fh, fv, color=colour, linewidth=widths[k] * 0.8, linestyle=style, zorder=4)
        if labels is not None and labels[k]:
            top = corner[np.argmax(corner[:, 0])]
            th, tv = _bev_xy(top)
            ax.annotate(labels[k], (th, tv), xytext=(2, 2), textcoords="offset points", color=colour,
                        fontsize=fontsize, fontweight="bold", zorder=6, clip_on=True)


def _bev_legend_handles(track_ids: np.ndarray) -> list[Any]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [
        Line2D([], [], marker=".", linestyle="", color=POINT_COLOUR, markersize=5, label="LiDAR points"),
        Line2D([], [], color=TRUTH_COLOUR, linestyle=TRUTH_STYLE, linewidth=1.4, label="true box"),
        Line2D([], [], color=track_colour(1), linewidth=1.8, label="detected box: #track id, colour = track"),
        Patch(facecolor="black", label="ego vehicle (arrow: forward)"),
    ]
    if (np.asarray(track_ids) < 0).any():
        handles.insert(3, Line2D([], [], color=UNTRACKED_COLOUR, linewidth=1.8, label="detected, untracked"))
    return handles


def draw_bev(ax: Any, points: np.ndarray, true_boxes: np.ndarray, boxes: np.ndarray, track_ids: np.ndarray, *,
             range_m: float = 32.0, labels: Sequence[str] | None = None, centre: tuple[float, float] = (0.0, 0.0),
             ego: bool = True, fontsize: float = 8.0, highlight: int | None = None) -> None:
    """Draw one BEV view into ``ax`` (see the module docstring).

    Args:
        ax: a matplotlib axis.
        points: (P, >=2) LiDAR points, ego frame (only ``x, y`` are used).
        true_boxes: (m, 7) true boxes, ego frame.
        boxes: (n, 7) detected boxes, ego frame.
        track_ids: (n,) their track ids (-1 = untracked).
        range_m: half side of the square shown, metres, around ``centre``.
        labels: (n,) text beside each detected box; default ``#<track id>`` (nothing for untracked boxes).
        centre: ego ``(x, y)`` at the centre of the view.
        ego: draw the ego vehicle at the origin.
        fontsize: of the labels.
        highlight: a track id drawn bold; the other detected boxes are then drawn thin and without a label.
    """
    points = np.asarray(points, dtype=np.float64)
    points = points.reshape(0, 3) if points.size == 0 else points
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    track_ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
    if len(track_ids) != len(boxes):
        raise ValueError(f"draw_bev: {len(boxes)} boxes but {len(track_ids)} track ids")
    cx, cy = centre
    near = (np.abs(points[:, 0] - cx) <= range_m) & (np.abs(points[:, 1] - cy) <= range_m)
    h, v = _bev_xy(points[near, :2])
    size = POINT_SIZE * max(1.0, 32.0 / range_m)  # a close-up shows the points of an object larger
    ax.scatter(h, v, s=size, c=POINT_COLOUR, marker=".", linewidths=0, zorder=1, rasterized=True)
    _draw_boxes(ax, np.asarray(true_boxes, dtype=np.float64).reshape(-1, 7),
                [TRUTH_COLOUR] * len(np.asarray(true_boxes).reshape(-1, 7)), style=TRUTH_STYLE, width=1.3,
                heading=False)
    if labels is None:
        labels = [f"#{int(t)}" if t >= 0 and (highlight is None or t == highlight) else "" for t in track_ids]
    widths = [1.6 if highlight is None or t == highlight else 0.7 for t in track_ids]
    _draw_boxes(ax, boxes, [track_colour(t) for t in track_ids], labels=labels, fontsize=fontsize, width=widths)
    if ego:
        _draw_ego(ax)
    ax.set_xlim(cy + range_m, cy - range_m)  # y to the left: left of the car is left in the picture
    ax.set_ylim(cx - range_m, cx + range_m)
    ax.set_aspect("equal")
    ax.grid(True, linewidth=0.3, alpha=0.5)


def plot_bev_frame(points: np.ndarray, true_boxes: np.ndarray, boxes: np.ndarray, track_ids: np.ndarray,
                   out_png: Path, *, title: str, range_m: float = 32.0, labels: Sequence[str] | None = None,
                   size_in: float = 6.4) -> Path:
    """One frame's BEV picture (see :func:`draw_bev` for the arrays) with metre axes, a legend below the view
    and ``title`` on top, saved atomically to ``out_png`` (``size_in`` by ``size_in + LEGEND_IN`` inches at
    :data:`DPI`); returns the path."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(size_in, size_in + LEGEND_IN))
    draw_bev(ax, points, true_boxes, boxes, track_ids, range_m=range_m, labels=labels)
    ax.set_xlabel("y (m, left of the ego vehicle)")
    ax.set_ylabel("x (m, ahead of the ego vehicle)")
    ax.set_title(title, fontsize=10)
    ax.legend(handles=_bev_legend_handles(track_ids), loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2,
              fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.93, bottom=0.2)
    return save_figure_atomic(fig, Path(out_png), dpi=DPI)


@dataclass
class TrackCrop:
    """One column of a track strip: a frame and what is drawn in it.

    Attributes:
        frame: frame index (for the caption).
        box: (7,) the tracked box, ego frame.
        points: (P, >=2) LiDAR points, ego frame.
        true_boxes: (m, 7) true boxes, ego frame.
        others: (k, 7) other detected boxes of the frame and ``other_ids`` (k,) their track ids (drawn thin).
        image: (H, W, 3) camera image (uint8 or float in [0, 1]), or None.
        K: (3, 3) camera intrinsics; cam_from_ego: (4, 4); both needed with ``image``.
        caption: extra text under the frame number (e.g. the score).
    """

    frame: int
    box: np.ndarray
    points: np.ndarray
    true_boxes: np.ndarray
    others: np.ndarray | None = None
    other_ids: np.ndarray | None = None
    image: np.ndarray | None = None
    K: np.ndarray | None = None
    cam_from_ego: np.ndarray | None = None
    caption: str = ""


def plot_track_strip(crops: Sequence[TrackCrop], track_id: int, out_png: Path, *, title: str,
                     crop_m: float | None = None, cell_in: float = 2.2) -> Path:
    """One track over consecutive frames: per frame a BEV crop of ``+-crop_m`` metres centred on the tracked box
    (default: 1.8 times the box's longest side, at least 4 m: a pedestrian gets a closer look than a car) and,
    when any crop has a camera image, the camera image above it with the tracked box projected (in the track's
    colour; "not in view" when it is behind the camera). Saved atomically; returns the path."""
    if not crops:
        raise ValueError("plot_track_strip: no frames to draw")
    if crop_m is None:
        crop_m = max(4.0, 1.8 * max(float(np.max(np.asarray(c.box, dtype=np.float64)[3:5])) for c in crops))
    plt = pyplot()
    camera = any(c.image is not None for c in crops)
    colour = track_colour(track_id)
    image_h = 0.0
    if camera:
        first = next(c.image for c in crops if c.image is not None)
        image_h = cell_in * first.shape[0] / first.shape[1]
    rows = 2 if camera else 1
    heights = [image_h, cell_in] if camera else [cell_in]
    fig, axes = plt.subplots(rows, len(crops), figsize=(cell_in * len(crops) + 0.6, sum(heights) + 1.3),
                             squeeze=False, gridspec_kw={"height_ratios": heights}, layout="constrained")
    for k, crop in enumerate(crops):
        bev_ax = axes[-1, k]
        box = np.asarray(crop.box, dtype=np.float64).reshape(7)
        others = np.zeros((0, 7)) if crop.others is None else np.asarray(crop.others, dtype=np.float64).reshape(-1, 7)
        other_ids = np.full(len(others), -1) if crop.other_ids is None else np.asarray(crop.other_ids)
        draw_bev(bev_ax, crop.points, crop.true_boxes, np.vstack([others, box[None]]),
                 np.append(other_ids, track_id).astype(np.int64), range_m=crop_m, centre=(box[0], box[1]),
                 ego=False, fontsize=7, highlight=track_id)
        bev_ax.tick_params(labelsize=6)
        bev_ax.set_xlabel("y (m)" + (f"\n{crop.caption}" if crop.caption else ""), fontsize=7)
        if not camera:
            bev_ax.set_title(f"frame {crop.frame}", fontsize=8)
        if k == 0:
            bev_ax.set_ylabel("x (m)", fontsize=7)
        if camera:
            cam_ax = axes[0, k]
            cam_ax.set_xticks([])
            cam_ax.set_yticks([])
            if crop.image is None:
                cam_ax.set_axis_off()
                continue
            image = np.asarray(crop.image)
            cam_ax.imshow(image, interpolation="nearest")
            pixels = None if crop.K is None or crop.cam_from_ego is None else \
                project_box(box, crop.K, crop.cam_from_ego)
            if pixels is None:
                cam_ax.text(0.5, 0.1, "not in view", transform=cam_ax.transAxes, ha="center", fontsize=7,
                            color="white", bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "linewidth": 0})
            else:
                for a, b in BOX_EDGES:
                    cam_ax.plot(pixels[[a, b], 0], pixels[[a, b], 1], color=colour, linewidth=1.2)
            cam_ax.set_xlim(-0.5, image.shape[1] - 0.5)
            cam_ax.set_ylim(image.shape[0] - 0.5, -0.5)
            cam_ax.set_title(f"frame {crop.frame}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    from matplotlib.lines import Line2D

    fig.legend(handles=[Line2D([], [], color=colour, linewidth=1.8, label=f"track #{track_id}"),
                        Line2D([], [], color=track_colour(track_id + 1), linewidth=0.7, label="other tracks"),
                        Line2D([], [], color=TRUTH_COLOUR, linestyle=TRUTH_STYLE, label="true box"),
                        Line2D([], [], marker=".", linestyle="", color=POINT_COLOUR, label="LiDAR points")],
               loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    return save_figure_atomic(fig, Path(out_png), dpi=DPI)


__all__ = ["BOX_EDGES", "TrackCrop", "box_corners_3d", "box_corners_bev", "draw_bev", "plot_bev_frame",
           "plot_track_strip", "project_box", "track_colour"]
