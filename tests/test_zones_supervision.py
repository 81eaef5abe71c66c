"""Parity with supervision's PolygonZone and LineZone on the same constructed tracks, and where we differ.

Random walks of boxes through a concave zone and across a slanted line, tracks born and ending on
the way: the tracks inside each frame are the ones supervision's PolygonZone reports, the crossings
of each frame (and so the in/out counts) are the ones its LineZone reports, for both triggers.
Each difference by design has its own test below, which is its documentation:

- Zone edges: we test the exact point against the exact polygon; supervision rounds the point to
  a whole pixel and tests a raster of the polygon (with its vertices truncated to whole pixels). So
  they can differ within a pixel of the edge; the walks here keep their points further from it.
- Lines, passing beyond an end: supervision remembers the side a point was last seen on while
  within the line's extent, so going round the end of the line and coming back counts as a crossing;
  we count only a move whose straight path meets the segment.
- Lines, leaving the line's extent straight after crossing it: we count on that frame; supervision only
  once the point comes back within the extent (never, if it does not).
- Lines, unseen for a while: supervision forgets a track absent for 2 frames, so a crossing made
  while hidden (occluded) is not counted; our tracker keeps the identity of a lost track, so the
  crossing counts when it is seen again.
- supervision's LineZone triggers on all four box corners by default; ours on one point (center or
  bottom_center), as compared here with its `triggering_anchors`.
"""

from __future__ import annotations

import numpy as np
import pytest
import shapely
import supervision as sv
from test_zones import T, make

from fastsam_stream.core import TrackState
from fastsam_stream.zones import LineSettings, ZoneMonitor, ZoneSettings
from fastsam_stream.zones.geometry import anchors

SIZE = (200, 200)
CONCAVE = [[40, 40], [160, 40], [160, 160], [100, 100], [40, 160]]
LINE = [[40, 150], [170, 60]]
POSITION = {"center": sv.Position.CENTER, "bottom_center": sv.Position.BOTTOM_CENTER}


def detections(tracks: list[T]) -> sv.Detections:
    matched = [t for t in tracks if t.state is TrackState.TRACKED]
    xyxy = np.array([t.box for t in matched], np.float64).reshape(-1, 4)
    return sv.Detections(xyxy=xyxy, tracker_id=np.array([t.id for t in matched], int))


def box_with_anchor(point: np.ndarray, w: float, h: float, trigger: str) -> tuple[float, float, float, float]:
    x, y = point
    top = y - h / 2 if trigger == "center" else y - h
    return (x - w / 2, top, x + w / 2, top + h)


