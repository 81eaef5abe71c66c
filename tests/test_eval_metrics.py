"""The benchmark metrics against cases worked out by hand.

DAVIS J/F and OTB success/precision, and TrackEval's HOTA/IDF1/MOTA on tiny hand-made
MOTChallenge files.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastsam_stream.evaluation.metrics import (
    SUCCESS_THRESHOLDS,
    boundary_f_measure,
    boundary_map,
    boundary_tolerance,
    box_iou_xywh,
    center_errors,
    davis_sequence_scores,
    mot_scores,
    precision_at,
    region_similarity,
    success_auc,
    success_curve,
    valid_boxes,
)


def square(top: int, left: int, size: int = 20, shape: tuple[int, int] = (100, 100)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_boundary_map_is_seg2bmap():
    # A 2×2 square at rows/cols 1-2: boundary pixels are the inside ones on its right column and
    # bottom row, the outside ones on the column left of it and the row above it, and the
    # outside corner above-left (it differs from its bottom-right neighbour): 2H + 2W = 8.
    mask = np.zeros((5, 5), bool)
    mask[1:3, 1:3] = True
    expected = np.array(
        [
            [1, 1, 1, 0, 0],
            [1, 0, 1, 0, 0],
            [1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],
        ],
        bool,
    )
    assert np.array_equal(boundary_map(mask), expected)


def test_tolerance_is_the_rounded_up_share_of_the_diagonal():
    assert boundary_tolerance((100, 100)) == 2  # 0.008 × 141.4 = 1.13 → 2
    assert boundary_tolerance((480, 854)) == 8  # 0.008 × 979.6 = 7.84 → 8 (DAVIS 480p)
    assert boundary_tolerance((480, 854), 3) == 3  # ≥ 1: pixels


def test_offset_squares_by_hand():
    # gt: rows 20-39, cols 20-39; pred: the same moved 5 px right (cols 25-44), in 100×100.
    # J: intersection 20×15 = 300, union 400 + 400 − 300 = 500 → 0.6.
    # F (tolerance 2 px, disk x²+y² ≤ 4): each boundary has 2H + 2W = 80 pixels.
    #   pred: right column (col 44, rows 20-38) 19 px, none within 2 px of a gt boundary pixel;
    #         left column (col 24) 20 px, rows 20, 21 (near gt's row 19) and 37-39 (gt's row 39) match: 5;
    #         bottom row (row 39, cols 25-44) 20 px, cols 25-41 match: 17; top row (row 19) likewise 17;
    #         corner (19, 24) lies on gt's top row: 1  → precision 40/80.
    #   gt:   right column (col 39, rows 20-38) 19 px, rows 20, 21, 37, 38 match: 4; left column (col 19): 0;
    #         bottom row cols 22-39 match: 18; top row cols 22-39: 18; corner (19, 19): 0 → recall 40/80.
    #   F = 2 · 0.5 · 0.5 / (0.5 + 0.5) = 0.5.
    gt, pred = square(20, 20), square(20, 25)
    assert region_similarity(pred, gt) == pytest.approx(0.6)
    assert boundary_f_measure(pred, gt) == pytest.approx(0.5)
    assert boundary_f_measure(gt, pred) == pytest.approx(0.5)  # symmetric


def test_a_shift_within_the_tolerance_keeps_f_at_one():
    # Moved 2 px: every boundary pixel has one of the other's within 2 px, so F = 1,
    # while J = (20×18) / (800 − 360) = 360/440.
    gt, pred = square(20, 20), square(20, 22)
    assert boundary_f_measure(pred, gt) == pytest.approx(1.0)
    assert region_similarity(pred, gt) == pytest.approx(360 / 440)


def test_empty_masks():
    empty, gt = np.zeros((100, 100), bool), square(20, 20)
    assert region_similarity(empty, empty) == 1.0 and boundary_f_measure(empty, empty) == 1.0
    assert region_similarity(empty, gt) == 0.0 and boundary_f_measure(empty, gt) == 0.0
    assert region_similarity(gt, empty) == 0.0 and boundary_f_measure(gt, empty) == 0.0
    assert region_similarity(gt, gt) == 1.0 and boundary_f_measure(gt, gt) == 1.0
    with pytest.raises(ValueError, match="one size"):
        region_similarity(empty, np.zeros((10, 10), bool))


def test_sequence_scores_skip_the_first_and_last_frame():
    # DAVIS toolkits average frames [1:-1]: here frames 1 and 2.
    j = [1.0, 0.5, 0.7, 0.0]
    f = [1.0, 0.3, 0.5, 1.0]
    scores = davis_sequence_scores(j, f)
    assert scores["J"] == pytest.approx(0.6) and scores["F"] == pytest.approx(0.4)
    assert scores["J&F"] == pytest.approx(0.5)
    assert davis_sequence_scores([1.0, 0.25], [1.0, 0.75])["J&F"] == pytest.approx(0.5)  # 2 frames: the second
    assert math.isnan(davis_sequence_scores([1.0], [1.0])["J"])


# Boxes x,y,w,h. Frames 3 (w = 0) and 5 (NaN) have invalid ground truth and are left out.
GT = np.array(
    [
        [10, 10, 10, 10],
        [10, 10, 10, 10],
        [10, 10, 10, 10],
        [5, 5, 0, 10],
        [10, 10, 10, 10],
        [np.nan] * 4,
        [10, 10, 10, 10],
    ],
    float,
)
PRED = np.array(
    [
        [10, 10, 10, 10],  # IoU 1, centre error 0
        [15, 10, 10, 10],  # overlap 5×10 = 50, union 150: IoU 1/3; error 5
        [30, 10, 10, 10],  # IoU 0; error exactly 20 (counts: ≤ 20)
        [0, 0, 0, 0],  # invalid gt
        [10, 10, 10, 15],  # overlap 100, union 150: IoU 2/3; centres (15, 17.5)/(15, 15): error 2.5
        [1, 1, 1, 1],  # invalid gt
        [60, 60, 10, 10],
    ],
    float,
)  # IoU 0; error √(50² + 50²)


def test_box_iou_and_centre_errors_by_hand():
    assert valid_boxes(GT).tolist() == [True, True, True, False, True, False, True]
    assert box_iou_xywh(PRED, GT)[[0, 1, 2, 4, 6]] == pytest.approx([1, 1 / 3, 0, 2 / 3, 0])
    errors = center_errors(PRED, GT)
    assert np.isnan(errors[[3, 5]]).all()
    assert errors[[0, 1, 2, 4, 6]] == pytest.approx([0, 5, 20, 2.5, math.hypot(50, 50)])


def test_success_curve_auc_and_precision_by_hand():
    # 5 valid frames with IoUs 1, 1/3, 0, 2/3, 0; success(t) = share with IoU > t:
    #   t = 0 … 0.30 (7 thresholds): 3/5;  t = 0.35 … 0.65 (7): 2/5;  t = 0.70 … 0.95 (6): 1/5;  t = 1: 0.
    # AUC = (7·0.6 + 7·0.4 + 6·0.2 + 0) / 21 = 8.2/21. Precision@20: errors 0, 5, 20, 2.5, 70.7 → 4/5.
    # (OTB's and pysot's code would divide by all 7 frames instead.)
    expected = [0.6] * 7 + [0.4] * 7 + [0.2] * 6 + [0.0]
    assert len(SUCCESS_THRESHOLDS) == 21 and SUCCESS_THRESHOLDS[0] == 0 and SUCCESS_THRESHOLDS[-1] == 1
    assert success_curve(PRED, GT) == pytest.approx(expected)
    assert success_auc(PRED, GT) == pytest.approx(8.2 / 21)
    assert precision_at(PRED, GT, 20) == pytest.approx(0.8)
    assert precision_at(PRED, GT, 4.9) == pytest.approx(0.4)  # only errors 0 and 2.5


def test_no_valid_frame_gives_nan_not_a_score():
    gt = np.array([[0, 0, 0, 0]], float)
    assert np.isnan(success_curve(gt, gt)).all() and math.isnan(precision_at(gt, gt))


# --- MOTChallenge through TrackEval --------------------------------------------------------------
A, B, FAR = (100, 100, 50, 100), (300, 100, 50, 100), (600, 400, 50, 50)


def write_mot(tmp_path, gt_rows: list[tuple], result_rows: list[tuple], frames: int = 4) -> dict:
    """TrackEval's layout under tmp_path, with these ground-truth and result rows.

    Gt rows (frame, id, box) as MOT17 pedestrians (class 1, considered, visible); result rows in
    the 10-field results format.
    """
    gt = tmp_path / "gt" / "SEQ" / "gt" / "gt.txt"
    gt.parent.mkdir(parents=True)
    gt.write_text("".join(f"{f},{i},{x},{y},{w},{h},1,1,1.0\n" for f, i, (x, y, w, h) in gt_rows))
    results = tmp_path / "trackers" / "mine" / "data" / "SEQ.txt"
    results.parent.mkdir(parents=True)
    results.write_text("".join(f"{f},{i},{x},{y},{w},{h},0.9,-1,-1,-1\n" for f, i, (x, y, w, h) in result_rows))
    return mot_scores(tmp_path / "gt", tmp_path / "trackers" / "mine", {"SEQ": frames})


def test_trackeval_perfect_tracking(tmp_path):
    rows = [(f, 1, A) for f in range(1, 5)] + [(f, 2, B) for f in range(1, 5)]
    scores = write_mot(tmp_path, rows, [(f, i + 10, box) for f, i, box in rows])  # ids need not be the same numbers
    for key in ("MOTA", "IDF1", "HOTA", "DetA", "AssA"):
        assert scores["SEQ"][key] == pytest.approx(1.0), key
    assert scores["SEQ"]["IDSW"] == 0 and scores["COMBINED"]["MOTA"] == pytest.approx(1.0)


def test_trackeval_one_id_switch(tmp_path):
    # One person over 4 frames, id 1 on frames 1-2 and id 2 on frames 3-4 (boxes exact):
    # MOTA = 1 − (FN + FP + IDSW)/GT = 1 − 1/4 = 0.75.
    # IDF1: the best one-to-one match keeps 2 frames: IDTP 2, IDFN 2, IDFP 2 → 2·2/(2·2 + 2 + 2) = 0.5.
    # HOTA = √(DetA · AssA): DetA 1 (every box found); each match's association IoU is
    # 2/(2 + 2 + 0) = 0.5, so AssA 0.5 and HOTA √0.5.
    gt = [(f, 1, A) for f in range(1, 5)]
    result = [(1, 1, A), (2, 1, A), (3, 2, A), (4, 2, A)]
    scores = write_mot(tmp_path, gt, result)["SEQ"]
    assert scores["IDSW"] == 1
    assert scores["MOTA"] == pytest.approx(0.75)
    assert scores["IDF1"] == pytest.approx(0.5)
    assert scores["DetA"] == pytest.approx(1.0) and scores["AssA"] == pytest.approx(0.5)
    assert scores["HOTA"] == pytest.approx(math.sqrt(0.5))


def test_trackeval_a_miss_and_a_false_positive(tmp_path):
    # Two people over 4 frames (8 boxes); B is missed on frame 4 (FN 1) and a box far from
    # everyone appears on frame 2 (FP 1): MOTA = 1 − 2/8 = 0.75.
    # IDF1: IDTP 4 + 3 = 7, IDFN 1, IDFP 1 → 14/16 = 0.875.
    # HOTA: DetA = 7/(7 + 1 + 1) = 7/9; association IoU of A's 4 matches is 1, of B's 3 matches
    # 3/(3 + 1 + 0) = 0.75, so AssA = (4 + 2.25)/7 and HOTA = √(7/9 · 6.25/7) = 2.5/3.
    gt = [(f, 1, A) for f in range(1, 5)] + [(f, 2, B) for f in range(1, 5)]
    result = [(f, 1, A) for f in range(1, 5)] + [(f, 2, B) for f in range(1, 4)] + [(2, 3, FAR)]
    scores = write_mot(tmp_path, gt, result)["SEQ"]
    assert (scores["FN"], scores["FP"], scores["IDSW"]) == (1, 1, 0)
    assert scores["MOTA"] == pytest.approx(0.75)
    assert scores["IDF1"] == pytest.approx(0.875)
    assert scores["DetA"] == pytest.approx(7 / 9) and scores["AssA"] == pytest.approx(6.25 / 7)
    assert scores["HOTA"] == pytest.approx(2.5 / 3)


def test_trackeval_rejects_frames_past_the_sequence(tmp_path):
    from fastsam_stream.errors import FastSAMStreamError

    with pytest.raises(FastSAMStreamError, match="TrackEval: .*invalid timesteps"):
        write_mot(tmp_path, [(1, 1, A)], [(9, 1, A)], frames=4)
