"""What the LiDAR tasks (``detection``, ``tracking``) share: the BEV input, box labels, the box code, the network.

**Input.** A sweep (``lidar_points``, LiDAR frame) is moved to the ego frame and scattered into the pillars of a
bird's-eye-view grid (:func:`taskology.geometry.pillars.bev_pillars`, a Numba kernel): ``bev`` (6, H, W) float32,
row ``i`` along x (forward), column ``j`` along y (left). A pair also gets ``bev_next``. The pillar features are
fixed statistics (count, heights, intensity), not a learned per-point encoder as in PointPillars: the scatter
then runs once per sample in the data loader and the network is a plain 2D CNN, which is what a 2-core CPU
affords; the grid and the rest of the model are the same.

**Labels.** Boxes of the classes :data:`DETECTION_CLASSES` (vehicle = CARLA car, truck, bus; pedestrian) whose
centre is on the grid and which hold at least ``min_points`` points of the sweep (``points_in_boxes``) are the
targets; the rest of the world's objects are not visible to a LiDAR and are no target. They are padded to
:data:`MAX_BOXES` rows (``gt_boxes`` (MAX_BOXES, 7) float32 ego frame, ``gt_class`` (MAX_BOXES,) int64 with -1
for padding, ``gt_track`` track ids).

**Box code** (CenterPoint): at output stride :data:`OUTPUT_STRIDE` every cell has a heatmap logit per class and
8 regression numbers ``(di, dj, z, log l, log w, log h, sin yaw, cos yaw)``: the sub-cell offset of the centre
(cells), its height and size (metres) and its heading. :func:`encode_targets` draws Gaussian peaks at the true
centres; :func:`decode_boxes` takes the 3x3 local maxima above a score, then per-class NMS (``nms_bev``).

Example:
    >>> from taskology.geometry.pillars import BevGrid
    >>> grid = BevGrid((-8.0, 8.0), (-8.0, 8.0), (-0.5, 4.5), 0.5)
    >>> boxes = np.array([[2.3, -1.7, 0.8, 4.5, 1.9, 1.6, 0.4]])
    >>> target = encode_targets(boxes, np.array([0]), grid)
    >>> found, classes, scores = decode_boxes(target["heatmap"] * 20 - 10, target["box_map"], grid)
    >>> np.round(found, 3).tolist(), classes.tolist()
    ([[2.3, -1.7, 0.8, 4.5, 1.9, 1.6, 0.4]], [0])
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from taskology.geometry.box_iou import box_iou_bev, nms_bev
from taskology.geometry.boxes import points_in_boxes
from taskology.geometry.pillars import PILLAR_FEATURES, BevGrid, augment_sweep, bev_pillars, random_augmentation
from taskology.runtime import numba_single_thread

#: detection classes and the CARLA tag ids each one covers (taskology.data.schema.SEMANTIC_CLASSES).
DETECTION_CLASSES: dict[str, tuple[int, ...]] = {"vehicle": (14, 15, 16), "pedestrian": (12,)}
CLASS_NAMES: tuple[str, ...] = tuple(DETECTION_CLASSES)
#: CARLA tag id -> detection class index.
CLASS_OF_TAG: dict[int, int] = {tag: k for k, tags in enumerate(DETECTION_CLASSES.values()) for tag in tags}
#: rows of the padded box labels of one frame (more visible boxes than this are cut, nearest first).
MAX_BOXES = 64
#: BEV cells per output cell of the heads.
OUTPUT_STRIDE = 2
#: regression channels of the box code.
BOX_CODE = ("di", "dj", "z", "log_l", "log_w", "log_h", "sin_yaw", "cos_yaw")
#: bias of the heatmap logits at initialisation (prior probability 0.1, as CenterPoint).
HEATMAP_PRIOR_BIAS = -2.19


def ego_points(points: torch.Tensor | np.ndarray, lidar_from_ego: torch.Tensor | np.ndarray) -> np.ndarray:
    """(P, 4) float32 ``x, y, z, intensity`` of a LiDAR-frame sweep in the ego frame (float32 arithmetic: 1e-5 m
    at 100 m, far below a cell)."""
    pts = np.asarray(points, dtype=np.float32)
    transform = np.linalg.inv(np.asarray(lidar_from_ego, dtype=np.float64)).astype(np.float32)
    out = np.empty_like(pts)
    np.matmul(pts[:, :3], transform[:3, :3].T, out=out[:, :3])
    out[:, :3] += transform[:3, 3]
    out[:, 3] = pts[:, 3]
    return out


def visible_boxes(points: np.ndarray, boxes: np.ndarray, class_id: np.ndarray, track_id: np.ndarray,
                  grid: BevGrid, min_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labelled boxes a detector can be asked for: of a detection class, centre on the grid, at least
    ``min_points`` points of the (ego-frame) sweep inside. Returns (boxes (n, 7) float64, class index (n,),
    track id (n,)), nearest first, at most :data:`MAX_BOXES`."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    classes = np.array([CLASS_OF_TAG.get(int(c), -1) for c in np.asarray(class_id).reshape(-1)], dtype=np.int64)
    (x0, x1), (y0, y1) = grid.x_range, grid.y_range
    keep = (classes >= 0) & (boxes[:, 0] >= x0) & (boxes[:, 0] < x1) & (boxes[:, 1] >= y0) & (boxes[:, 1] < y1)
    if keep.any() and len(points):
        counts = np.zeros(len(boxes), dtype=np.int64)
        with numba_single_thread():
            inside = points_in_boxes(np.ascontiguousarray(points[:, :3], dtype=np.float64), boxes[keep])
        counts[np.flatnonzero(keep)] = np.bincount(inside[inside >= 0], minlength=int(keep.sum()))
        keep &= counts >= min_points
    else:
        keep[:] = False
    index = np.flatnonzero(keep)
    index = index[np.argsort(np.hypot(boxes[index, 0], boxes[index, 1]), kind="stable")][:MAX_BOXES]
    return boxes[index], classes[index], np.asarray(track_id, dtype=np.int64).reshape(-1)[index]


def padded(boxes: np.ndarray, classes: np.ndarray, tracks: np.ndarray) -> dict[str, torch.Tensor]:
    """Box labels padded to :data:`MAX_BOXES` rows: ``gt_boxes``, ``gt_class`` (-1 = padding), ``gt_track``."""
    n = len(boxes)
    out_boxes = np.zeros((MAX_BOXES, 7), dtype=np.float32)
    out_class = np.full(MAX_BOXES, -1, dtype=np.int64)
    out_track = np.full(MAX_BOXES, -1, dtype=np.int64)
    out_boxes[:n], out_class[:n], out_track[:n] = boxes, classes, tracks
    return {"gt_boxes": torch.from_numpy(out_boxes), "gt_class": torch.from_numpy(out_class),
            "gt_track": torch.from_numpy(out_track)}


def unpadded(boxes: torch.Tensor, classes: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The real rows of one frame's padded labels: (boxes (n, 7) float64, class index (n,))."""
    keep = classes.cpu().numpy() >= 0
    return boxes.detach().cpu().double().numpy()[keep], classes.cpu().numpy()[keep]


