"""Unit tests for box IoU, the Hungarian assignment and IoUTracker, on hand-built boxes."""

from __future__ import annotations

import numpy as np
import pytest

from fastsam_stream.core import Instances, TargetChange, TrackState
from fastsam_stream.trackers import IoUTracker, IoUTrackerSettings, box_iou, linear_assignment

SHAPE = (480, 640)


def inst(*boxes: tuple[float, float, float, float]) -> Instances:
    """Instances with the given xyxy boxes (score 0.9 each), or an empty frame when none."""
    arr = np.array(boxes, np.float32).reshape(-1, 4)
    return Instances(arr, np.full(len(arr), 0.9, np.float32), image_shape=SHAPE)


def shifted(box, dx=0.0, dy=0.0):
    x1, y1, x2, y2 = box
    return (x1 + dx, y1 + dy, x2 + dx, y2 + dy)


def by_id(tracks):
    ids = [t.id for t in tracks]
    assert len(ids) == len(set(ids)), f"a track id is reported twice: {ids}"
    return {t.id: t for t in tracks}


def id_of_row(tracks, row):
    [track] = [t for t in tracks if t.row == row]
    return track.id


# --------------------------------------------------------------------------------------- box_iou


def test_box_iou_identical_boxes_is_one():
    boxes = np.array([[0, 0, 10, 10], [20, 30, 50, 90]], np.float32)
    np.testing.assert_allclose(np.diag(box_iou(boxes, boxes)), [1.0, 1.0])


def test_box_iou_disjoint_boxes_is_zero():
    assert box_iou([[0, 0, 10, 10]], [[20, 20, 30, 30]])[0, 0] == 0.0


def test_box_iou_touching_edges_is_zero():
    assert box_iou([[0, 0, 10, 10]], [[10, 0, 20, 10]])[0, 0] == 0.0


def test_box_iou_partial_overlap_matches_hand_computation():
    # intersection 5×5 = 25, union 100 + 100 − 25 = 175
    assert box_iou([[0, 0, 10, 10]], [[5, 5, 15, 15]])[0, 0] == pytest.approx(25 / 175)


def test_box_iou_is_pairwise_n_by_m():
    a = np.array([[0, 0, 10, 10], [100, 100, 110, 110]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [200, 200, 210, 210]])
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0], [0.0, 0.0, 0.0]])


def test_box_iou_contained_box_is_area_ratio():
    assert box_iou([[0, 0, 10, 10]], [[0, 0, 5, 10]])[0, 0] == pytest.approx(0.5)


def test_box_iou_degenerate_box_is_zero():
    assert box_iou([[5, 5, 5, 5]], [[5, 5, 5, 5]])[0, 0] == 0.0


def test_box_iou_empty_inputs_give_empty_shapes():
    some = np.array([[0, 0, 10, 10], [1, 1, 2, 2], [3, 3, 4, 4]])
    assert box_iou(np.zeros((0, 4)), some).shape == (0, 3)
    assert box_iou(some, np.zeros((0, 4))).shape == (3, 0)
    assert box_iou(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0, 0)


# ------------------------------------------------------------------------------ linear_assignment


@pytest.mark.parametrize("shape", [(0, 0), (0, 3), (2, 0)])
def test_linear_assignment_empty_matrix_returns_all_unmatched(shape):
    matches, rows, cols = linear_assignment(np.zeros(shape), cost_limit=0.7)
    assert matches == []
    assert rows == list(range(shape[0]))
    assert cols == list(range(shape[1]))


def test_linear_assignment_pair_over_cost_limit_stays_unmatched():
    matches, rows, cols = linear_assignment(np.array([[0.8]]), cost_limit=0.7)
    assert matches == []
    assert rows == [0]
    assert cols == [0]


def test_linear_assignment_matches_cheap_pair_and_leaves_expensive_column():
    matches, rows, cols = linear_assignment(np.array([[0.5, 0.9], [0.95, 0.99]]), cost_limit=0.7)
    assert matches == [(0, 0)]
    assert rows == [1]
    assert cols == [1]


