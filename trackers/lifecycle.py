"""What every tracker here does with its tracks at the end of a frame.

It retires the ones lost too long, and reports each as a frozen `Track` snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import numpy as np

from ..core import Track, TrackState


class LiveTrack(Protocol):
    """The fields of a tracker's own track state that the lifecycle reads."""

    id: int
    score: float
    born: int
    last_seen: int
    is_target: bool


T = TypeVar("T", bound=LiveTrack)


def retire(tracks: Sequence[T], frame: int, max_age: int, target_max_age: int | None) -> tuple[list[T], list[T]]:
    """Split `tracks` into (kept, removed): one lost for more than its max age goes.

    Args:
        tracks: The live tracks.
        frame: This frame's index.
        max_age: Frames a lost track is kept.
        target_max_age: The same for targets; None: never removed.

    Returns:
        (kept, removed), each in the order of `tracks`.
    """

    def expired(track: T) -> bool:
        limit = target_max_age if track.is_target else max_age
        return limit is not None and frame - track.last_seen > limit

    return [t for t in tracks if not expired(t)], [t for t in tracks if expired(t)]


def snapshot(
    track: LiveTrack,
    frame: int,
    box: np.ndarray,
    row: int | None,
    state: TrackState | None = None,
    parts: tuple[int, ...] = (),
) -> Track:
    """The track as callers see it after `frame`.

    Args:
        track: The tracker's own state of the track.
        frame: This frame's index.
        box: The box to report (xyxy).
        row: The instance it matched this frame; None: lost.
        state: The state to report; None: tracked when `row` is given, else lost.
        parts: The other rows that make up the object with `row` (dropped when `row` is None).

    Returns:
        The frozen snapshot.
    """
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
        row=row,
        parts=parts if row is not None else (),
    )


def finish(
    tracks: Sequence[T], frame: int, max_age: int, target_max_age: int | None, report: Callable[[T, bool], Track]
) -> tuple[list[T], tuple[Track, ...]]:
    """Retire the tracks lost too long and report every track once.

    A removed track is reported once, in the frame it goes, so callers see the transition.

    Args:
        tracks: The live tracks.
        frame: This frame's index.
        max_age: Frames a lost track is kept.
        target_max_age: The same for targets; None: never removed.
        report: Makes one snapshot: `report(track, removed)`.

    Returns:
        (the tracks kept, the frame's snapshots: the kept ones, then the removed ones).
    """
    kept, removed = retire(tracks, frame, max_age, target_max_age)
    return kept, tuple(report(t, False) for t in kept) + tuple(report(t, True) for t in removed)