def output_shape(grid: BevGrid) -> tuple[int, int]:
    """(h, w) of the heads' maps."""
    return grid.shape[0] // OUTPUT_STRIDE, grid.shape[1] // OUTPUT_STRIDE


def output_cells(xy: np.ndarray, grid: BevGrid) -> np.ndarray:
    """(n, 2) float output-cell coordinates ``(i, j)`` of ego-frame points ``xy`` (n, 2); cell ``(i, j)`` covers
    ``[i, i+1) x [j, j+1)``."""
    size = grid.cell_m * OUTPUT_STRIDE
    return np.stack([(xy[:, 0] - grid.x_range[0]) / size, (xy[:, 1] - grid.y_range[0]) / size], axis=1)


def encode_targets(boxes: np.ndarray, classes: np.ndarray, grid: BevGrid) -> dict[str, np.ndarray]:
    """CenterPoint targets of one frame's boxes (n, 7): ``heatmap`` (K, h, w) float32 Gaussian peaks (1 at each
    centre cell), ``box_map`` (8, h, w) the box code at each centre cell, ``index`` (MAX_BOXES,) int64 flat
    centre cell, ``mask`` (MAX_BOXES,) float32 and ``code`` (MAX_BOXES, 8) float32 per box (padded)."""
    h, w = output_shape(grid)
    heatmap = np.zeros((len(CLASS_NAMES), h, w), dtype=np.float32)
    box_map = np.zeros((len(BOX_CODE), h, w), dtype=np.float32)
    index = np.zeros(MAX_BOXES, dtype=np.int64)
    mask = np.zeros(MAX_BOXES, dtype=np.float32)
    code = np.zeros((MAX_BOXES, len(BOX_CODE)), dtype=np.float32)
    cells = output_cells(np.asarray(boxes, dtype=np.float64).reshape(-1, 7)[:, :2], grid)
    size = grid.cell_m * OUTPUT_STRIDE
    ii, jj = np.mgrid[0:h, 0:w]
    for n, (box, k, (ci, cj)) in enumerate(zip(boxes, classes, cells)):
        i, j = int(math.floor(ci)), int(math.floor(cj))
        if not (0 <= i < h and 0 <= j < w) or n >= MAX_BOXES:
            continue
        radius = max(1.0, 0.5 * min(box[3], box[4]) / size)
        sigma = (2.0 * radius + 1.0) / 6.0
        lo_i, hi_i, lo_j, hi_j = max(0, i - 3), min(h, i + 4), max(0, j - 3), min(w, j + 4)
        patch = np.exp(-((ii[lo_i:hi_i, lo_j:hi_j] - i) ** 2 + (jj[lo_i:hi_i, lo_j:hi_j] - j) ** 2) / (2 * sigma ** 2))
        np.maximum(heatmap[k, lo_i:hi_i, lo_j:hi_j], patch, out=heatmap[k, lo_i:hi_i, lo_j:hi_j])
        values = (ci - i, cj - j, box[2], math.log(box[3]), math.log(box[4]), math.log(box[5]),
                  math.sin(box[6]), math.cos(box[6]))
        box_map[:, i, j] = values
        index[n], mask[n], code[n] = i * w + j, 1.0, values
    return {"heatmap": heatmap, "box_map": box_map, "index": index, "mask": mask, "code": code}


