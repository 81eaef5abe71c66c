"""A stream moved to another worker picks up where the dead one left off.

`ResumedSource`: a file starts at the first frame not yet written (the frames before are decoded
and passed over, so indexes stay the file's own); a live source reconnects, and its frames are
numbered on from there, so tracks.jsonl never goes back. `RenumberedTracker`: a fresh tracker on
the new worker whose re-seeded targets get their old ids back, and whose other tracks get ids the
stream has not used yet.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from fractions import Fraction

import numpy as np

from ..core import Box, Frame, Instances, SourceEvent, TargetChange, Track
from ..sources.base import Source
from ..trackers.base import Tracker
from ..trackers.matching import box_iou, linear_assignment


class ResumedSource:
    """`inner` from frame `start` on (see the module docstring).

    Args:
        inner: The source, opened anew on this worker.
        start: The first frame to hand on: a file's frames before it are skipped; a live source's
            frames are numbered from it.
    """

    def __init__(self, inner: Source, start: int) -> None:
        self.inner = inner
        self.start = start

    @property
    def source_id(self) -> str:
        """The inner source's id."""
        return self.inner.source_id

    @property
    def fps(self) -> Fraction:
        """The inner source's frame rate."""
        return self.inner.fps

    @property
    def frame_count(self) -> int | None:
        """The inner source's frame count (a file's whole length)."""
        return self.inner.frame_count

    @property
    def is_live(self) -> bool:
        """Whether the inner source is live."""
        return self.inner.is_live

    def frames(self) -> Iterator[Frame | SourceEvent]:
        """The inner source's frames and events from `start` on."""
        for item in self.inner.frames():
            if isinstance(item, SourceEvent):
                yield dataclasses.replace(item, next_frame=item.next_frame + self.start) if self.is_live else item
            elif self.is_live:
                yield dataclasses.replace(item, index=item.index + self.start)
            elif item.index >= self.start:
                yield item

    def close(self) -> None:
        """Close the inner source."""
        self.inner.close()

    def __getattr__(self, name: str) -> object:  # anything else a source offers (e.g. its buffer size)
        return getattr(self.inner, name)


class RenumberedTracker:
    """A tracker whose ids go on from a stream's earlier ones (see the module docstring).

    On its first frame (where the stream resumes, and the re-seeding prompts apply), each new
    target takes the old id of the seed box it overlaps, matched all at once by overlap; a target
    overlapping no seed, and every later track, gets an id above all the stream's earlier ones. A
    seed whose prompt selected nothing leaves its id unused. Ids given to `drop_ids` are the
    stream's (outer) ids.

    Args:
        inner: A fresh tracker.
        seeds: Old target id → its last known box.
        first_free: The lowest id the stream has not used.
    """

    def __init__(self, inner: Tracker, seeds: Mapping[int, Box], first_free: int) -> None:
        self.inner = inner
        self.seeds = dict(seeds)
        self.next_id = max([first_free, *(i + 1 for i in self.seeds)])
        self.outer: dict[int, int] = {}  # inner id → the stream's id

    def update(
        self, instances: Instances, targets: TargetChange | None = None, image: np.ndarray | None = None
    ) -> tuple[Track, ...]:
        """The inner tracker's update, in the stream's ids (Tracker.update)."""
        tracks = self.inner.update(instances, self._inward(targets), image)
        if self.seeds:  # the first frame, where the seeds apply: they are not claimable later
            self._claim_seeds([t for t in tracks if t.is_target and t.id not in self.outer])
            self.seeds = {}
        return tuple(dataclasses.replace(t, id=self._outer_id(t.id)) for t in tracks)

    def rescale(self, sx: float, sy: float) -> None:
        """Tracker.rescale of the inner tracker."""
        self.inner.rescale(sx, sy)

    def _inward(self, change: TargetChange | None) -> TargetChange | None:
        if change is None or not change.drop_ids:
            return change
        inner_of = {outer: inner for inner, outer in self.outer.items()}
        return dataclasses.replace(change, drop_ids=frozenset(inner_of.get(i, -1) for i in change.drop_ids))

    def _claim_seeds(self, new_targets: list[Track]) -> None:
        ids = list(self.seeds)
        overlap = box_iou(np.array([t.box for t in new_targets]), np.array([self.seeds[i] for i in ids]))
        matches, _, _ = linear_assignment(1.0 - overlap, cost_limit=1.0 - 1e-6)  # some overlap, at least
        for row, col in matches:
            self.outer[new_targets[row].id] = ids[col]

    def _outer_id(self, inner: int) -> int:
        if inner not in self.outer:
            self.outer[inner] = self.next_id
            self.next_id += 1
        return self.outer[inner]
