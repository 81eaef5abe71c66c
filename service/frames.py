"""FrameHub: the latest frame of every stream, for the viewer, as JPEG and as tracks JSON.

The hub is one more sink of the pipeline (`sinks=[hub]`). Its `write` only keeps a reference to
the newest FrameResult of each stream and wakes that stream's viewers, so the pipeline never waits
for a browser. Each viewer connection has its own latest-frame slot: it is woken when a newer frame
is there and takes the newest one then, so a slow viewer sees fewer frames, never old ones, and
never a backlog. A frame is drawn and JPEG-encoded lazily, when a viewer asks for it, and at most
once however many viewers watch it (`encoded` counts the encodings); nobody watching, nothing is
encoded.

The viewers live on the server's asyncio loop; the pipeline writes from its own thread, so it
wakes them with `loop.call_soon_threadsafe`, and encoding runs in a worker thread
(`anyio.to_thread`), never on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import cv2

from ..core import FrameResult, SourceEvent, TrackState, ZoneEvent
from ..sinks.draw import annotate

log = logging.getLogger(__name__)

JPEG_QUALITY = 80
# Browsers show no more than this; it also bounds the encoding a fast GPU pipeline costs the CPU.
MAX_VIEWER_FPS = 30.0
# Events a viewer of `updates` has not read yet are kept up to this many (the oldest go first):
# events are rare, this only bounds a viewer that stopped reading.
MAX_QUEUED_EVENTS = 256
MJPEG_BOUNDARY = "frame"
# A stream whose still frame was asked for counts as watched this long (see FrameHub.wanted).
STILL_WANTED_S = 5.0


@dataclass(frozen=True, eq=False)
class Preview:
    """A frame drawn and encoded elsewhere (a cluster worker, cluster/), with its overlay (`frame_json`).

    Attributes:
        source_id: Its stream.
        index: Its frame index.
        jpeg: The annotated frame as JPEG.
        overlay: Its tracks as `updates` sends them.
    """

    source_id: str
    index: int
    jpeg: bytes
    overlay: dict


@dataclass(eq=False)
class _Slot:
    """One stream's newest frame (or preview), its version, and its JPEG once encoded."""

    result: FrameResult | Preview
    version: int = 1
    jpeg: bytes | None = None
    jpeg_version: int = 0  # the version `jpeg` (or a failed encoding) belongs to
    failed: bool = False  # encoding jpeg_version failed: serve nothing for it, do not retry
    encoded_at: float = -1e9  # monotonic time of the last encoding, for MAX_VIEWER_FPS
    encoding: threading.Lock = field(default_factory=threading.Lock)  # one encoding at a time per stream


@dataclass(eq=False)
class _Subscription:
    """One viewer connection: its waiter on its event loop and, for `updates`, its unread events."""

    stream_id: str
    loop: asyncio.AbstractEventLoop
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pending: bool = False  # a wake-up is scheduled on the loop and has not run yet
    ended: bool = False  # the hub closed or the stream was forgotten
    events: deque | None = None  # (frame version when it came, event dict); None: this viewer takes no events

    def woken(self) -> None:
        """On the loop: the scheduled wake-up runs."""
        self.pending = False
        self.wake.set()