def lives(rng: np.random.Generator, count: int, frames: int) -> list[tuple[int, int]]:
    """[start, end) of each track: most live throughout, some are born late or end early."""
    starts = np.where(rng.random(count) < 0.3, rng.integers(0, frames // 2, count), 0)
    ends = np.where(rng.random(count) < 0.3, rng.integers(frames // 2, frames, count), frames)
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def zone_walks(seed: int, trigger: str, count: int = 12, frames: int = 250) -> list[list[T]]:
    """Boxes wandering over the frame, their trigger point never within 1.5 px of the zone's edge."""
    rng = np.random.default_rng(seed)
    edge = shapely.Polygon(CONCAVE).exterior
    points = rng.uniform(20, 180, (count, 2))
    sizes = rng.uniform(8, 40, (count, 2))
    spans = lives(rng, count, frames)
    out = []
    for index in range(frames):
        for i in range(count):
            step = rng.normal(0, 6, 2)
            while shapely.distance(edge, shapely.Point(np.clip(points[i] + step, 0, 200))) < 1.5:
                step = rng.normal(0, 6, 2)
            points[i] = np.clip(points[i] + step, 0, 200)
        out.append(
            [
                T(i + 1, box_with_anchor(points[i], *sizes[i], trigger))
                for i in range(count)
                if spans[i][0] <= index < spans[i][1]
            ]
        )
    return out


def line_walks(seed: int, trigger: str, count: int = 10, frames: int = 300) -> list[list[T]]:
    """Trigger points wandering to and fro across the line, always within its extent (as supervision requires)."""
    rng = np.random.default_rng(seed)
    start, end = np.array(LINE, float)
    length = float(np.hypot(*(end - start)))
    along, across = (end - start) / length, np.array([-(end - start)[1], (end - start)[0]]) / length
    u, v = rng.uniform(5, length - 5, count), rng.uniform(-30, 30, count)
    sizes = rng.uniform(8, 40, (count, 2))
    spans = lives(rng, count, frames)
    out = []
    for index in range(frames):
        u = np.clip(u + rng.normal(0, 3, count), 2, length - 2)
        v = np.clip(v + rng.normal(0, 7, count), -40, 40)
        points = start + u[:, None] * along + v[:, None] * across
        out.append(
            [
                T(i + 1, box_with_anchor(points[i], *sizes[i], trigger))
                for i in range(count)
                if spans[i][0] <= index < spans[i][1]
            ]
        )
    return out


@pytest.mark.parametrize("trigger", ["center", "bottom_center"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zone_inside_sets_match_polygon_zone(trigger, seed):
    frames = zone_walks(seed, trigger)
    ours = ZoneMonitor("cam", [ZoneSettings(name="z", polygon=CONCAVE, trigger=trigger)], [])
    theirs = sv.PolygonZone(np.array(CONCAVE), triggering_anchors=[POSITION[trigger]])
    before: set[int] = set()
    entries = 0
    for index, tracks in enumerate(frames):
        places, events = ours.update(make(index, tracks, SIZE))
        found = detections(tracks)
        inside = {int(i) for i in found.tracker_id[theirs.trigger(found)]} if len(found) else set()
        assert set(places[0].ids) == inside, f"frame {index}"
        assert places[0].count == theirs.current_count
        entered = {e.track_id for e in events if e.kind.value == "zone_enter"}
        left = {e.track_id for e in events if e.kind.value == "zone_leave"}
        assert (entered, left) == (inside - before, before - inside), f"frame {index}"
        before = inside
        entries += len(entered)
    assert entries >= 10  # the walks do go in and out


@pytest.mark.parametrize("trigger", ["center", "bottom_center"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_line_crossings_match_line_zone(trigger, seed):
    frames = line_walks(seed, trigger)
    ours = ZoneMonitor("cam", [], [LineSettings(name="l", points=LINE, trigger=trigger)])
    theirs = sv.LineZone(sv.Point(*LINE[0]), sv.Point(*LINE[1]), triggering_anchors=[POSITION[trigger]])
    for index, tracks in enumerate(frames):
        places, events = ours.update(make(index, tracks, SIZE))
        found = detections(tracks)
        crossed_in, crossed_out = theirs.trigger(found)
        ids = found.tracker_id if len(found) else np.zeros(0, int)
        expected = {(int(i), "in") for i in ids[crossed_in]} | {(int(i), "out") for i in ids[crossed_out]}
        assert {(e.track_id, e.direction) for e in events} == expected, f"frame {index}"
        assert (places[0].crossed_in, places[0].crossed_out) == (theirs.in_count, theirs.out_count)
    assert theirs.in_count > 10 and theirs.out_count > 10  # the walks do cross, both ways


# --- differences by design --------------------------------------------------------------------------------------


def both_lines(frames: list[list[T]], trigger: str = "center") -> tuple[tuple[int, int], tuple[int, int]]:
    """(in, out) counts of ours and of supervision's LineZone after the frames."""
    ours = ZoneMonitor("cam", [], [LineSettings(name="l", points=[[50, 100], [150, 100]], trigger=trigger)])
    theirs = sv.LineZone(sv.Point(50, 100), sv.Point(150, 100), triggering_anchors=[POSITION[trigger]])
    places = ()
    for index, tracks in enumerate(frames):
        places, _ = ours.update(make(index, tracks, SIZE))
        theirs.trigger(detections(tracks))
    return (places[0].crossed_in, places[0].crossed_out), (theirs.in_count, theirs.out_count)


def centred(x: float, y: float) -> tuple[float, float, float, float]:
    return (x - 5, y - 5, x + 5, y + 5)


def test_going_round_the_end_of_a_line_is_no_crossing():
    path = [(100, 80), (170, 80), (170, 120), (100, 120)]  # above, out beyond the end, below, back under it
    ours, theirs = both_lines([[T(1, centred(x, y))] for x, y in path])
    assert ours == (0, 0) and theirs == (0, 1)


def test_crossing_then_leaving_the_lines_extent_counts_at_once():
    path = [(140, 80), (160, 120), (180, 140)]  # through the segment near its end, then beyond the end
    ours, theirs = both_lines([[T(1, centred(x, y))] for x, y in path])
    assert ours == (0, 1) and theirs == (0, 0)


@pytest.mark.parametrize(("hidden", "supervision_counts"), [(1, 1), (2, 0), (5, 0)])
def test_a_crossing_while_hidden_counts(hidden, supervision_counts):
    # Hidden: our tracker reports the track LOST; supervision gets no detection for it.
    frames = [[T(1, centred(100, 80))]]
    frames += [[T(1, centred(100, 100), TrackState.LOST)] for _ in range(hidden)]
    frames += [[T(1, centred(100, 120))]]
    ours, theirs = both_lines(frames)
    assert ours == (0, 1) and theirs == (0, supervision_counts)


def test_zone_edge_within_a_pixel():
    # The zone's right edge is x = 160. A point 0.4 px beyond it is rounded onto it by supervision.
    ours = ZoneMonitor("cam", [ZoneSettings(name="z", polygon=CONCAVE, trigger="center")], [])
    theirs = sv.PolygonZone(np.array(CONCAVE), triggering_anchors=[sv.Position.CENTER])
    tracks = [T(1, centred(160.4, 60)), T(2, centred(159.6, 60)), T(3, centred(160.6, 60))]
    places, _ = ours.update(make(0, tracks, SIZE))
    found = detections(tracks)
    assert places[0].ids == (2,)
    assert found.tracker_id[theirs.trigger(found)].tolist() == [1, 2]


def test_anchors_match_supervision():
    boxes = np.random.default_rng(3).uniform(0, 100, (20, 4))
    boxes[:, 2:] += boxes[:, :2]
    found = sv.Detections(xyxy=boxes)
    for trigger, position in POSITION.items():
        np.testing.assert_allclose(anchors(boxes, trigger), found.get_anchors_coordinates(position))
