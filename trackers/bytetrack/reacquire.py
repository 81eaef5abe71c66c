"""Target step (b), re-acquisition: a lost target looks for itself by colour near where it should be.

It searches the unmatched instances, comparing colour histograms of their masks with its own
(trackers/appearance.py).

ByteTrack gets a lost track back only by IoU with its prediction, which fails after an occlusion
long enough for the object to have moved or stopped elsewhere. For a prompted target the colour of
its mask is known, so it searches a circle around its predicted centre whose radius grows the
longer it is lost (it may be anywhere the longer it was hidden), for an instance of about its
size whose colours are close enough to its running colour model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ...core import Instances
from .. import appearance
from ..matching import union_box

if TYPE_CHECKING:
    from .settings import ByteTrackerSettings
    from .track import KalmanTrack

APPEARANCE_EVERY = 5  # frames between updates of a target's colour model (each renders its mask)
APPEARANCE_WEIGHT = 0.2  # share of a new look in the running colour model: slow drift, no jumps
# A lost target is re-acquired only on an instance of a similar area (this factor either way): a
# hand next to a lost driver has skin and shirt colours too, but a fraction of his size.
MAX_SIZE_CHANGE = 2.0
SEARCH_CHUNK = 16  # candidate masks rendered at once while a lost target looks for itself
EDGE = 2  # pixels: a box this close to the frame's edge is cut by it


def reach(diagonal: float, lost_for: int, settings: ByteTrackerSettings) -> float:
    """How far from its predicted centre a target lost for `lost_for` frames looks for itself.

    Args:
        diagonal: The diagonal of the target's (whole) box.
        lost_for: Frames since it was last seen.
        settings: search_radius, search_growth, max_search_radius (in diagonals).

    Returns:
        The radius in pixels.
    """
    return diagonal * min(settings.search_radius + settings.search_growth * lost_for, settings.max_search_radius)


def candidates(
    track: KalmanTrack, instances: Instances, free: list[int], frame: int, settings: ByteTrackerSettings
) -> list[int]:
    """The `free` rows close enough to the lost target's predicted centre and of about its size.

    An object that left the frame shrank at its edge and its prediction drifted off it: the search
    starts at the edge it left by (the centre is clipped to the frame), for an object of the size it
    had when last seen whole.

    Returns:
        The rows, in the order of `free`.
    """
    box = track.box
    height, width = instances.image_shape
    centre = np.clip((box[:2] + box[2:]) / 2, 0, [width, height])
    w, h = track.size if track.size is not None else box[2:] - box[:2]
    radius = reach(float(np.hypot(w, h)), frame - track.last_seen, settings)
    area = max(w * h, 1.0)
    return [
        r
        for r in free
        if np.hypot(*((instances.boxes[r, :2] + instances.boxes[r, 2:]) / 2 - centre)) <= radius
        and 1 / MAX_SIZE_CHANGE <= instances.areas[r] / area <= MAX_SIZE_CHANGE
    ]


def search_by_colour(
    track: KalmanTrack,
    instances: Instances,
    free: list[int],
    image: np.ndarray,
    frame: int,
    settings: ByteTrackerSettings,
) -> int | None:
    """The candidate that looks most like the lost target, if it looks enough like it.

    Args:
        track: A lost target with a colour model.
        instances: This frame's instances (with masks: colours are read under them).
        free: Rows no track holds.
        image: The frame, BGR.
        frame: This frame's index.
        settings: Search radius and min_appearance.

    Returns:
        The row, or None when no candidate reaches `min_appearance`.
    """
    near = candidates(track, instances, free, frame, settings)
    if not near or not instances.has_masks:
        return None
    scored = []
    for start in range(0, len(near), SEARCH_CHUNK):  # masks are frame-sized: a few at a time
        chunk = near[start : start + SEARCH_CHUNK]
        for mask, r in zip(instances.masks(chunk), chunk, strict=True):
            look = appearance.colour_histogram(image, mask, instances.boxes[r])
            if look is not None:
                scored.append((appearance.similarity(track.colour, look), r))
    best = max(scored, default=None)
    return best[1] if best is not None and best[0] >= settings.min_appearance else None


def colour_similarity(track: KalmanTrack, instances: Instances, row: int, image: np.ndarray | None) -> float | None:
    """How alike the colours of instance `row` and the target are; None when either has none (a grey frame).

    Args:
        track: A target, with or without a colour model.
        instances: This frame's instances, with masks.
        row: The candidate.
        image: The frame (BGR), or None.

    Returns:
        1 − Bhattacharyya distance, or None.
    """
    if image is None or track.colour is None or not instances.has_masks:
        return None
    look = appearance.colour_histogram(image, instances.masks([row])[0], instances.boxes[row])
    return None if look is None else appearance.similarity(track.colour, look)


def refresh_colour(track: KalmanTrack, instances: Instances, rows: list[int], image: np.ndarray, frame: int) -> None:
    """Blend the target's look under `rows` (its row and parts) into its colour model.

    At most once every APPEARANCE_EVERY frames: each update renders its mask.

    Args:
        track: A target matched this frame.
        instances: This frame's instances, with masks.
        rows: The rows that make up the target this frame.
        image: The frame, BGR.
        frame: This frame's index.
    """
    if frame - track.colour_at < APPEARANCE_EVERY:
        return
    mask = instances.masks(rows).any(axis=0)
    look = appearance.colour_histogram(image, mask, union_box(instances.boxes[rows]))
    if look is not None:
        track.colour = appearance.blend(track.colour, look, 1.0 if track.colour is None else APPEARANCE_WEIGHT)
        track.colour_at = frame


def seen_whole(box: np.ndarray, image_shape: tuple[int, int]) -> bool:
    """Whether a measured box is clear of the frame's edges (its size is then the object's own).

    Args:
        box: xyxy.
        image_shape: (height, width).
    """
    height, width = image_shape
    x1, y1, x2, y2 = box
    return bool(x1 > EDGE and y1 > EDGE and x2 < width - EDGE and y2 < height - EDGE)
