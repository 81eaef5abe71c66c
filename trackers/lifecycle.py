"""What every tracker here does with its tracks at the end of a frame: retire the ones lost too
long, and report each as a frozen `Track` snapshot."""

from __future__ import annotations

from typing import Protocol, Sequence, TypeVar

import numpy as np

from ..core import Track, TrackState


class LiveTrack(Protocol):
    id: int
    score: float
    born: int
    last_seen: int
    is_target: bool


T = TypeVar("T", bound=LiveTrack)


def retire(tracks: Sequence[T], frame: int, max_age: int, target_max_age: int | None) -> tuple[list[T], list[T]]:
    """(kept, removed): a track lost for more than its max age goes (targets: `target_max_age`, None: never)."""
    def expired(track: T) -> bool:
        limit = target_max_age if track.is_target else max_age
        return limit is not None and frame - track.last_seen > limit

    return [t for t in tracks if not expired(t)], [t for t in tracks if expired(t)]


def snapshot(track: LiveTrack, frame: int, box: np.ndarray, row: int | None,
             state: TrackState | None = None, parts: tuple[int, ...] = ()) -> Track:
    """The track as callers see it after `frame`; `row` is the instance it matched (None: lost)."""
    if state is None:
        state = TrackState.TRACKED if row is not None else TrackState.LOST
    return Track(
        id=track.id,
        box=tuple(float(v) for v in box),
        score=track.score,
        state=state,
        age=frame - track.born,
        frames_lost=frame - track.last_seen,
        is_target=track.is_target,
        instance_index=row,
        parts=parts if row is not None else (),
    )


def finish(tracks: Sequence[T], frame: int, max_age: int, target_max_age: int | None,
           report) -> tuple[list[T], tuple[Track, ...]]:
    """(tracks kept, the frame's snapshots): `report(track, removed)` makes one snapshot. A removed
    track is reported once, in the frame it goes, so callers see the transition."""
    kept, removed = retire(tracks, frame, max_age, target_max_age)
    return kept, tuple(report(t, False) for t in kept) + tuple(report(t, True) for t in removed)
