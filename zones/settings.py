"""The `zones` and `lines` config sections: places in a source's picture where tracks are watched.

A zone is a polygon: a track is in it when its trigger point (box centre or bottom centre) lies
inside, or when enough of its mask does. A line is a segment that tracks' trigger points cross.
Coordinates are the source's pixels, or fractions of its width and height with `relative: true`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Literal

import numpy as np
import shapely
from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..errors import ConfigError
from ..settings import Settings

Point = tuple[float, float]
ZoneTrigger = Literal["center", "bottom_center", "mask"]
LineTrigger = Literal["center", "bottom_center"]

_MIN_POLYGON_POINTS = 3


class ZoneSettings(Settings):
    """One zone: a polygon, who counts in it, and which events it raises beyond enter and leave."""

    name: str = Field(min_length=1, description="the zone's name, in events, tracks.jsonl and /metrics")
    polygon: list[Point] = Field(
        description="the zone's vertices [[x, y], ...], at least 3, a simple polygon (edges do not cross); "
        "source pixels, or fractions of width and height with relative: true",
    )
    relative: bool = Field(
        False,
        description="polygon in fractions of the frame's width and height (they survive a change of resolution); "
        "pixel polygons are rescaled with the frame",
    )
    source: str | None = Field(None, description="the source this zone belongs to (default: every source)")
    trigger: ZoneTrigger = Field(
        "bottom_center",
        description="a track is inside when this is: its box's center or bottom_center point, "
        "or at least min_overlap of its mask (mask)",
    )
    min_overlap: float = Field(
        0.5, gt=0.0, le=1.0, description="trigger mask: the share of the mask (within its box) that must lie inside"
    )
    targets_only: bool = Field(False, description="only prompted targets count, not every tracked instance")
    min_area: float = Field(0.0, ge=0.0, description="ignore instances whose box is smaller than this, in px²")
    enter_after_s: float = Field(
        0.0,
        ge=0.0,
        description="a track enters only once it has been inside on every frame for this many seconds: its "
        "zone_enter comes on the first frame that long after its first frame inside (its stay, and so dwell_s "
        "and stationary_s, count from that first frame); until then it does not count as inside. "
        "0: it enters on its first frame inside, as supervision's PolygonZone",
    )
    leave_after_s: float = Field(
        0.0,
        ge=0.0,
        description="a track counts as gone from the zone only once it has been out of it, or lost, removed or "
        "no longer reported, for this many seconds: its zone_leave comes on the first frame that long after its "
        "first frame out (that frame's index and pts), and nothing at all if it is back inside before then; "
        "until then it still counts as inside. 0: it leaves on its first frame out, as supervision's PolygonZone",
    )
    dwell_s: float | None = Field(
        None, gt=0.0, description="a zone_dwell event once a track has stayed this many seconds (null: none)"
    )
    stationary_s: float | None = Field(
        None,
        gt=0.0,
        description="an obstacle event once a track inside has been still this many seconds (null: none)",
    )
    max_speed: float = Field(
        0.05,
        gt=0.0,
        description="still: the box centre moves slower than this many box diagonals per second "
        "(on average over stationary_s)",
    )

    @field_validator("polygon")
    @classmethod
    def _simple_polygon(cls, polygon: list[Point], info: ValidationInfo) -> list[Point]:
        name = info.data.get("name", "?")
        if len(polygon) > _MIN_POLYGON_POINTS and polygon[0] == polygon[-1]:
            polygon = polygon[:-1]  # a closed ring written out: the first point repeated at the end
        if len(polygon) < _MIN_POLYGON_POINTS:
            raise ValueError(f"zone {name!r}: a polygon needs at least 3 points, got {len(polygon)}")
        if shapely.MultiPoint(polygon).convex_hull.area <= 0:
            raise ValueError(f"zone {name!r}: the polygon encloses no area (its points lie on one line)")
        shape = shapely.Polygon(polygon)
        if not shape.is_valid:
            reason = shapely.is_valid_reason(shape)
            raise ValueError(f"zone {name!r}: the polygon's edges cross ({reason}); list its points in order")
        return polygon

    @model_validator(mode="after")
    def _relative_in_frame(self) -> ZoneSettings:
        if self.relative:
            _check_fractions(self.polygon, f"zone {self.name!r}")
        return self


class LineSettings(Settings):
    """One line: a segment whose crossings are counted each way."""

    name: str = Field(min_length=1, description="the line's name, in events, tracks.jsonl and /metrics")
    points: list[Point] = Field(
        description="the line's two end points [[x1, y1], [x2, y2]]; crossing towards the side on the left, "
        "looking from the first point to the second, is 'in' (supervision's LineZone convention)",
    )
    relative: bool = Field(
        False,
        description="points in fractions of the frame's width and height (they survive a change of resolution); "
        "pixel lines are rescaled with the frame",
    )
    source: str | None = Field(None, description="the source this line belongs to (default: every source)")
    trigger: LineTrigger = Field(
        "bottom_center", description="the point of a track's box that crosses: center or bottom_center"
    )
    targets_only: bool = Field(False, description="only prompted targets count, not every tracked instance")

    @field_validator("points")
    @classmethod
    def _two_points(cls, points: list[Point], info: ValidationInfo) -> list[Point]:
        name = info.data.get("name", "?")
        if len(points) != 2:
            raise ValueError(f"line {name!r}: a line needs exactly 2 points, got {len(points)}")
        if points[0] == points[1]:
            raise ValueError(f"line {name!r}: its 2 points are the same point")
        return points

    @model_validator(mode="after")
    def _relative_in_frame(self) -> LineSettings:
        if self.relative:
            _check_fractions(self.points, f"line {self.name!r}")
        return self


def _check_fractions(points: Sequence[Point], what: str) -> None:
    values = np.asarray(points, dtype=np.float64)
    if np.any(values < 0.0) or np.any(values > 1.0):
        bad = next(p for p in points if not all(0.0 <= v <= 1.0 for v in p))
        raise ValueError(f"{what}: relative coordinates are fractions in [0, 1], got {list(bad)}")


def check_places(
    zones: Sequence[ZoneSettings], lines: Sequence[LineSettings], source_ids: Collection[str] | None = None
) -> None:
    """Check the zones and lines as a whole: names unique per source, and every named source known.

    Two places may share a name only when they belong to two different named sources, since events,
    tracks.jsonl and /metrics tell a source's places apart by name alone.

    Args:
        zones: The `zones` section.
        lines: The `lines` section.
        source_ids: The run's source ids; None skips the check of sources (a service adds sources later).

    Raises:
        ConfigError: One line naming the first duplicate name or unknown source.
    """
    places: list[tuple[str, ZoneSettings | LineSettings]] = [("zone", z) for z in zones]
    places += [("line", li) for li in lines]
    for i, (kind, place) in enumerate(places):
        if source_ids is not None and place.source is not None and place.source not in source_ids:
            known = ", ".join(sorted(source_ids)) or "none"
            raise ConfigError(f"{kind} {place.name!r}: unknown source {place.source!r} (sources: {known})")
        for other_kind, other in places[:i]:
            shared = place.source is None or other.source is None or place.source == other.source
            if other.name == place.name and shared:
                raise ConfigError(
                    f"{kind} {place.name!r}: the name is taken by another {other_kind} of the same source; "
                    "zone and line names must be unique per source"
                )
