"""ZoneMonitor: one source's zones and lines, followed frame by frame after the tracker.

Which tracks count: those matched on this frame (TRACKED). A LOST or REMOVED track, or one that is
no longer reported, is out of every zone, so its stay ends with a zone_leave; if it is matched
again it enters anew. A zone's leave_after_s and enter_after_s debounce this: a track leaves only
once it has been out (or unmatched) for leave_after_s, and enters only once it has been inside on
every frame for enter_after_s. Time is the frames' pts, so a file processed faster or slower than
real time raises the same events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..core import FrameResult, PlaceKind, PlaceState, Track, TrackState, ZoneEvent, ZoneEventKind
from .geometry import LineShape, Size, Window, ZoneShape, anchors, pixel_window, to_pixels
from .settings import LineSettings, ZoneSettings

log = logging.getLogger(__name__)

# What a watcher reports for one track on one frame: the event, the track, its box, a line's direction.
Happening = tuple[ZoneEventKind, int, np.ndarray, str | None]

# Slack on every period's end (debounces, dwell_s, stationary_s): pts are rounded floats, so a period
# that is due to the microsecond is due (1.4 - 0.4 < 1.0).
_DUE = 1e-6


def _box_of(track: Track) -> np.ndarray:
    return np.asarray(track.box, np.float64)


def _frozen(points: np.ndarray) -> np.ndarray:
    """float32 points that every frame's PlaceState of one size shares, so nobody may change them."""
    out = np.asarray(points, np.float32)
    out.flags.writeable = False
    return out


def _centre_and_diagonal(box: np.ndarray) -> tuple[np.ndarray, float]:
    return (box[:2] + box[2:]) / 2, float(np.hypot(box[2] - box[0], box[3] - box[1]))


@dataclass
class _Stay:
    """One track's stay in one zone: since when, where it is, and which once-per-stay events it raised.

    `out_since` is the first frame of the track's present absence from the zone (None while inside):
    while that is shorter than leave_after_s the stay goes on. Its clocks (since, still_since) keep
    running through such an absence, so a brief one neither restarts dwell_s nor breaks stillness, but
    zone_dwell and obstacle are raised only on frames the track is really inside: when it is back, if
    they fell due meanwhile, or never, if it leaves for good.
    """

    since: float
    box: np.ndarray
    still_since: float
    still_centre: np.ndarray
    still_diagonal: float
    dwelt: bool = False
    reported_still: bool = False
    out_since: float | None = None

    @classmethod
    def start(cls, pts: float, box: np.ndarray) -> _Stay:
        centre, diagonal = _centre_and_diagonal(box)
        return cls(pts, box, pts, centre, diagonal)

    def away_for(self, pts: float, box: np.ndarray | None) -> float:
        """Note a frame the track is not inside (with its box, if reported): how long it has been out."""
        if box is not None:
            self.box = box
        if self.out_since is None:
            self.out_since = pts
        return pts - self.out_since

    def rescale(self, scale: np.ndarray) -> None:
        self.box = self.box * np.tile(scale, 2)
        self.still_centre = self.still_centre * scale
        self.still_diagonal *= float(np.sqrt(scale[0] * scale[1]))

    def stays_still(self, pts: float, box: np.ndarray, settings: ZoneSettings) -> bool:
        """Whether the track has now been still for stationary_s (True once per period of stillness).

        Still means the box centre stays within max_speed × stationary_s box diagonals of where it
        stopped: an average speed below max_speed over the whole period, which a jittering mask
        box does not break the way a frame-to-frame speed would. Moving further re-arms it.
        """
        assert settings.stationary_s is not None
        centre, diagonal = _centre_and_diagonal(box)
        radius = settings.max_speed * settings.stationary_s * self.still_diagonal
        if np.hypot(*(centre - self.still_centre)) > radius:
            self.still_since, self.still_centre, self.still_diagonal = pts, centre, diagonal
            self.reported_still = False
            return False
        if self.reported_still or pts - self.still_since < settings.stationary_s - _DUE:
            return False
        self.reported_still = True
        return True