def boxes_from_code(cells: np.ndarray, code: np.ndarray, grid: BevGrid) -> np.ndarray:
    """(n, 7) float64 boxes from integer output cells ``(i, j)`` (n, 2) and their box code (n, 8)."""
    size = grid.cell_m * OUTPUT_STRIDE
    code = np.asarray(code, dtype=np.float64)
    x = grid.x_range[0] + (cells[:, 0] + code[:, 0]) * size
    y = grid.y_range[0] + (cells[:, 1] + code[:, 1]) * size
    dims = np.exp(np.clip(code[:, 3:6], -3.0, 3.5))
    return np.concatenate([x[:, None], y[:, None], code[:, 2:3], dims, np.arctan2(code[:, 6], code[:, 7])[:, None]],
                          axis=1)


def decode_boxes(heatmap: torch.Tensor | np.ndarray, box_map: torch.Tensor | np.ndarray, grid: BevGrid, *,
                 score_threshold: float = 0.1, max_boxes: int = MAX_BOXES, nms_iou: float = 0.2
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes of one frame from its heatmap logits (K, h, w) and box code (8, h, w): the 3x3 local maxima of
    each class's sigmoid above ``score_threshold``, the best ``max_boxes``, then per-class BEV NMS at
    ``nms_iou`` (the Numba ``nms_bev``). Returns (boxes (n, 7) float64 ego frame, class index (n,) int64,
    score (n,) float32), best first."""
    heat = torch.as_tensor(heatmap, dtype=torch.float32)[None]
    code = torch.as_tensor(box_map, dtype=torch.float32)[None]
    return _decode(heat, code, grid, score_threshold, max_boxes, nms_iou)[0]


def decode_batch(outputs: Mapping[str, torch.Tensor], grid: BevGrid, suffix: str = "", **options: Any
                 ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`decode_boxes` for every frame of a batch of ``heatmap<suffix>`` / ``box<suffix>`` outputs (the peak
    search runs on the whole batch at once)."""
    return _decode(outputs[f"heatmap{suffix}"], outputs[f"box{suffix}"], grid, float(options.get("score_threshold", 0.1)),
                   int(options.get("max_boxes", MAX_BOXES)), float(options.get("nms_iou", 0.2)))


def _decode(heatmap: torch.Tensor, box_map: torch.Tensor, grid: BevGrid, score_threshold: float, max_boxes: int,
            nms_iou: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    # Peaks are searched among the cells above the threshold only (a few per object), on the logits (the sigmoid
    # is monotonic): a 3x3 max-pool over the whole map cost most of a frame's decoding.
    logits = heatmap.detach().float().cpu().numpy()                                          # (B, K, h, w)
    codes = box_map.detach().float().cpu().numpy()
    threshold = math.log(score_threshold / (1.0 - score_threshold)) if 0.0 < score_threshold < 1.0 else (
        -math.inf if score_threshold <= 0.0 else math.inf)
    b, k, i, j = np.nonzero(logits >= threshold)
    value = logits[b, k, i, j]
    if len(value):
        h, w = logits.shape[2:]  # a neighbour off the map is clipped onto the map: a cell of the same 3x3 window
        rows_i = (np.maximum(i - 1, 0), i, np.minimum(i + 1, h - 1))
        cols_j = (np.maximum(j - 1, 0), j, np.minimum(j + 1, w - 1))
        around = logits[b, k, rows_i[0], cols_j[0]]
        for ii in rows_i:
            for jj in cols_j:
                np.maximum(around, logits[b, k, ii, jj], out=around)
        peak = value >= around
        b, k, i, j, value = b[peak], k[peak], i[peak], j[peak], value[peak]
    out = []
    for frame in range(logits.shape[0]):
        rows = np.flatnonzero(b == frame)
        rows = rows[np.argsort(-value[rows], kind="stable")[:int(max_boxes)]]
        if len(rows) == 0:
            out.append((np.zeros((0, 7)), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)))
            continue
        cells = np.stack([i[rows], j[rows]], axis=1)
        boxes = boxes_from_code(cells.astype(np.float64), codes[frame][:, cells[:, 0], cells[:, 1]].T, grid)
        score = (1.0 / (1.0 + np.exp(-value[rows].astype(np.float64)))).astype(np.float32)
        cls = k[rows].astype(np.int64)
        # One NMS for all classes: each class is moved far from the others, so boxes of two classes never overlap.
        apart = boxes.copy()
        apart[:, 0] += cls * (2.0 * (np.abs(boxes[:, :2]).max() + boxes[:, 3:5].max()) + 1.0)
        keep = nms_bev(apart, score.astype(np.float64), nms_iou)
        out.append((boxes[keep], cls[keep], score[keep]))
    return out


def label_outputs(gt_boxes: torch.Tensor, gt_class: torch.Tensor, grid: BevGrid, *, suffix: str = "",
                  logit: float = 20.0) -> dict[str, torch.Tensor]:
    """Detection outputs that say exactly a batch's padded labels (``gt_boxes`` (B, MAX_BOXES, 7), ``gt_class``):
    heatmap logits ``+logit`` at the true centres (``-logit`` far from them) and the true box code, as
    ``heatmap<suffix>`` / ``box<suffix>``: the detector a relation or a benchmark is checked against."""
    heat, code = [], []
    for b in range(gt_boxes.shape[0]):
        target = encode_targets(*unpadded(gt_boxes[b], gt_class[b]), grid)
        heat.append(torch.from_numpy(target["heatmap"] * 2 * logit - logit))
        code.append(torch.from_numpy(target["box_map"]))
    return {f"heatmap{suffix}": torch.stack(heat), f"box{suffix}": torch.stack(code)}


def focal_heatmap_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4) of heatmap logits against Gaussian targets,
    normalised by the number of peaks (at least 1)."""
    prob = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    positive = target.eq(1.0).float()
    pos = -torch.log(prob) * (1 - prob) ** 2 * positive
    neg = -torch.log(1 - prob) * prob ** 2 * (1 - target) ** 4 * (1 - positive)
    return (pos.sum() + neg.sum()) / positive.sum().clamp_min(1.0)


def gather_cells(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, n, C) values of ``maps`` (B, C, h, w) at flat cells ``index`` (B, n)."""
    flat = maps.flatten(2)                                                      # (B, C, h*w)
    return flat.gather(2, index[:, None, :].expand(-1, flat.shape[1], -1)).transpose(1, 2)


