"""Tracking metrics (motmetrics) and box-motion error on hand-made sequences whose answers follow from the
definitions: MOTA = 1 - (FN + FP + IDSW) / GT, IDF1 = 2 IDTP / (GT + predictions)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from taskology.eval3d import FrameDetections, box_motion_error, evaluate_tracking

A = np.array([10.0, 0, 0.8, 4, 2, 1.6, 0])  # ground-truth vehicle track 1
B = np.array([20.0, 8, 0.8, 4, 2, 1.6, 0])  # ground-truth vehicle track 2
FAR = np.array([-30.0, -30, 0.8, 4, 2, 1.6, 0])  # overlaps nothing


def frame(rows: list[tuple[np.ndarray, int, float]], name: str = "vehicle") -> FrameDetections:
    """A frame from (box, track id, score) rows."""
    return FrameDetections(np.array([r[0] for r in rows]).reshape(-1, 7), [name] * len(rows),
                           [r[2] for r in rows], [r[1] for r in rows])


def hand_sequence() -> list[tuple[FrameDetections, FrameDetections]]:
    """3 frames, GT tracks 1 (A) and 2 (B) in every frame (6 GT boxes).

    f0: 10 on A, 20 on B.  f1: 10 on A, 20 on B, 40 far away (FP).  f2: 30 on A (ID switch 10 -> 30), B only
    predicted at score 0.1 (below the default score threshold 0.3: a miss).
    FN 1, FP 1, IDSW 1 -> MOTA = 1 - 3/6 = 0.5. Identity assignment 1 <-> 10, 2 <-> 20: IDTP = 2 + 2 = 4 of
    6 GT and 6 predictions -> IDF1 = 8 / 12 = 2/3.
    """
    gt = frame([(A, 1, 1.0), (B, 2, 1.0)])
    return [(frame([(A, 10, 0.9), (B, 20, 0.8)]), gt),
            (frame([(A, 10, 0.9), (B, 20, 0.8), (FAR, 40, 0.7)]), gt),
            (frame([(A, 30, 0.9), (B, 20, 0.1)]), gt)]


def test_hand_sequence_with_one_id_switch() -> None:
    out = evaluate_tracking({"s0": hand_sequence()}, classes=["vehicle"])
    assert out["vehicle/id_switches"] == 1
    assert out["vehicle/num_objects"] == 6
    assert out["vehicle/false_positives"] == 1 and out["vehicle/misses"] == 1
    assert out["vehicle/num_predictions"] == 6
    assert out["vehicle/mota"] == pytest.approx(0.5, abs=1e-12)
    assert out["vehicle/idf1"] == pytest.approx(2 / 3, abs=1e-12)


def test_score_threshold_lets_the_low_scored_box_in() -> None:
    # B at f2 (track 20, score 0.1) now counts: FN 0 -> MOTA = 1 - 2/6; IDTP = 2 + 3 of 6 GT and 7 predictions
    # -> IDF1 = 10/13.
    out = evaluate_tracking([hand_sequence()], classes=["vehicle"], score_threshold=0.05)
    assert out["vehicle/misses"] == 0 and out["vehicle/id_switches"] == 1
    assert out["vehicle/mota"] == pytest.approx(2 / 3, abs=1e-12)
    assert out["vehicle/idf1"] == pytest.approx(10 / 13, abs=1e-12)


def test_sequences_are_merged_and_classes_kept_apart() -> None:
    seq = hand_sequence()
    ped = FrameDetections(np.array([[0.0, 5, 0.9, 0.8, 0.6, 1.8, 0]]), ["pedestrian"], track_ids=[5])
    # A pedestrian GT and a "pedestrian" prediction exactly on vehicle A: neither touches the vehicle metrics.
    with_ped = [(FrameDetections(np.concatenate([p.boxes, A[None]]), [*p.classes, "pedestrian"],
                                 [*p.scores, 0.9], [*p.track_ids, 7]),
                 FrameDetections(np.concatenate([g.boxes, ped.boxes]), [*g.classes, "pedestrian"],
                                 track_ids=[*g.track_ids, 5])) for p, g in seq]
    out = evaluate_tracking({"a": seq, "b": with_ped, "empty": []})
    assert out["vehicle/num_objects"] == 12 and out["vehicle/id_switches"] == 2
    assert out["vehicle/mota"] == pytest.approx(0.5, abs=1e-12)
    assert out["vehicle/idf1"] == pytest.approx(2 / 3, abs=1e-12)
    # Pedestrians: 3 GT, never matched (the A box is 10 m away), 3 FP -> MOTA = 1 - 6/3 = -1, IDF1 = 0.
    assert out["pedestrian/num_objects"] == 3 and out["pedestrian/mota"] == pytest.approx(-1.0)
    assert out["pedestrian/idf1"] == 0.0
    # A class without ground truth: MOTA is undefined.
    none = evaluate_tracking({"a": seq}, classes=["pedestrian"])
    assert math.isnan(none["pedestrian/mota"]) and none["pedestrian/num_objects"] == 0


def test_iou_threshold_and_untracked_predictions() -> None:
    shifted = A + [2.0, 0, 0, 0, 0, 0, 0]  # BEV IoU 2/6 = 1/3 with A
    gt = frame([(A, 1, 1.0)])
    seq = [(frame([(shifted, 10, 0.9)]), gt), (frame([(shifted, 10, 0.9), (B, -1, 0.9)]), gt)]
    strict = evaluate_tracking([seq], classes=["vehicle"])  # threshold 0.5: 2 misses, 2 FP (the untracked one ignored)
    assert (strict["vehicle/misses"], strict["vehicle/false_positives"]) == (2, 2)
    assert strict["vehicle/mota"] == pytest.approx(-1.0)
    loose = evaluate_tracking([seq], classes=["vehicle"], iou_thresholds={"vehicle": 0.3})
    assert loose["vehicle/mota"] == 1.0 and loose["vehicle/idf1"] == 1.0


def test_bad_tracking_inputs_are_refused() -> None:
    untracked_gt = FrameDetections(A[None], ["vehicle"])
    with pytest.raises(ValueError, match="track id"):
        evaluate_tracking([[(untracked_gt, untracked_gt)]], classes=["vehicle"])
    twice = frame([(A, 3, 1.0), (B, 3, 1.0)])
    with pytest.raises(ValueError, match="repeat"):
        evaluate_tracking([[(twice, twice)]], classes=["vehicle"])
    with pytest.raises(ValueError, match="cyclist"):
        evaluate_tracking([], classes=["cyclist"])


def test_box_motion_error_by_hand() -> None:
    c = np.array([0.0, 6, 0.8, 4, 2, 1.6, 0])  # track 3: leaves after t
    gt_t = frame([(A, 1, 1.0), (B, 2, 1.0), (c, 3, 1.0)])
    gt_next = frame([(B + [0, 2, 0, 0, 0, 0, 0], 2, 1.0), (A + [1, 0, 0, 0, 0, 0, 0], 1, 1.0)])  # in frame t
    # Predictions in another order than the GT; motion (dx, dy, dyaw):
    #   on B: (3, 6) vs true (0, 2): error |(3, 4)| = 5;  on A: (1, 0.5) vs true (1, 0): error 0.5;
    #   on c: its track is gone at t+1 (skipped);  near A but nan motion (skipped; A is taken anyway);
    #   far away: unmatched.
    pred = FrameDetections(np.array([B + [0.1, 0, 0, 0, 0, 0, 0], A, c, A + [0.2, 0, 0, 0, 0, 0, 0], FAR]),
                           ["vehicle"] * 5, [0.9, 0.8, 0.9, 0.7, 0.9],
                           motion=[[3, 6, 0.1], [1, 0.5, 0], [1, 1, 0], [np.nan] * 3, [0, 0, 0]])
    out = box_motion_error([(pred, gt_t, gt_next)])
    assert out["vehicle/motion_pairs"] == 2
    assert out["vehicle/motion_error_m"] == pytest.approx((5 + 0.5) / 2, abs=1e-6)
    assert math.isnan(out["pedestrian/motion_error_m"]) and out["pedestrian/motion_pairs"] == 0
    # With a score threshold of 0.85 the A prediction (0.8) is left out; the B one remains.
    low = box_motion_error([(pred, gt_t, gt_next)], classes=["vehicle"], score_threshold=0.85)
    assert low == {"vehicle/motion_error_m": pytest.approx(5.0, abs=1e-6), "vehicle/motion_pairs": 1}
