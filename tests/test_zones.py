"""Zones and lines on constructed tracks: each event exactly on the frame it is due, with every trigger.

The FrameResults are real ones (Frame, Instances with dense masks, Track) on small images, so the
monitor reads them as it reads the pipeline's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pytest
from pydantic import ValidationError

from fastsam_stream.core import (
    DenseMasks,
    Frame,
    FrameResult,
    Instances,
    PlaceKind,
    Track,
    TrackState,
    ZoneEventKind,
)
from fastsam_stream.errors import ConfigError
from fastsam_stream.zones import LineSettings, ZoneMonitor, ZoneSettings, check_places
from fastsam_stream.zones.geometry import LineShape, ZoneShape, anchors, pixel_window

FPS = 10.0
SQUARE = [[50, 50], [150, 50], [150, 150], [50, 150]]  # in a 200×200 frame

ENTER, LEAVE, DWELL = ZoneEventKind.ZONE_ENTER, ZoneEventKind.ZONE_LEAVE, ZoneEventKind.ZONE_DWELL
CROSS, OBSTACLE = ZoneEventKind.LINE_CROSS, ZoneEventKind.OBSTACLE


@dataclass
class T:
    """A track as a test writes it: id, box, state, target, and optionally its mask (default: its box filled)."""

    id: int
    box: tuple[float, float, float, float]
    state: TrackState = TrackState.TRACKED
    target: bool = False
    mask: np.ndarray | None = None


def box_at(cx: float, cy: float, w: float = 20, h: float = 20) -> tuple[float, float, float, float]:
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def filled(box, size) -> np.ndarray:
    width, height = size
    mask = np.zeros((height, width), bool)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    mask[max(0, y1) : max(0, y2), max(0, x1) : max(0, x2)] = True
    return mask


def make(index: int, tracks: list[T], size=(200, 200), target_rows=None) -> FrameResult:
    """A FrameResult of frame `index` at FPS: one instance row per matched track, in the order given."""
    width, height = size
    matched = [t for t in tracks if t.state is TrackState.TRACKED]
    boxes = np.array([t.box for t in matched], np.float32).reshape(-1, 4)
    masks = np.array([t.mask if t.mask is not None else filled(t.box, size) for t in matched]).reshape(
        -1, height, width
    )
    instances = Instances(boxes, np.full(len(matched), 0.9), (height, width), masks=DenseMasks(masks))
    rows = {t.id: i for i, t in enumerate(matched)}
    out = tuple(
        Track(t.id, t.box, 0.9, t.state, index, 0 if t.id in rows else 1, t.target, rows.get(t.id)) for t in tracks
    )
    frame = Frame(np.zeros((height, width, 3), np.uint8), "cam", index, index / FPS, 0.0)
    return FrameResult(frame, instances, out, target_rows=target_rows or {})


def run(monitor: ZoneMonitor, frames: list[list[T]], size=(200, 200)):
    """Feed the frames; return [(frame, kind, place, track, direction)] and the last places."""
    seen, places = [], ()
    for index, tracks in enumerate(frames):
        places, events = monitor.update(make(index, tracks, size))
        seen += [(e.frame, e.kind, e.place, e.track_id, e.direction) for e in events]
    return seen, places


def zone(**kw) -> ZoneSettings:
    return ZoneSettings(**{"name": "z", "polygon": SQUARE, **kw})


def line(**kw) -> LineSettings:
    return LineSettings(**{"name": "l", "points": [[50, 100], [150, 100]], **kw})


# --- zones: enter and leave with each trigger -----------------------------------------------------------------


def walk_right(y: float, xs, track_id: int = 1, **kw) -> list[list[T]]:
    return [[T(track_id, box_at(x, y, **kw))] for x in xs]


def test_enter_and_leave_center():
    monitor = ZoneMonitor("cam", [zone(trigger="center")], [])
    frames = walk_right(100, [20, 40, 60, 100, 140, 160, 180])
    seen, places = run(monitor, frames)
    assert seen == [(2, ENTER, "z", 1, None), (5, LEAVE, "z", 1, None)]
    assert places[0].ids == () and places[0].kind is PlaceKind.ZONE


def test_bottom_center_enters_before_center():
    # Coming down from above: the bottom edge (y + 10) reaches the zone's top (50) before the centre (y).
    ys = [20, 36, 44, 56]  # bottoms 30, 46, 54, 66
    bottom, _ = run(ZoneMonitor("cam", [zone()], []), [[T(1, box_at(100, y))] for y in ys])
    centre, _ = run(ZoneMonitor("cam", [zone(trigger="center")], []), [[T(1, box_at(100, y))] for y in ys])
    assert bottom == [(2, ENTER, "z", 1, None)]
    assert centre == [(3, ENTER, "z", 1, None)]


def test_edge_counts_as_inside():
    seen, places = run(ZoneMonitor("cam", [zone(trigger="center")], []), [[T(1, box_at(150, 100))]])
    assert seen == [(0, ENTER, "z", 1, None)] and places[0].ids == (1,)


def test_new_track_inside_enters_on_its_first_frame():
    seen, _ = run(ZoneMonitor("cam", [zone()], []), [[], [T(7, box_at(100, 100))], [T(7, box_at(100, 100))]])
    assert seen == [(1, ENTER, "z", 7, None)]


def test_mask_trigger_needs_min_overlap_of_the_mask():
    size = (200, 200)
    box = (20.0, 80.0, 120.0, 120.0)  # 100 wide; its centre (70, 100) is inside the zone

    def shape(inside_columns: int) -> np.ndarray:
        mask = np.zeros((200, 200), bool)
        mask[90:110, 50 - (40 - inside_columns) : 50 + inside_columns] = True  # 40 columns across x=50, the edge
        return mask

    mostly_out, mostly_in = shape(12), shape(28)  # 30% and 70% of the mask's pixels at x >= 50
    frames = [[T(1, box, mask=mostly_out)], [T(1, box, mask=mostly_in)], [T(1, box, mask=mostly_out)]]
    seen, _ = run(ZoneMonitor("cam", [zone(trigger="mask", min_overlap=0.5)], []), frames, size)
    assert seen == [(1, ENTER, "z", 1, None), (2, LEAVE, "z", 1, None)]
    seen, _ = run(ZoneMonitor("cam", [zone(trigger="mask", min_overlap=0.25)], []), frames, size)
    assert seen == [(0, ENTER, "z", 1, None)]


def test_mask_trigger_counts_only_within_the_box():
    # Stray mask pixels far outside the box, inside the zone, do not make the object inside.
    mask = filled((0, 0, 40, 40), (200, 200))
    mask[100:140, 100:140] = True
    seen, _ = run(ZoneMonitor("cam", [zone(trigger="mask")], []), [[T(1, (0, 0, 40, 40), mask=mask)]])
    assert seen == []


def test_mask_trigger_uses_a_targets_whole_selection():
    # A target made of two rows: one (60% of the pixels) inside, one outside → inside at min_overlap 0.5.
    size = (200, 200)
    inside = filled((60, 60, 90, 100), size)  # 1200 px in the zone
    outside = filled((0, 0, 20, 40), size)  # 800 px outside it
    boxes = np.array([[0, 0, 20, 40], [60, 60, 90, 100]], np.float32)
    instances = Instances(boxes, np.array([0.9, 0.9]), (200, 200), masks=DenseMasks(np.stack([outside, inside])))
    track = Track(3, (0, 0, 90, 100), 0.9, TrackState.TRACKED, 0, 0, True, 0)
    frame = Frame(np.zeros((200, 200, 3), np.uint8), "cam", 0, 0.0, 0.0)
    result = FrameResult(frame, instances, (track,), target_rows={3: (0, 1)})
    for min_overlap, expected in ((0.5, (3,)), (0.7, ())):
        places, _ = ZoneMonitor("cam", [zone(trigger="mask", min_overlap=min_overlap)], []).update(result)
        assert places[0].ids == expected


def test_mask_trigger_renders_only_boxes_that_meet_a_mask_zone():
    asked = []

    class Counting(DenseMasks):
        def __getitem__(self, index):
            asked.append(list(np.atleast_1d(index)))
            return DenseMasks(self.data[index])

    size = (200, 200)
    far, near = (0.0, 0.0, 20.0, 20.0), (90.0, 90.0, 110.0, 110.0)
    masks = np.stack([filled(far, size), filled(near, size)])
    instances = Instances(np.array([far, near], np.float32), np.array([0.9, 0.9]), (200, 200), masks=Counting(masks))
    tracks = tuple(Track(i, b, 0.9, TrackState.TRACKED, 0, 0, False, i) for i, b in enumerate((far, near)))
    frame = Frame(np.zeros((200, 200, 3), np.uint8), "cam", 0, 0.0, 0.0)
    places, _ = ZoneMonitor("cam", [zone(trigger="mask"), zone(name="y", trigger="mask")], []).update(
        FrameResult(frame, instances, tracks)
    )
    assert [p.ids for p in places] == [(1,), (1,)]
    assert asked == [[1]]  # one render for both zones, of the one row whose box meets them


# --- dwell and obstacle -----------------------------------------------------------------------------------------


def test_dwell_once_per_stay_after_dwell_s():
    monitor = ZoneMonitor("cam", [zone(dwell_s=1.0)], [])
    inside, outside = [T(1, box_at(100, 100))], [T(1, box_at(10, 10))]
    frames = [outside] + [inside] * 15 + [outside] + [inside] * 11
    seen, _ = run(monitor, frames)
    # Entered on frame 1 (pts 0.1): dwell at pts 1.1 (frame 11), not again; re-armed by leaving on frame 16.
    assert seen == [
        (1, ENTER, "z", 1, None),
        (11, DWELL, "z", 1, None),
        (16, LEAVE, "z", 1, None),
        (17, ENTER, "z", 1, None),
        (27, DWELL, "z", 1, None),
    ]


def test_obstacle_when_still_for_stationary_s():
    # 20×20 boxes: diagonal 28.3 px; max_speed 0.05 diag/s over 1 s allows 1.41 px of drift.
    monitor = ZoneMonitor("cam", [zone(stationary_s=1.0, max_speed=0.05)], [])
    jitter = [0.0, 0.5, -0.5, 0.3, -0.2, 0.6, -0.6, 0.1, 0.0, 0.4, -0.3, 0.2]
    frames = [[T(1, box_at(100 + j, 100 - j))] for j in jitter]
    seen, _ = run(monitor, frames)
    assert seen == [(0, ENTER, "z", 1, None), (10, OBSTACLE, "z", 1, None)]


def test_obstacle_not_for_a_slowly_moving_track_then_once_it_stops():
    # 2 px per frame = 20 px/s = 0.7 diagonals/s: moving. It stops at x=100 on frame 10.
    xs = [80 + 2 * min(i, 10) for i in range(25)]
    seen, _ = run(ZoneMonitor("cam", [zone(trigger="center", stationary_s=1.0)], []), walk_right(100, xs))
    assert seen == [(0, ENTER, "z", 1, None), (20, OBSTACLE, "z", 1, None)]


def test_obstacle_rearmed_when_it_moves_again():
    xs = [100] * 12 + [110] + [110] * 12
    seen, _ = run(ZoneMonitor("cam", [zone(trigger="center", stationary_s=1.0)], []), walk_right(100, xs))
    # Still from frame 0: obstacle on frame 10; a 10 px jump on frame 12 re-arms it: again on frame 22.
    assert seen == [(0, ENTER, "z", 1, None), (10, OBSTACLE, "z", 1, None), (22, OBSTACLE, "z", 1, None)]


def test_obstacle_rearmed_when_it_leaves():
    inside, outside = [T(1, box_at(100, 100))], [T(1, box_at(10, 10))]
    frames = [inside] * 11 + [outside] + [inside] * 11
    seen, _ = run(ZoneMonitor("cam", [zone(stationary_s=1.0)], []), frames)
    assert [(f, k) for f, k, *_ in seen] == [(0, ENTER), (10, OBSTACLE), (11, LEAVE), (12, ENTER), (22, OBSTACLE)]


def test_still_outside_the_zone_is_no_obstacle():
    seen, _ = run(ZoneMonitor("cam", [zone(stationary_s=0.5)], []), [[T(1, box_at(10, 10))]] * 20)
    assert seen == []


# --- lines -----------------------------------------------------------------------------------------------------


def test_line_crossing_both_directions():
    # Line from (50, 100) to (150, 100): its "in" side is above it on screen (supervision's convention).
    monitor = ZoneMonitor("cam", [], [line(trigger="center")])
    ys = [60, 80, 95, 105, 120, 110, 98, 90, 99, 101]
    seen, places = run(monitor, [[T(1, box_at(100, y))] for y in ys])
    assert seen == [(3, CROSS, "l", 1, "out"), (6, CROSS, "l", 1, "in"), (9, CROSS, "l", 1, "out")]
    assert (places[0].crossed_in, places[0].crossed_out, places[0].kind) == (1, 2, PlaceKind.LINE)


def test_line_bottom_center_crosses_before_center():
    ys = [70, 85, 95, 105, 115]  # bottoms 80, 95, 105, ...: the line is at y = 100
    bottom, _ = run(ZoneMonitor("cam", [], [line()]), [[T(1, box_at(100, y))] for y in ys])
    centre, _ = run(ZoneMonitor("cam", [], [line(trigger="center")]), [[T(1, box_at(100, y))] for y in ys])
    assert bottom == [(2, CROSS, "l", 1, "out")]
    assert centre == [(3, CROSS, "l", 1, "out")]


def test_passing_beyond_the_lines_end_is_no_crossing():
    xs_ys = [(170, 80), (170, 120), (100, 120), (100, 80)]  # down beside the end, then up through the line
    seen, _ = run(ZoneMonitor("cam", [], [line(trigger="center")]), [[T(1, box_at(x, y))] for x, y in xs_ys])
    assert seen == [(3, CROSS, "l", 1, "in")]


def test_a_point_on_the_line_is_on_its_out_side():
    ys = [90, 100, 110, 100, 90]
    seen, _ = run(ZoneMonitor("cam", [], [line(trigger="center")]), [[T(1, box_at(100, y))] for y in ys])
    assert seen == [(1, CROSS, "l", 1, "out"), (4, CROSS, "l", 1, "in")]


def test_line_crossed_while_lost_counts_when_seen_again():
    frames = [[T(1, box_at(100, 80))], [T(1, box_at(100, 90), TrackState.LOST)]]
    frames += [[T(1, box_at(100, 100), TrackState.LOST)], [T(1, box_at(100, 120))]]
    seen, _ = run(ZoneMonitor("cam", [], [line(trigger="center")]), frames)
    assert seen == [(3, CROSS, "l", 1, "out")]


def test_line_forgets_a_removed_track():
    frames = [[T(1, box_at(100, 80))], [T(1, box_at(100, 80), TrackState.REMOVED)], [T(1, box_at(100, 120))]]
    seen, _ = run(ZoneMonitor("cam", [], [line(trigger="center")]), frames)
    assert seen == []  # id 1 on frame 2 is a new track as far as the line knows: no previous point


# --- lost, removed and vanished tracks ------------------------------------------------------------------------------


@pytest.mark.parametrize("gone", ["lost", "removed", "vanished"])
def test_a_track_that_goes_while_inside_leaves(gone):
    box = box_at(100, 100)
    last = {
        "lost": [T(1, box_at(104, 100), TrackState.LOST)],
        "removed": [T(1, box_at(104, 100), TrackState.REMOVED)],
        "vanished": [],
    }[gone]
    monitor = ZoneMonitor("cam", [zone()], [])
    monitor.update(make(0, [T(1, box)]))
    places, events = monitor.update(make(1, last))
    assert [(e.kind, e.track_id) for e in events] == [(LEAVE, 1)]
    # The leave carries the track's box as the tracker reports it, or its last one when it is no longer reported.
    assert events[0].box == (box_at(100, 100) if gone == "vanished" else box_at(104, 100))
    assert places[0].ids == ()


def test_a_lost_track_found_again_enters_again():
    inside = [T(1, box_at(100, 100))]
    seen, _ = run(ZoneMonitor("cam", [zone()], []), [inside, [T(1, box_at(100, 100), TrackState.LOST)], inside])
    assert [(f, k) for f, k, *_ in seen] == [(0, ENTER), (1, LEAVE), (2, ENTER)]


# --- debounce: leave_after_s and enter_after_s ------------------------------------------------------------------


def gap(kind: str, box=None) -> list[T]:
    """One frame of a track not inside: seen outside, lost, removed, or no longer reported."""
    box = box or box_at(104, 100)
    return {
        "out": [T(1, box_at(10, 10))],
        "lost": [T(1, box, TrackState.LOST)],
        "removed": [T(1, box, TrackState.REMOVED)],
        "vanished": [],
    }[kind]


def counts(monitor: ZoneMonitor, frames: list[list[T]]):
    """Feed the frames; return the events as (frame, kind, track) and the zone's ids after each frame."""
    seen, ids = [], []
    for index, tracks in enumerate(frames):
        places, events = monitor.update(make(index, tracks))
        seen += [(e.frame, e.kind, e.track_id) for e in events]
        ids.append(places[0].ids)
    return seen, ids