def test_linear_assignment_is_globally_optimal_where_greedy_is_not():
    # Greedy takes the cheapest pair (0, 0) first and is left with (1, 1): total 1.0.
    # The optimum is (0, 1) + (1, 0): total 0.4.
    cost = np.array([[0.1, 0.2], [0.2, 0.9]])
    matches, rows, cols = linear_assignment(cost, cost_limit=10.0)
    assert sorted(matches) == [(0, 1), (1, 0)]
    assert rows == [] and cols == []


def test_linear_assignment_rectangular_matrix():
    cost = np.array([[0.9, 0.1, 0.5]])
    matches, rows, cols = linear_assignment(cost, cost_limit=1.0)
    assert matches == [(0, 1)]
    assert rows == []
    assert cols == [0, 2]


# ------------------------------------------------------------------------------------ IoUTracker


def test_tracker_ids_stable_when_boxes_move_a_little():
    tracker = IoUTracker()
    a, b = (10, 10, 60, 60), (300, 200, 400, 300)
    first = tracker.update(inst(a, b))
    ids = (id_of_row(first, 0), id_of_row(first, 1))
    for step in range(1, 6):
        tracks = tracker.update(inst(shifted(b, dx=3 * step), shifted(a, dx=2 * step, dy=1 * step)))
        # rows swapped in the input on purpose: ids follow boxes, not row order
        assert (id_of_row(tracks, 1), id_of_row(tracks, 0)) == ids
        assert all(t.state is TrackState.TRACKED for t in tracks)


def test_tracker_first_ids_start_at_one():
    tracks = IoUTracker().update(inst((0, 0, 10, 10), (100, 100, 110, 110)))
    assert sorted(t.id for t in tracks) == [1, 2]


def test_tracker_ids_are_counted_per_instance():
    first, second = IoUTracker(), IoUTracker()
    for k in range(3):
        first.update(inst((50 * k, 0, 50 * k + 20, 20)))  # a new object every frame → ids 1, 2, 3
    [track] = [t for t in second.update(inst((0, 0, 10, 10))) if t.state is TrackState.TRACKED]
    assert track.id == 1


def test_tracker_new_object_gets_new_id():
    tracker = IoUTracker()
    a = (10, 10, 60, 60)
    [t1] = tracker.update(inst(a))
    tracks = tracker.update(inst(a, (300, 300, 350, 350)))
    assert id_of_row(tracks, 0) == t1.id
    assert id_of_row(tracks, 1) == t1.id + 1


def test_tracker_ids_not_reused_after_removal():
    tracker = IoUTracker(IoUTrackerSettings(max_age=0))
    [t1] = tracker.update(inst((0, 0, 10, 10)))
    tracker.update(inst())  # removed
    [t2] = tracker.update(inst((0, 0, 10, 10)))
    assert t2.id != t1.id


def test_tracker_crossing_objects_keep_ids():
    tracker = IoUTracker()
    # A moves right along y 0..40, B moves left along y 20..60; they overlap mid-way.
    ids = None
    for t in range(11):
        a = (10 * t, 0, 10 * t + 40, 40)
        b = (100 - 10 * t, 20, 140 - 10 * t, 60)
        tracks = tracker.update(inst(a, b))
        now = (id_of_row(tracks, 0), id_of_row(tracks, 1))
        if ids is None:
            ids = now
        assert now == ids, f"ids swapped at step {t}"
    assert len(by_id(tracks)) == 2


def test_tracker_far_jump_is_a_new_track():
    tracker = IoUTracker(IoUTrackerSettings(min_iou=0.3))
    [t1] = tracker.update(inst((0, 0, 10, 10)))
    tracks = by_id(tracker.update(inst((200, 200, 210, 210))))
    assert tracks[t1.id].state is TrackState.LOST
    assert len(tracks) == 2


def test_tracker_states_tracked_lost_removed_once():
    tracker = IoUTracker(IoUTrackerSettings(max_age=2))
    [t] = tracker.update(inst((0, 0, 10, 10)))
    assert t.state is TrackState.TRACKED and t.frames_lost == 0 and t.row == 0

    for lost_for in (1, 2):
        [t] = tracker.update(inst())
        assert t.state is TrackState.LOST
        assert t.frames_lost == lost_for
        assert t.row is None

    [t] = tracker.update(inst())
    assert t.state is TrackState.REMOVED
    assert t.row is None

    assert tracker.update(inst()) == ()
    assert tracker.update(inst()) == ()


