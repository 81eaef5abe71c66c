"""The plain tracker (`tracker.kind: iou`): cost = 1 − box IoU between last-seen boxes and this
frame's instances, solved with lap; states tracked/lost/removed. No motion model, no second
round, no re-acquisition: the baseline that trackers/byte_tracker.py is measured against, and
the protocol every tracker follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..core import Instances, TargetChange, Track, TrackState
from .lifecycle import finish, snapshot
from .matching import box_iou, linear_assignment


class Tracker(Protocol):
    def update(
        self, instances: Instances, targets: TargetChange | None = None, image: np.ndarray | None = None
    ) -> tuple[Track, ...]:
        """Match this frame's instances (of `image`, BGR, for trackers that look at pixels), then
        apply `targets`: drop targets, and make the tracks matched to its rows targets."""
        ...


@dataclass
class _LiveTrack:
    id: int
    box: np.ndarray
    score: float
    born: int
    last_seen: int
    is_target: bool = False


class IoUTracker:
    """Matches instances to tracks by box IoU each frame.

    A track not matched this frame is `lost`; after `max_age` lost frames it is removed. Any
    number of tracks can be targets (see TargetChange); a prompted target uses `target_max_age` instead (None: never removed), so that when the object
    comes back near where it was lost it gets its old id back. Ids are counted per tracker.
    """

    def __init__(self, min_iou: float = 0.3, max_age: int = 30, target_max_age: int | None = None) -> None:
        if not 0.0 < min_iou <= 1.0:
            raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
        if max_age < 0 or (target_max_age is not None and target_max_age < 0):
            raise ValueError("max ages must be >= 0")
        self.min_iou = min_iou
        self.max_age = max_age
        self.target_max_age = target_max_age
        self._tracks: list[_LiveTrack] = []
        self._next_id = 1
        self._frame = -1

    def update(
        self, instances: Instances, targets: TargetChange | None = None, image: np.ndarray | None = None
    ) -> tuple[Track, ...]:
        self._frame += 1
        boxes = instances.boxes
        iou = box_iou(np.array([t.box for t in self._tracks]).reshape(-1, 4), boxes)
        matches, _, unmatched_rows = linear_assignment(1.0 - iou, cost_limit=1.0 - self.min_iou)

        matched_row: dict[int, int] = {}  # track id → instance row
        for t_idx, row in matches:
            track = self._tracks[t_idx]
            track.box, track.score, track.last_seen = boxes[row].copy(), float(instances.scores[row]), self._frame
            matched_row[track.id] = row
        for row in unmatched_rows:
            track = _LiveTrack(self._next_id, boxes[row].copy(), float(instances.scores[row]), self._frame, self._frame)
            self._next_id += 1
            self._tracks.append(track)
            matched_row[track.id] = row

        if targets is not None:
            self._change_targets(targets, matched_row)

        def report(track: _LiveTrack, removed: bool) -> Track:
            row = None if removed else matched_row.get(track.id)
            return snapshot(track, self._frame, track.box, row, TrackState.REMOVED if removed else None)

        self._tracks, tracks = finish(self._tracks, self._frame, self.max_age, self.target_max_age, report)
        return tracks

    def _change_targets(self, change: TargetChange, matched_row: dict[int, int]) -> None:
        add = set(change.add_rows)
        for track in self._tracks:
            if change.drop_all or track.id in change.drop_ids:
                track.is_target = False
            if matched_row.get(track.id) in add:
                track.is_target = True

    def rescale(self, sx: float, sy: float) -> None:
        """Move every track to new frame coordinates (a stream that came back at another size)."""
        factor = np.array([sx, sy, sx, sy], np.float32)
        for track in self._tracks:
            track.box = track.box * factor
