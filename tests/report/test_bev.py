"""BEV pictures of detections and tracks (taskology.report.bev) on hand-made arrays, the choice of frames and track
(taskology.report.detections), and the report's detections section: present with detections, absent without."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from taskology.eval3d.records import FrameDetections, sequence_path, write_sequence
from taskology.report import bev
from taskology.report import detections as det

#: a car ahead-left heading along x, a pedestrian to the right.
TRUTH = np.array([[10.0, 4.0, 0.8, 4.5, 1.9, 1.6, 0.0], [6.0, -5.0, 0.9, 0.8, 0.8, 1.8, 0.0]])


def scene(seed: int = 0) -> np.ndarray:
    """(P, 4) ego-frame points: a ground ring plus points on the two true boxes."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, 2000)
    radius = rng.uniform(3, 30, 2000)
    ground = np.column_stack([radius * np.cos(angle), radius * np.sin(angle), np.zeros(2000), np.ones(2000)])
    on_boxes = np.vstack([np.column_stack([b[0] + rng.uniform(-b[3] / 2, b[3] / 2, 200),
                                           b[1] + rng.uniform(-b[4] / 2, b[4] / 2, 200), np.full(200, b[2]),
                                           np.ones(200)]) for b in TRUTH])
    return np.vstack([ground, on_boxes]).astype(np.float32)


def px(inches: float) -> int:
    """Pixels matplotlib makes of a figure side of ``inches`` at the pictures' DPI."""
    return int(inches * bev.DPI + 1e-6)


def png_shape(path: Path) -> tuple[int, ...]:
    from matplotlib.image import imread

    return imread(path).shape


def test_track_colours_are_stable_and_tell_ids_apart() -> None:
    assert bev.track_colour(5) == bev.track_colour(5) == bev.track_colour(np.int64(5))
    colours = [bev.track_colour(i) for i in range(40)]
    assert len(set(colours)) == 40  # every id its own colour
    gaps = [np.abs(np.subtract(colours[i], colours[i + 1])).max() for i in range(39)]
    assert min(gaps) > 0.15  # consecutive ids (tracks born together) are far apart
    assert bev.track_colour(-1) == bev.UNTRACKED_COLOUR
    assert all(0 <= c <= 1 for colour in colours for c in colour)


def test_box_corners_and_projection() -> None:
    corners = bev.box_corners_bev(np.array([[0.0, 0.0, 0.0, 4.0, 2.0, 1.0, np.pi / 2]]))[0]
    np.testing.assert_allclose(corners, [[-1, 2], [-1, -2], [1, -2], [1, 2]], atol=1e-12)  # turned left: length on y
    K = np.array([[100.0, 0, 80], [0, 100, 24], [0, 0, 1]])
    cam_from_ego = np.array([[0.0, -1, 0, 0], [0, 0, -1, 1.5], [1, 0, 0, 0], [0, 0, 0, 1]])  # x ahead = z
    ahead = bev.project_box(np.array([10.0, 0, 1.5, 2, 2, 2, 0]), K, cam_from_ego)
    assert ahead.shape == (8, 2) and abs(ahead[:, 0].mean() - 80) < 1e-9  # centred horizontally
    assert bev.project_box(np.array([-10.0, 0, 1.5, 2, 2, 2, 0]), K, cam_from_ego) is None  # behind
    assert det.in_camera(np.array([10.0, 0, 1.5, 2, 2, 2, 0]), K, cam_from_ego, (48, 160))
    assert not det.in_camera(np.array([10.0, 30, 1.5, 2, 2, 2, 0]), K, cam_from_ego, (48, 160))


def test_bev_frame_is_a_png_of_the_expected_size(tmp_path: Path) -> None:
    boxes = TRUTH + [0.3, -0.2, 0, 0, 0, 0, 0.1]
    path = bev.plot_bev_frame(scene(), TRUTH, boxes, np.array([3, 8]), tmp_path / "frame.png",
                              title="test sequence s, frame 0", size_in=6.4)
    assert path == tmp_path / "frame.png"
    height, width, _ = png_shape(path)
    assert (height, width) == (px(6.4 + bev.LEGEND_IN), px(6.4))
    assert [p.name for p in tmp_path.iterdir()] == ["frame.png"]  # no temp file left
    # nothing to draw is still a picture (an empty frame of a sequence)
    empty = bev.plot_bev_frame(np.zeros((0, 4)), np.zeros((0, 7)), np.zeros((0, 7)), np.zeros(0), tmp_path / "e.png",
                               title="empty")
    assert png_shape(empty)[:2] == (height, width)
    with pytest.raises(ValueError, match="2 boxes but 1 track ids"):
        bev.plot_bev_frame(scene(), TRUTH, boxes, np.array([3]), tmp_path / "bad.png", title="x")