def test_tracker_removed_track_does_not_come_back():
    tracker = IoUTracker(IoUTrackerSettings(max_age=1))
    [t1] = tracker.update(inst((0, 0, 10, 10)))
    tracker.update(inst())
    [gone] = tracker.update(inst())
    assert gone.state is TrackState.REMOVED
    [t2] = tracker.update(inst((0, 0, 10, 10)))
    assert t2.id != t1.id and t2.state is TrackState.TRACKED


def test_tracker_lost_track_recovers_within_max_age():
    tracker = IoUTracker(IoUTrackerSettings(max_age=3))
    [t1] = tracker.update(inst((0, 0, 10, 10)))
    tracker.update(inst())
    tracker.update(inst())
    [t] = tracker.update(inst((1, 0, 11, 10)))
    assert t.id == t1.id
    assert t.state is TrackState.TRACKED and t.frames_lost == 0


def test_tracker_age_counts_frames_since_birth():
    tracker = IoUTracker()
    for k in range(4):
        [t] = tracker.update(inst((k, 0, k + 10, 10)))
    assert t.age == 3


def test_tracker_marks_target_row():
    tracker = IoUTracker()
    tracks = tracker.update(inst((0, 0, 10, 10), (100, 100, 150, 150), (300, 0, 310, 10)), targets=TargetChange.only(1))
    targets = [t for t in tracks if t.is_target]
    assert len(targets) == 1
    assert targets[0].row == 1


def test_tracker_without_target_row_marks_nothing():
    tracks = IoUTracker().update(inst((0, 0, 10, 10), (100, 100, 150, 150)))
    assert not any(t.is_target for t in tracks)


def test_tracker_target_follows_its_track_on_later_frames():
    tracker = IoUTracker()
    a, b = (0, 0, 50, 50), (200, 200, 250, 250)
    first = tracker.update(inst(a, b), targets=TargetChange.only(0))
    target_id = id_of_row(first, 0)
    tracks = tracker.update(inst(shifted(b, 2), shifted(a, 2)))  # rows swapped, no target_row
    [target] = [t for t in tracks if t.is_target]
    assert target.id == target_id
    assert target.row == 1


def test_tracker_new_target_row_moves_the_target():
    tracker = IoUTracker()
    a, b = (0, 0, 50, 50), (200, 200, 250, 250)
    tracker.update(inst(a, b), targets=TargetChange.only(0))
    tracks = tracker.update(inst(a, b), targets=TargetChange.only(1))
    assert [t.row for t in tracks if t.is_target] == [1]


def test_tracker_target_stays_target_while_lost_forever_by_default():
    tracker = IoUTracker(IoUTrackerSettings(max_age=1, target_max_age=None))
    [target] = tracker.update(inst((100, 100, 200, 200)), targets=TargetChange.only(0))
    for lost_for in range(1, 101):
        [t] = tracker.update(inst())
        assert t.id == target.id
        assert t.is_target
        assert t.state is TrackState.LOST
        assert t.frames_lost == lost_for


def test_tracker_non_target_expires_while_lost_target_is_kept():
    tracker = IoUTracker(IoUTrackerSettings(max_age=1, target_max_age=None))
    first = tracker.update(inst((100, 100, 200, 200), (400, 100, 450, 150)), targets=TargetChange.only(0))
    target_id, other_id = id_of_row(first, 0), id_of_row(first, 1)
    tracker.update(inst())
    tracks = by_id(tracker.update(inst()))
    assert tracks[other_id].state is TrackState.REMOVED
    assert tracks[target_id].state is TrackState.LOST and tracks[target_id].is_target
    tracks = by_id(tracker.update(inst()))
    assert list(tracks) == [target_id]