@pytest.mark.parametrize("kind", ["out", "lost", "vanished"])
def test_a_short_absence_within_leave_after_s_raises_nothing(kind):
    inside = [T(1, box_at(100, 100))]
    frames = [inside] * 3 + [gap(kind)] * 2 + [inside] * 3
    seen, ids = counts(ZoneMonitor("cam", [zone(leave_after_s=0.2)], []), frames)
    assert seen == [(0, ENTER, 1)]
    assert ids == [(1,)] * 8  # still counted inside while away


@pytest.mark.parametrize("kind", ["out", "lost", "vanished"])
def test_the_same_absence_with_leave_after_s_0_leaves_and_enters(kind):
    inside = [T(1, box_at(100, 100))]
    seen, ids = counts(ZoneMonitor("cam", [zone()], []), [inside] * 3 + [gap(kind)] * 2 + [inside] * 3)
    assert seen == [(0, ENTER, 1), (3, LEAVE, 1), (5, ENTER, 1)]
    assert ids == [(1,)] * 3 + [()] * 2 + [(1,)] * 3


@pytest.mark.parametrize("kind", ["out", "lost", "removed", "vanished"])
def test_a_real_exit_leaves_once_leave_after_s_after_its_first_frame_out(kind):
    # Out from frame 5 (pts 0.5): the leave comes on frame 7 (pts 0.7), the first frame 0.2 s later.
    frames = [[T(1, box_at(100, 100))]] * 5 + [gap(kind)] + [gap("vanished" if kind == "removed" else kind)] * 6
    monitor = ZoneMonitor("cam", [zone(leave_after_s=0.2)], [])
    seen, ids = [], []
    for index, tracks in enumerate(frames):
        places, events = monitor.update(make(index, tracks))
        seen += [(e.frame, e.pts, e.kind, e.box) for e in events]
        ids.append(places[0].ids)
    last_box = {"out": box_at(10, 10), "vanished": box_at(100, 100)}.get(kind, box_at(104, 100))
    assert seen == [(0, 0.0, ENTER, box_at(100, 100)), (7, pytest.approx(0.7), LEAVE, last_box)]
    assert ids == [(1,)] * 7 + [()] * 5


