"""Outputs in segments for long runs (`output.segment_minutes`), with retention (`output.retention`).

A stream that runs for days writes its outputs as a series of segments instead of one file each:

    tracks-20261130T104500.123Z.jsonl      annotated-20261130T104500.123Z.mp4
    tracks-20261130T110000.140Z.jsonl      annotated-20261130T110000.140Z.mp4   (open)

Each segment is complete on its own: its JSONL file is synced and closed, its MP4 has its trailer,
before the next one opens. A segment is named by the UTC time (to the millisecond) its first frame
reached the sinks, so names sort by time.

One `SegmentClock` per stream decides, once per frame, which segment the frame belongs to: the
first sink to ask about a frame reads the clock, the others get the same answer, so the stream's
tracks, video (and mot.txt) segments hold exactly the same frames and share their start's name. A
segment ends at the first frame that arrives `segment_minutes` after it began (a stream without
frames keeps its segment open). The clock is the wall clock: how long a segment covers is the
time its frames arrived over, whatever their timestamps in the source.

Retention runs when a stream's first segment opens and each time a finished segment has been
closed by all of the stream's sinks: the oldest finished segments (every file of the same start
together) are deleted while they began more than `max_age_hours` ago, or while the stream's segments
take more than `max_total_mb` (10^6 bytes) together. The open segment is never deleted, and a
segment that ends when its stream does is left whole. A file that cannot be deleted is one
warning, then left alone; the run goes on.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

from ..config import OutputConfig, RetentionConfig
from ..core import Frame, FrameResult, SourceEvent
from ..errors import error_reason
from .base import EventSink, Sink
from .jsonl import JsonlSink, MaskPolicy
from .mot import MotSink
from .video import VideoSink

log = logging.getLogger(__name__)

# The rotated outputs' names, for finding an earlier run's files in an output folder.
SEGMENT_GLOBS = ("tracks-*.jsonl", "annotated-*.mp4", "mot-*.txt")
_STAMP = re.compile(r"^(\d{8}T\d{6})\.(\d{3})Z$")
_MB = 1_000_000


def segment_stamp(start_ms: int) -> str:
    """A segment's start as it appears in its name: UTC, to the millisecond, e.g. 20261130T104500.123Z.

    Args:
        start_ms: Milliseconds since the Unix epoch.

    Returns:
        The stamp; stamps sort as their times do.
    """
    seconds, millis = divmod(start_ms, 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y%m%dT%H%M%S") + f".{millis:03d}Z"


def stamp_start(stamp: str) -> int | None:
    """The inverse of segment_stamp: milliseconds since the epoch, or None for text that is not a stamp."""
    match = _STAMP.match(stamp)
    if match is None:
        return None
    try:
        moment = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(moment.timestamp()) * 1000 + int(match.group(2))


class SegmentClock:
    """Which segment each frame of one stream belongs to, shared by the stream's rotating sinks.

    Args:
        minutes: How long a segment lasts (wall-clock time).
        retention: Which finished segments to delete (None: keep them all).
        now: The wall clock in seconds since the epoch (time.time; a stand-in in tests).

    Raises:
        ValueError: `minutes` is not positive.
    """

    def __init__(
        self, minutes: float, retention: RetentionConfig | None = None, now: Callable[[], float] = time.time
    ) -> None:
        if not minutes > 0:
            raise ValueError(f"a segment must last some time, got {minutes} minutes")
        self.length_ms = max(1, round(minutes * 60_000))
        self.retention = retention or RetentionConfig()
        self._now = now
        self._lock = threading.Lock()  # the pipeline's thread writes; another may close a removed stream
        self._start: int | None = None  # the current segment's start, in ms
        self._key: tuple | None = None  # the frame the current answer was given for
        self._held: dict[int, int] = {}  # start -> how many sinks have that segment open
        self._outputs: list[tuple[Path, str, str]] = []  # (folder, stem, suffix) of each sink
        self._undeletable: set[Path] = set()  # warned about once; left alone since

    def attach(self, folder: Path, stem: str, suffix: str) -> None:
        """Count one sink's files (`folder/stem-<stamp>suffix`) as the stream's, for retention."""
        with self._lock:
            self._outputs.append((Path(folder), stem, suffix))

    def start_for(self, frame: Frame) -> int:
        """The start (ms since the epoch) of the segment `frame` belongs to, the same for every sink that asks.

        The first question about a frame decides: it stays in the current segment, or begins a new
        one when the current one has lasted its length. The stream's first segment runs retention
        first (an earlier run's segments in the folder may be due).

        Args:
            frame: The frame in hand.

        Returns:
            The segment's start, also its name's stamp.
        """
        key = (frame.source_id, frame.index, frame.pts)
        with self._lock:
            if key == self._key and self._start is not None:
                return self._start
            now_ms = math.floor(self._now() * 1000)
            first = self._start is None
            if first or now_ms >= self._start + self.length_ms:
                self._start = now_ms  # later than the segment before: names never repeat, and sort by time
            self._key = key
            start = self._start
        if first:
            self.prune()
        return start

    def hold(self, start: int) -> None:
        """One sink has opened segment `start`: retention leaves it alone until every sink is done with it."""
        with self._lock:
            self._held[start] = self._held.get(start, 0) + 1

    def release(self, start: int, prune: bool = True) -> None:
        """One sink has closed segment `start`; once none holds it, it is finished and retention runs (when `prune`)."""
        with self._lock:
            self._held[start] -= 1
            done = self._held[start] == 0
            if done:
                del self._held[start]
        if done and prune:
            self.prune()

    def segments(self) -> dict[int, list[Path]]:
        """Every segment of the stream's sinks on disk: start -> its files (any of the stream's stems)."""
        with self._lock:
            outputs = list(self._outputs)
        found: dict[int, list[Path]] = {}
        for folder, stem, suffix in outputs:
            for path in folder.glob(f"{stem}-*{suffix}"):
                start = stamp_start(path.name[len(stem) + 1 : len(path.name) - len(suffix)])
                if start is not None:
                    found.setdefault(start, []).append(path)
        return found

    def prune(self) -> None:
        """Delete the oldest finished segments while retention says so (see the module docstring)."""
        max_age, max_mb = self.retention.max_age_hours, self.retention.max_total_mb
        if max_age is None and max_mb is None:
            return
        with self._lock:
            kept = {*self._held, self._start}
        segments = self.segments()
        sizes = {start: _size(paths) for start, paths in segments.items()}
        total = sum(sizes.values())
        cutoff_ms = math.floor(self._now() * 1000) - (max_age * 3_600_000 if max_age is not None else 0)
        for start in sorted(segments):
            if start in kept:
                continue
            too_old = max_age is not None and start < cutoff_ms
            too_big = max_mb is not None and total > max_mb * _MB
            if not (too_old or too_big):
                break  # younger ones follow, and the total only shrinks
            total -= self._delete(segments[start])

    def _delete(self, paths: list[Path]) -> int:
        """Delete a segment's files; returns the bytes to take off the stream's total (undeletable files too)."""
        freed = 0
        for path in paths:
            size = _size([path])
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                if path not in self._undeletable:
                    self._undeletable.add(path)
                    log.warning("cannot delete old segment %s (%s): it is kept", path, error_reason(exc))
            freed += size
        return freed


def _size(paths: list[Path]) -> int:
    """The files' size together (0 for one that is gone)."""
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except OSError:
            pass
    return total


