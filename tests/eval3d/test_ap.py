"""KITTI-style AP (R40): hand-computed cases, the tie rule, empty cases, and a brute-force reference."""
from __future__ import annotations

import math
import time
from fractions import Fraction

import numpy as np
import pytest

from taskology.eval3d import FrameDetections, average_precision, evaluate_detections
from taskology.geometry.box_iou import box_iou_reference

NONE = np.zeros((0, 7))


def car(x: float, y: float = 0.0, z: float = 0.8) -> np.ndarray:
    """A 4 x 2 x 1.6 m box heading along +x; two such boxes offset by d along x have BEV IoU (4 - d) / (4 + d)."""
    return np.array([x, y, z, 4.0, 2.0, 1.6, 0.0])


def boxes(*rows: np.ndarray) -> np.ndarray:
    return np.array(rows).reshape(-1, 7)


def test_perfect_predictions_give_one_in_both_modes() -> None:
    gt = [boxes(car(10), car(20, 5)), boxes(car(-8, 3)), NONE]
    frames = [(g, np.linspace(0.9, 0.5, len(g)), g) for g in gt]
    for mode in ("bev", "3d"):
        for t in (0.25, 0.5, 0.7, 1.0):
            assert average_precision(frames, t, mode) == 1.0


def test_false_positive_scored_above_the_true_positive() -> None:
    # One GT: the curve is (recall 0, precision 0) at 0.9, (recall 1, precision 1/2) at 0.8; every
    # r = k/40 is reached only at the second point, so AP = 40 * 0.5 / 40 = 0.5.
    gt = boxes(car(10))
    pred = boxes(car(40), car(10.1))
    assert average_precision([(pred, np.array([0.9, 0.8]), gt)], 0.7) == 0.5
    # Two GT, the second never found: the second point has recall 1/2, so p(k/40) = 1/2 for k <= 20 and
    # 0 above: AP = 20 * 0.5 / 40 = 0.25.
    gt2 = boxes(car(10), car(20, 5))
    assert average_precision([(pred, np.array([0.9, 0.8]), gt2)], 0.7) == 0.25
    # The TP scored higher instead: (1/2, 1) then (1/2, 1/2): AP = 20 * 1 / 40 = 0.5.
    assert average_precision([(pred, np.array([0.8, 0.9]), gt2)], 0.7) == 0.5


def test_half_recall_and_exact_recall_boundaries() -> None:
    frame = [(boxes(car(10)), np.array([0.7]), boxes(car(10), car(20, 5)))]
    assert average_precision(frame, 0.5) == 0.5  # recall 1/2 reached with precision 1: k = 1..20
    # 3 GT, 1 TP: recall 1/3 >= k/40 for k <= 13 -> 13/40; 4 GT: recall 1/4 = 10/40 exactly -> 10/40.
    three = [(boxes(car(10)), np.array([0.7]), boxes(car(10), car(20, 5), car(30, 9)))]
    assert average_precision(three, 0.5) == pytest.approx(13 / 40, abs=1e-15)
    four = [(boxes(car(10)), np.array([0.7]), boxes(car(10), car(20, 5), car(30, 9), car(40, 1)))]
    assert average_precision(four, 0.5) == pytest.approx(10 / 40, abs=1e-15)
    assert average_precision(four, 0.5, recall_points=4) == 0.25  # R = 4: only r = 1/4 is reached


def test_tied_scores_enter_the_curve_together_whatever_their_order() -> None:
    # One GT, a TP and an FP of equal score: one curve point (recall 1, precision 1/2) -> 0.5, in either order
    # and whether the two are in the same frame or not (processing them one by one would give 1.0 or 0.5).
    gt = boxes(car(10))
    tp, fp = car(10.1), car(40)
    same = 0.6 * np.ones(2)
    assert average_precision([(boxes(tp, fp), same, gt)], 0.7) == 0.5
    assert average_precision([(boxes(fp, tp), same, gt)], 0.7) == 0.5
    split = [(boxes(fp), np.array([0.6]), NONE), (boxes(tp), np.array([0.6]), gt)]
    assert average_precision(split, 0.7) == average_precision(split[::-1], 0.7) == 0.5