def test_jitter_on_the_border_within_leave_after_s_raises_nothing():
    # The bottom centre (y + 10) jitters across the zone's bottom edge (y = 150): out for at most 2 frames.
    bottoms = [146, 152, 148, 153, 151, 147, 149, 152, 146, 151, 153, 148, 152, 147, 150, 154, 146]
    frames = [[T(1, box_at(100, b - 10))] for b in bottoms]
    seen, _ = counts(ZoneMonitor("cam", [zone(leave_after_s=0.2)], []), frames)
    assert seen == [(0, ENTER, 1)]
    seen, _ = counts(ZoneMonitor("cam", [zone()], []), frames)
    assert len(seen) == 13  # without the debounce: an enter or a leave at each of the 13 changes of side
    # Coming from outside: enter_after_s 0.2 needs 3 frames inside in a row, which the jitter never has.
    seen, _ = counts(ZoneMonitor("cam", [zone(leave_after_s=0.2, enter_after_s=0.2)], []), frames[1:])
    assert seen == []


def test_enter_after_s_enters_after_a_steady_stay_counted_from_its_first_frame():
    outside, inside = [T(1, box_at(10, 10))], [T(1, box_at(100, 100))]
    frames = [outside, inside, inside, outside] + [inside] * 14
    seen, ids = counts(ZoneMonitor("cam", [zone(enter_after_s=0.2, dwell_s=1.0)], []), frames)
    # In on frames 1-2, out on 3: nothing. In again from frame 4 (pts 0.4): enter on frame 6, dwell on 14.
    assert seen == [(6, ENTER, 1), (14, DWELL, 1)]
    assert ids == [()] * 6 + [(1,)] * 12


