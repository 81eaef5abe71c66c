"""The bytetrack tracker's steps on their own, on constructed Instances.

ByteTrack's association (score split, two rounds), and the target steps (a) parts,
(b) re-acquisition by colour, (c) one object one target. tests/test_byte_tracker.py runs them
together through whole sequences.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastsam_stream.core import DenseMasks, Instances
from fastsam_stream.trackers import ByteTrackerSettings
from fastsam_stream.trackers.bytetrack import association, parts, reacquire, targets
from fastsam_stream.trackers.bytetrack.track import KalmanTrack
from fastsam_stream.trackers.kalman import BoxKalman

SHAPE = (200, 300)  # height, width
RED, BLUE = (40, 40, 220), (220, 60, 40)  # BGR
DEFAULTS = ByteTrackerSettings()


def instances(*boxes, scores=None, colours=None, masks: bool = True) -> tuple[Instances, np.ndarray]:
    """Instances with box-shaped masks (painted in `colours`, default red) and the painted frame."""
    image = np.full((*SHAPE, 3), 90, np.uint8)
    stack = np.zeros((len(boxes), *SHAPE), bool)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        stack[i, int(y1) : int(y2), int(x1) : int(x2)] = True
        image[stack[i]] = (colours or [RED] * len(boxes))[i]
    arr = np.array(boxes, np.float32).reshape(-1, 4)
    score = np.full(len(arr), 0.9, np.float32) if scores is None else np.array(scores, np.float32)
    return Instances(arr, score, SHAPE, masks=DenseMasks(stack) if masks else None), image


def track(box, track_id: int = 1, last_seen: int = 0, **fields) -> KalmanTrack:
    """A track whose estimate is `box` (no motion), last seen on `last_seen`."""
    return KalmanTrack(track_id, BoxKalman(np.array(box, np.float64)), 0.9, 0, last_seen, **fields)


def red_colour(box=(100, 60, 140, 100)) -> np.ndarray:
    inst, image = instances(box)
    t = track(box, is_target=True)
    reacquire.refresh_colour(t, inst, [0], image, frame=10)
    return t.colour


# ------------------------------------------------------------------------- ByteTrack association


def test_split_by_score_takes_free_rows_and_drops_the_background():
    inst, _ = instances(*[(10 * i, 0, 10 * i + 8, 8) for i in range(5)], scores=[0.9, 0.4, 0.39, 0.1, 0.05])
    high, low = association.split_by_score(inst, {0}, DEFAULTS)
    assert high.tolist() == [1]  # high_score is inclusive; row 0 is taken
    assert low.tolist() == [2, 3]  # low_score is inclusive; 0.05 is background


def test_first_round_matches_confident_instances_above_min_iou():
    inst, _ = instances((100, 100, 140, 140), (10, 10, 50, 50))
    tracks = [track((104, 100, 144, 140), 1), track((200, 150, 240, 190), 2)]
    assert association.associate(tracks, inst, set(), DEFAULTS, frame=1) == {1: 0}


def test_second_round_only_for_tracks_seen_last_frame_and_stricter():
    box = (100, 100, 140, 140)
    inst, _ = instances((100, 100, 140, 140), scores=[0.2])
    assert association.associate([track(box, last_seen=4)], inst, set(), DEFAULTS, frame=5) == {1: 0}
    assert association.associate([track(box, last_seen=3)], inst, set(), DEFAULTS, frame=5) == {}
    moved, _ = instances((117, 100, 157, 140), scores=[0.2])  # IoU ≈ 0.40: over min_iou, under low_min_iou
    assert association.associate([track(box, last_seen=4)], moved, set(), DEFAULTS, frame=5) == {}
    confident, _ = instances((117, 100, 157, 140))
    assert association.associate([track(box, last_seen=4)], confident, set(), DEFAULTS, frame=5) == {1: 0}


def test_taken_rows_are_not_associated():
    inst, _ = instances((100, 100, 140, 140))
    assert association.associate([track((100, 100, 140, 140))], inst, {0}, DEFAULTS, frame=1) == {}


def test_match_round_with_masks_prefers_the_instance_that_fills_the_box():
    # Two instances with the same box IoU with the track; only one fills its box with its mask.
    box = (100, 100, 160, 160)
    inst, _ = instances(box, box)
    hollow = np.zeros((2, *SHAPE), bool)
    hollow[0, 100:160, 100:104] = True  # a thin sliver: same box, little mask
    hollow[1, 100:160, 100:160] = True
    inst = Instances(inst.boxes, inst.scores, SHAPE, masks=DenseMasks(hollow))
    rows = np.array([0, 1])
    assert association.match_round([track(box)], inst, rows, 0.3, match_masks=True) == {1: 1}
    iou = association.mask_iou([track(box)], inst, rows, np.ones((1, 2)))
    assert iou[0, 1] == pytest.approx(1.0) and iou[0, 0] < 0.2


def test_match_round_without_tracks_or_rows_is_empty():
    inst, _ = instances((0, 0, 10, 10))
    assert association.match_round([], inst, np.array([0]), 0.3) == {}
    assert association.match_round([track((0, 0, 10, 10))], inst, np.array([], int), 0.3) == {}


# ---------------------------------------------------------------------------------- (a) parts


def test_fills_its_box():
    boxes = np.array([[100, 100, 160, 160], [100, 100, 160, 130]], np.float32)
    predicted = np.array([100, 100, 160, 160.0])
    assert parts.fills_its_box(boxes, 0, predicted)
    assert not parts.fills_its_box(boxes, 1, predicted)  # half of it
    assert not parts.fills_its_box(boxes, None, predicted)


def test_claimed_by_another_tracks_prediction():
    boxes = np.array([[100, 100, 140, 140]], np.float32)
    assert parts.claimed(0, boxes, np.array([[102, 100, 142, 140.0]]))
    assert not parts.claimed(0, boxes, np.array([[200, 100, 240, 140.0]]))
    assert not parts.claimed(0, boxes, np.zeros((0, 4)))


def test_matched_half_takes_the_other_half():
    boxes = np.array([[100, 100, 160, 130], [100, 130, 160, 160], [170, 100, 200, 160]], np.float32)
    row, rest = parts.take_parts(np.array([100, 100, 160, 160.0]), boxes, 0, [1, 2], 0.8, 0.3)
    assert (row, rest) == (0, (1,))  # row 2 lies outside the predicted box: a neighbour, not a part


def test_quarters_make_the_target_when_none_matched():
    q = [[100, 100, 130, 130], [130, 100, 160, 130], [100, 130, 130, 160], [130, 130, 160, 160]]
    predicted = np.array([100, 100, 160, 160.0])
    row, rest = parts.take_parts(predicted, np.array(q, np.float32), None, [0, 1, 2, 3], 0.8, 0.3)
    assert row is not None and {row, *rest} == {0, 1, 2, 3}


def test_pieces_that_do_not_fit_the_prediction_make_no_target():
    boxes = np.array([[100, 100, 115, 115]], np.float32)  # one small piece: its IoU with the box is tiny
    assert parts.take_parts(np.array([100, 100, 160, 160.0]), boxes, None, [0], 0.8, 0.3) == (None, ())


# ------------------------------------------------------------------------ (b) re-acquisition


def test_search_reach_grows_with_time_lost_up_to_its_maximum():
    assert reacquire.reach(10.0, 0, DEFAULTS) == pytest.approx(10.0)
    assert reacquire.reach(10.0, 5, DEFAULTS) == pytest.approx(15.0)
    assert reacquire.reach(10.0, 100, DEFAULTS) == pytest.approx(30.0)


def test_candidates_are_near_and_of_a_similar_size():
    lost = track((100, 60, 140, 100), last_seen=0)  # diagonal ≈ 56.6; lost 5 frames: reach ≈ 85
    inst, _ = instances((170, 60, 210, 100), (260, 60, 300, 100), (100, 110, 190, 190), (100, 120, 110, 130))
    # near; too far; near but 4.5 times its area; near but a sixteenth of it
    assert reacquire.candidates(lost, inst, [0, 1, 2, 3], 5, DEFAULTS) == [0]


def test_candidates_are_measured_from_the_edge_the_target_left_by_at_its_whole_size():
    # The prediction drifted past the right edge (x 300) and shrank there; its last whole size is
    # 40×40 (reach: one diagonal, 56.6 px, on the frame it was lost).
    gone = track((310, 60, 318, 100), last_seen=0, size=np.array([40.0, 40.0]))
    inst, _ = instances((225, 60, 265, 100))  # 55 px from the edge, 69 px from the prediction's centre
    assert reacquire.candidates(gone, inst, [0], 0, DEFAULTS) == [0]
    shrunk = track((310, 60, 318, 100), last_seen=0)  # no whole size: an 8×40 object, 40.8 px reach
    assert reacquire.candidates(shrunk, inst, [0], 0, DEFAULTS) == []


def test_search_by_colour_picks_the_target_s_colour():
    lost = track((100, 60, 140, 100), last_seen=0, is_target=True, colour=red_colour())
    inst, image = instances((150, 60, 190, 100), (50, 60, 90, 100), colours=[BLUE, RED])
    assert reacquire.search_by_colour(lost, inst, [0, 1], image, 3, DEFAULTS) == 1
    assert reacquire.search_by_colour(lost, inst, [0], image, 3, DEFAULTS) is None  # blue only: too unlike it
    bare, image = instances((50, 60, 90, 100), masks=False)
    assert reacquire.search_by_colour(lost, bare, [0], image, 3, DEFAULTS) is None  # no masks, no colours


def test_colour_model_is_refreshed_every_few_frames_and_blended():
    inst, image = instances((100, 60, 140, 100))
    t = track((100, 60, 140, 100), is_target=True)
    reacquire.refresh_colour(t, inst, [0], image, frame=0)
    first = t.colour.copy()
    assert t.colour_at == 0
    blue, blue_image = instances((100, 60, 140, 100), colours=[BLUE])
    reacquire.refresh_colour(t, blue, [0], blue_image, frame=reacquire.APPEARANCE_EVERY - 1)
    assert t.colour_at == 0 and np.array_equal(t.colour, first)  # too soon
    reacquire.refresh_colour(t, blue, [0], blue_image, frame=reacquire.APPEARANCE_EVERY)
    assert t.colour_at == reacquire.APPEARANCE_EVERY
    assert 0 < float(np.minimum(t.colour, first).sum()) < 1  # partly the old red, partly blue


def test_seen_whole_away_from_the_edges():
    assert reacquire.seen_whole(np.array([10, 10, 50, 50.0]), SHAPE)
    assert not reacquire.seen_whole(np.array([260, 10, 299, 50.0]), SHAPE)  # cut by the right edge
    assert not reacquire.seen_whole(np.array([0, 10, 40, 50.0]), SHAPE)


# ------------------------------------------------------------------ complete_target: (a) + (b)


def test_complete_target_takes_its_parts_when_its_match_does_not_fill_its_box():
    inst, image = instances((100, 100, 160, 130), (100, 130, 160, 160))
    t = track((100, 100, 160, 160), is_target=True)
    row = targets.complete_target(t, inst, 0, [1], np.zeros((0, 4)), image, 1, DEFAULTS)
    assert row == 0 and t.parts == (1,)


def test_complete_target_leaves_parts_claimed_by_other_tracks_and_respects_merge_parts():
    inst, image = instances((100, 100, 160, 130), (100, 130, 160, 160))
    t = track((100, 100, 160, 160), is_target=True)
    neighbour = np.array([[100, 130, 160, 160.0]])
    assert targets.complete_target(t, inst, 0, [1], neighbour, image, 1, DEFAULTS) == 0 and t.parts == ()
    off = ByteTrackerSettings(merge_parts=False)
    assert targets.complete_target(t, inst, 0, [1], np.zeros((0, 4)), image, 1, off) == 0 and t.parts == ()


def test_complete_target_reacquires_a_lost_target_by_colour_only_with_the_image():
    inst, image = instances((150, 60, 190, 100))
    lost = track((100, 60, 140, 100), last_seen=0, is_target=True, colour=red_colour())
    assert targets.complete_target(lost, inst, None, [0], np.zeros((0, 4)), image, 3, DEFAULTS) == 0
    assert targets.complete_target(lost, inst, None, [0], np.zeros((0, 4)), None, 3, DEFAULTS) is None
    off = ByteTrackerSettings(reacquire=False)
    assert targets.complete_target(lost, inst, None, [0], np.zeros((0, 4)), image, 3, off) is None


# ---------------------------------------------------------------- (c) one object, one target


def test_two_targets_on_one_object_keep_the_better_fit():
    # One object segmented twice (rows 0 and 1, IoU ≈ 0.82 with each other), where two targets'
    # predictions reach.
    inst, _ = instances((114, 100, 154, 140), (116, 98, 156, 136))
    a = track((100, 100, 140, 140), 1, is_target=True, parts=(1,))  # row 0 fits it with IoU ≈ 0.48
    b = track((118, 98, 158, 136), 2, is_target=True)  # row 1 fits it with IoU ≈ 0.90
    matched = {1: 0, 2: 1}
    targets.one_object_one_target([a, b], inst, matched)
    assert matched == {2: 1} and a.parts == ()  # a is lost this frame, and holds no parts


def test_targets_on_different_objects_both_stay():
    inst, _ = instances((100, 100, 140, 140), (200, 100, 240, 140))
    a, b = track((100, 100, 140, 140), 1, is_target=True), track((200, 100, 240, 140), 2, is_target=True)
    matched = {1: 0, 2: 1}
    targets.one_object_one_target([a, b], inst, matched)
    assert matched == {1: 0, 2: 1}