def test_track_colour_is_what_the_picture_shows(tmp_path: Path) -> None:
    """The pixels of a detected box outline carry its track's colour; the same id in two frames, the same colour."""
    from matplotlib.image import imread

    big = np.array([[0.0, 12.0, 0.8, 8.0, 8.0, 1.6, 0.0]])  # a large box left of the ego vehicle
    seen = []
    for frame, track in ((0, 11), (1, 11), (2, 12)):
        path = bev.plot_bev_frame(np.zeros((0, 4)), np.zeros((0, 7)), big, np.array([track]),
                                  tmp_path / f"f{frame}.png", title=f"frame {frame}")
        rgb = imread(path)[..., :3]
        seen.append(np.abs(rgb - np.asarray(bev.track_colour(11))).sum(-1).min() < 0.05)
    assert seen == [True, True, False]


def test_track_strip_with_and_without_camera(tmp_path: Path) -> None:
    K = np.array([[60.0, 0, 80], [0, 60, 24], [0, 0, 1]])
    cam_from_ego = np.array([[0.0, -1, 0, 0], [0, 0, -1, 1.5], [1, 0, 0, 0], [0, 0, 0, 1]])
    image = np.full((48, 160, 3), 128, np.uint8)
    crops = [bev.TrackCrop(frame=f, box=TRUTH[0] + [f * 0.5, 0, 0, 0, 0, 0, 0], points=scene(f), true_boxes=TRUTH,
                           others=TRUTH[1:], other_ids=np.array([2]), image=image, K=K, cam_from_ego=cam_from_ego,
                           caption="score 0.80") for f in range(5)]
    path = bev.plot_track_strip(crops, 7, tmp_path / "strip.png", title="track #7", cell_in=2.2)
    height, width, _ = png_shape(path)
    assert (height, width) == (px(2.2 + 2.2 * 48 / 160 + 1.3), px(2.2 * 5 + 0.6))
    bev_only = [bev.TrackCrop(frame=c.frame, box=c.box, points=c.points, true_boxes=c.true_boxes) for c in crops[:3]]
    height, width, _ = png_shape(bev.plot_track_strip(bev_only, 7, tmp_path / "bev.png", title="t", cell_in=2.2))
    assert (height, width) == (px(2.2 + 1.3), px(2.2 * 3 + 0.6))
    with pytest.raises(ValueError, match="no frames"):
        bev.plot_track_strip([], 7, tmp_path / "none.png", title="t")


def car(x: float, track: int, score: float = 0.9) -> FrameDetections:
    return FrameDetections(np.array([[x, 0.0, 1.0, 4.0, 2.0, 1.5, 0.0]]), np.array(["vehicle"]), np.array([score]),
                           track_ids=np.array([track]))


def test_the_longest_track_and_the_frames_are_picked() -> None:
    def both(x: float) -> FrameDetections:
        return FrameDetections(np.vstack([car(x, 1).boxes, car(-x, 2).boxes]), np.array(["vehicle", "vehicle"]),
                               np.array([0.9, 0.8]), track_ids=np.array([1, 2]))

    frames = [car(5, 1), both(6), both(7), both(8), car(-9, 2), car(-10, 2), car(11, 1)]
    # track 2 lives 5 consecutive frames (1-5), track 1 two runs (0-3, 6)
    assert det.track_runs(frames) == {1: [[0, 1, 2, 3], [6]], 2: [[1, 2, 3, 4, 5]]}
    assert det.pick_track(frames, length=3) == (2, [1, 2, 3])
    # with the camera looking ahead (+x) only track 1's boxes are seen: both fill a strip of 3, track 1 is shown
    camera = {"K": np.array([[60.0, 0, 80], [0, 60, 24], [0, 0, 1]]), "hw": (48, 160),
              "cam_from_ego": np.array([[0.0, -1, 0, 0], [0, 0, -1, 1.5], [1, 0, 0, 0], [0, 0, 0, 1]])}
    assert det.pick_track(frames, length=3, camera=camera) == (1, [0, 1, 2])
    assert det.pick_track(frames, length=5, camera=camera) == (2, [1, 2, 3, 4, 5])  # only track 2 fills 5 frames
    assert det.pick_track([FrameDetections.empty()] * 3) is None
    low = car(5, -1, score=0.1)
    assert len(det.tracked(low, 0.3)) == 0 and det.pick_sequence({"b": [low], "a": [car(5, 1)]}, 0.3) == "a"
    assert det.bev_frames([car(1, 1)] * 24) == [0, 8, 15, 23] and det.bev_frames([car(1, 1)] * 2) == [0, 1]
    sparse = [FrameDetections.empty()] * 10 + [car(1, 1)] * 5 + [FrameDetections.empty()] * 5
    assert det.bev_frames(sparse) == [10, 11, 13, 14]  # frames with a box
    assert det.bev_frames([FrameDetections.empty()] * 7) == [0, 2, 4, 6]  # none: all frames
    arms = {"alone": det.ArmDetections("alone", Path("a"), {"s": [car(1, 1)]}),
            "collective": det.ArmDetections("collective", Path("c"), {"s": [low]})}
    assert det.pick_arm(arms, 0.3) == "alone"  # the collective arm tracked nothing
    arms["collective"].sequences["s"] = [car(2, 4)]
    assert det.pick_arm(arms, 0.3) == "collective"