def test_dwell_and_obstacle_clocks_run_through_a_short_absence():
    inside = [T(1, box_at(100, 100))]
    # Lost on frames 4-5 and 9-11: dwell (pts 1.0) and stillness (since pts 0) fall due while away, on
    # frame 10; both come when it is back, on frame 12. A 3-frame absence is within leave_after_s 0.3.
    frames = [inside] * 4 + [gap("lost", box_at(100, 100))] * 2 + [inside] * 3 + [gap("lost")] * 3 + [inside] * 2
    monitor = ZoneMonitor("cam", [zone(leave_after_s=0.3, dwell_s=1.0, stationary_s=1.0)], [])
    seen, _ = counts(monitor, frames)
    assert seen == [(0, ENTER, 1), (12, DWELL, 1), (12, OBSTACLE, 1)]


def test_debounces_survive_a_resize():
    monitor = ZoneMonitor("cam", [zone(trigger="center", leave_after_s=0.2, enter_after_s=0.2)], [])
    seen = []
    frames = [((200, 200), [T(1, box_at(100, 100)), T(2, box_at(60, 60))]), ((400, 400), [T(2, box_at(120, 120))])]
    frames += [((400, 400), [T(2, box_at(120, 120))])] * 2
    for index, (size, tracks) in enumerate(frames):
        _, events = monitor.update(make(index, tracks, size))
        seen += [(e.frame, e.kind, e.track_id, e.box) for e in events]
    # Track 2 arrives at frame 0 and enters on frame 2; track 1 (arriving, gone on frame 1) never enters.
    assert seen == [(2, ENTER, 2, box_at(120, 120))]


