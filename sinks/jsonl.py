"""tracks.jsonl: one JSON object per source frame, in order, each line written whole as it goes.

    {"source": str, "frame": int, "pts": float, "dropped_before": int,
     "tracks": [{"id": int, "target": bool, "state": "tracked"|"lost", "box": [x1, y1, x2, y2],
                 "score": float, "mask": {"size": [h, w], "counts": str}}]}

With zones or lines configured (zones/), each line also has
    "zones": {name: {"count": int, "ids": [int]}}, "lines": {name: {"in": int, "out": int}}
(the tracks inside each zone after this frame; each line's crossings so far).

`mask` is COCO RLE (pycocotools' compressed string) at source resolution. It is written for
every target (there may be several, each its own id) whenever it is found, and for every tracked
instance with masks="all"; a lost track has no mask. Tracks listed: every track matched this
frame, and the targets while lost.

events.jsonl (EventLogSink): one JSON object per SourceEvent, in stream order.

    {"source": str, "event": "connected"|"lost"|...|"moved", "time": ISO 8601 UTC, "next_frame": int,
     "attempt": int, "message": str, "width": int|null, "height": int|null, "fps": float|null,
     "outage_s": float|null, "added": [int], "dropped": [int]}

and one per zone event (core.ZoneEvent.to_json), in frame order with them:

    {"id": str, "source": str, "event": "zone_enter"|"zone_leave"|"zone_dwell"|"line_cross"|"obstacle",
     "zone"|"line": str, "track": int, "frame": int, "pts": float, "time": ISO 8601 UTC,
     "box": [x1, y1, x2, y2], "direction": "in"|"out"|null, "snapshot": str|null}

Lines are written whole or not at all (lines.LineFile): a full disk ends the file at its last
whole line and raises a DiskFullError. `read_jsonl` reads either file back and reports a last
line cut off by a kill.
"""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pycocotools import mask as mask_utils

from ..core import FrameResult, PlaceKind, SourceEvent, Track, TrackState, ZoneEvent
from ..errors import OutputError, TornLineError
from .lines import LineFile, plural

MaskPolicy = Literal["target", "all", "none"]


def encode_rle(mask: np.ndarray) -> dict:
    """H×W bool → {"size": [h, w], "counts": str} (COCO compressed RLE)."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    """The inverse of encode_rle: {"size": [h, w], "counts": str} → H×W bool, for reading tracks.jsonl back."""
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def _listed(track: Track) -> bool:
    return track.state is TrackState.TRACKED or (track.is_target and track.state is TrackState.LOST)


class TrackRecords:
    """Turns frame results into tracks.jsonl records (see the module docstring).

    Apart from the file, so a cluster worker can send a frame's record home to the driver, which
    writes it (cluster/).

    Args:
        masks: Whose masks a record holds: "target" (the targets found), "all" (every tracked
            instance too), or "none".
    """

    def __init__(self, masks: MaskPolicy = "target") -> None:
        self.masks = masks

    def record(self, result: FrameResult) -> dict:
        """The JSON object of one frame's line.

        Args:
            result: The frame's result.

        Returns:
            The record, ready for json.dumps: the tracked tracks and the lost targets, with masks
            as the `masks` setting asks.
        """
        frame = result.frame
        listed = [t for t in result.tracks if _listed(t)]
        masks = self._masks(result, listed)
        record = {
            "source": frame.source_id,
            "frame": frame.index,
            "pts": round(float(frame.pts), 6),
            "dropped_before": result.dropped_before,
            "tracks": [self._entry(t, masks.get(t.id)) for t in listed],
        }
        if result.places:  # only when zones or lines are configured for this source
            zones = [p for p in result.places if p.kind is PlaceKind.ZONE]
            lines = [p for p in result.places if p.kind is PlaceKind.LINE]
            record["zones"] = {p.name: {"count": p.count, "ids": list(p.ids)} for p in zones}
            record["lines"] = {p.name: {"in": p.crossed_in, "out": p.crossed_out} for p in lines}
        return record

    def _masks(self, result: FrameResult, tracks: list[Track]) -> dict[int, np.ndarray]:
        """Masks by track id for the tracks that get one, assembled in one call."""
        if self.masks == "none":
            return {}
        found = [t for t in tracks if t.state is TrackState.TRACKED and t.row is not None]
        masks = {t.id: result.mask_of(t) for t in found if t.is_target}
        if self.masks == "all":
            others = [t for t in found if not t.is_target]
            rendered = result.instances.masks([t.row for t in others]) if others else []
            masks.update({t.id: m for t, m in zip(others, rendered, strict=True)})
        return masks

    @staticmethod
    def _entry(track: Track, mask: np.ndarray | None) -> dict:
        entry = {
            "id": track.id,
            "target": track.is_target,
            "state": track.state.value,
            "box": [round(v, 2) for v in track.box],
            "score": round(track.score, 4),
        }
        if mask is not None:
            entry["mask"] = encode_rle(mask)
        return entry


class JsonlSink:
    """Writes tracks.jsonl (see the module docstring): one line per frame result it is given.

    Args:
        path: The file to write; it is created with the first line.
        masks: Whose masks are written: "target" (the targets found), "all" (every tracked
            instance too), or "none".
    """

    def __init__(self, path: str | Path, masks: MaskPolicy = "target") -> None:
        self.path = Path(path)
        self.masks = masks
        self._records = TrackRecords(masks)
        self._lines = JsonLines(self.path)

    def record(self, result: FrameResult) -> dict:
        """The JSON object of one frame's line (TrackRecords.record)."""
        return self._records.record(result)

    @property
    def lines(self) -> int:
        """How many whole lines tracks.jsonl holds."""
        return self._lines.lines

    def write(self, result: FrameResult) -> None:
        """Write one frame's line, whole (or not at all), straight to the file.

        Raises:
            DiskFullError: The disk is full: the file ends at the line before (and says so).
            OutputError: The file cannot be created, or another write failure.
        """
        self._lines.write(self.record(result))

    def close(self) -> None:
        """Sync and close the file (nothing was created when no frame came).

        Raises:
            OutputError: Only a failure the disk reports this late (DiskFullError when it is full).
        """
        self._lines.close()


