"""The plain tracker (`tracker.kind: iou`): Hungarian matching on box IoU with last-seen boxes.

Cost = 1 − box IoU between the boxes tracks were last seen at and this frame's instances, solved
with lap; states tracked/lost/removed. No motion model, no second round, no re-acquisition: the
baseline that the bytetrack tracker (trackers/bytetrack/) is measured against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from ..core import Instances, TargetChange, Track, TrackState
from .base import TrackerSettings, selected_parts
from .lifecycle import finish, snapshot
from .matching import box_iou, linear_assignment
from .registry import register


class IoUTrackerSettings(TrackerSettings):
    """The plain iou tracker: Hungarian matching on box IoU with last-seen boxes.

    Its settings are the ones every tracker has.
    """

    kind: Literal["iou"] = Field("iou", description="iou: the plain tracker, Hungarian matching on last-seen boxes")


@dataclass
class _LiveTrack:
    """A track's state between frames: the box it was last seen at."""

    id: int
    box: np.ndarray
    score: float
    born: int
    last_seen: int
    is_target: bool = False


@register("iou", IoUTrackerSettings)
class IoUTracker:
    """Matches instances to tracks by box IoU each frame.

    A track not matched this frame is `lost`; after `max_age` lost frames it is removed. Any
    number of tracks can be targets (see TargetChange); a target uses `target_max_age` instead
    (None: never removed), so that when the object comes back near where it was lost it gets its
    old id back. Ids are counted per tracker.

    Args:
        settings: min_iou, max_age and target_max_age; None: the defaults.
    """

    def __init__(self, settings: IoUTrackerSettings | None = None) -> None:
        self.settings = settings if settings is not None else IoUTrackerSettings()
        self._tracks: list[_LiveTrack] = []
        self._next_id = 1
        self._frame = -1

    def update(
        self, instances: Instances, targets: TargetChange | None = None, image: np.ndarray | None = None
    ) -> tuple[Track, ...]:
        """Match `instances` to the tracks by box IoU, start a track on each unmatched one, apply `targets`.

        Args:
            instances: This frame's instances.
            targets: The frame's target change, if any (see `Tracker.update`).
            image: Not used: this tracker looks at boxes only.

        Returns:
            Every live track after this frame, and each removed one once, on the frame it goes.
        """
        self._frame += 1
        s = self.settings
        boxes = instances.boxes
        iou = box_iou(np.array([t.box for t in self._tracks]).reshape(-1, 4), boxes)
        matches, _, unmatched_rows = linear_assignment(1.0 - iou, cost_limit=1.0 - s.min_iou)

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

        selected = self._change_targets(targets, matched_row) if targets is not None else {}

        def report(track: _LiveTrack, removed: bool) -> Track:
            row = None if removed else matched_row.get(track.id)
            state = TrackState.REMOVED if removed else None
            return snapshot(track, self._frame, track.box, row, state, parts=selected.get(track.id, ()))

        self._tracks, tracks = finish(self._tracks, self._frame, s.max_age, s.target_max_age, report)
        return tracks

    def _change_targets(self, change: TargetChange, matched_row: dict[int, int]) -> dict[int, tuple[int, ...]]:
        """Apply `change`; returns, by track id, the parts the change names for the targets it adds.

        This tracker follows one box, but on the prompt's frame the target is what was selected.
        """
        add = set(change.add_rows)
        selected = {}
        for track in self._tracks:
            if change.drop_all or track.id in change.drop_ids:
                track.is_target = False
            row = matched_row.get(track.id)
            if row in add:
                track.is_target = True
                selected[track.id] = selected_parts(change, row)
        return selected

    def rescale(self, sx: float, sy: float) -> None:
        """Move every track to new frame coordinates (a stream that came back at another size).

        Args:
            sx: New width over old width.
            sy: New height over old height.
        """
        factor = np.array([sx, sy, sx, sy], np.float32)
        for track in self._tracks:
            track.box = track.box * factor