class FrameHub:
    """The latest frame of each stream, shared by every viewer (a Sink and EventSink of the pipeline).

    Args:
        quality: JPEG quality, 0-100.
        max_fps: At most this many frames a second go to each viewer of a stream, and get encoded
            (None: every frame the pipeline makes).

    Attributes:
        encoded: JPEG encodings made so far (one per frame shown at most, none without viewers).
    """

    def __init__(self, quality: int = JPEG_QUALITY, max_fps: float | None = MAX_VIEWER_FPS) -> None:
        if not 0 <= quality <= 100:
            raise ValueError(f"JPEG quality must be 0-100, got {quality}")
        if max_fps is not None and max_fps <= 0:
            raise ValueError(f"max_fps must be > 0, got {max_fps}")
        self.quality = quality
        self.min_interval_s = 0.0 if max_fps is None else 1.0 / max_fps
        self.encoded = 0
        self._lock = threading.Lock()  # guards every dict below and the slots' frame fields
        self._slots: dict[str, _Slot] = {}
        self._subs: dict[str, set[_Subscription]] = {}
        self._closed = False
        self._gone: set[str] = set()  # forgotten (removed) streams: a viewer arriving late ends at once
        self._asked: dict[str, float] = {}  # stream → when its still frame (latest_jpeg) was last asked for

    # ---- the pipeline's side (its thread): cheap, never blocks on a viewer ----

    def write(self, result: FrameResult) -> None:
        """Keep `result` as its stream's newest frame and wake the stream's viewers.

        Args:
            result: The frame's result; only a reference is kept (nothing is drawn or copied here).
        """
        self._keep(result.frame.source_id, result)

    def write_preview(self, preview: Preview) -> None:
        """Keep a frame drawn and encoded elsewhere as its stream's newest (a cluster run's viewers).

        Args:
            preview: The frame, encoded, with its overlay.
        """
        self._keep(preview.source_id, preview)

    def _keep(self, stream_id: str, result: FrameResult | Preview) -> None:
        with self._lock:
            if self._closed:
                return
            self._gone.discard(stream_id)  # its frames come again: the id is in use again
            slot = self._slots.get(stream_id)
            if slot is None:
                self._slots[stream_id] = _Slot(result)
            else:
                slot.result, slot.version = result, slot.version + 1
            to_wake = self._due(stream_id)
        _wake(to_wake)

    def on_event(self, event: SourceEvent | ZoneEvent) -> None:
        """Hand a source's event to the viewers of `updates` of its stream.

        Args:
            event: What happened (its message never holds credentials: sources redact them).
        """
        self.on_update(event.source_id, event_json(event))

    def on_update(self, stream_id: str, update: dict) -> None:
        """Hand an event already in `event_json`'s form to the viewers of `updates` of its stream.

        Args:
            stream_id: Its stream.
            update: The event as `event_json` makes it (a cluster worker made it).
        """
        with self._lock:
            if self._closed:
                return
            slot = self._slots.get(stream_id)
            version = slot.version if slot is not None else 0
            for sub in self._subs.get(stream_id, ()):
                if sub.events is not None:
                    sub.events.append((version, update))
            to_wake = self._due(stream_id)
        _wake(to_wake)

    def _due(self, stream_id: str) -> list[_Subscription]:
        """Under the lock: the stream's viewers with no wake-up already on its way (one is enough)."""
        due = [sub for sub in self._subs.get(stream_id, ()) if not sub.pending]
        for sub in due:
            sub.pending = True
        return due

    def forget(self, stream_id: str) -> None:
        """Drop a removed stream: its frame is released and its viewers' iterators end.

        Args:
            stream_id: The stream's id (unknown ids are ignored).
        """
        with self._lock:
            self._slots.pop(stream_id, None)
            self._asked.pop(stream_id, None)
            self._gone.add(stream_id)
            ending = self._subs.pop(stream_id, set())
        _end(ending)

    def expect(self, stream_id: str) -> None:
        """A stream (perhaps of a forgotten id) is being added: viewers may wait for its first frame.

        Args:
            stream_id: The stream's id.
        """
        with self._lock:
            self._gone.discard(stream_id)

    def close(self) -> None:
        """End every viewer's iterator and release every frame (the server can then shut down).

        Later frames are ignored; closing twice is harmless.
        """
        with self._lock:
            self._closed = True
            self._slots.clear()
            ending = [sub for subs in self._subs.values() for sub in subs]
            self._subs.clear()
        _end(ending)

    # ---- the server's side ----

    @property
    def viewers(self) -> int:
        """Open viewer subscriptions (`jpegs` and `updates` iterators), over every stream."""
        with self._lock:
            return sum(len(subs) for subs in self._subs.values())

    def viewers_of(self, stream_id: str) -> int:
        """Open viewer subscriptions of one stream.

        Args:
            stream_id: The stream's id.

        Returns:
            How many `jpegs` and `updates` iterators are open on it.
        """
        with self._lock:
            return len(self._subs.get(stream_id, ()))

    def latest_jpeg(self, stream_id: str) -> bytes | None:
        """The stream's newest frame, drawn (annotate) and JPEG-encoded: blocking, call it in a thread.

        Args:
            stream_id: The stream's id.

        Returns:
            The JPEG, or None when the stream has no frame (yet, or any more).
        """
        with self._lock:
            self._asked[stream_id] = time.monotonic()
        got = self._encode_latest(stream_id)
        return None if got is None else got[1]

    def wanted(self, stream_id: str) -> bool:
        """Someone watches the stream, or asked for its frame in the last STILL_WANTED_S seconds.

        Where frames are drawn elsewhere (a cluster worker), only wanted ones are sent: a first
        still of a stream may then be a moment away (404 until its first preview comes).

        Args:
            stream_id: The stream's id.
        """
        with self._lock:
            asked = self._asked.get(stream_id, -math.inf)
            return bool(self._subs.get(stream_id)) or time.monotonic() - asked < STILL_WANTED_S

    async def jpegs(self, stream_id: str) -> AsyncIterator[bytes]:
        """Each newer frame of the stream as JPEG, as soon as it is ready; frames missed meanwhile are skipped.

        Waits for the stream's first frame when it has none yet. Ends when the hub closes or the
        stream is forgotten.

        Args:
            stream_id: The stream's id.

        Yields:
            JPEG bytes, each of a newer frame than the one before.
        """
        sub = self._subscribe(stream_id, events=False)
        try:
            seen = 0
            while await self._newer(sub, seen):
                await self._pace(stream_id)
                got = await anyio.to_thread.run_sync(self._encode_latest, stream_id)
                if got is None:  # forgotten meanwhile
                    return
                seen, jpeg = got
                if jpeg is not None:
                    yield jpeg
        finally:
            self._unsubscribe(sub)

    async def mjpeg(self, stream_id: str) -> AsyncIterator[bytes]:
        """The body of a `multipart/x-mixed-replace; boundary=frame` response: one part per JPEG.

        Each part ends with the next boundary line, so a browser shows a frame as soon as it
        arrives instead of when the next one starts.

        Args:
            stream_id: The stream's id.

        Yields:
            The opening boundary, then one part (headers, JPEG, boundary) per frame.
        """
        boundary = f"--{MJPEG_BOUNDARY}\r\n".encode()
        yield boundary
        async for jpeg in self.jpegs(stream_id):
            head = f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
            yield head + jpeg + b"\r\n" + boundary

    async def updates(self, stream_id: str) -> AsyncIterator[dict]:
        """The stream's events and, per newer frame, its tracks (see `frame_json`), for the page's overlay.

        Events come in their order with the frames; a slow reader skips frames, not events (up to
        MAX_QUEUED_EVENTS unread). Frames come at most `max_fps` a second, like the JPEGs. Ends
        when the hub closes or the stream is forgotten.

        Args:
            stream_id: The stream's id.

        Yields:
            `{"event": kind, ...}` (see `event_json`) or a frame's `{"stream", "frame", ...}`.
        """
        sub = self._subscribe(stream_id, events=True)
        try:
            seen, sent_at = 0, -math.inf
            while await self._newer(sub, seen):
                wait = sent_at + self.min_interval_s - time.monotonic()
                if wait > 0:
                    await anyio.sleep(wait)
                with self._lock:
                    slot = self._slots.get(stream_id)
                    events = list(sub.events)
                    sub.events.clear()
                    result, version = (slot.result, slot.version) if slot is not None else (None, seen)
                # Events that came before the newest frame go first, those after it follow it.
                for _, event in (e for e in events if e[0] < version):
                    yield event
                if result is not None and version > seen:
                    seen, sent_at = version, time.monotonic()
                    yield result.overlay if isinstance(result, Preview) else frame_json(result)
                for _, event in (e for e in events if e[0] >= version):
                    yield event
        finally:
            self._unsubscribe(sub)

    def _subscribe(self, stream_id: str, events: bool) -> _Subscription:
        sub = _Subscription(
            stream_id, asyncio.get_running_loop(), events=deque(maxlen=MAX_QUEUED_EVENTS) if events else None
        )
        with self._lock:
            if self._closed or stream_id in self._gone:  # a viewer that raced a removal ends at once
                sub.ended = True
            else:
                self._subs.setdefault(stream_id, set()).add(sub)
        return sub

    def _unsubscribe(self, sub: _Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.stream_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.stream_id]

    async def _newer(self, sub: _Subscription, seen: int) -> bool:
        """Wait until the stream has a frame newer than `seen` or unread events; False once it ended."""
        while True:
            # Cleared before looking, so a write between the look and the wait still wakes us.
            sub.wake.clear()
            with self._lock:
                if sub.ended:
                    return False
                slot = self._slots.get(sub.stream_id)
                if (slot is not None and slot.version > seen) or sub.events:
                    return True
            await sub.wake.wait()

    async def _pace(self, stream_id: str) -> None:
        """Hold a viewer back until the stream's last encoding is min_interval_s old.

        Viewers of a stream all wait for the same moment, so they take the same frame then and
        share its encoding.
        """
        with self._lock:
            slot = self._slots.get(stream_id)
            wait = 0.0 if slot is None else slot.encoded_at + self.min_interval_s - time.monotonic()
        if wait > 0:
            await anyio.sleep(wait)

    def _encode_latest(self, stream_id: str) -> tuple[int, bytes | None] | None:
        """(version, JPEG) of the stream's newest frame, encoded now unless it already is; None: no frame.

        The JPEG is None when this frame could not be encoded (logged once, not retried).
        """
        with self._lock:
            slot = self._slots.get(stream_id)
        if slot is None:
            return None
        with slot.encoding:
            with self._lock:
                result, version = slot.result, slot.version
            if slot.jpeg_version != version:
                jpeg = self._encode(result)
                with self._lock:
                    slot.jpeg_version, slot.failed = version, jpeg is None
                    slot.jpeg = jpeg or slot.jpeg
                    slot.encoded_at = time.monotonic()
                    self.encoded += 1
            return version, None if slot.failed else slot.jpeg

    def _encode(self, result: FrameResult | Preview) -> bytes | None:
        """The frame drawn (annotate) and encoded; None, with a warning, when that fails."""
        if isinstance(result, Preview):  # drawn and encoded where it was made
            return result.jpeg
        return encode_jpeg(result, self.quality)