class JsonLines:
    """A JSON-lines file, opened on the first line; each line is written whole or not at all (LineFile).

    Opened late, a run that fails to start leaves nothing; written through at once, a crash or
    Ctrl-C keeps every line written so far.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = LineFile(path)

    @property
    def lines(self) -> int:
        """How many whole lines the file holds."""
        return self._file.lines

    def write(self, record: dict) -> None:
        """Append one record as a line, whole or not at all."""
        # ensure_ascii (json's default): no newline or multi-byte character can appear inside a line
        self._file.append(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        """Sync and close the file."""
        self._file.close()


def read_jsonl(path: str | Path, torn: Literal["warn", "raise", "ignore"] = "warn") -> list[dict]:
    """Read a JSON-lines output of this project (tracks.jsonl, events.jsonl) back, one dict per whole line.

    A run killed while writing (SIGKILL, power loss) can leave its last line cut off: that line is
    left out, and said so in one line naming the file and the line ("tracks.jsonl: line 57 is cut
    off (the run was killed while writing it); the 56 lines before it are whole").

    Args:
        path: The file.
        torn: What a cut-off last line does: "warn" (a TornLineWarning, and the whole lines are
            returned), "raise" (a TornLineError), or "ignore".

    Returns:
        The whole lines' objects, in order.

    Raises:
        TornLineError: The last line is cut off and `torn` is "raise".
        OutputError: The file cannot be read, or a line before the last one is not JSON (the file
            was damaged, or is not one of this project's).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OutputError(f"cannot read {path}: {exc.strerror or exc}") from None
    *lines, tail = data.split(b"\n")  # tail: what follows the last newline, empty when the file ends whole
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except ValueError as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise OutputError(f"{path}: line {number} is not JSON ({reason}): the file is damaged") from None
    if tail and torn != "ignore":
        message = (
            f"{path}: line {len(lines) + 1} is cut off (the run was killed while writing it); "
            f"the {plural(len(lines), 'line')} before it {'is' if len(lines) == 1 else 'are'} whole"
        )
        if torn == "raise":
            raise TornLineError(message)
        warnings.warn(message, TornLineWarning, stacklevel=2)
    return records


class TornLineWarning(UserWarning):
    """read_jsonl found a cut-off last line (and left it out)."""


class EventLogSink:
    """events.jsonl: the source events (see the module docstring); frames are ignored.

    Args:
        path: The file to write; it is created with the first event.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lines = JsonLines(self.path)

    @staticmethod
    def record(event: SourceEvent) -> dict:
        """The JSON object of one event's line: its kind's value, and the time as ISO 8601 UTC in milliseconds."""
        return {
            "source": event.source_id,
            "event": event.kind.value,
            "time": datetime.fromtimestamp(event.at, UTC).isoformat(timespec="milliseconds"),
            "next_frame": event.next_frame,
            "attempt": event.attempt,
            "message": event.message,
            "width": event.width,
            "height": event.height,
            "fps": None if event.fps is None else round(event.fps, 3),
            "outage_s": None if event.outage_s is None else round(event.outage_s, 3),
            "added": list(event.added),
            "dropped": list(event.dropped),
        }

    def on_event(self, event: SourceEvent | ZoneEvent) -> None:
        """Write one event's line, whole (or not at all), straight to the file.

        A zone event's line is its `to_json()` (see the module docstring).

        Raises:
            DiskFullError: The disk is full: the file ends at the line before (and says so).
            OutputError: The file cannot be created, or another write failure.
        """
        self._lines.write(event.to_json() if isinstance(event, ZoneEvent) else self.record(event))

    def write(self, result: FrameResult) -> None:
        """Ignore frames: this sink only logs events."""

    def close(self) -> None:
        """Sync and close the file (nothing was created when no event came).

        Raises:
            OutputError: Only a failure the disk reports this late (DiskFullError when it is full).
        """
        self._lines.close()
