"""Live sources: network streams (RTSP, RTMP, HTTP(S)/HLS, ...) and capture devices (V4L2, lavfi).

Both are `LiveSource`s, which own the connection state machine:

    CONNECTING ──▶ STREAMING ──(EOF, error, read timeout)──▶ RECONNECTING ──▶ STREAMING ...
                                                             └─(attempts spent)─▶ GAVE_UP
    any state ──close()──▶ STOPPED

The first connection is made in the constructor, so a wrong URL or a missing camera fails at
once with a SourceConnectionError. Once streaming, a lost stream is retried with exponential
backoff and jitter; each transition is a SourceEvent yielded between the frames. Frame indexes
keep counting across reconnects, and `pts` is seconds since the first frame: the stream's
own clock within a connection, and across a gap the wall-clock time between the last frame
before it and the first after it, so outputs show an outage as time, never as a reset.
"""

from __future__ import annotations

import enum
import itertools
import logging
import random
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import av

from ..core import EventKind, Frame, SourceEvent
from ..errors import ConfigError, SourceConnectionError
from .redact import Redactor

log = logging.getLogger(__name__)

_DEFAULT_FPS = Fraction(30)
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "srt", "udp", "tcp", "rtp")


class SourceState(str, enum.Enum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    GAVE_UP = "gave_up"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ReconnectPolicy:
    """Exponential backoff with jitter: attempt n waits initial·multiplierⁿ⁻¹ (capped), ± jitter."""

    initial_delay_s: float = 0.5
    max_delay_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.25  # fraction of the delay, drawn uniformly in ±jitter: cameras restarted together do not retry together
    max_attempts: int | None = None  # None: retry forever

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.initial_delay_s * self.multiplier ** max(attempt - 1, 0), self.max_delay_s)
        return max(base * (1.0 + rng.uniform(-self.jitter, self.jitter)), 0.0)

    def gives_up_after(self, attempt: int) -> bool:
        return self.max_attempts is not None and attempt >= self.max_attempts


@dataclass(frozen=True)
class StreamSettings:
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0  # no packet for this long counts as a lost stream
    transport: str = "tcp"  # RTSP only: tcp or udp
    reconnect: ReconnectPolicy = ReconnectPolicy()