class RotatingSink:
    """A sink that writes its output in segments: `folder/{stem}-{UTC start}{suffix}`, one sink per segment.

    Args:
        clock: The stream's SegmentClock, shared by all of its rotating sinks.
        open_segment: Makes the sink of one segment, given its file (JsonlSink, VideoSink, ...).
        folder: The stream's output folder.
        stem: The name before the stamp, e.g. "tracks".
        suffix: The name after it, e.g. ".jsonl".
    """

    def __init__(
        self, clock: SegmentClock, open_segment: Callable[[Path], Sink], folder: str | Path, stem: str, suffix: str
    ) -> None:
        self.clock = clock
        self.open_segment = open_segment
        self.folder = Path(folder)
        self.stem = stem
        self.suffix = suffix
        self.segments: list[Path] = []  # every segment opened, in order (retention may have deleted the oldest)
        self._sink: Sink | None = None
        self._start: int | None = None
        self._closed = False
        clock.attach(self.folder, stem, suffix)

    @property
    def pattern(self) -> str:
        """The glob of this sink's segment files in `folder`."""
        return f"{self.stem}-*{self.suffix}"

    @property
    def path(self) -> Path:
        """The current (or last) segment's file; before the first frame, the pattern of their names."""
        return self.segments[-1] if self.segments else self.folder / self.pattern

    def write(self, result: FrameResult) -> None:
        """Write one frame into its segment, first finishing the segment before and opening a new one when due.

        Raises:
            OutputError: The segment's sink failed (DiskFullError when the disk is full); a
                failure to finish the segment before is raised before the frame is written.
            ValueError: The sink was closed.
        """
        if self._closed:
            raise ValueError(f"{self.folder / self.pattern} is closed")
        start = self.clock.start_for(result.frame)
        if start != self._start:
            self._finish(prune=True)
            path = self.folder / f"{self.stem}-{segment_stamp(start)}{self.suffix}"
            self._sink = self.open_segment(path)
            self._start = start
            self.clock.hold(start)
            self.segments.append(path)
        self._sink.write(result)

    def on_event(self, event: SourceEvent) -> None:
        """Pass an event to the current segment's sink when it takes events (before the first frame there is none)."""
        if isinstance(self._sink, EventSink):
            self._sink.on_event(event)

    def _finish(self, prune: bool) -> None:
        """Close the open segment (its sink finalises the file), then let retention see it as finished."""
        sink, start = self._sink, self._start
        if sink is None:
            return
        self._sink, self._start = None, None
        try:
            sink.close()
        finally:
            self.clock.release(start, prune=prune)

    def close(self) -> None:
        """Finalise the open segment. It is kept whatever retention says: it holds the stream's last frames.

        Raises:
            OutputError: The segment's sink failed to finish its file.
        """
        self._closed = True
        self._finish(prune=False)


