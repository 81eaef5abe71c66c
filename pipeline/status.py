"""What a running pipeline can say about itself: each stream's state and rates, and its histograms.

The pipeline keeps these up to date as results go by; the service reads them for `/api/streams`,
`/readyz` and `/metrics` (service/metrics.py turns them into Prometheus families). Nothing here
imports prometheus_client: a pipeline without the service pays for a few counters only.
"""

from __future__ import annotations

import bisect
import enum
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..core import PlaceKind, PlaceState

# Latency buckets in seconds: a frame is seen within a frame time (33 ms) on a GPU, within a few
# hundred milliseconds on a CPU; above 10 s something is wrong.
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
RATE_WINDOW_S = 5.0  # fps and the latency percentiles are over the frames of the last few seconds
RATE_WINDOW_FRAMES = 512  # ... and at most this many of them (a bound on memory at any rate)


class StreamState(enum.StrEnum):
    """Where a stream is; `/api/streams` shows it as `state`."""

    CONNECTING = "connecting"  # added, no frame yet (a live source may be opening its stream)
    STREAMING = "streaming"  # frames arrive
    RECONNECTING = "reconnecting"  # a live source lost its stream and is trying again
    GAVE_UP = "gave_up"  # a live source ran out of reconnect attempts
    ENDED = "ended"  # a file or folder reached its end, the source failed, or it was removed


@dataclass(frozen=True)
class StreamStatus:
    """One stream's state and counts at one moment.

    Attributes:
        id: The source id.
        state: Where it is (StreamState).
        frames: Frames segmented so far.
        dropped: Frames never segmented (dropped to stay current, or left at a stop).
        reconnects: Times a live source got its stream back.
        fps: Frames segmented per second over the last few seconds.
        latency_p50_ms: Median time from a frame's capture to its result, over the same frames.
        latency_p99_ms: Its 99th percentile.
        targets: The current target ids.
        is_live: A live source (stream or camera).
        width: The latest frame's width in pixels (None before the first frame).
        height: Its height.
        error: Why the source ended, when it failed or gave up.
        places: Its zones and lines as of its latest frame (counts inside, crossings).
        zone_events: Zone events so far, as (place, event kind, count).
    """

    id: str
    state: StreamState
    frames: int = 0
    dropped: int = 0
    reconnects: int = 0
    fps: float = 0.0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    targets: tuple[int, ...] = ()
    is_live: bool = False
    width: int | None = None
    height: int | None = None
    error: str | None = None
    places: tuple[PlaceState, ...] = ()
    zone_events: tuple[tuple[str, str, int], ...] = ()

    def to_json(self) -> dict:
        """The stream as `/api/streams` lists it."""
        return {
            "id": self.id,
            "state": self.state.value,
            "frames": self.frames,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
            "fps": round(self.fps, 2),
            "latency_ms": {
                "p50": None if self.latency_p50_ms is None else round(self.latency_p50_ms, 1),
                "p99": None if self.latency_p99_ms is None else round(self.latency_p99_ms, 1),
            },
            "targets": list(self.targets),
            "live": self.is_live,
            "width": self.width,
            "height": self.height,
            "error": self.error,
            "zones": {p.name: {"count": p.count, "ids": list(p.ids)} for p in self.places if p.kind is PlaceKind.ZONE},
            "lines": {
                p.name: {"in": p.crossed_in, "out": p.crossed_out} for p in self.places if p.kind is PlaceKind.LINE
            },
        }


@dataclass(frozen=True)
class HistogramSnapshot:
    """A histogram's cumulative counts, as Prometheus exposes them.

    Attributes:
        bounds: The upper bounds of the buckets (without +Inf).
        cumulative: Observations at or below each bound, then the total (+Inf): len(bounds) + 1.
        total: The sum of every observation.
    """

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    total: float

    @property
    def count(self) -> int:
        """Observations in all."""
        return self.cumulative[-1]


