"""What a worker sends home to the driver: each frame's tracks.jsonl record, each event, each stream's end.

Small picklable values, in order per stream. The worker's `HomeSink` is one more sink in a lane:
it turns results and events into records and puts them in the worker's `Outbox`, which the
driver empties with `StreamWorker.drain`. Masks travel only as the tracks.jsonl RLE that
`output.masks` asks for; the annotated video stays on the worker, which writes it itself.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..core import EventKind, FrameResult, SourceEvent, TrackState, ZoneEvent
from ..pipeline.summary import SourceSummary
from ..service.frames import MAX_VIEWER_FPS, Preview, encode_jpeg, event_json, frame_json
from ..sinks.jsonl import EventLogSink, TrackRecords
from ..sinks.mot import mot_lines

OUTBOX_CAPACITY = 2048
"""Records a worker holds for the driver; a full outbox holds its lanes back (a live source then drops, counted)."""


@dataclass(frozen=True)
class FrameRecord:
    """One frame's result as the driver writes it.

    Attributes:
        source_id: Its stream.
        frame: Its index.
        record: Its tracks.jsonl line (sinks/jsonl.py).
        mot: Its mot.txt lines, when `output.mot` asks for them.
        latency_s: Capture to result on the worker, in seconds; on the driver (what it yields), capture
            to written there.
        made_at: When it was made (the worker's monotonic clock).
    """

    source_id: str
    frame: int
    record: dict
    mot: tuple[str, ...] = ()
    latency_s: float = 0.0
    made_at: float = 0.0

    @property
    def target_found(self) -> bool:
        """Some target was found on this frame (not only predicted while lost)."""
        return any(t["target"] and t["state"] == TrackState.TRACKED.value for t in self.record["tracks"])


@dataclass(frozen=True)
class EventRecord:
    """One event: its events.jsonl line, and its form for the viewer (service/frames.py `event_json`).

    `frame_tied`: it comes of a frame's processing (a target change, a failed prompt, a zone or
    line event), just before that frame's record; a stream moved before that record came home
    makes it again.
    """

    source_id: str
    record: dict
    update: dict
    frame_tied: bool = False


@dataclass(frozen=True)
class StreamClosed:
    """A stream's outputs on its worker are final (it ended, was removed, or the worker stopped).

    `cut`: the worker's pipeline failed (not asked to stop): the stream did not end, it should move.
    """

    source_id: str
    summary: SourceSummary
    cut: bool = False


HomeMessage = FrameRecord | EventRecord | StreamClosed


class Outbox:
    """A bounded, thread-safe queue of HomeMessages: lanes put, the driver's `drain` takes.

    Args:
        capacity: How many messages it holds before `put` waits.
    """

    def __init__(self, capacity: int = OUTBOX_CAPACITY) -> None:
        self.capacity = capacity
        self._items: deque[HomeMessage] = deque()
        self._changed = threading.Condition()
        self._closed = False

    def put(self, message: HomeMessage) -> None:
        """Add a message; waits while the outbox is full (the driver is behind), unless it is closed."""
        with self._changed:
            while len(self._items) >= self.capacity and not self._closed:
                self._changed.wait(0.5)
            self._items.append(message)
            self._changed.notify_all()

    def take(self, max_wait_s: float) -> list[HomeMessage]:
        """Every message waiting, in order; waits up to `max_wait_s` for the first one."""
        with self._changed:
            if not self._items and not self._closed:
                self._changed.wait(max_wait_s)
            taken = list(self._items)
            self._items.clear()
            self._changed.notify_all()
        return taken

    def close(self) -> None:
        """No more waiting: `put` no longer blocks, `take` returns at once."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def __len__(self) -> int:
        return len(self._items)


class HomeSink:
    """A lane's sink on a worker that sends its results and events home (see the module docstring).

    Args:
        source_id: Its stream.
        outbox: The worker's outbox.
        records: Makes the tracks.jsonl records (with the masks `output.masks` asks for).
        mot: Also send each frame's mot.txt lines.
        summary_of: The stream's summary on this worker, read when it closes.
        failing: Whether the worker's pipeline is ending by a failure (read when it closes).
    """

    def __init__(
        self,
        source_id: str,
        outbox: Outbox,
        records: TrackRecords,
        mot: bool,
        summary_of: Callable[[], SourceSummary | None],
        failing: Callable[[], bool] = lambda: False,
    ) -> None:
        self.source_id = source_id
        self.outbox = outbox
        self.records = records
        self.mot = mot
        self.summary_of = summary_of
        self.failing = failing

    def write(self, result: FrameResult) -> None:
        """Send one frame's record home."""
        frame = result.frame
        now = time.monotonic()
        self.outbox.put(
            FrameRecord(
                frame.source_id,
                frame.index,
                self.records.record(result),
                tuple(mot_lines(result)) if self.mot else (),
                now - frame.captured_at,
                now,
            )
        )

    def on_event(self, event: SourceEvent | ZoneEvent) -> None:
        """Send one event's line home."""
        if isinstance(event, SourceEvent):
            record = EventLogSink.record(event)
            tied = event.kind in (EventKind.TARGETS_CHANGED, EventKind.PROMPT_FAILED)
        else:
            record, tied = event.to_json(), True
        self.outbox.put(EventRecord(event.source_id, record, event_json(event), tied))

    def close(self) -> None:
        """The stream's outputs here are final: say so, with its summary (a copy: the lane may go on counting)."""
        summary = self.summary_of()
        copy = dataclasses.replace(summary) if summary is not None else SourceSummary(self.source_id)
        self.outbox.put(StreamClosed(self.source_id, copy, self.failing()))


class PreviewTap:
    """A worker's sink keeping each stream's newest result, drawn and encoded only while someone watches.

    The driver names the watched streams in each `drain`; a stream's preview goes home at most
    `max_fps` times a second, and only when a newer frame came.

    Args:
        max_fps: At most this many previews a second per stream.
    """

    def __init__(self, max_fps: float = MAX_VIEWER_FPS) -> None:
        self.min_interval_s = 1.0 / max_fps
        self._latest: dict[str, FrameResult] = {}
        self._sent: dict[str, tuple[int, float]] = {}  # stream → (frame index, monotonic time) last sent
        self._lock = threading.Lock()

    def write(self, result: FrameResult) -> None:
        """Keep a reference to the newest result of its stream (nothing drawn here)."""
        with self._lock:
            self._latest[result.frame.source_id] = result

    def previews(self, watched: Iterable[str], running: Iterable[str]) -> list[Preview]:
        """The watched streams' newer frames, drawn and encoded now; streams not `running` are let go."""
        now = time.monotonic()
        with self._lock:
            keep = set(running)
            for gone in [i for i in self._latest if i not in keep]:
                del self._latest[gone]
                self._sent.pop(gone, None)
            due = []
            for source_id in watched:
                result = self._latest.get(source_id)
                index, at = self._sent.get(source_id, (-1, -1e9))
                if result is not None and result.frame.index != index and now - at >= self.min_interval_s:
                    due.append(result)
                    self._sent[source_id] = (result.frame.index, now)
        previews = []
        for result in due:
            jpeg = encode_jpeg(result)
            if jpeg is not None:
                previews.append(Preview(result.frame.source_id, result.frame.index, jpeg, frame_json(result)))
        return previews

    def close(self) -> None:
        """Let every result go."""
        with self._lock:
            self._latest.clear()