class LiveSource:
    """Shared by streams and cameras; subclasses say how to open the container."""

    is_live = True
    frame_count = None

    def __init__(self, name: str, source_id: str, settings: StreamSettings, seed: int | None = None) -> None:
        self.source_id = source_id
        self.settings = settings
        self._redact = Redactor(name)
        self.name = self._redact.display  # safe to print
        self._rng = random.Random(seed)
        self._closed = threading.Event()
        self._handover = threading.Lock()  # the first container goes to frames() or close(), never both
        self._next_index = 0
        self._last_pts = -1.0
        self._last_arrival: float | None = None
        self._started_at = time.monotonic()
        self.state = SourceState.CONNECTING
        self._container = self._connect()  # fails fast: a wrong URL or a missing camera is an error now
        self.fps = self._rate(self._container)

    # --- what subclasses provide -------------------------------------------------------------
    def _open(self) -> av.container.InputContainer:
        raise NotImplementedError

    # --- the state machine -------------------------------------------------------------------
    def frames(self) -> Iterator[Frame | SourceEvent]:
        with self._handover:
            container, self._container = self._container, None
        if container is None:
            return  # frames() already ran, or the source was closed
        self.state = SourceState.STREAMING
        yield self._event(EventKind.CONNECTED, container)
        decoded = self._decoded(container)
        while True:
            reason = yield from self._decode(container, decoded)
            if self._closed.is_set():
                self.state = SourceState.STOPPED
                return
            lost_at = time.monotonic()
            self.state = SourceState.RECONNECTING
            yield self._event(EventKind.LOST, message=reason)
            connection, attempts, last_error = self._reconnect()
            if connection is None:
                if self._closed.is_set():
                    self.state = SourceState.STOPPED
                    return
                self.state = SourceState.GAVE_UP
                yield self._event(EventKind.GAVE_UP, attempt=attempts, message=last_error)
                return
            container, decoded = connection
            self.state = SourceState.STREAMING
            self.fps = self._rate(container)
            yield self._event(EventKind.RECONNECTED, container, attempt=attempts,
                              outage_s=time.monotonic() - lost_at)

    def close(self) -> None:
        """Stop: safe from any thread. A reader waiting between attempts stops at once; one in a
        network read notices when the read returns (within the read timeout) and closes its stream."""
        self._closed.set()
        with self._handover:
            container, self._container = self._container, None
        if container is not None:  # never handed to a reader
            container.close()

    @staticmethod
    def _decoded(container: av.container.InputContainer) -> Iterator[av.VideoFrame]:
        return container.decode(container.streams.video[0])

    def _decode(self, container: av.container.InputContainer, decoded_frames: Iterator[av.VideoFrame]) -> Iterator[Frame]:
        """Frames until the stream ends or fails; returns why it stopped (redacted)."""
        base = container.streams.video[0].time_base
        start: float | None = None  # this connection's first frame: its pts on our timeline, its arrival
        arrived_at = 0.0
        first_stream_pts: float | None = None
        reason = "the stream ended"
        try:
            for decoded in decoded_frames:
                now = time.monotonic()
                if start is None:
                    start, arrived_at = self._continue_timeline(now), now
                elapsed = now - arrived_at
                if decoded.pts is not None and base:
                    stream_pts = float(decoded.pts * base)
                    if first_stream_pts is None:
                        first_stream_pts = stream_pts - elapsed
                    pts = start + stream_pts - first_stream_pts
                else:
                    pts = start + elapsed
                if self._next_index:
                    pts = max(pts, self._last_pts + 1e-6)
                self._last_pts, self._last_arrival = pts, now
                image = decoded.to_ndarray(format="bgr24")
                yield Frame(image, self.source_id, self._next_index, pts, now)
                self._next_index += 1
                if self._closed.is_set():
                    break
        except (av.FFmpegError, OSError, EOFError) as exc:
            reason = self._explain(exc)
        finally:
            container.close()
        return reason

    def _continue_timeline(self, now: float) -> float:
        """Where a connection's first frame sits in pts: seconds since the source opened for the
        first connection; for a reconnect, the last frame's pts plus the time since it arrived
        (a burst on connect may have run ahead of the wall clock, so that clock could go back)."""
        if self._last_arrival is None:
            return now - self._started_at
        return self._last_pts + (now - self._last_arrival)

    def _connect(self) -> av.container.InputContainer:
        try:
            container = self._open()
        except (av.FFmpegError, OSError, EOFError) as exc:
            raise SourceConnectionError(f"cannot open {self.name}: {self._redact(_reason(exc))}") from None
        if not container.streams.video:
            container.close()
            raise SourceConnectionError(f"{self.name} has no video stream")
        container.streams.video[0].thread_type = "AUTO"
        return container

    def _reconnect(self) -> tuple[tuple[av.container.InputContainer, Iterator[av.VideoFrame]] | None, int, str]:
        """Retry with backoff until a connection delivers a frame, the source is closed, or the
        attempts are spent: ((container, its frames from the first on), attempts, last error).

        A connection only counts once a frame arrives: a server that accepts and then fails at
        once is a failed attempt, so backoff and the attempt limit still apply to it."""
        policy, attempt = self.settings.reconnect, 0
        last_error = "reconnecting is off (max_attempts 0)" if policy.gives_up_after(0) else ""
        while not policy.gives_up_after(attempt):
            delay = policy.delay(attempt + 1, self._rng)
            if self._closed.wait(delay):
                return None, attempt, last_error
            attempt += 1
            try:
                container = self._connect()
            except SourceConnectionError as exc:
                last_error = str(exc)
            else:
                decoded = self._decoded(container)
                try:
                    first = next(decoded)
                except (StopIteration, av.FFmpegError, OSError, EOFError) as exc:
                    container.close()
                    why = "the stream ended" if isinstance(exc, StopIteration) else self._explain(exc)
                    last_error = f"{self.name} opened but sent no frame: {why}"
                else:
                    return (container, itertools.chain([first], decoded)), attempt, ""
            log.info("%s: reconnect attempt %d failed: %s", self.name, attempt, last_error)
        return None, attempt, last_error

    def _explain(self, exc: BaseException) -> str:
        """Why a read failed, for events and logs (redacted)."""
        if isinstance(exc, av.error.ExitError):  # PyAV's timeout interrupts a read with "Immediate exit requested"
            return f"no data for {self.settings.read_timeout_s:g} s"
        return self._redact(_reason(exc))

    def _event(self, kind: EventKind, container: av.container.InputContainer | None = None, **fields) -> SourceEvent:
        size: dict = {}
        if container is not None:
            ctx = container.streams.video[0].codec_context
            size = {"width": ctx.width or None, "height": ctx.height or None, "fps": float(self._rate(container))}
        return SourceEvent(self.source_id, kind, self._next_index, time.time(), **size, **fields)

    @staticmethod
    def _rate(container: av.container.InputContainer) -> Fraction:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return Fraction(rate) if rate and 0 < rate <= 1000 else _DEFAULT_FPS


class StreamSource(LiveSource):
    """A network stream PyAV can open: rtsp://, rtmp://, http(s):// (HLS playlists too), srt://, udp://."""

    def __init__(self, url: str, source_id: str, settings: StreamSettings = StreamSettings(), seed: int | None = None) -> None:
        self.url = url
        if settings.transport not in ("tcp", "udp"):
            raise ConfigError(f"RTSP transport must be tcp or udp, got {settings.transport!r}")
        super().__init__(url, source_id, settings, seed)

    def _options(self) -> dict[str, str]:
        scheme = self.url.split(":", 1)[0].lower()
        if scheme in ("rtsp", "rtsps"):
            return {"rtsp_transport": self.settings.transport}
        return {}

    def _open(self) -> av.container.InputContainer:
        s = self.settings
        return av.open(self.url, mode="r", options=self._options(), timeout=(s.open_timeout_s, s.read_timeout_s))


class CameraSource(LiveSource):
    """A capture device through FFmpeg's device demuxers: V4L2 (`/dev/videoN`) or a lavfi graph.

    `lavfi` (e.g. `testsrc=size=640x480:rate=30,realtime`) is a virtual camera: it runs through
    exactly this code path, which is how cameras are tested on machines without one.
    """

    def __init__(
        self,
        device: str,
        source_id: str,
        *,
        format: str = "v4l2",
        size: str | None = None,
        fps: float | None = None,
        settings: StreamSettings = StreamSettings(),
        seed: int | None = None,
    ) -> None:
        self.device, self.format = device, format
        self.options: dict[str, str] = {}
        if size:
            self.options["video_size"] = size
        if fps:
            self.options["framerate"] = f"{fps:g}"
        super().__init__(f"{format}:{device}", source_id, settings, seed)

    def _open(self) -> av.container.InputContainer:
        s = self.settings
        return av.open(self.device, mode="r", format=self.format, options=dict(self.options),
                       timeout=(s.open_timeout_s, s.read_timeout_s))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "end of stream"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
