"""The report's detections-and-tracks section (:func:`detections_section`): what it reads, which frames and track
it picks, the pictures (:mod:`taskology.report.bev`) and the Markdown.

Read per arm (first seed): ``detections/<sequence_id>.npz`` (:mod:`taskology.eval3d.records`), written by
``taskology eval`` (and the in-process run) when both LiDAR tasks are trained. The LiDAR sweeps, the true boxes and
the camera come from the shard ``<data.root>/<sequence_id>.h5`` of the run's config.

What is drawn (:mod:`taskology.report.bev`):

- the detections scored at least :data:`~taskology.engine.tracks.TRACK_SCORE` (the ones that are tracked; lower
  scores only enter the AP curve);
- the true boxes a LiDAR can see (vehicles and pedestrians with at least ``lidar.min_points`` points, centre on
  the grid: :func:`taskology.tasks.lidar.visible_boxes`, the targets the detector is scored against);
- the arm: the collective one, unless it tracked no box and the other arm did (:func:`pick_arm`);
- BEV frames: :data:`BEV_FRAMES` frames of the test sequence with the most tracked boxes (:func:`pick_sequence`),
  spread evenly over its frames with a tracked box (:func:`bev_frames`);
- the track strip: :data:`STRIP_FRAMES` consecutive frames of the longest-lived track (:func:`pick_track`),
  preferring frames where the camera sees the box.

Example:
    >>> from taskology.eval3d.records import FrameDetections
    >>> car = lambda x: FrameDetections(np.array([[x, 0, 1, 4, 2, 1.5, 0]]), np.array(["vehicle"]), np.array([0.9]),
    ...                                 track_ids=np.array([3]))
    >>> frames = [car(5), car(6), FrameDetections.empty(), car(7)]
    >>> track_runs(frames)
    {3: [[0, 1], [3]]}
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from taskology.eval3d.records import FrameDetections, read_sequence
from taskology.report.gallery import pick_indices
from taskology.report.runs import Arm

#: BEV frames drawn per report (a handful: the reader compares them, 50 would be skimmed).
BEV_FRAMES = 4
#: frames of the track strip.
STRIP_FRAMES = 6


@dataclass
class ArmDetections:
    """The detections of one arm: sequence id -> frames, and the folder they came from."""

    arm: str
    folder: Path
    sequences: dict[str, list[FrameDetections]] = field(default_factory=dict)


def read_arm_detections(arm_name: str, seed_dir: Path, notes: list[str]) -> ArmDetections | None:
    """The arm's ``detections/*.npz``; None (no note) when the folder is missing or empty, None with a note when a
    file does not read."""
    from taskology.errors import DataError

    folder = Path(seed_dir) / "detections"
    paths = sorted(p for p in folder.glob("*.npz") if not p.name.startswith(".")) if folder.is_dir() else []
    if not paths:
        return None
    out = ArmDetections(arm_name, folder)
    for path in paths:
        try:
            out.sequences[path.stem] = read_sequence(path)
        except DataError as exc:
            notes.append(f"detections of the {arm_name} arm skipped: {exc}")
            return None
    return out


def tracked(frame: FrameDetections, min_score: float) -> FrameDetections:
    """The boxes of ``frame`` scored at least ``min_score`` that carry a track id."""
    return frame.select((frame.scores >= min_score) & (frame.track_ids >= 0))


def pick_sequence(sequences: Mapping[str, Sequence[FrameDetections]], min_score: float) -> str:
    """The sequence with the most tracked boxes (ties: the first by name)."""
    counts = {s: sum(len(tracked(f, min_score)) for f in frames) for s, frames in sequences.items()}
    return max(sorted(counts), key=lambda s: counts[s])


def track_runs(frames: Sequence[FrameDetections]) -> dict[int, list[list[int]]]:
    """Track id -> its runs of consecutive frames (lists of frame indices), in frame order."""
    runs: dict[int, list[list[int]]] = {}
    for f, frame in enumerate(frames):
        for track in sorted({int(t) for t in frame.track_ids if t >= 0}):
            spans = runs.setdefault(track, [])
            if spans and spans[-1][-1] == f - 1:
                spans[-1].append(f)
            else:
                spans.append([f])
    return runs


def box_of(frame: FrameDetections, track_id: int) -> np.ndarray:
    """(7,) the box of ``track_id`` in ``frame`` (the highest-scored one if several)."""
    rows = np.flatnonzero(frame.track_ids == track_id)
    return frame.boxes[rows[np.argmax(frame.scores[rows])]]


def in_camera(box: np.ndarray, K: np.ndarray | None, cam_from_ego: np.ndarray | None,
              image_hw: tuple[int, int] | None) -> bool:
    """Whether the box centre projects into the image (in front of the camera)."""
    if K is None or cam_from_ego is None or image_hw is None:
        return False
    centre = np.asarray(cam_from_ego, dtype=np.float64)[:3, :3] @ np.asarray(box[:3], dtype=np.float64) \
        + np.asarray(cam_from_ego, dtype=np.float64)[:3, 3]
    if centre[2] < 0.5:
        return False
    u, v, w = np.asarray(K, dtype=np.float64) @ centre
    return bool(0 <= u / w < image_hw[1] and 0 <= v / w < image_hw[0])


def pick_track(frames: Sequence[FrameDetections], *, length: int = STRIP_FRAMES, camera: Mapping[str, Any] | None = None
               ) -> tuple[int, list[int]] | None:
    """``(track id, frame indices)``: up to ``length`` consecutive frames of one track. Among the runs of consecutive
    frames of every track, the one that fills the most of the ``length`` frames wins; ties: the one with more of
    those frames in the camera view (given ``camera`` = ``{"K", "cam_from_ego", "hw"}``: a box the camera sees makes
    the better strip), then the longer run, then the smaller id. The window within the run holds the most frames
    in the camera view (the earliest such). None when no box is tracked."""
    camera = camera or {}
    best: tuple[tuple[int, int, int, int], int, list[int]] | None = None
    for track, spans in track_runs(frames).items():
        for span in spans:
            seen = [in_camera(box_of(frames[f], track), camera.get("K"), camera.get("cam_from_ego"), camera.get("hw"))
                    for f in span]
            width = min(length, len(span))
            starts = range(len(span) - width + 1)
            start = max(starts, key=lambda s: (sum(seen[s:s + width]), -s))
            key = (width, sum(seen[start:start + width]), len(span), -track)
            if best is None or key > best[0]:
                best = (key, track, span[start:start + width])
    return None if best is None else (best[1], best[2])


def shard_for(data_root: Path, sequence: str) -> Path | None:
    """The shard of ``sequence`` under ``data_root`` (``<sequence>.h5``), or None."""
    path = Path(data_root) / f"{sequence}.h5"
    return path if path.is_file() else None


def frame_scene(shard: Any, frame: int, grid: Any, min_points: int) -> tuple[np.ndarray, np.ndarray]:
    """(ego-frame LiDAR points (P, 4), visible true boxes (m, 7)) of one frame of an open shard."""
    from taskology.tasks import lidar

    points = lidar.ego_points(shard.read("lidar/points", frame), shard.read("lidar/lidar_from_ego"))
    truth, _, _ = lidar.visible_boxes(points, shard.read("objects/box", frame), shard.read("objects/class_id", frame),
                                      shard.read("objects/track_id", frame), grid, min_points)
    return points, truth


def camera_of(shard: Any) -> dict[str, Any]:
    """``{"K", "cam_from_ego", "hw"}`` of an open shard, empty when it has no camera."""
    if "camera/K" not in shard.layers:
        return {}
    return {"K": shard.read("camera/K"), "cam_from_ego": shard.read("camera/cam_from_ego"),
            "hw": tuple(int(v) for v in shard.camera_hw)}


def summary_row(detections: ArmDetections, min_score: float) -> dict[str, float]:
    """Counts of one arm over every sequence: tracked boxes, tracks, mean and longest track life (frames)."""
    boxes = sum(len(tracked(f, min_score)) for frames in detections.sequences.values() for f in frames)
    lives = [len(np.unique(np.concatenate(spans))) for frames in detections.sequences.values()
             for spans in track_runs([tracked(f, min_score) for f in frames]).values()]
    return {"boxes": boxes, "tracks": len(lives), "mean_life": float(np.mean(lives)) if lives else 0.0,
            "longest": max(lives) if lives else 0}


def bev_frames(frames: Sequence[FrameDetections], wanted: int = BEV_FRAMES) -> list[int]:
    """The frames of a sequence drawn in BEV: ``wanted`` spread evenly over the frames with a box (over all frames
    when none has one), the first and last of them included."""
    candidates = [f for f, frame in enumerate(frames) if len(frame)] or list(range(len(frames)))
    return [candidates[i] for i in pick_indices(len(candidates), wanted)]


def pick_arm(found: Mapping[str, ArmDetections], min_score: float) -> str:
    """The arm whose detections are drawn: ``collective`` when it tracked a box, else the arm that tracked the
    most boxes (``collective`` or the first arm when none did)."""
    counts = {name: summary_row(d, min_score)["boxes"] for name, d in found.items()}
    if counts.get("collective", 0) > 0 or not any(counts.values()):
        return "collective" if "collective" in found else next(iter(found))
    return max(counts, key=lambda name: counts[name])


def detections_section(arms: Mapping[str, Arm], out: Path, notes: list[str]) -> list[str]:
    """The report's Markdown lines on the detections and tracks of the held-out test sequences, with its pictures
    written into ``out`` (see the module docstring); ``[]`` when no arm has detections (a note when an arm trains
    both LiDAR tasks but has none)."""
    from taskology.data.shard import Shard
    from taskology.engine.tracks import TRACK_SCORE
    from taskology.errors import DataError

    found = {name: read_arm_detections(name, arm.seed_dirs()[0], notes) for name, arm in arms.items()}
    found = {name: d for name, d in found.items() if d is not None and d.sequences}
    if not found:
        for name, arm in arms.items():
            if {"detection", "tracking"} <= set(arm.tasks):
                notes.append(f"{name} arm trains detection and tracking but has no detections under "
                             f"{arm.seed_dirs()[0] / 'detections'}; write them with `taskology eval {arm.run_dir}`")
        return []
    lines = ["## Detections and tracks (held-out test sequences)", "",
             f"Boxes scored at least {TRACK_SCORE:g} (the tracked ones), over every test sequence; "
             "life = frames a track id is seen.", "",
             "| arm | tracked boxes | tracks | mean life (frames) | longest life (frames) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, found_arm in found.items():
        row = summary_row(found_arm, TRACK_SCORE)
        lines.append(f"| {name} | {row['boxes']} | {row['tracks']} | {row['mean_life']:.1f} | {row['longest']} |")
    lines.append("")
    name = pick_arm(found, TRACK_SCORE)
    arm = arms[name]
    sequence = pick_sequence(found[name].sequences, TRACK_SCORE)
    shard_path = shard_for(Path(arm.config.data.root), sequence)
    if shard_path is None:
        notes.append(f"detections pictures skipped: no shard {sequence}.h5 under data.root {arm.config.data.root} of "
                     f"{arm.run_dir} (run the report from the directory the run was started in)")
        return lines
    frames = [tracked(f, TRACK_SCORE) for f in found[name].sequences[sequence]]
    why = " (the collective arm tracked no box)" if name != "collective" and "collective" in found else ""
    try:
        with Shard.open(shard_path) as shard:
            lines += _frames_from_above(arm, f"{name} arm", why, sequence, frames, shard, out)
            lines += _track_strip(arm, f"{name} arm", sequence, frames, shard, out)
    except DataError as exc:
        notes.append(f"detections pictures skipped: {exc}")
    return lines


def _frames_from_above(arm: Arm, who: str, why: str, sequence: str, frames: Sequence[FrameDetections], shard: Any,
                       out: Path) -> list[str]:
    from taskology.report import bev

    grid, min_points = arm.config.lidar.grid(), int(arm.config.lidar.min_points)
    picked = bev_frames(frames)
    lines = [f"### From above: {who}{why}, test sequence `{sequence}`", "",
             f"Frames {', '.join(map(str, picked))} of its {len(frames)} (0-{len(frames) - 1}): the test sequence "
             "with the most tracked boxes, frames spread evenly over those with a tracked box. Grey: LiDAR points; "
             f"black dashed: true boxes the LiDAR sees (at least {min_points} points); coloured: detected boxes, one "
             "colour per track id (the same id has the same colour in every frame), `#id` beside them; black: the ego "
             "vehicle, x ahead (up), y to its left (left).", ""]
    for f in picked:
        points, truth = frame_scene(shard, f, grid, min_points)
        png = f"bev_{sequence}_{f:03d}.png"
        bev.plot_bev_frame(points, truth, frames[f].boxes, frames[f].track_ids, out / png,
                           range_m=float(arm.config.lidar.range_m),
                           title=f"{who}, test sequence {sequence}, frame {f} (0-{len(frames) - 1}): "
                                 f"{len(frames[f])} detected, {len(truth)} true")
        lines += [f"![{sequence} frame {f} from above]({png})", ""]
    return lines


def _track_strip(arm: Arm, who: str, sequence: str, frames: Sequence[FrameDetections], shard: Any,
                 out: Path) -> list[str]:
    from taskology.report import bev

    camera = camera_of(shard)
    picked = pick_track(frames, camera=camera)
    if picked is None:
        return [f"_No box of the {who} is tracked in `{sequence}`: no track strip._", ""]
    track, strip = picked
    if not any(in_camera(box_of(frames[f], track), camera.get("K"), camera.get("cam_from_ego"), camera.get("hw"))
               for f in strip):
        camera = {}  # no camera row when the camera never sees the box
    grid, min_points = arm.config.lidar.grid(), int(arm.config.lidar.min_points)
    crops = []
    for f in strip:
        points, truth = frame_scene(shard, f, grid, min_points)
        others = frames[f].select(frames[f].track_ids != track)
        crops.append(bev.TrackCrop(
            frame=f, box=box_of(frames[f], track), points=points, true_boxes=truth, others=others.boxes,
            other_ids=others.track_ids, image=shard.read("camera/rgb", f) if camera else None, K=camera.get("K"),
            cam_from_ego=camera.get("cam_from_ego"),
            caption=f"score {float(frames[f].scores[frames[f].track_ids == track].max()):.2f}"))
    label = str(frames[strip[0]].classes[frames[strip[0]].track_ids == track][0])
    life = sum(1 for f in frames if (f.track_ids == track).any())
    png = f"track_{sequence}_{track}.png"
    bev.plot_track_strip(crops, track, out / png, title=f"{who}, test sequence {sequence}: track #{track} ({label}), "
                                                        f"frames {strip[0]}-{strip[-1]}")
    views = ("top, the camera image with the box projected (in the track's colour); bottom, the LiDAR from above"
             if camera else "the LiDAR from above (the camera, looking ahead, does not see this box)")
    return [f"### One track over time: #{track} ({label})", "",
            f"A long-lived track of `{sequence}` (seen in {life} frames; the longest run of consecutive frames, "
            f"preferring a box the camera sees), frames {strip[0]} to {strip[-1]}: {views}, centred on the box "
            "(other tracks thin, true boxes dashed).", "", f"![track {track} of {sequence}]({png})", ""]


__all__ = ["BEV_FRAMES", "STRIP_FRAMES", "ArmDetections", "bev_frames", "box_of", "camera_of", "detections_section",
           "frame_scene", "in_camera", "pick_arm", "pick_sequence", "pick_track", "read_arm_detections", "shard_for",
           "summary_row", "track_runs", "tracked"]