# --- who counts -------------------------------------------------------------------------------------------------


def test_targets_only():
    frames = [[T(1, box_at(100, 100)), T(2, box_at(110, 110), target=True)]]
    seen, places = run(ZoneMonitor("cam", [zone(targets_only=True)], [line(targets_only=True)]), frames)
    assert seen == [(0, ENTER, "z", 2, None)] and places[0].ids == (2,)
    frames = [[T(1, box_at(100, 80)), T(2, box_at(110, 80), target=True)]]
    frames += [[T(1, box_at(100, 120)), T(2, box_at(110, 120), target=True)]]
    seen, places = run(ZoneMonitor("cam", [], [line(targets_only=True, trigger="center")]), frames)
    assert seen == [(1, CROSS, "l", 2, "out")] and places[0].crossed_out == 1


def test_min_area():
    frames = [[T(1, box_at(100, 100, 10, 10)), T(2, box_at(100, 100, 30, 30))]]  # 100 px² and 900 px²
    _, places = run(ZoneMonitor("cam", [zone(min_area=400)], []), frames)
    assert places[0].ids == (2,)
    # Shrinking below min_area while inside is leaving.
    frames = [[T(2, box_at(100, 100, 30, 30))], [T(2, box_at(100, 100, 15, 15))]]
    seen, _ = run(ZoneMonitor("cam", [zone(min_area=400)], []), frames)
    assert [(f, k) for f, k, *_ in seen] == [(0, ENTER), (1, LEAVE)]