def test_tied_predictions_of_one_frame_are_matched_in_input_order() -> None:
    # p0 at x = 0.6: IoU 3.4/4.6 = 0.74 with g0 (x = 0), 3.6/4.4 = 0.82 with g1 (x = 1).
    # p1 at x = 1.2: IoU 3.8/4.2 = 0.90 with g1, 2.8/5.2 = 0.54 with g0 (below 0.7).
    gt = boxes(car(0), car(1))
    p0, p1 = car(0.6), car(1.2)
    tied = 0.5 * np.ones(2)
    # p0 first takes g1 (its best), p1 finds nothing: TP 1, FP 1 at recall 1/2 -> 20 * 0.5 / 40.
    assert average_precision([(boxes(p0, p1), tied, gt)], 0.7) == 0.25
    # p1 first takes g1, then p0 takes g0: all found.
    assert average_precision([(boxes(p1, p0), tied, gt)], 0.7) == 1.0
    # Distinct scores decide, not the input order: p0 (0.5) takes g1 first and scores a TP at precision 1,
    # then p1 (0.4) is an FP: recall 1/2 at precision 1 -> 20 * 1 / 40.
    assert average_precision([(boxes(p1, p0), np.array([0.4, 0.5]), gt)], 0.7) == 0.5


def test_empty_cases() -> None:
    gt = boxes(car(10))
    assert average_precision([(NONE, np.zeros(0), gt)], 0.5) == 0.0
    assert average_precision([(NONE, np.zeros(0), gt), (NONE, np.zeros(0), NONE)], 0.5, "3d") == 0.0
    assert math.isnan(average_precision([(boxes(car(3)), np.array([0.9]), NONE)], 0.5))
    assert math.isnan(average_precision([], 0.5))
    assert math.isnan(average_precision([(NONE, np.zeros(0), NONE)], 0.5, "3d"))


def test_boxes_stacked_in_z_overlap_in_bev_only() -> None:
    gt = boxes(car(10), car(20, 5))
    above = gt + [0, 0, 3.0, 0, 0, 0, 0]  # same footprints, 3 m higher: no z overlap (heights 1.6)
    frames = [(above, np.array([0.9, 0.8]), gt)]
    assert average_precision(frames, 0.7, "bev") == 1.0
    assert average_precision(frames, 0.7, "3d") == 0.0


def test_bad_arguments_are_refused() -> None:
    frame = [(boxes(car(10)), np.array([0.9]), boxes(car(10)))]
    with pytest.raises(ValueError, match="mode"):
        average_precision(frame, 0.5, mode="2d")
    with pytest.raises(ValueError, match="iou_threshold"):
        average_precision(frame, 0.0)
    with pytest.raises(ValueError, match="scores"):
        average_precision([(boxes(car(10)), np.array([0.9, 0.1]), NONE)], 0.5)
    with pytest.raises(ValueError, match="NaN"):
        average_precision([(boxes(car(10)), np.array([np.nan]), NONE)], 0.5)


# ----------------------------------------------------------------------------------------------
# Independent brute force: pure-Python IoU (a different polygon algorithm), matching by explicit search, and the
# curve evaluated at every distinct score threshold in exact fractions.


def reference_ap(frames: list, threshold: float, mode: str, recall_points: int = 40) -> float:
    num_gt = sum(len(gt) for _, _, gt in frames)
    if num_gt == 0:
        return math.nan
    outcomes: list[tuple[float, bool]] = []
    for pred, scores, gt in frames:
        iou = box_iou_reference(pred, gt, use_3d=mode == "3d") if len(pred) and len(gt) else None
        taken: set[int] = set()
        for i in sorted(range(len(pred)), key=lambda k: (-scores[k], k)):
            free = [j for j in range(len(gt)) if j not in taken and iou[i, j] >= threshold]
            if free:
                taken.add(max(free, key=lambda j: (iou[i, j], -j)))
            outcomes.append((float(scores[i]), bool(free)))
    points = []
    for s in {score for score, _ in outcomes}:
        kept = [hit for score, hit in outcomes if score >= s]
        points.append((Fraction(sum(kept), num_gt), Fraction(sum(kept), len(kept))))
    total = Fraction(0)
    for k in range(1, recall_points + 1):
        reached = [precision for recall, precision in points if recall >= Fraction(k, recall_points)]
        total += max(reached, default=Fraction(0))
    return float(total / recall_points)


def random_frames(rng: np.random.Generator, ties: bool) -> list:
    frames = []
    for _ in range(rng.integers(1, 5)):
        m, n = rng.integers(0, 5), rng.integers(0, 6)
        gt = np.column_stack([rng.uniform(0, 8, (m, 2)), rng.uniform(0.5, 1.0, m), rng.uniform(2, 5, m),
                              rng.uniform(1, 2.5, m), rng.uniform(1, 2, m), rng.uniform(-np.pi, np.pi, m)])
        near = gt[rng.integers(0, m, n)] + rng.normal(0, 0.4, (n, 7)) * [1, 1, 0.5, 0.3, 0.2, 0.2, 0.3] if m \
            else np.zeros((n, 7))
        far = np.column_stack([rng.uniform(0, 8, (n, 2)), np.full(n, 0.8), np.full((n, 3), 2.0), np.zeros(n)])
        pred = np.where(rng.uniform(size=(n, 1)) < 0.75, near, far) if m else far
        pred[:, 3:6] = np.abs(pred[:, 3:6])
        scores = np.round(rng.uniform(0, 1, n), 1) if ties else rng.uniform(0, 1, n)
        frames.append((pred, scores, gt))
    return frames


