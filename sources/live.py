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
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Literal, TypeVar

import av
from pydantic import Field

from ..core import EventKind, Frame, SourceEvent
from ..errors import ConfigError, SourceConnectionError, SourceError, error_reason
from ..settings import Fraction01, Settings
from .http_ranges import no_range_reason
from .redact import Redactor

log = logging.getLogger(__name__)

T = TypeVar("T")
_DEFAULT_FPS = Fraction(30)
_ENDED = "the stream ended"
_CLOCK_JUMP_S = 1.0  # a stream clock going back by more than this starts a new stretch of our timeline
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "srt", "udp", "tcp", "rtp")


class SourceState(enum.StrEnum):
    """Where a live source's connection state machine stands (see the module docstring)."""

    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    GAVE_UP = "gave_up"
    STOPPED = "stopped"


class ReconnectPolicy(Settings):
    """How a lost live source retries: config section `source.reconnect`.

    Exponential backoff with jitter: attempt n waits initial·multiplierⁿ⁻¹ (capped), ± jitter.
    """

    max_attempts: int | None = Field(
        None, ge=0, description="give a lost live source up after this many attempts (default: never)"
    )
    initial_delay_s: float = Field(0.5, ge=0, description="seconds before the first reconnect attempt")
    max_delay_s: float = Field(30.0, ge=0, description="the longest wait between attempts")
    multiplier: float = Field(2.0, ge=1.0, description="each wait is the previous one times this")
    # Cameras restarted together do not retry together.
    jitter: Fraction01 = Field(0.25, description="fraction of the delay drawn uniformly in ±jitter")
    # A flapping camera backs off and can give up, instead of being hammered at the first delay forever.
    stable_after_s: float = Field(
        5.0, ge=0, description="a connection that drops sooner than this counts as a failed attempt"
    )

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before reconnect attempt `attempt` (1-based).

        Args:
            attempt: The attempt about to be made; 1 waits initial_delay_s.
            rng: Draws the jitter (seeded in tests, so the delays repeat).

        Returns:
            initial·multiplier^(attempt-1), capped at max_delay_s, ± jitter; never negative.
        """
        try:
            grown = self.initial_delay_s * self.multiplier ** max(attempt - 1, 0)
        except OverflowError:  # attempt 1025 at ×2: hours into an outage, and still retrying
            grown = self.max_delay_s
        base = min(grown, self.max_delay_s)
        return max(base * (1.0 + rng.uniform(-self.jitter, self.jitter)), 0.0)

    def gives_up_after(self, attempt: int) -> bool:
        """Whether `attempt` failed attempts spend the allowed ones (never, without max_attempts)."""
        return self.max_attempts is not None and attempt >= self.max_attempts


class StreamSettings(Settings):
    """How live sources connect and reconnect (the connection keys of config section `source`)."""

    open_timeout_s: float = Field(10.0, gt=0, description="seconds to wait for a stream or camera to open")
    read_timeout_s: float = Field(5.0, gt=0, description="seconds without data before a live source counts as lost")
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport")
    # An http(s) URL whose container knows its duration (a file, a finished HLS playlist) is a
    # recording: read once, never dropped, its end is the end.
    live: bool | None = Field(
        None,
        description="force a stream to be treated as live (true) or as a recording (false); "
        "default: decided by the stream",
    )
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
        self._current: av.container.InputContainer | None = None  # the reader's connection, closed when frames() ends
        self._next_index = 0
        self._last_pts = -1.0
        self._last_arrival: float | None = None
        self._started_at = time.monotonic()
        self.state = SourceState.CONNECTING
        self._container = _in_background(self._connect)  # fails fast: a wrong URL or a missing camera is an error now
        self.fps = self._rate(self._container)
        if not self._is_live(self._container):
            self.is_live = False  # a recording: the pipeline reads it like a file
            self.frame_count = self._container.streams.video[0].frames or None

    # --- what subclasses provide -------------------------------------------------------------
    def _open(self) -> av.container.InputContainer:
        raise NotImplementedError

    def _is_live(self, container: av.container.InputContainer) -> bool:
        """False for a recording (read once like a file); cameras are always live."""
        return True

    # --- the state machine -------------------------------------------------------------------
    def frames(self) -> Iterator[Frame | SourceEvent]:
        """Frames from the connection made in the constructor on, with SourceEvents between them.

        Reconnects after a lost stream until the source is closed or the attempts are spent
        (then a GAVE_UP event ends it). A second call, or a call after close(), yields nothing.

        Raises:
            SourceError: A recording (not live) fails while being read: it is a broken file.
        """
        with self._handover:
            container, self._container = self._container, None
        if container is None:
            return  # frames() already ran, or the source was closed
        self._current = container
        try:
            yield from self._stream_with_reconnects(container)
        finally:
            self._current.close()  # whatever path ended it: the end, a stop, an error, the reader leaving early

    def _stream_with_reconnects(self, container: av.container.InputContainer) -> Iterator[Frame | SourceEvent]:
        policy = self.settings.reconnect
        self.state = SourceState.STREAMING
        yield self._event(EventKind.CONNECTED, container)
        decoded, failed = self._decoded(container), 0
        while True:
            connected_at = time.monotonic()
            reason = yield from self._decode(container, decoded)
            if self._closed.is_set() or not self.is_live:
                self.state = SourceState.STOPPED
                if reason != _ENDED and not self._closed.is_set():  # a recording that fails is a broken file
                    raise SourceError(f"reading {self.name} failed at frame {self._next_index}: {reason}")
                return
            lost_at = time.monotonic()
            if lost_at - connected_at >= policy.stable_after_s:
                failed = 0  # a connection that held counts as a success; one that flapped does not
            self.state = SourceState.RECONNECTING
            yield self._event(EventKind.LOST, message=reason)
            connection, failed, last_error = self._reconnect(failed)
            if connection is None:
                self.state = SourceState.STOPPED if self._closed.is_set() else SourceState.GAVE_UP
                if self.state is SourceState.GAVE_UP:
                    yield self._event(EventKind.GAVE_UP, attempt=failed, message=last_error)
                return
            container, decoded = connection
            self._current = container
            if self._closed.is_set():  # closed while the connection was being made
                self.state = SourceState.STOPPED
                return
            self.state = SourceState.STREAMING
            self.fps = self._rate(container)
            yield self._event(EventKind.RECONNECTED, container, attempt=failed, outage_s=time.monotonic() - lost_at)

    def close(self) -> None:
        """Stop: safe from any thread.

        A reader waiting between attempts stops at once; one in a network read notices when the read
        returns (within the read timeout) and closes its stream.
        """
        self._closed.set()
        with self._handover:
            container, self._container = self._container, None
        if container is not None:  # never handed to a reader
            container.close()

    @staticmethod
    def _decoded(container: av.container.InputContainer) -> Iterator[av.VideoFrame]:
        return container.decode(container.streams.video[0])

    def _decode(
        self, container: av.container.InputContainer, decoded_frames: Iterator[av.VideoFrame]
    ) -> Iterator[Frame]:
        """Frames until the stream ends or fails; returns why it stopped (redacted)."""
        base = container.streams.video[0].time_base
        # (stream pts, our pts, arrival) where this connection's clock meets our timeline; the
        # stream pts is None until a frame carries one (the first decoded frame often does not).
        origin: tuple[float | None, float, float] | None = None
        previous: float | None = None  # the last stream pts seen
        reason = _ENDED
        try:
            for decoded in decoded_frames:
                now = time.monotonic()
                stream_pts = float(decoded.pts * base) if decoded.pts is not None and base else None
                went_back = None not in (stream_pts, previous) and stream_pts < previous - _CLOCK_JUMP_S
                previous = stream_pts if stream_pts is not None else previous
                if origin is None or went_back:
                    # A new connection, or a stream clock that went back (a discontinuity, a wrap):
                    # continue our timeline from the last frame instead of following it back.
                    origin = (stream_pts, self._continue_timeline(now), now)
                elif origin[0] is None and stream_pts is not None:
                    origin = (stream_pts - (now - origin[2]), origin[1], origin[2])
                if stream_pts is not None and origin[0] is not None:
                    pts = origin[1] + stream_pts - origin[0]
                else:
                    pts = origin[1] + now - origin[2]
                if self._next_index:
                    pts = max(pts, self._last_pts + 1e-6)
                self._last_pts, self._last_arrival = pts, now
                image = decoded.to_ndarray(format="bgr24")
                yield Frame(image, self.source_id, self._next_index, pts, now)
                self._next_index += 1
                if self._closed.is_set():
                    break
        except (av.FFmpegError, OSError, EOFError) as exc:
            reason = self._explain(exc) if origin is not None else self._why_no_frame(self._explain(exc))
        finally:
            container.close()
        return reason

    def _continue_timeline(self, now: float) -> float:
        """Where a connection's first frame sits in pts.

        For the first connection: seconds since the source opened. For a reconnect: the last frame's
        pts plus the time since it arrived (a burst on connect may have run ahead of the wall clock,
        so that clock could go back).
        """
        if self._last_arrival is None:
            return now - self._started_at
        return self._last_pts + (now - self._last_arrival)

    def _connect(self) -> av.container.InputContainer:
        began = time.monotonic()
        try:
            container = self._open()
        except (av.FFmpegError, OSError, EOFError) as exc:
            why = self._redact(error_reason(exc))
            if time.monotonic() - began >= self.settings.open_timeout_s:  # FFmpeg words a timeout many ways
                why = f"no answer within {self.settings.open_timeout_s:g} s ({why})"
            raise SourceConnectionError(f"cannot open {self.name}: {why}") from None
        if not container.streams.video:
            container.close()
            raise SourceConnectionError(f"{self.name} has no video stream")
        container.streams.video[0].thread_type = "AUTO"
        return container

    def _reconnect(
        self, attempt: int
    ) -> tuple[tuple[av.container.InputContainer, Iterator[av.VideoFrame]] | None, int, str]:
        """Retry with backoff until a connection delivers a frame, the source is closed, or the attempts are spent.

        Counts on from `attempt` failed attempts. Returns ((container, its frames from the first
        on), attempts, last error); the first item is None when no connection was made.

        A connection only counts once a frame arrives: a server that accepts and then fails at
        once is a failed attempt, so backoff and the attempt limit still apply to it.
        """
        policy = self.settings.reconnect
        last_error = "reconnecting is off (max_attempts 0)" if policy.gives_up_after(0) else "the stream kept dropping"
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
                    why = _ENDED if isinstance(exc, StopIteration) else self._why_no_frame(self._explain(exc))
                    last_error = f"{self.name} opened but sent no frame: {why}"
                else:
                    return (container, itertools.chain([first], decoded)), attempt, ""
            log.info("%s: reconnect attempt %d failed: %s", self.name, attempt, last_error)
        return None, attempt, last_error

    def _explain(self, exc: BaseException) -> str:
        """Why a read failed, for events and logs (redacted)."""
        if isinstance(exc, av.error.ExitError):  # PyAV's timeout interrupts a read with "Immediate exit requested"
            return f"no data for {self.settings.read_timeout_s:g} s"
        return self._redact(error_reason(exc))

    def _why_no_frame(self, reason: str) -> str:
        """`reason` for a connection that failed before its first frame, with what is known of why."""
        return reason

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
    """A network stream PyAV can open: rtsp://, rtmp://, http(s):// (HLS playlists too), srt://, udp://.

    Connects in the constructor. An http(s) URL whose container knows its duration is a recording
    (not live) unless `settings.live` says otherwise.

    Args:
        url: The stream's URL; it may hold credentials, which never appear in messages or ids.
        source_id: The name in outputs and logs.
        settings: How to connect and reconnect; default: StreamSettings().
        seed: Seeds the reconnect jitter, for repeatable tests.

    Raises:
        SourceConnectionError: The stream cannot be opened, or has no video.
    """

    def __init__(
        self, url: str, source_id: str, settings: StreamSettings | None = None, seed: int | None = None
    ) -> None:
        settings = settings if settings is not None else StreamSettings()
        self.url = url
        self._no_range: str | None = None  # why reads fail before a frame (a server that cannot seek); None: not asked
        if settings.transport not in ("tcp", "udp"):
            raise ConfigError(f"RTSP transport must be tcp or udp, got {settings.transport!r}")
        super().__init__(url, source_id, settings, seed)

    def _is_live(self, container: av.container.InputContainer) -> bool:
        if self.settings.live is not None:
            return self.settings.live
        scheme = self.url.split(":", 1)[0].lower()
        return not (scheme in ("http", "https") and container.duration is not None)

    def _why_no_frame(self, reason: str) -> str:
        """For an http(s) file: says so when the server cannot seek and the file needs it (asked once)."""
        if self._no_range is None:
            scheme = self.url.split(":", 1)[0].lower()
            found = no_range_reason(self.url, self.settings.open_timeout_s) if scheme in ("http", "https") else None
            self._no_range = self._redact(found) if found else ""
        return f"{reason}: {self._no_range}" if self._no_range else reason

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

    Args:
        device: The device (`/dev/video0`) or, for lavfi, the filter graph.
        source_id: The name in outputs and logs.
        format: FFmpeg's input format (its `-f`): `v4l2` or `lavfi`.
        size: The capture size to ask for, e.g. "1280x720" (default: the device's).
        fps: The capture rate to ask for (default: the device's).
        settings: How to connect and reconnect; default: StreamSettings().
        seed: Seeds the reconnect jitter, for repeatable tests.

    Raises:
        SourceConnectionError: The device cannot be opened, or has no video.
    """

    def __init__(
        self,
        device: str,
        source_id: str,
        *,
        format: str = "v4l2",  # noqa: A002 - public keyword, named after av.open's and FFmpeg's `format`
        size: str | None = None,
        fps: float | None = None,
        settings: StreamSettings | None = None,
        seed: int | None = None,
    ) -> None:
        settings = settings if settings is not None else StreamSettings()
        self.device, self.format = device, format
        self.options: dict[str, str] = {}
        if size:
            self.options["video_size"] = size
        if fps:
            self.options["framerate"] = f"{fps:g}"
        super().__init__(f"{format}:{device}", source_id, settings, seed)

    def _open(self) -> av.container.InputContainer:
        s = self.settings
        return av.open(
            self.device,
            mode="r",
            format=self.format,
            options=dict(self.options),
            timeout=(s.open_timeout_s, s.read_timeout_s),
        )


def _in_background(open_it: Callable[[], T]) -> T:
    """Run a blocking open in a daemon thread while this thread waits in short slices.

    So Ctrl-C is taken at once: inside av.open the interrupt is held off until the open times out.
    """
    done = threading.Event()
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(open_it())
        except BaseException as exc:  # noqa: BLE001 - handed back to the waiting thread
            outcome.append(exc)
        done.set()

    threading.Thread(target=run, name="open-source", daemon=True).start()
    while not done.wait(0.1):
        pass
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]