def test_places_ids_sorted_and_per_source():
    zones = [zone(name="a"), zone(name="b", source="other"), zone(name="c", source="cam")]
    monitor = ZoneMonitor("cam", zones, [line(source="other"), line(name="m")])
    places, _ = monitor.update(make(0, [T(9, box_at(100, 100)), T(3, box_at(90, 90)), T(5, box_at(10, 10))]))
    assert [(p.name, p.kind) for p in places] == [
        ("a", PlaceKind.ZONE),
        ("c", PlaceKind.ZONE),
        ("m", PlaceKind.LINE),
    ]
    assert places[0].ids == (3, 9) and places[0].count == 2
    assert places[0].points.dtype == np.float32 and places[0].points.tolist() == SQUARE
    assert not monitor.empty and ZoneMonitor("cam", zones[1:2], []).empty


def test_events_carry_frame_pts_time_and_box():
    monitor = ZoneMonitor("cam", [zone()], [])
    before = time.time()
    _, events = monitor.update(make(4, [T(1, box_at(100, 100))]))
    (event,) = events
    assert event.source_id == "cam" and event.frame == 4 and event.pts == pytest.approx(0.4)
    assert before <= event.at <= time.time()
    assert event.box == box_at(100, 100) and event.snapshot is None and event.place_kind is PlaceKind.ZONE
    assert event.to_json()["zone"] == "z"


