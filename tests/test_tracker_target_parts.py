"""TargetChange.parts is the one channel for a target's rows, and every tracker honours it.

On the frame a target is added, every tracker reports it as the rows the change selected (`row`
the added row, `parts` the others), whatever it follows afterwards: the pipeline's target_rows
come straight from the tracks.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastsam_stream.core import DenseMasks, Instances, TargetChange, TrackState
from fastsam_stream.trackers import ByteTracker, ByteTrackerSettings, IoUTracker, make_tracker

SHAPE = (200, 300)  # height, width


def frame(*boxes: tuple[float, float, float, float], score: float = 0.9) -> tuple[Instances, np.ndarray]:
    """Instances with these boxes (each one red box-shaped mask) and the frame painted with them."""
    image = np.full((*SHAPE, 3), 90, np.uint8)
    masks = np.zeros((len(boxes), *SHAPE), bool)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        masks[i, int(y1) : int(y2), int(x1) : int(x2)] = True
        image[masks[i]] = (40, 40, 220)
    arr = np.array(boxes, np.float32).reshape(-1, 4)
    return Instances(arr, np.full(len(arr), score, np.float32), SHAPE, masks=DenseMasks(masks)), image


def update(tracker, boxes, change=None):
    instances, image = frame(*boxes)
    return tracker.update(instances, change, image)


def targets_of(tracks):
    return [t for t in tracks if t.is_target]


TRACKERS = {
    "bytetrack": lambda: ByteTracker(),
    "bytetrack, merge_parts=False": lambda: ByteTracker(ByteTrackerSettings(merge_parts=False)),
    "iou": lambda: IoUTracker(),
}
# A rider (row 1) on a bike (row 0) with a helmet (row 2): one object the segmenter cut in three.
RIDER = [(100, 100, 160, 160), (100, 40, 160, 110), (115, 20, 145, 45)]


@pytest.mark.parametrize("make", TRACKERS.values(), ids=TRACKERS.keys())
def test_added_target_reports_the_selected_rows_on_the_change_frame(make):
    tracker = make()
    change = TargetChange(add_rows=(1,), parts={1: (0, 1, 2)})
    [target] = targets_of(update(tracker, RIDER, change))
    assert target.row == 1 and target.parts == (0, 2) and target.state is TrackState.TRACKED


@pytest.mark.parametrize("make", TRACKERS.values(), ids=TRACKERS.keys())
def test_added_target_without_parts_reports_none(make):
    tracker = make()
    [target] = targets_of(update(tracker, RIDER, TargetChange.only(1)))
    assert target.row == 1 and target.parts == ()


@pytest.mark.parametrize("make", TRACKERS.values(), ids=TRACKERS.keys())
def test_each_added_target_reports_its_own_parts(make):
    tracker = make()
    other = [(220, 20, 260, 60), (220, 60, 260, 100)]
    change = TargetChange(add_rows=(1, 3), parts={1: (0, 1), 3: (4, 3)}, drop_all=True)
    tracks = update(tracker, RIDER + other, change)
    assert sorted((t.row, t.parts) for t in targets_of(tracks)) == [(1, (0,)), (3, (4,))]


@pytest.mark.parametrize("make", TRACKERS.values(), ids=TRACKERS.keys())
def test_selected_parts_are_reported_on_a_later_prompt_frame_too(make):
    tracker = make()
    update(tracker, RIDER)
    update(tracker, RIDER)
    [target] = targets_of(update(tracker, RIDER, TargetChange(add_rows=(1,), parts={1: (1, 2)})))
    assert target.row == 1 and target.parts == (2,)


def test_iou_tracker_follows_one_box_after_the_change_frame():
    tracker = IoUTracker()
    first = targets_of(update(tracker, RIDER, TargetChange(add_rows=(1,), parts={1: (0, 1, 2)})))
    [target] = targets_of(update(tracker, RIDER))
    assert target.id == first[0].id and target.row == 1 and target.parts == ()


def test_bytetrack_follows_the_selected_union_from_then_on():
    tracker = ByteTracker()
    [first] = targets_of(update(tracker, RIDER, TargetChange(add_rows=(1,), parts={1: (0, 1, 2)})))
    assert first.box == pytest.approx((100, 20, 160, 160))  # the union's box
    [target] = targets_of(update(tracker, RIDER))
    assert target.id == first.id and {target.row, *target.parts} == {0, 1, 2}
    assert target.box == pytest.approx((100, 20, 160, 160))


def test_bytetrack_without_merge_parts_follows_only_the_added_row_afterwards():
    tracker = ByteTracker(ByteTrackerSettings(merge_parts=False))
    [first] = targets_of(update(tracker, RIDER, TargetChange(add_rows=(1,), parts={1: (0, 1, 2)})))
    assert first.box == pytest.approx(RIDER[1])  # it follows the added row's box
    [target] = targets_of(update(tracker, RIDER))
    assert target.row == 1 and target.parts == ()


def test_reselecting_a_split_target_alone_reports_only_its_row_that_frame():
    # A target split in halves is followed as their union; a prompt selecting its main row alone
    # makes that frame's target the row alone, and the tracker completes it again afterwards.
    tracker = ByteTracker()
    whole = (100, 40, 160, 160)
    halves = [(100, 40, 160, 100), (100, 100, 160, 160)]
    update(tracker, [whole], TargetChange.only(0))
    [split] = targets_of(update(tracker, halves))
    assert split.parts != ()
    [chosen] = targets_of(update(tracker, halves, TargetChange(add_rows=(split.row,))))
    assert chosen.id == split.id and chosen.row == split.row and chosen.parts == ()
    [later] = targets_of(update(tracker, halves))
    assert later.id == split.id and {later.row, *later.parts} == {0, 1}


@pytest.mark.parametrize("kind", ["bytetrack", "iou"])
def test_registry_built_trackers_honour_parts(kind):
    from fastsam_stream.trackers import settings_class

    tracker = make_tracker(settings_class(kind)())
    [target] = targets_of(update(tracker, RIDER, TargetChange(add_rows=(0,), parts={0: (2, 0)})))
    assert target.row == 0 and target.parts == (2,)