def sweep_inputs(sample: Mapping[str, Any], grid: BevGrid, *, suffix: str = "",
                 augmentation: Mapping[str, Any] | None = None, boxes: np.ndarray | None = None,
                 points: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None, torch.Tensor]:
    """The ego-frame points of ``lidar_points<suffix>`` (``points`` when already computed), ``boxes`` moved by the
    same ``augmentation`` and the BEV pillars of the (augmented) points."""
    if points is None:
        points = ego_points(sample[f"lidar_points{suffix}"], sample["lidar_from_ego"])
    if augmentation is not None:
        points, boxes = augment_sweep(points, np.zeros((0, 7)) if boxes is None else boxes, **augmentation)
    return points, boxes, torch.from_numpy(bev_pillars(points, grid))


def add_bev(sample: Mapping[str, Any], grid: BevGrid) -> dict[str, Any]:
    """The sample with ``bev`` (and ``bev_next`` for a pair) added, unless already there (both LiDAR tasks
    prepare the same inputs on a mediator sample)."""
    out = dict(sample)
    for suffix in ("", "_next"):
        if f"lidar_points{suffix}" in out and f"bev{suffix}" not in out:
            out[f"bev{suffix}"] = sweep_inputs(out, grid, suffix=suffix)[2]
    return out


def draw_augmentation(enabled: bool) -> dict[str, Any] | None:
    """Keyword arguments of :func:`~taskology.geometry.pillars.augment_sweep` drawn from torch's generator
    (seeded by the runner, so a run is reproducible), or None when ``enabled`` is False."""
    if not enabled:
        return None
    rng = np.random.default_rng(int(torch.randint(0, 2 ** 31 - 1, ())))
    return random_augmentation(rng)


