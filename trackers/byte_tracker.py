"""The default tracker: Hungarian matching (lap) on Kalman-predicted boxes, in ByteTrack's two rounds,
with what following one prompted object through a video needs on top.

Per frame:
1. every track's box is predicted (trackers/kalman.py);
2. confident instances (score ≥ high_score) are matched by box IoU (optionally fused with mask
   IoU), then the low-score ones (low_score ≤ score < high_score) to the tracks still unmatched
   that were seen last frame (ByteTrack: an occluded or blurred object often survives as a
   low-score detection); targets go through both rounds first, every other track after them;
3. each target takes the instances that complete it inside its predicted box (an object the
   segmenter splits into parts is their union; trackers.matching.complete_within), and a lost
   target looks for itself among the unmatched instances near where it should be, by colour
   (trackers/appearance.py) within a search radius that grows the longer it is lost; two
   targets never hold one object (the worse fit is lost for the frame);
4. confident instances left over start new tracks, unless they duplicate a matched one.
Ids are counted per tracker; no state is shared between instances.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core import Instances, TargetChange, Track, TrackState
from . import appearance
from .kalman import BoxKalman
from .lifecycle import finish, snapshot
from .matching import box_iou, complete_within, linear_assignment, share_inside, union_box

DUPLICATE_IOU = 0.6  # an unmatched instance this close to a matched one is a leftover of NMS, not a new object
STOP_AFTER = 5  # frames lost after which a track's velocity is forgotten (it no longer predicts)
APPEARANCE_EVERY = 5  # frames between updates of a target's colour model (each renders its mask)
APPEARANCE_WEIGHT = 0.2
# A lost target is re-acquired only on an instance of a similar area (this factor either way): a
# hand next to a lost driver has skin and shirt colours too, but a fraction of his size.
MAX_SIZE_CHANGE = 2.0
SEARCH_CHUNK = 16  # candidate masks rendered at once while a lost target looks for itself
EDGE = 2  # pixels: a box this close to the frame's edge is cut by it
CLAIMED_IOU = 0.5
# Two targets whose boxes overlap this much this frame are on one object (a pedestrian segmented
# twice overlaps its duplicate at 0.5-0.6 when the two boxes differ in height).
SAME_OBJECT_IOU = 0.5  # an instance this close to another track's predicted box belongs to that track
FILLS_ITS_BOX = 0.7  # a matched instance this close to its predicted box is whole: it needs no parts


@dataclass(frozen=True)
class ByteTrackerSettings:
    min_iou: float = 0.3  # round 1: a track and a confident instance match above this IoU
    low_min_iou: float = 0.5  # round 2: the same for low-score instances (stricter: they are less sure)
    high_score: float = 0.4
    low_score: float = 0.1
    max_age: int = 30  # frames a lost track is kept
    target_max_age: int | None = None  # the same for targets; None: never removed
    match_masks: bool = False  # fuse mask IoU into the cost (renders candidate masks at 1/4 size)
    merge_parts: bool = True  # a target is the union of the instances that complete it in its box
    part_inside: float = 0.8  # share of a part's box that must lie in the target's box
    reacquire: bool = True  # a lost target looks for itself by colour near its predicted box
    search_radius: float = 1.0  # in target box diagonals, from the predicted centre ...
    search_growth: float = 0.1  # ... plus this many diagonals per frame lost ...
    max_search_radius: float = 3.0  # ... up to this
    min_appearance: float = 0.6  # colour similarity (1 − Bhattacharyya) a re-acquired instance needs

    def __post_init__(self) -> None:
        for name in ("min_iou", "low_min_iou"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.low_score <= self.high_score <= 1.0:
            raise ValueError("scores must satisfy 0 <= low_score <= high_score <= 1")
        if self.max_age < 0 or (self.target_max_age is not None and self.target_max_age < 0):
            raise ValueError("max ages must be >= 0")


@dataclass
class _Track:
    id: int
    kalman: BoxKalman
    score: float
    born: int
    last_seen: int
    is_target: bool = False
    colour: np.ndarray | None = None  # targets: running colour histogram
    colour_at: int = -APPEARANCE_EVERY  # frame of the last colour update
    parts: tuple[int, ...] = ()  # this frame: rows besides the matched one that make up the object
    size: np.ndarray | None = None  # (w, h) when last seen whole, away from the frame's edges
    measured: np.ndarray | None = field(default=None, repr=False)  # this frame's box, when matched

    @property
    def box(self) -> np.ndarray:
        return self.kalman.box


class ByteTracker:
    def __init__(self, settings: ByteTrackerSettings = ByteTrackerSettings()) -> None:
        self.settings = settings
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._frame = -1

    def update(
        self, instances: Instances, targets: TargetChange | None = None, image: np.ndarray | None = None
    ) -> tuple[Track, ...]:
        self._frame += 1
        for track in self._tracks:
            track.parts, track.measured = (), None
            track.kalman.predict()
            if self._frame - track.last_seen > STOP_AFTER:
                track.kalman.stop()
        # Targets first: they take their instance and parts before any other track can.
        following = [t for t in self._tracks if t.is_target]
        matched = self._match(following, instances, set())  # track id → row
        taken = set(matched.values())
        for track in following:
            self._complete_target(track, instances, matched, taken, image)
        self._one_object_one_target(following, instances, matched)
        matched.update(self._match([t for t in self._tracks if not t.is_target], instances, taken))
        taken.update(matched.values())
        for track in self._tracks:
            if track.id in matched:
                self._measure(track, instances, matched[track.id])
        self._start_tracks(instances, matched, taken)
        if targets is not None:
            self._change_targets(targets, instances, matched, taken)
        self._refresh_colours(instances, matched, image)
        return self._finish(matched)

    # -- matching ------------------------------------------------------------------------------

    def _match(self, tracks: list[_Track], instances: Instances, taken: set[int]) -> dict[int, int]:
        """ByteTrack's two rounds for `tracks` over the rows not `taken`."""
        s = self.settings
        scores = instances.scores
        free = np.array([r not in taken for r in range(len(instances))], bool)
        high = np.flatnonzero(free & (scores >= s.high_score))
        low = np.flatnonzero(free & (scores >= s.low_score) & (scores < s.high_score))
        matched = self._round(tracks, instances, high, s.min_iou)
        recent = [t for t in tracks if t.id not in matched and t.last_seen == self._frame - 1]
        matched.update(self._round(recent, instances, low, s.low_min_iou))
        return matched

    def _round(self, tracks: list[_Track], instances: Instances, rows: np.ndarray, min_iou: float) -> dict[int, int]:
        if not tracks or len(rows) == 0:
            return {}
        iou = box_iou(np.array([t.box for t in tracks]), instances.boxes[rows])
        if self.settings.match_masks and instances.has_masks:
            iou = (iou + _mask_iou(tracks, instances, rows, iou)) / 2
        pairs, _, _ = linear_assignment(1.0 - iou, cost_limit=1.0 - min_iou)
        return {tracks[t].id: int(rows[r]) for t, r in pairs}

    def _complete_target(self, track: _Track, instances: Instances, matched: dict[int, int], taken: set[int],
                         image: np.ndarray | None) -> None:
        """Parts for a matched target; for a lost one, its parts or (by colour) itself near where it should be."""
        s = self.settings
        free = [r for r in range(len(instances)) if r not in taken and instances.scores[r] >= s.low_score]
        row = matched.get(track.id)
        fills = row is not None and box_iou(instances.boxes[row], track.box)[0, 0] >= FILLS_ITS_BOX
        if s.merge_parts and not fills:
            row = self._take_parts(track, instances, row, [r for r in free if not self._claimed(r, instances)])
            if row is not None:
                matched[track.id] = row
        if row is None and s.reacquire and image is not None and track.colour is not None:
            row = self._search_by_colour(track, instances, [r for r in free if r not in track.parts], image)
            if row is not None:
                matched[track.id] = row
        if row is not None:
            taken.update((row, *track.parts))

    def _one_object_one_target(self, following: list[_Track], instances: Instances, matched: dict[int, int]) -> None:
        """Two targets on two boxes of one object (the segmenter left a duplicate): the one that fits its
        prediction worse is lost this frame, rather than both following the same object from now on."""
        held = sorted((t for t in following if t.id in matched),
                      key=lambda t: -box_iou(instances.boxes[matched[t.id]], t.box)[0, 0])
        kept: list[_Track] = []
        for track in held:
            box = union_box(instances.boxes[[matched[track.id], *track.parts]])
            if any(box_iou(box, union_box(instances.boxes[[matched[k.id], *k.parts]]))[0, 0] >= SAME_OBJECT_IOU for k in kept):
                del matched[track.id]  # its rows stay taken: nobody else should start on them either
                track.parts = ()
            else:
                kept.append(track)

    def _take_parts(self, track: _Track, instances: Instances, row: int | None, free: list[int]) -> int | None:
        """Set the parts that complete the target in its predicted box; returns its (main) row, which the
        parts alone may provide when no single instance matched (the object split)."""
        boxes, s = instances.boxes, self.settings
        parts = complete_within(boxes, [] if row is None else [row], track.box, free, s.part_inside)
        if row is None:
            fits = parts and box_iou(union_box(boxes[parts]), track.box)[0, 0] >= s.min_iou
            row, parts = (parts[0], parts[1:]) if fits else (None, [])
        if parts:  # split: every other piece inside the object's box is a piece of it too, not a new object
            whole = union_box(boxes[[row, *parts]])
            rest = [r for r in free if r != row and r not in parts]
            parts += [r for r, share in zip(rest, share_inside(boxes[rest], whole)) if share >= s.part_inside] if rest else []
        track.parts = tuple(parts)
        return row

    def _claimed(self, row: int, instances: Instances) -> bool:
        """The instance is where another (non-target) track predicts its object: it is that object, not a part
        (after a target and a neighbour merged and parted, the neighbour goes back to its own track)."""
        others = [t.box for t in self._tracks if not t.is_target]
        return bool(others) and box_iou(instances.boxes[row], np.array(others)).max() >= CLAIMED_IOU

    def _search_by_colour(self, track: _Track, instances: Instances, free: list[int], image: np.ndarray) -> int | None:
        s = self.settings
        box = track.box
        # An object that left the frame shrank at its edge and its prediction drifted off it: look
        # from the edge it left by, for an object of the size it had when whole.
        height, width = instances.image_shape
        centre = np.clip((box[:2] + box[2:]) / 2, 0, [width, height])
        w, h = track.size if track.size is not None else box[2:] - box[:2]
        lost_for = self._frame - track.last_seen
        radius = float(np.hypot(w, h)) * min(s.search_radius + s.search_growth * lost_for, s.max_search_radius)
        area = max(w * h, 1.0)
        near = [
            r for r in free
            if np.hypot(*((instances.boxes[r, :2] + instances.boxes[r, 2:]) / 2 - centre)) <= radius
            and 1 / MAX_SIZE_CHANGE <= instances.areas[r] / area <= MAX_SIZE_CHANGE
        ]
        if not near or not instances.has_masks:
            return None
        scored = []
        for start in range(0, len(near), SEARCH_CHUNK):  # masks are frame-sized: a few at a time
            chunk = near[start : start + SEARCH_CHUNK]
            for mask, r in zip(instances.masks(chunk), chunk):
                look = appearance.colour_histogram(image, mask, instances.boxes[r])
                if look is not None:
                    scored.append((appearance.similarity(track.colour, look), r))
        best = max(scored, default=None)
        return best[1] if best is not None and best[0] >= s.min_appearance else None

    # -- bookkeeping ---------------------------------------------------------------------------

    def _measure(self, track: _Track, instances: Instances, row: int) -> None:
        rows = [row, *track.parts]
        track.measured = union_box(instances.boxes[rows])
        track.kalman.update(track.measured)
        height, width = instances.image_shape
        x1, y1, x2, y2 = track.measured
        if track.size is None or (x1 > EDGE and y1 > EDGE and x2 < width - EDGE and y2 < height - EDGE):
            track.size = np.array([x2 - x1, y2 - y1])
        track.score = float(instances.scores[row])
        track.last_seen = self._frame

    def _start_tracks(self, instances: Instances, matched: dict[int, int], taken: set[int]) -> None:
        boxes = instances.boxes
        used = sorted(taken)
        for row in np.flatnonzero(instances.scores >= self.settings.high_score):
            if row in taken:
                continue
            if used and box_iou(boxes[row], boxes[used]).max() >= DUPLICATE_IOU:
                continue
            track = self._new_track(boxes[row], float(instances.scores[row]))
            matched[track.id] = int(row)
            taken.add(int(row))
            used.append(int(row))

    def _new_track(self, box: np.ndarray, score: float) -> _Track:
        track = _Track(self._next_id, BoxKalman(box), score, self._frame, self._frame)
        track.measured = np.asarray(box, np.float64)
        self._next_id += 1
        self._tracks.append(track)
        return track

    def _change_targets(self, change: TargetChange, instances: Instances, matched: dict[int, int], taken: set[int]) -> None:
        by_row = {row: track_id for track_id, row in matched.items()}
        adding = {row: (tuple(p for p in change.parts.get(row, ()) if p != row) if self.settings.merge_parts else ())
                  for row in change.add_rows}
        self._release({p for parts in adding.values() for p in parts}, by_row, matched)
        for track in self._tracks:
            if change.drop_all or track.id in change.drop_ids:
                track.is_target = False
        for row in change.add_rows:
            track = next((t for t in self._tracks if t.id == by_row.get(row)), None)
            if track is None:  # a row no track holds (a low score, or a part): the target starts here
                track = self._new_track(instances.boxes[row], float(instances.scores[row]))
                matched[track.id] = row
                by_row[row] = track.id  # the same row added twice on one frame is one target
            track.is_target, track.colour = True, None
            track.colour_at = -APPEARANCE_EVERY
            parts = adding[row]
            if parts:
                track.parts = parts
                track.measured = union_box(instances.boxes[[row, *parts]])
                track.kalman = BoxKalman(track.measured)
            taken.update((row, *parts))

    def _release(self, rows: set[int], by_row: dict[int, int], matched: dict[int, int]) -> None:
        """Rows that become a new target's parts stop being other tracks' (a track born on them this frame goes)."""
        for row in rows:
            holder = by_row.get(row)
            track = next((t for t in self._tracks if t.id == holder and not t.is_target), None)
            if track is None:
                continue
            del matched[track.id]
            if track.born == self._frame:
                self._tracks.remove(track)

    def _refresh_colours(self, instances: Instances, matched: dict[int, int], image: np.ndarray | None) -> None:
        if image is None or not instances.has_masks or not self.settings.reacquire:
            return
        for track in self._tracks:
            row = matched.get(track.id)
            if not track.is_target or row is None or self._frame - track.colour_at < APPEARANCE_EVERY:
                continue
            rows = [row, *track.parts]
            mask = instances.masks(rows).any(axis=0)
            look = appearance.colour_histogram(image, mask, union_box(instances.boxes[rows]))
            if look is not None:
                track.colour = appearance.blend(track.colour, look, 1.0 if track.colour is None else APPEARANCE_WEIGHT)
                track.colour_at = self._frame

    def _finish(self, matched: dict[int, int]) -> tuple[Track, ...]:
        def report(track: _Track, removed: bool) -> Track:
            if removed:
                return snapshot(track, self._frame, track.box, None, TrackState.REMOVED)
            row = matched.get(track.id)
            box = track.measured if row is not None and track.measured is not None else track.box
            return snapshot(track, self._frame, box, row, parts=track.parts)

        s = self.settings
        self._tracks, tracks = finish(self._tracks, self._frame, s.max_age, s.target_max_age, report)
        return tracks

    def rescale(self, sx: float, sy: float) -> None:
        """Move every track to new frame coordinates (a stream that came back at another size)."""
        for track in self._tracks:
            track.kalman.rescale(np.array([sx, sy, sx, sy]))
            if track.size is not None:
                track.size = track.size * np.array([sx, sy])


def _mask_iou(tracks: list[_Track], instances: Instances, rows: np.ndarray, box_iou_: np.ndarray) -> np.ndarray:
    """Mask IoU of each track's predicted box region with each candidate's mask, at 1/4 resolution.

    The track has no mask of its own here, so its predicted box stands for it: the cost then
    prefers the instance that fills the box over one that merely overlaps it.
    """
    out = np.zeros_like(box_iou_)
    candidates = np.flatnonzero(box_iou_.max(axis=0) > 0)
    if len(candidates) == 0:
        return out
    masks = instances.masks(rows[candidates])[:, ::4, ::4]
    h, w = masks.shape[1:]
    for t, track in enumerate(tracks):
        region = np.zeros((h, w), bool)
        x1, y1, x2, y2 = (track.box / 4).round().astype(int)
        region[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = True
        inter = (masks & region).sum(axis=(1, 2))
        union = masks.sum(axis=(1, 2)) + region.sum() - inter
        out[t, candidates] = inter / np.maximum(union, 1)
    return out