class _ZoneWatch:
    """One zone: its shape at the current frame size and the stays of the tracks inside it."""

    def __init__(self, settings: ZoneSettings) -> None:
        self.settings = settings
        self.shape: ZoneShape | None = None
        self.points = _frozen(np.zeros((0, 2)))
        self.stays: dict[int, _Stay] = {}  # counted inside: entered, and not yet left
        self.arriving: dict[int, _Stay] = {}  # inside since their stay's start, not yet for enter_after_s

    def reshape(self, size: Size, first_size: Size, scale: np.ndarray) -> None:
        points = to_pixels(np.asarray(self.settings.polygon), self.settings.relative, size, first_size)
        self.shape = ZoneShape(points, size)
        self.points = _frozen(points)
        for stay in (*self.stays.values(), *self.arriving.values()):
            stay.rescale(scale)

    def eligible(self, tracks: Iterable[Track]) -> list[Track]:
        s = self.settings
        chosen = [t for t in tracks if t.is_target or not s.targets_only]
        if s.min_area > 0:
            chosen = [t for t in chosen if (t.box[2] - t.box[0]) * (t.box[3] - t.box[1]) >= s.min_area]
        return chosen

    def candidates(self, tracks: Sequence[Track]) -> list[Track]:
        """The tracks that may be inside this frame.

        All of them for a point trigger; for the mask trigger, those whose box meets the zone: only
        their masks can lie partly inside it, so only theirs are rendered.
        """
        if not tracks or self.settings.trigger != "mask":
            return list(tracks)
        assert self.shape is not None
        touching = self.shape.touches_boxes(np.array([t.box for t in tracks]))
        return [t for t, hit in zip(tracks, touching, strict=True) if hit]

    def inside(self, candidates: Sequence[Track], masks: dict[int, tuple[np.ndarray, Window]]) -> set[int]:
        """The ids of the candidates inside the zone this frame.

        Args:
            candidates: What `candidates` chose this frame.
            masks: For the mask trigger, each candidate's mask pixels in a window, and that window.
        """
        assert self.shape is not None
        if not candidates:
            return set()
        if self.settings.trigger != "mask":
            hits = self.shape.contains(anchors(np.array([t.box for t in candidates]), self.settings.trigger))
            return {t.id for t, hit in zip(candidates, hits, strict=True) if hit}
        return {
            t.id for t in candidates if t.id in masks and self.shape.overlap(*masks[t.id]) >= self.settings.min_overlap
        }

    def update(self, pts: float, tracks: Sequence[Track], known: dict[int, Track], inside: set[int]) -> list[Happening]:
        """The zone's events for one frame, given who is inside now.

        Args:
            pts: The frame's time.
            tracks: The tracks that count in this zone on this frame.
            known: Every track the tracker reports this frame (any state), by id: for a leaver's box
                (a vanished track leaves with the last box it was reported with).
            inside: The ids of `tracks` inside the zone.
        """
        boxes = {t.id: _box_of(t) for t in tracks if t.id in inside}
        happened = self._leaves(pts, known, inside) + self._enters(pts, boxes)
        return happened + self._timed(pts, {i: box for i, box in boxes.items() if i in self.stays})

    def _leaves(self, pts: float, known: dict[int, Track], inside: set[int]) -> list[Happening]:
        """zone_leave of the tracks out of the zone (or gone) for leave_after_s; those back inside stay."""
        happened: list[Happening] = []
        for track_id in sorted(self.stays):
            stay = self.stays[track_id]
            if track_id in inside:
                stay.out_since = None
                continue
            box = _box_of(known[track_id]) if track_id in known else None  # gone: its last box
            if stay.away_for(pts, box) >= self.settings.leave_after_s - _DUE:
                del self.stays[track_id]
                happened.append((ZoneEventKind.ZONE_LEAVE, track_id, stay.box, None))
        return happened

    def _enters(self, pts: float, boxes: dict[int, np.ndarray]) -> list[Happening]:
        """zone_enter of the tracks inside on every frame for enter_after_s (not already counted inside)."""
        self.arriving = {i: stay for i, stay in self.arriving.items() if i in boxes}  # out once: start over
        happened: list[Happening] = []
        for track_id in sorted(boxes.keys() - self.stays.keys()):
            if track_id not in self.arriving:
                self.arriving[track_id] = _Stay.start(pts, boxes[track_id])
            if pts - self.arriving[track_id].since >= self.settings.enter_after_s - _DUE:
                self.stays[track_id] = self.arriving.pop(track_id)
                happened.append((ZoneEventKind.ZONE_ENTER, track_id, boxes[track_id], None))
        return happened

    def _timed(self, pts: float, boxes: dict[int, np.ndarray]) -> list[Happening]:
        """zone_dwell and obstacle events of the tracks inside, each once per stay (obstacle: per stillness)."""
        s = self.settings
        dwelt, still = [], []
        for track_id in sorted(boxes):
            stay, box = self.stays[track_id], boxes[track_id]
            stay.box = box
            if s.dwell_s is not None and not stay.dwelt and pts - stay.since >= s.dwell_s - _DUE:
                stay.dwelt = True
                dwelt.append((ZoneEventKind.ZONE_DWELL, track_id, box, None))
            if s.stationary_s is not None and stay.stays_still(pts, box, s):
                still.append((ZoneEventKind.OBSTACLE, track_id, box, None))
        return dwelt + still

    def state(self) -> PlaceState:
        return PlaceState(self.settings.name, PlaceKind.ZONE, self.points, tuple(sorted(self.stays)))