def conv_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class BevBackbone(nn.Module):
    """A small BEV CNN (the PointPillars backbone shape): blocks at strides 1, 2 and 4, the stride-4 block
    upsampled and concatenated with the stride-2 one; returns (B, 4 * width, H/2, W/2) features and the
    stride-4 block (for global heads)."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.stem = conv_block(in_channels, width)
        self.down1 = nn.Sequential(conv_block(width, 2 * width, 2), conv_block(2 * width, 2 * width))
        self.down2 = nn.Sequential(conv_block(2 * width, 4 * width, 2), conv_block(4 * width, 4 * width))
        self.up = nn.Sequential(nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2, bias=False),
                                nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True))
        self.fuse = conv_block(4 * width, 4 * width)
        self.channels = 4 * width

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s2 = self.down1(self.stem(x))
        s4 = self.down2(s2)
        return self.fuse(torch.cat([s2, self.up(s4)], dim=1)), s4


def head(cin: int, cout: int, bias: float = 0.0) -> nn.Sequential:
    """A 3x3 conv (to ``cin // 2`` channels) + 1x1 conv head whose last bias starts at ``bias``."""
    last = nn.Conv2d(cin // 2, cout, 1)
    nn.init.constant_(last.bias, bias)
    return nn.Sequential(conv_block(cin, cin // 2), last)


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """BEV IoU (the Numba kernel, on this thread) of (n, 7) and (m, 7) boxes."""
    with numba_single_thread():
        return box_iou_bev(np.ascontiguousarray(a, dtype=np.float64), np.ascontiguousarray(b, dtype=np.float64))


__all__ = ["DETECTION_CLASSES", "CLASS_NAMES", "CLASS_OF_TAG", "MAX_BOXES", "OUTPUT_STRIDE", "BOX_CODE",
           "PILLAR_FEATURES", "ego_points", "visible_boxes", "padded", "unpadded", "encode_targets", "decode_boxes",
           "decode_batch", "label_outputs", "boxes_from_code", "output_shape", "output_cells", "focal_heatmap_loss", "gather_cells",
           "sweep_inputs", "add_bev", "draw_augmentation", "conv_block", "BevBackbone", "head", "box_iou_matrix"]