def test_tracker_target_max_age_removes_target():
    tracker = IoUTracker(IoUTrackerSettings(max_age=100, target_max_age=2))
    tracker.update(inst((100, 100, 200, 200)), targets=TargetChange.only(0))
    states = [tracker.update(inst())[0].state for _ in range(3)]
    assert states == [TrackState.LOST, TrackState.LOST, TrackState.REMOVED]
    assert tracker.update(inst()) == ()


def test_tracker_target_reappearing_gets_old_id_back():
    tracker = IoUTracker(IoUTrackerSettings(max_age=2, target_max_age=None))
    last_box = (100, 100, 200, 200)
    [target] = tracker.update(inst(last_box), targets=TargetChange.only(0))
    for _ in range(20):
        tracker.update(inst())
    # back, overlapping its last box, with an unrelated newcomer elsewhere
    tracks = tracker.update(inst((400, 300, 450, 350), shifted(last_box, 10, 5)))
    [back] = [t for t in tracks if t.is_target]
    assert back.id == target.id
    assert back.state is TrackState.TRACKED
    assert back.row == 1
    assert back.frames_lost == 0
    assert back.box == pytest.approx(shifted(last_box, 10, 5))
    assert id_of_row(tracks, 0) != target.id


def test_tracker_empty_frame_on_fresh_tracker():
    tracker = IoUTracker()
    assert tracker.update(Instances.empty(SHAPE)) == ()
    assert tracker.update(inst(), targets=None) == ()
    [t] = tracker.update(inst((0, 0, 10, 10)))
    assert t.id == 1 and t.state is TrackState.TRACKED


def test_tracker_empty_frame_makes_live_tracks_lost():
    tracker = IoUTracker()
    tracker.update(inst((0, 0, 10, 10), (50, 50, 60, 60)))
    tracks = tracker.update(Instances.empty(SHAPE))
    assert len(tracks) == 2
    assert all(t.state is TrackState.LOST and t.row is None for t in tracks)


def test_tracker_track_carries_box_and_score_of_match():
    tracker = IoUTracker()
    boxes = np.array([[10, 20, 30, 40]], np.float32)
    [t] = tracker.update(Instances(boxes, np.array([0.75], np.float32), image_shape=SHAPE))
    assert t.box == (10.0, 20.0, 30.0, 40.0)
    assert t.score == pytest.approx(0.75)
    assert isinstance(t.score, float)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_iou": 0.0},
        {"min_iou": -0.1},
        {"min_iou": 1.5},
        {"max_age": -1},
        {"target_max_age": -1},
    ],
)
def test_tracker_settings_reject_bad_values(kwargs):
    with pytest.raises(ValueError):
        IoUTrackerSettings(**kwargs)


def test_tracker_settings_accept_boundary_values():
    IoUTracker(IoUTrackerSettings(min_iou=1.0, max_age=0, target_max_age=0))


def test_several_targets_keep_their_own_ids_and_can_be_dropped_one_by_one():
    tracker = IoUTracker()
    a, b, c = (0, 0, 40, 40), (100, 100, 150, 150), (300, 0, 340, 40)
    first = tracker.update(inst(a, b, c), targets=TargetChange(add_rows=(0, 2)))
    ids = {t.id for t in first if t.is_target}
    assert len(ids) == 2
    moved = tracker.update(inst(shifted(c, 3), shifted(b, 3), shifted(a, 3)))  # rows reordered
    assert {t.id for t in moved if t.is_target} == ids
    assert {t.row for t in moved if t.is_target} == {0, 2}
    drop = min(ids)
    after = tracker.update(inst(a, b, c), targets=TargetChange(drop_ids=frozenset({drop})))
    assert {t.id for t in after if t.is_target} == ids - {drop}
    added = tracker.update(inst(a, b, c), targets=TargetChange(add_rows=(1,)))
    assert len({t.id for t in added if t.is_target}) == 2 and drop not in {t.id for t in added if t.is_target}


def test_target_change_then_keeps_order_on_one_frame():
    first = TargetChange(add_rows=(1,))
    assert first.then(TargetChange(add_rows=(2,))).add_rows == (1, 2)
    replaced = first.then(TargetChange.only(3))
    assert replaced.add_rows == (3,) and replaced.drop_all
    assert TargetChange.only(3).then(TargetChange(drop_ids=frozenset({5}))).drop_all