# --- a change of frame size ----------------------------------------------------------------------------------------


def test_relative_zone_follows_a_resize():
    rel = [[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]]
    monitor = ZoneMonitor("cam", [zone(polygon=rel, relative=True, trigger="center")], [])
    places, events = monitor.update(make(0, [T(1, box_at(60, 60))], (200, 200)))
    assert [e.kind for e in events] == [ENTER] and places[0].points.tolist() == SQUARE
    # Twice the size: the same object at the same place in the picture stays inside; at 60, 60 it is out now.
    places, events = monitor.update(make(1, [T(1, box_at(120, 120)), T(2, box_at(60, 60))], (400, 400)))
    assert events == [] and places[0].ids == (1,)
    assert places[0].points.tolist() == [[100, 100], [300, 100], [300, 300], [100, 300]]


def test_pixel_zone_rescaled_from_the_first_size():
    monitor = ZoneMonitor("cam", [zone(trigger="center")], [])
    sizes_and_boxes = [((200, 200), box_at(60, 60)), ((400, 200), box_at(120, 60)), ((100, 100), box_at(30, 30))]
    for index, (size, box) in enumerate(sizes_and_boxes):
        places, events = monitor.update(make(index, [T(1, box)], size))
        assert [e.kind for e in events] == ([ENTER] if index == 0 else [])
    assert places[0].points.tolist() == [[25, 25], [75, 25], [75, 75], [25, 75]]


def test_line_and_obstacle_state_survive_a_resize():
    monitor = ZoneMonitor("cam", [zone(trigger="center", stationary_s=1.0)], [line(trigger="center")])
    for index in range(5):  # still above the line inside the zone, at 200×200
        monitor.update(make(index, [T(1, box_at(100, 90))]))
    seen = []
    for index in range(5, 12):  # the same place in a 400×400 picture: still, so the obstacle comes on time
        _, events = monitor.update(make(index, [T(1, box_at(200, 180, 40, 40))], (400, 400)))
        seen += [(e.frame, e.kind) for e in events]
    _, events = monitor.update(make(12, [T(1, box_at(200, 220, 40, 40))], (400, 400)))
    seen += [(e.frame, e.kind, e.direction) for e in events]
    # Still since frame 0 at the same place in the picture: obstacle at pts 1.0; the line's last point was rescaled.
    assert seen == [(10, OBSTACLE), (12, CROSS, "out")]


def test_zone_outside_the_frame_warns_once_per_size(caplog):
    far = [[300, 300], [400, 300], [400, 400]]
    monitor = ZoneMonitor("cam", [zone(name="far", polygon=far)], [])
    with caplog.at_level(logging.WARNING, logger="fastsam_stream.zones.monitor"):
        for index, size in enumerate([(200, 200), (200, 200), (100, 100), (200, 200)]):
            monitor.update(make(index, [], size))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2  # the first frame of 200×200 and of 100×100 (a pixel zone is rescaled with the frame)
    assert "cam: zone 'far' lies entirely outside the 200x200 frame" in warnings[0]


def test_line_outside_the_frame_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="fastsam_stream.zones.monitor"):
        ZoneMonitor("cam", [], [line(points=[[0, 300], [200, 300]]), line(name="in")]).update(make(0, []))
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "cam: line 'l' lies entirely outside the 200x200 frame"
    ]


# --- geometry -------------------------------------------------------------------------------------------------------


def test_anchors_as_supervision_places_them():
    boxes = np.array([[0, 0, 10, 4], [10, 20, 30, 60]])
    assert anchors(boxes, "center").tolist() == [[5, 2], [20, 40]]
    assert anchors(boxes, "bottom_center").tolist() == [[5, 4], [20, 60]]


def test_zone_shape_overlap_and_frame():
    shape = ZoneShape(np.array(SQUARE, float), (200, 200))
    mask = filled((40, 90, 60, 110), (200, 200))  # columns 40..59: 10 of 20 at x >= 50
    window = pixel_window(np.array([39.5, 89.2, 60.0, 110.7]), (200, 200))
    assert window == (39, 89, 60, 111)
    x1, y1, x2, y2 = window
    assert shape.overlap(mask[y1:y2, x1:x2], window) == pytest.approx(0.5)
    assert shape.overlap(mask[:10, :10], (0, 0, 10, 10)) == 0.0
    assert pixel_window(np.array([-30, -30, -10, -10]), (200, 200)) is None
    assert pixel_window(np.array([190, 190, 250, 260]), (200, 200)) == (190, 190, 200, 200)
    assert shape.in_frame() and not ZoneShape(np.array(SQUARE, float) + 300, (200, 200)).in_frame()