def encode_jpeg(result: FrameResult, quality: int = JPEG_QUALITY) -> bytes | None:
    """A frame drawn (annotate) and JPEG-encoded; None, with a warning, when that fails.

    Args:
        result: The frame's result.
        quality: JPEG quality, 0-100.

    Returns:
        The JPEG, or None.
    """
    try:
        ok, buffer = cv2.imencode(".jpg", annotate(result), [cv2.IMWRITE_JPEG_QUALITY, quality])
    except (cv2.error, ValueError, RuntimeError) as exc:
        ok, buffer = False, exc
    if not ok:
        log.warning("cannot show frame %d of %s: %s", result.frame.index, result.frame.source_id, buffer)
        return None
    return buffer.tobytes()


def frame_json(result: FrameResult) -> dict:
    """One frame's tracks as `updates` sends them: boxes in source pixels, removed tracks left out.

    Args:
        result: The frame's result.

    Returns:
        `{"stream", "frame", "width", "height", "tracks": [{"id", "box", "target", "state"}], "targets"}`.
    """
    frame = result.frame
    return {
        "stream": frame.source_id,
        "frame": frame.index,
        "width": frame.width,
        "height": frame.height,
        "tracks": [
            {
                "id": track.id,
                "box": [round(float(v), 1) for v in track.box],
                "target": track.is_target,
                "state": track.state.value,
            }
            for track in result.tracks
            if track.state is not TrackState.REMOVED
        ],
        "targets": [track.id for track in result.targets],
    }