class Histogram:
    """A thread-safe histogram with fixed buckets (the pipeline's own: no global registry).

    Args:
        bounds: Increasing upper bounds of the buckets.
    """

    def __init__(self, bounds: tuple[float, ...]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"histogram bounds must increase, got {bounds}")
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(bounds) + 1)
        self._total = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        """Count one observation."""
        with self._lock:
            self._counts[bisect.bisect_left(self.bounds, value)] += 1
            self._total += value

    def snapshot(self) -> HistogramSnapshot:
        """The counts so far, cumulative."""
        with self._lock:
            counts, total = list(self._counts), self._total
        running, cumulative = 0, []
        for c in counts:
            running += c
            cumulative.append(running)
        return HistogramSnapshot(self.bounds, tuple(cumulative), total)


@dataclass
class RecentFrames:
    """The (time, latency) of a stream's recent frames, for its fps and latency percentiles."""

    window_s: float = RATE_WINDOW_S
    _frames: deque = field(default_factory=lambda: deque(maxlen=RATE_WINDOW_FRAMES))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, at: float, latency_s: float) -> None:
        """One frame's result, made at monotonic time `at`, `latency_s` after its capture."""
        with self._lock:
            self._frames.append((at, latency_s))

    def rates(self, now: float | None = None) -> tuple[float, float | None, float | None]:
        """(fps, p50 ms, p99 ms) over the window ending `now` (None: time.monotonic())."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [(t, lat) for t, lat in self._frames if now - t <= self.window_s]
        if not recent:
            return 0.0, None, None
        span = max(now - recent[0][0], 1e-6)
        # One frame alone says nothing of a rate: 0 until there are two.
        fps = (len(recent) - 1) / span if len(recent) > 1 else 0.0
        latencies = sorted(lat for _, lat in recent)
        return fps, _percentile(latencies, 0.5) * 1000, _percentile(latencies, 0.99) * 1000


def _percentile(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted values (nearest rank)."""
    rank = min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))
    return ordered[rank]


@dataclass(frozen=True)
class OutputCounts:
    """What an alert output (alerts/) has done so far.

    Attributes:
        output: Its name in logs and metrics, e.g. "webhook http://host/hook" (credentials redacted).
        sent: Events delivered.
        dropped: Events dropped because its queue was full.
        failed: Events refused by the receiver, or given up.
    """

    output: str
    sent: int
    dropped: int
    failed: int


@runtime_checkable
class CountedOutput(Protocol):
    """A shared sink that reports delivery counts (the alert outputs do): /metrics shows them."""

    def counts(self) -> OutputCounts:
        """Its counts now."""
        ...


@dataclass(frozen=True)
class WorkerStatus:
    """One worker of a cluster run (cluster/), as the driver last heard from it.

    Attributes:
        name: Its name, e.g. "worker-0".
        alive: False once it died (its streams moved).
        streams: How many streams it holds.
        fps: Frames per second over its streams.
    """

    name: str
    alive: bool
    streams: int
    fps: float


@dataclass(frozen=True)
class PipelineMetrics:
    """Everything `/metrics` exposes, read at one moment.

    Attributes:
        streams: Every stream's status (removed streams are gone).
        latency: Capture-to-result latency of every frame, in seconds.
        batch_size: Frames per batch through the network.
        queue_depth: Items waiting per stage: "intake" (decoded frames waiting for the segmenter),
            "prepared" (batches letterboxed, waiting for the network), "results" (segmented,
            waiting for the tracker and sinks).
        outputs: Each alert output's delivery counts.
        workers: A cluster run's workers (none in one process).
    """

    streams: tuple[StreamStatus, ...]
    latency: HistogramSnapshot
    batch_size: HistogramSnapshot
    queue_depth: dict[str, int]
    outputs: tuple[OutputCounts, ...] = ()
    workers: tuple[WorkerStatus, ...] = ()
