"""What the bytetrack tracker does for prompted targets besides ByteTrack's association.

Each target completes itself: (a) its parts, or (b) itself found by colour when it is lost; and
(c) one object is never held by two targets.

Targets run these steps right after their own association rounds and before every other track's,
so the instances they take (their parts, or themselves found by colour) are not matched to
neighbours or started as new tracks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...core import Instances
from ..matching import box_iou, union_box
from . import looks as looks_
from . import parts, reacquire
from .settings import ByteTrackerSettings
from .track import KalmanTrack

# Step (c): two targets whose boxes overlap this much this frame are on one object (a pedestrian
# segmented twice overlaps its duplicate at 0.5-0.6 when the two boxes differ in height).
SAME_OBJECT_IOU = 0.5


def complete_target(
    track: KalmanTrack,
    instances: Instances,
    row: int | None,
    free: list[int],
    others: np.ndarray,
    image: np.ndarray | None,
    frame: int,
    settings: ByteTrackerSettings,
    looks: looks_.FrameLooks | None = None,
) -> int | None:
    """Steps (a) and (b) for one target; sets `track.parts`.

    (a) its parts, when the instance it matched does not fill its predicted box, or when none
    matched (the object may have split); (b) when it is still lost, itself found near where it
    should be, by its gallery of network descriptors (`looks`) or else by colour.

    Args:
        track: A target, predicted to this frame.
        instances: This frame's instances.
        row: The row it matched in the association rounds, or None.
        free: Rows no track holds yet, at or above `low_score`.
        others: The predicted boxes of the tracks that are not targets (their instances are no parts).
        image: The frame (BGR), or None: no re-acquisition.
        frame: This frame's index.
        settings: The tracker's settings.
        looks: This frame's descriptors (appearance: features), or None: colour.

    Returns:
        The target's (main) row this frame, or None while it is lost.
    """
    boxes = instances.boxes
    if settings.merge_parts and not parts.fills_its_box(boxes, row, track.box):
        unclaimed = [r for r in free if not parts.claimed(r, boxes, others)]
        matched = row
        row, track.parts = parts.take_parts(track.box, boxes, row, unclaimed, settings.part_inside, settings.min_iou)
        if matched is None and row is not None and not track.parts and looks is not None:
            # One whole instance the association left unmatched: its appearance gate holds here too.
            row = row if looks_.passes_gate(track, row, looks, settings) else None
    if row is None and settings.reacquire:
        if looks is not None and looks_.ready(track):
            near = reacquire.candidates(track, instances, free, frame, settings)
            row = looks_.best_look(track, instances, near, looks, image, settings)
        elif image is not None and track.colour is not None:
            row = reacquire.search_by_colour(track, instances, free, image, frame, settings)
    return row


def one_object_one_target(targets: Sequence[KalmanTrack], instances: Instances, matched: dict[int, int]) -> None:
    """Step (c): of two targets on two boxes of one object, the worse fit is lost this frame.

    The segmenter left a duplicate box where both targets' predictions reach: rather than both
    following the same object from now on, the one that fits its prediction worse lets go. Its
    rows stay taken: nobody else should start on them either.

    Args:
        targets: The targets, with this frame's parts.
        instances: This frame's instances.
        matched: Track id → row; the losers' entries are deleted (and their parts cleared).
    """
    boxes = instances.boxes
    held = sorted((t for t in targets if t.id in matched), key=lambda t: -box_iou(boxes[matched[t.id]], t.box)[0, 0])
    kept: list[np.ndarray] = []  # the union boxes of the targets kept so far
    for track in held:
        box = union_box(boxes[[matched[track.id], *track.parts]])
        if any(box_iou(box, other)[0, 0] >= SAME_OBJECT_IOU for other in kept):
            del matched[track.id]
            track.parts = ()
        else:
            kept.append(box)