def event_json(event: SourceEvent | ZoneEvent) -> dict:
    """A source's event as `updates` sends it: its kind, stream, frame and the fields it has.

    Args:
        event: The event; a zone event is its own JSON (`ZoneEvent.to_json`) with `stream` added.

    Returns:
        `{"event": kind, "stream", "frame": next frame index, "at": wall-clock time, ...}`.
    """
    if isinstance(event, ZoneEvent):
        return {**event.to_json(), "stream": event.source_id, "at": event.at}
    update = {
        "event": event.kind.value,
        "stream": event.source_id,
        "frame": event.next_frame,
        "at": event.at,
    }
    optional = {
        "message": event.message or None,
        "attempt": event.attempt or None,
        "width": event.width,
        "height": event.height,
        "fps": event.fps,
        "outage_s": event.outage_s,
        "added": list(event.added) or None,
        "dropped": list(event.dropped) or None,
    }
    update.update((key, value) for key, value in optional.items() if value is not None)
    return update


def _wake(subs: list[_Subscription]) -> None:
    """Schedule each subscription's wake-up on its own loop (from any thread)."""
    for sub in subs:
        try:
            sub.loop.call_soon_threadsafe(sub.woken)
        except RuntimeError:  # its loop is closed: the server is gone, nobody is waiting
            sub.ended = True


def _end(subs: list[_Subscription] | set[_Subscription]) -> None:
    """Mark subscriptions ended and wake them, so their iterators return."""
    for sub in subs:
        sub.ended = True
    _wake(list(subs))