@pytest.mark.parametrize("ties", [False, True])
def test_matches_the_brute_force_reference_on_random_cases(ties: bool) -> None:
    rng = np.random.default_rng(7 + ties)
    for _ in range(12):
        frames = random_frames(rng, ties)
        for mode in ("bev", "3d"):
            for t in (0.1, 0.3, 0.5, 0.7):
                expected = reference_ap(frames, t, mode)
                got = average_precision(frames, t, mode)
                assert got == pytest.approx(expected, abs=1e-12, nan_ok=True), (mode, t)
                assert average_precision(frames[::-1], t, mode) == got or math.isnan(got)  # frame order


def test_result_is_independent_of_frame_order() -> None:
    rng = np.random.default_rng(3)
    frames = [f for _ in range(5) for f in random_frames(rng, ties=False)]
    values = {average_precision([frames[k] for k in rng.permutation(len(frames))], 0.5, "3d") for _ in range(4)}
    assert len(values) == 1 and 0.0 < values.pop() < 1.0


# ----------------------------------------------------------------------------------------------
# evaluate_detections over frame records


def test_evaluate_detections_keys_counts_and_class_separation() -> None:
    gt = FrameDetections(boxes(car(10), car(20, 5), car(0, -6, 0.9) * [1, 1, 1, 0.2, 0.2, 1.1, 1]),
                         ["vehicle", "vehicle", "pedestrian"])
    # The vehicle at 20 is predicted as a pedestrian: a vehicle miss and a pedestrian false positive.
    pred = FrameDetections(boxes(car(10.1), car(20, 5), gt.boxes[2]), ["vehicle", "pedestrian", "pedestrian"],
                           [0.9, 0.95, 0.5])
    out = evaluate_detections([(pred, gt), (FrameDetections.empty(), FrameDetections.empty())])
    assert set(out) == {f"{c}/{k}" for c, ts in (("vehicle", ("0.7", "0.5")), ("pedestrian", ("0.5", "0.25")))
                        for k in [f"ap_{m}@{t}" for m in ("bev", "3d") for t in ts] + ["num_gt", "num_pred"]}
    assert out["vehicle/num_gt"] == 2 and out["pedestrian/num_gt"] == 1 and out["pedestrian/num_pred"] == 2
    assert out["vehicle/ap_bev@0.7"] == out["vehicle/ap_3d@0.5"] == 0.5  # recall 1/2 at precision 1
    assert out["pedestrian/ap_3d@0.25"] == 0.5  # FP (0.95) before TP (0.5): recall 1 at precision 1/2
    only = evaluate_detections([(pred, gt)], classes=["vehicle"], thresholds={"vehicle": [0.6]})
    assert sorted(only) == ["vehicle/ap_3d@0.6", "vehicle/ap_bev@0.6", "vehicle/num_gt", "vehicle/num_pred"]
    with pytest.raises(ValueError, match="cyclist"):
        evaluate_detections([(pred, gt)], classes=["cyclist"])


def synthetic_records(rng: np.random.Generator, num_frames: int, num_gt: int, num_pred: int) -> list:
    records = []
    for _ in range(num_frames):
        gt = np.column_stack([rng.uniform(-60, 60, (num_gt, 2)), np.full(num_gt, 0.8),
                              np.tile([4.5, 1.9, 1.6], (num_gt, 1)), rng.uniform(-np.pi, np.pi, num_gt)])
        pred = np.concatenate([gt + rng.normal(0, 0.15, gt.shape) * [1, 1, 0.3, 0.2, 0.1, 0.1, 0.1],
                               gt[: num_pred - num_gt] + [3.0, 0, 0, 0, 0, 0, 0]])
        records.append((FrameDetections(pred, ["vehicle"] * num_pred, rng.uniform(0, 1, num_pred)),
                        FrameDetections(gt, ["vehicle"] * num_gt)))
    return records


def test_four_hundred_frames_are_evaluated_fast() -> None:
    rng = np.random.default_rng(0)
    records = synthetic_records(rng, 400, 30, 50)
    evaluate_detections(records[:1], classes=["vehicle"])  # compiles or loads the IoU kernels
    start = time.perf_counter()
    out = evaluate_detections(records, classes=["vehicle"])
    elapsed = time.perf_counter() - start
    assert out["vehicle/num_gt"] == 12000 and 0.3 < out["vehicle/ap_bev@0.5"] < 0.9
    assert elapsed < 5.0, f"AP over 400 frames took {elapsed:.2f} s (about 0.2 s expected)"