def rotating_sinks(
    folder: str | Path,
    output: OutputConfig,
    fps: Fraction,
    masks: MaskPolicy | None = None,
    now: Callable[[], float] = time.time,
) -> list[Sink]:
    """One stream's rotating outputs, sharing one SegmentClock: tracks always, annotated video and mot.txt as asked.

    Args:
        folder: The stream's output folder.
        output: The output settings: segment_minutes (required here), retention, video, mot.
        fps: The source's nominal frame rate, for the video.
        masks: Whose masks tracks.jsonl holds (default: output.masks).
        now: The wall clock (time.time; a stand-in in tests).

    Returns:
        The sinks: tracks-*.jsonl, then annotated-*.mp4 and mot-*.txt when asked for.

    Raises:
        ValueError: output.segment_minutes is not set.
    """
    if output.segment_minutes is None:
        raise ValueError("rotating outputs need output.segment_minutes")
    clock = SegmentClock(output.segment_minutes, output.retention, now=now)
    policy = masks or output.masks
    sinks: list[Sink] = [RotatingSink(clock, lambda p: JsonlSink(p, masks=policy), folder, "tracks", ".jsonl")]
    if output.video:
        sinks.append(RotatingSink(clock, lambda p: VideoSink(p, fps=fps), folder, "annotated", ".mp4"))
    if output.mot:
        sinks.append(RotatingSink(clock, MotSink, folder, "mot", ".txt"))
    return sinks
