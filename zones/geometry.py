"""Zones and lines in a frame's pixels: trigger points, inside tests, mask overlap, line crossings.

Inside tests are shapely 2's vectorised predicates on a prepared polygon, the mask trigger counts
pixels against the zone rasterised by OpenCV, and crossings are the sign of a cross product plus
shapely's segment intersection: no geometry is written by hand here.
"""

from __future__ import annotations

import cv2
import numpy as np
import shapely

Size = tuple[int, int]  # (width, height)
Window = tuple[int, int, int, int]  # x1, y1, x2, y2: whole pixels, for slicing


def anchors(boxes: np.ndarray, trigger: str) -> np.ndarray:
    """The trigger point of each box, as supervision's `Detections.get_anchors_coordinates` places it.

    Args:
        boxes: N×4 xyxy boxes in pixels.
        trigger: "center" (the box's middle) or "bottom_center" (the middle of its bottom edge).

    Returns:
        N×2 float64 (x, y) points.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x = (boxes[:, 0] + boxes[:, 2]) / 2
    y = (boxes[:, 1] + boxes[:, 3]) / 2 if trigger == "center" else boxes[:, 3]
    return np.stack([x, y], axis=1)


def to_pixels(points: np.ndarray, relative: bool, size: Size, first_size: Size) -> np.ndarray:
    """A place's configured points in the pixels of a frame of `size`.

    Args:
        points: K×2 configured points.
        relative: Whether they are fractions of the width and height.
        size: The frame's (width, height).
        first_size: The (width, height) of the source's first frame, which pixel points refer to:
            they are rescaled with the frame, as the tracker's boxes are.

    Returns:
        K×2 float64 points in this frame's pixels.
    """
    width, height = size
    if relative:
        return np.asarray(points, np.float64) * (width, height)
    return np.asarray(points, np.float64) * (width / first_size[0], height / first_size[1])


class ZoneShape:
    """A zone's polygon in one frame size's pixels.

    Args:
        points: K×2 vertices in pixels.
        size: The frame's (width, height).
    """

    def __init__(self, points: np.ndarray, size: Size) -> None:
        self.points = np.asarray(points, np.float64)
        self.size = size
        self.polygon = shapely.Polygon(self.points)
        shapely.prepare(self.polygon)  # many point tests per frame against the same polygon
        self._raster: np.ndarray | None = None

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Which points lie inside the zone or on its edge.

        The edge counts as inside, as in supervision's PolygonZone, whose raster includes its outline.

        Args:
            points: N×2 (x, y) in pixels.

        Returns:
            N bools.
        """
        points = np.asarray(points, np.float64).reshape(-1, 2)
        return shapely.intersects_xy(self.polygon, points[:, 0], points[:, 1])

    def touches_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """Which boxes share some area or edge with the zone: only those can hold mask pixels inside it.

        Args:
            boxes: N×4 xyxy in pixels.

        Returns:
            N bools.
        """
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        return shapely.intersects(self.polygon, shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]))

    def in_frame(self) -> bool:
        """Whether any area of the zone lies in the frame (a zone that only touches its border does not)."""
        width, height = self.size
        return shapely.intersection(self.polygon, shapely.box(0, 0, width, height)).area > 0

    def raster(self) -> np.ndarray:
        """The zone as an H×W bool image, drawn once for this frame size."""
        if self._raster is None:
            width, height = self.size
            image = np.zeros((height, width), np.uint8)
            cv2.fillPoly(image, [np.round(self.points).astype(np.int32)], 1)
            self._raster = image.view(bool)
        return self._raster

    def overlap(self, mask: np.ndarray, window: Window) -> float:
        """The share of a mask's pixels in `window` that lie inside the zone.

        Only the window of the zone's raster is read, so the cost grows with the object, not the frame.

        Args:
            mask: The mask's pixels in the window, h×w bool.
            window: (x1, y1, x2, y2) whole pixels, from `pixel_window`.

        Returns:
            A fraction in [0, 1]; 0 when the window holds no mask pixel.
        """
        x1, y1, x2, y2 = window
        total = np.count_nonzero(mask)
        if total == 0:
            return 0.0
        return np.count_nonzero(mask & self.raster()[y1:y2, x1:x2]) / total


def pixel_window(box: np.ndarray, size: Size) -> Window | None:
    """The whole pixels a box covers within a frame of `size`, as slicing bounds; None when none.

    Args:
        box: xyxy in pixels.
        size: The frame's (width, height).

    Returns:
        (x1, y1, x2, y2) with 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, or None.
    """
    width, height = size
    x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x2, y2 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


class LineShape:
    """A line's segment in one frame size's pixels, with its two sides.

    The "in" side is where supervision's LineZone counts a crossing as `in`: the side where the
    cross product of (end − start) and (point − start) is negative, which in image coordinates
    (y down) is on the left looking from the first point to the second. A point exactly on the
    line belongs to the other ("out") side, as in supervision.

    Args:
        points: 2×2 end points in pixels.
    """

    def __init__(self, points: np.ndarray) -> None:
        self.points = np.asarray(points, np.float64)
        self.segment = shapely.LineString(self.points)
        shapely.prepare(self.segment)

    def in_frame(self, size: Size) -> bool:
        """Whether any part of the line lies in a frame of `size` (width, height)."""
        return shapely.intersects(self.segment, shapely.box(0, 0, *size))

    def on_in_side(self, points: np.ndarray) -> np.ndarray:
        """Which points are on the line's "in" side (the sign of a cross product, as supervision's).

        Args:
            points: N×2 (x, y) in pixels.

        Returns:
            N bools.
        """
        points = np.asarray(points, np.float64).reshape(-1, 2)
        start, end = self.points
        direction = end - start
        offset = points - start
        return direction[0] * offset[:, 1] - direction[1] * offset[:, 0] < 0

    def crossings(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """How each point's move from `before` to `after` crosses the line.

        A crossing is a change of side whose straight path meets the segment itself, not only the
        infinite line through it: passing beyond either end is no crossing.

        Args:
            before: N×2 previous positions in pixels.
            after: N×2 current positions in pixels.

        Returns:
            N int8: +1 crossed towards the "in" side, -1 towards the "out" side, 0 no crossing.
        """
        before = np.asarray(before, np.float64).reshape(-1, 2)
        after = np.asarray(after, np.float64).reshape(-1, 2)
        was_in, now_in = self.on_in_side(before), self.on_in_side(after)
        result = np.zeros(len(after), np.int8)
        changed = np.flatnonzero(was_in != now_in)
        if len(changed):
            paths = shapely.linestrings(np.stack([before[changed], after[changed]], axis=1))
            met = shapely.intersects(self.segment, paths)
            result[changed[met]] = np.where(now_in[changed[met]], 1, -1)
        return result