class _LineWatch:
    """One line: its segment at the current frame size, each track's last trigger point, the counts."""

    def __init__(self, settings: LineSettings) -> None:
        self.settings = settings
        self.shape: LineShape | None = None
        self.points = _frozen(np.zeros((0, 2)))
        self.last: dict[int, np.ndarray] = {}
        self.crossed_in = 0
        self.crossed_out = 0

    def reshape(self, size: Size, first_size: Size, scale: np.ndarray) -> None:
        points = to_pixels(np.asarray(self.settings.points), self.settings.relative, size, first_size)
        self.shape = LineShape(points)
        self.points = _frozen(points)
        self.last = {track_id: point * scale for track_id, point in self.last.items()}

    def update(self, tracks: Sequence[Track], known: dict[int, Track]) -> list[Happening]:
        """The crossings of one frame: each counted track's trigger point against where it was last seen.

        Args:
            tracks: The matched tracks that count at this line.
            known: Every track the tracker still keeps (tracked or lost), by id; the others are forgotten.
        """
        assert self.shape is not None
        chosen = [t for t in tracks if t.is_target or not self.settings.targets_only]
        points = anchors(np.array([t.box for t in chosen]), self.settings.trigger)
        seen = [i for i, t in enumerate(chosen) if t.id in self.last]
        happened: list[Happening] = []
        if seen:
            before = np.array([self.last[chosen[i].id] for i in seen])
            for i, way in zip(seen, self.shape.crossings(before, points[seen]), strict=True):
                if way:
                    happened.append((ZoneEventKind.LINE_CROSS, chosen[i].id, _box_of(chosen[i]), self._count(way)))
        # A lost track keeps its last point: crossing while hidden counts when it is seen again.
        self.last = {k: v for k, v in self.last.items() if k in known}
        self.last.update({t.id: p for t, p in zip(chosen, points, strict=True)})
        return happened

    def _count(self, way: int) -> str:
        if way > 0:
            self.crossed_in += 1
            return "in"
        self.crossed_out += 1
        return "out"

    def state(self) -> PlaceState:
        return PlaceState(self.settings.name, PlaceKind.LINE, self.points, (), self.crossed_in, self.crossed_out)


