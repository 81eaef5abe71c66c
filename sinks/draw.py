"""Drawing a frame's result: each target's mask and box in its own colour, other tracks faint, zones and lines.

One drawing for every picture the project makes: annotated.mp4, the viewer's frames and the
zone events' snapshots.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..core import FrameResult, PlaceKind, PlaceState, TrackState

# BGR. Each target gets its colour from its id (id 1: amber), so several targets stay apart.
TARGET_COLOURS = (
    (0, 200, 255),
    (255, 120, 0),
    (80, 220, 60),
    (220, 60, 220),
    (60, 60, 255),
    (255, 255, 0),
    (0, 128, 255),
    (160, 80, 255),
)
OTHER_COLOUR = (200, 200, 200)
MASK_ALPHA = 0.45
ZONE_COLOUR = (255, 200, 0)  # BGR: cyan-blue, apart from every target colour
ZONE_BUSY_COLOUR = (255, 0, 255)  # magenta: a zone with something inside it, apart from red objects
ZONE_FILL_ALPHA = 0.15


def target_colour(track_id: int) -> tuple[int, int, int]:
    """A target's colour, fixed by its id so it stays the same over the whole video."""
    return TARGET_COLOURS[(track_id - 1) % len(TARGET_COLOURS)]


def annotate(result: FrameResult) -> np.ndarray:
    """A copy of the frame with its zones and lines, each target's mask, and every matched track's box and id.

    A track inside a zone is drawn in the zone's busy colour (a target keeps its own colour).
    """
    image = result.frame.image.copy()
    draw_places(image, result.places)
    inside = {i for place in result.places for i in place.ids}
    for target in result.targets:
        mask = result.mask_of(target) if target.id in result.target_rows else None
        if mask is not None:
            tint = np.array(target_colour(target.id), np.float32)
            image[mask] = (image[mask] * (1 - MASK_ALPHA) + tint * MASK_ALPHA).astype(np.uint8)
    for track in result.tracks:
        if track.state is TrackState.REMOVED or (track.state is TrackState.LOST and not track.is_target):
            continue
        colour = (
            target_colour(track.id) if track.is_target else ZONE_BUSY_COLOUR if track.id in inside else OTHER_COLOUR
        )
        x1, y1, x2, y2 = (int(round(v)) for v in track.box)
        dashed = track.state is TrackState.LOST
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 1 if dashed else 2, cv2.LINE_AA)
        label = f"{track.id}{' target' if track.is_target else ''}{' (lost)' if dashed else ''}"
        cv2.putText(image, label, (x1 + 2, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    label_places(image, result.places)
    return image


def draw_places(image: np.ndarray, places: tuple[PlaceState, ...]) -> None:
    """Draw zones (outlined; tinted while something is inside) and lines, without their labels (see label_places).

    Args:
        image: The BGR frame to draw on, in place.
        places: The frame's zones and lines, in its pixels.
    """
    for place in places:
        points = np.round(place.points).astype(np.int32)
        if place.kind is PlaceKind.ZONE:
            colour = ZONE_BUSY_COLOUR if place.ids else ZONE_COLOUR
            if place.ids:
                tinted = image.copy()
                cv2.fillPoly(tinted, [points], colour)
                cv2.addWeighted(tinted, ZONE_FILL_ALPHA, image, 1 - ZONE_FILL_ALPHA, 0, dst=image)
            cv2.polylines(image, [points], True, colour, 2, cv2.LINE_AA)
        else:
            cv2.line(image, tuple(points[0]), tuple(points[1]), ZONE_COLOUR, 2, cv2.LINE_AA)


def label_places(image: np.ndarray, places: tuple[PlaceState, ...]) -> None:
    """Each place's name and live count (zones) or crossings (lines), on a dark plate, drawn last so nothing hides it.

    Args:
        image: The BGR frame to draw on, in place.
        places: The frame's zones and lines, in its pixels.
    """
    height, width = image.shape[:2]
    scale = max(0.5, width / 1600)  # readable on a 1080p frame as on a 320-pixel one
    for place in places:
        if place.kind is PlaceKind.ZONE:
            label, colour = f"{place.name}: {place.count}", ZONE_BUSY_COLOUR if place.ids else ZONE_COLOUR
        else:
            label, colour = f"{place.name}: in {place.crossed_in} out {place.crossed_out}", ZONE_COLOUR
        (w, h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
        # Inside the place's top-left corner, kept within the frame (a zone may reach past its edges).
        x = min(max(int(place.points[:, 0].min()) + 4, 2), max(width - w - 4, 2))
        y = min(max(int(place.points[:, 1].min()) + h + 6, h + 4), height - base - 2)
        cv2.rectangle(image, (x - 3, y - h - 4), (x + w + 3, y + base + 2), (20, 20, 20), cv2.FILLED)
        cv2.putText(image, label, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 2, cv2.LINE_AA)