# ------------------------------------------------------------------------------ the report's section


def lidar_comparison(root: Path, data: Path, *, with_detections: bool) -> Path:
    """A comparison dir of two six-task arms on the LiDAR shards; detections (hand-made tracks) when asked."""
    from taskology.config import load_config, save_config
    from taskology.data.shard import Shard
    from taskology.demo import DEMO_CONFIG

    for mode in ("alone", "collective"):
        run = root / mode
        config = load_config(DEMO_CONFIG, [f"data.root={data}", "data.test_sequences=1", f"train.mode={mode}",
                                           "train.steps=1", "cluster.address=none"])
        save_config(config, run / "config.yaml")
        (run / "metrics.json").write_text(json.dumps({"steps": 1, "tasks": {"detection": {"vehicle/mota": 0.5}}}))
        if not with_detections:
            continue
        for shard_path in sorted(data.glob("*.h5"))[:2]:
            with Shard.open(shard_path) as shard:
                frames = []
                for f in range(shard.num_frames):
                    boxes = shard.read("objects/box", f)[:3] + [0.2, 0.1, 0, 0, 0, 0, 0]
                    ids = shard.read("objects/track_id", f)[:3].astype(np.int64)
                    frames.append(FrameDetections(boxes, np.array(["vehicle"] * len(boxes)),
                                                  np.full(len(boxes), 0.8), track_ids=ids))
                write_sequence(sequence_path(run, shard.sequence_id), frames)
    return root


def test_report_draws_detections_when_there_are_some(lidar_root: Path, tmp_path: Path, monkeypatch) -> None:
    import taskology.report.command as report_module

    monkeypatch.setattr(report_module, "_gallery_section", lambda *a: [])  # no trained models here
    run = lidar_comparison(tmp_path / "demo", lidar_root, with_detections=True)
    report_dir = report_module.write_report(run)
    text = (report_dir / "report.md").read_text()
    assert "## Detections and tracks (held-out test sequences)" in text
    bevs = sorted(report_dir.glob("bev_*.png"))
    assert 1 <= len(bevs) <= det.BEV_FRAMES and all(f"]({p.name})" in text for p in bevs)
    strips = list(report_dir.glob("track_*.png"))
    assert len(strips) == 1 and f"]({strips[0].name})" in text
    assert png_shape(bevs[0])[:2] == (px(6.4 + bev.LEGEND_IN), px(6.4))
    assert "| collective | " in text and "| alone | " in text


def test_report_without_detections_has_no_section_and_a_note(lidar_root: Path, tmp_path: Path, monkeypatch) -> None:
    import taskology.report.command as report_module

    monkeypatch.setattr(report_module, "_gallery_section", lambda *a: [])
    run = lidar_comparison(tmp_path / "demo", lidar_root, with_detections=False)
    text = (report_module.write_report(run) / "report.md").read_text()
    assert "Detections and tracks" not in text and not list((run / "report").glob("bev_*.png"))
    assert "collective arm trains detection and tracking but has no detections" in text


def test_lidar_metrics_have_their_direction_in_the_table() -> None:
    from taskology.report.tables import MetricRow, metric_table_markdown

    assert MetricRow("detection", "vehicle/ap_bev@0.7", 0.2, 0.3).verdict == "better"
    assert MetricRow("tracking", "pedestrian/mota", 0.2, 0.1).verdict == "worse"
    assert MetricRow("tracking", "vehicle/idf1", 0.2, 0.3).higher_is_better
    assert MetricRow("segmentation", "iou_vehicle", 0.2, 0.3).higher_is_better
    assert MetricRow("tracking", "vehicle/id_switches", 2, 1).verdict == "better"  # fewer is better
    count = MetricRow("detection", "vehicle/num_pred", 10, 20)
    assert count.is_count and count.verdict == "" and count.change_pct == 100.0
    assert "| detection | vehicle/num_pred # | 10 | 20 | +100.0% | — |" in metric_table_markdown([count])