class ZoneMonitor:
    """One source's zones and lines: who is in each zone, who crossed each line, and the events.

    Args:
        source_id: The source whose results it is given.
        zones: Every configured zone; those of other sources are left out.
        lines: Every configured line; those of other sources are left out.
    """

    def __init__(self, source_id: str, zones: Sequence[ZoneSettings], lines: Sequence[LineSettings]) -> None:
        self.source_id = source_id
        self._zones = [_ZoneWatch(z) for z in zones if z.source in (None, source_id)]
        self._lines = [_LineWatch(li) for li in lines if li.source in (None, source_id)]
        self._first_size: Size | None = None
        self._size: Size | None = None
        self._sizes_seen: set[Size] = set()
        self._warned_no_masks = False

    @property
    def empty(self) -> bool:
        """Whether no zone or line applies to this source (the pipeline may skip the monitor)."""
        return not self._zones and not self._lines

    def update(self, result: FrameResult) -> tuple[tuple[PlaceState, ...], list[ZoneEvent]]:
        """Follow one frame's tracks through the zones and across the lines.

        Args:
            result: The source's next frame, tracked.

        Returns:
            (one PlaceState per zone then per line, in config order, in this frame's pixels; the events of
            this frame, each zone's and then each line's in config order, snapshot None).
        """
        self._follow_size((result.frame.width, result.frame.height))
        pts = result.frame.pts
        stamp = (result.frame.index, pts, time.time())  # one wall-clock time for the whole frame
        reported = {t.id: t for t in result.tracks}
        kept = {i: t for i, t in reported.items() if t.state is not TrackState.REMOVED}
        matched = [t for t in result.tracks if t.state is TrackState.TRACKED and t.row is not None]
        counted = [zone.eligible(matched) for zone in self._zones]
        candidates = [zone.candidates(tracks) for zone, tracks in zip(self._zones, counted, strict=True)]
        masks = self._masks(result, candidates)
        events: list[ZoneEvent] = []
        for zone, tracks, maybe in zip(self._zones, counted, candidates, strict=True):
            inside = zone.inside(maybe, masks)
            events += self._events(
                zone.update(pts, tracks, reported, inside), zone.settings.name, PlaceKind.ZONE, stamp
            )
        for line in self._lines:
            events += self._events(line.update(matched, kept), line.settings.name, PlaceKind.LINE, stamp)
        places = tuple(z.state() for z in self._zones) + tuple(li.state() for li in self._lines)
        return places, events

    def _events(
        self, happened: list[Happening], place: str, kind: PlaceKind, stamp: tuple[int, float, float]
    ) -> list[ZoneEvent]:
        index, pts, at = stamp
        return [
            ZoneEvent(
                source_id=self.source_id,
                kind=what,
                place=place,
                place_kind=kind,
                track_id=track_id,
                frame=index,
                pts=pts,
                at=at,
                box=tuple(float(v) for v in box),
                direction=direction,
            )
            for what, track_id, box, direction in happened
        ]

    def _follow_size(self, size: Size) -> None:
        """Place every zone and line in the pixels of a new frame size, and warn of those outside it."""
        if size == self._size:
            return
        if self._first_size is None:
            self._first_size = size
        old = self._size or size
        scale = np.array([size[0] / old[0], size[1] / old[1]], np.float64)
        for place in (*self._zones, *self._lines):
            place.reshape(size, self._first_size, scale)
        self._size = size
        if size not in self._sizes_seen:
            self._sizes_seen.add(size)
            self._warn_outside(size)

    def _warn_outside(self, size: Size) -> None:
        """One warning per zone or line with nothing in a frame of this size: nothing can ever trigger it."""
        outside = [("zone", z.settings) for z in self._zones if z.shape is not None and not z.shape.in_frame()]
        outside += [("line", li.settings) for li in self._lines if li.shape is not None and not li.shape.in_frame(size)]
        for kind, place in outside:
            log.warning(
                "%s: %s %r lies entirely outside the %dx%d frame, so nothing can trigger it (check its points%s)",
                self.source_id,
                kind,
                place.name,
                *size,
                "" if place.relative else ", given in the pixels of the source's first frame",
            )

    def _masks(self, result: FrameResult, candidates: list[list[Track]]) -> dict[int, tuple[np.ndarray, Window]]:
        """The masks of the mask zones' candidates this frame, each with the window to count it in.

        The rows of every such track are rendered in one call, however many mask zones ask for it.
        """
        wanted: dict[int, Track] = {}
        for zone, maybe in zip(self._zones, candidates, strict=True):
            if zone.settings.trigger == "mask":
                wanted.update((t.id, t) for t in maybe)
        if not wanted:
            return {}
        if not result.instances.has_masks:
            if not self._warned_no_masks:
                self._warned_no_masks = True
                log.warning("%s: mask zones see nothing: the instances carry no masks", self.source_id)
            return {}
        rows_of = {i: _rows(result, t) for i, t in wanted.items()}
        rows = sorted({r for rs in rows_of.values() for r in rs})
        rendered = result.instances.masks(rows)
        position = {r: p for p, r in enumerate(rows)}
        boxes = result.instances.boxes
        size = (result.frame.width, result.frame.height)
        out = {}
        for track_id, track_rows in rows_of.items():
            # Mask pixels lie within their instances' boxes: count in the union of those and the track's box.
            around = np.vstack([boxes[list(track_rows)], [wanted[track_id].box]])
            window = pixel_window(np.concatenate([around[:, :2].min(axis=0), around[:, 2:].max(axis=0)]), size)
            if window is not None:
                x1, y1, x2, y2 = window
                picked = [position[r] for r in track_rows]
                out[track_id] = (rendered[picked, y1:y2, x1:x2].any(axis=0), window)
        return out


def _rows(result: FrameResult, track: Track) -> tuple[int, ...]:
    """The instance rows that make up a track's object this frame, as FrameResult.mask_of takes them."""
    rows = result.target_rows.get(track.id) if track.is_target else None
    if rows:
        return tuple(rows)
    assert track.row is not None
    return (track.row,)