def test_line_shape_crossings():
    shape = LineShape(np.array([[50, 100], [150, 100]], float))
    before = np.array([[100, 90], [100, 110], [160, 90], [100, 90], [40, 90]])
    after = np.array([[100, 110], [100, 90], [160, 110], [100, 95], [60, 110]])
    assert shape.crossings(before, after).tolist() == [-1, 1, 0, 0, -1]


# --- settings ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        (ZoneSettings, {"polygon": [[0, 0], [10, 0]]}, "zone 'x': a polygon needs at least 3 points, got 2"),
        (ZoneSettings, {"polygon": [[0, 0], [10, 10], [10, 0], [0, 10]]}, "zone 'x': the polygon's edges cross"),
        (ZoneSettings, {"polygon": [[0, 0], [5, 5], [10, 10]]}, "zone 'x': the polygon encloses no area"),
        (
            ZoneSettings,
            {"polygon": [[0, 0], [1.2, 0], [1, 1]], "relative": True},
            "zone 'x': relative coordinates are fractions in [0, 1], got [1.2, 0.0]",
        ),
        (ZoneSettings, {"polygon": SQUARE, "trigger": "top"}, "Input should be 'center', 'bottom_center' or 'mask'"),
        (ZoneSettings, {"polygon": SQUARE, "min_overlap": 0}, "greater than 0"),
        (ZoneSettings, {"polygon": SQUARE, "dwell_s": -1}, "greater than 0"),
        (ZoneSettings, {"polygon": SQUARE, "leave_after_s": -0.1}, "greater than or equal to 0"),
        (ZoneSettings, {"polygon": SQUARE, "enter_after_s": -1}, "greater than or equal to 0"),
        (ZoneSettings, {"polygon": SQUARE, "colour": "red"}, "Extra inputs are not permitted"),
        (LineSettings, {"points": [[0, 0]]}, "line 'x': a line needs exactly 2 points, got 1"),
        (LineSettings, {"points": [[0, 0], [1, 1], [2, 2]]}, "line 'x': a line needs exactly 2 points, got 3"),
        (LineSettings, {"points": [[3, 4], [3, 4]]}, "line 'x': its 2 points are the same point"),
        (LineSettings, {"points": [[0, 0], [1, -0.1]], "relative": True}, "line 'x': relative coordinates are"),
        (LineSettings, {"points": [[0, 0], [1, 1]], "trigger": "mask"}, "Input should be 'center' or 'bottom_center'"),
    ],
)
def test_settings_errors_read_as_one_line(section, values, message):
    with pytest.raises(ValidationError) as caught:
        section(name="x", **values)
    error = caught.value.errors()[0]
    text = error["msg"].removeprefix("Value error, ")
    assert message in text and "\n" not in text


def test_settings_accept_a_closed_ring_and_relative_corners():
    closed = ZoneSettings(name="x", polygon=[[0, 0], [1, 0], [1, 1], [0, 0]], relative=True)
    assert closed.polygon == [(0, 0), (1, 0), (1, 1)]
    assert LineSettings(name="x", points=[[0, 0.5], [1, 0.5]], relative=True).points[1] == (1, 0.5)


def test_check_places():
    check_places([zone(name="a", source="cam2"), zone(name="a", source="cam3")], [line(name="b")], None)
    check_places([zone(name="a", source="cam1")], [line(name="a", source="cam2")], ["cam1", "cam2"])
    with pytest.raises(ConfigError, match=r"^line 'a': the name is taken by another zone of the same source"):
        check_places([zone(name="a")], [line(name="a", source="cam1")], ["cam1"])
    with pytest.raises(ConfigError, match=r"^zone 'b': the name is taken by another zone"):
        check_places([zone(name="b", source="cam1"), zone(name="b", source="cam1")], [], ["cam1"])
    with pytest.raises(ConfigError, match=r"^zone 'a': unknown source 'cam9' \(sources: cam1, cam2\)$"):
        check_places([zone(name="a", source="cam9")], [], ["cam2", "cam1"])
