"""The driver's bookkeeping of a cluster run: each worker as the driver sees it, each stream's place.

Plain state, changed only with the ClusterPipeline's lock held (driver.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..core import Box, Prompt
from ..pipeline.status import HistogramSnapshot, OutputCounts
from ..pipeline.summary import SourceSummary
from .home import HomeFiles
from .records import EventRecord
from .worker import StreamSpec, WorkerReport


@dataclass(eq=False)
class WorkerHandle:
    """The driver's view of one worker actor."""

    name: str
    actor: Any
    streams: set[str] = field(default_factory=set)
    alive: bool = True
    finished: bool = False
    pending: Any = None  # the drain call in flight
    pending_since: float = 0.0  # when it was made (the driver's monotonic clock)
    report: WorkerReport | None = None  # the latest

    @property
    def fps(self) -> float:
        """Frames/s over its streams, as of its latest report."""
        return sum(s.fps for s in self.report.streams) if self.report else 0.0


@dataclass(eq=False)
class StreamPlace:
    """One stream: where it runs, how far it got, what it wrote, what a move must re-send."""

    spec: StreamSpec
    files: HomeFiles
    summary: SourceSummary
    # Every prompt given (at start or while running) as (prompt, replace), its frame no earlier than
    # the stream's next frame when given: a move re-sends those at or after where it resumes.
    changes: list[tuple[Prompt, bool]]
    worker: WorkerHandle | None = None
    next_frame: int = 0  # the first frame not yet written
    max_id: int = 0
    targets: dict[int, Box] = field(default_factory=dict)  # target id → last box
    parts: int = 1  # the worker it is on is its parts-th
    dropped_before: int = 0  # drops counted on earlier workers
    held: list[EventRecord] = field(default_factory=list)  # events of a frame whose record has not come yet
    closed: bool = False
    error: str | None = None
    removing: bool = False  # asked to leave: its worker's death ends it instead of moving it
    done: threading.Event = field(default_factory=threading.Event)  # set once closed, its files final

    @property
    def source_id(self) -> str:
        """Its id."""
        return self.spec.source_id


def least_loaded(workers: Iterable[WorkerHandle]) -> WorkerHandle | None:
    """The live worker with the fewest streams, then the lowest measured frames/s; None when none lives."""
    alive = [w for w in workers if w.alive and not w.finished]
    return min(alive, key=lambda w: (len(w.streams), w.fps), default=None)


def merged(snapshots: list[HistogramSnapshot]) -> HistogramSnapshot:
    """Histograms of the same buckets added together."""
    first = snapshots[0]
    return HistogramSnapshot(
        first.bounds,
        tuple(sum(column) for column in zip(*(s.cumulative for s in snapshots), strict=True)),
        sum(s.total for s in snapshots),
    )


def merged_counts(a: OutputCounts, b: OutputCounts) -> OutputCounts:
    """Two workers' counts of the same alert output, added."""
    return OutputCounts(a.output, a.sent + b.sent, a.dropped + b.dropped, a.failed + b.failed)
