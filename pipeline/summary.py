"""Counts for the end-of-run line, per source; filled in as results go by, so they are right after Ctrl-C too."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class SourceSummary:
    source_id: str
    is_live: bool = False
    frames: int = 0
    frames_with_target: int = 0
    dropped: int = 0  # frames never processed: discarded by the drop policy, or still waiting at a stop
    reconnects: int = 0
    gave_up: str | None = None  # why, when a live source ran out of reconnect attempts
    error: str | None = None  # why, when the source failed (the run goes on with the others)

    def describe(self, with_count: bool = True) -> str:
        text = f"target found in {self.frames_with_target}/{self.frames} frames"
        if with_count:
            text = f"{self.frames} frames, {text}"
        if self.is_live:
            text += f", {self.dropped} dropped, {self.reconnects} reconnect{'s' if self.reconnects != 1 else ''}"
        if self.gave_up is not None:
            text += f", gave up reconnecting ({self.gave_up})" if self.gave_up else ", gave up reconnecting"
        if self.error is not None:
            text += f", failed: {self.error}"
        return text


@dataclass
class RunSummary:
    sources: dict[str, SourceSummary] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    interrupted: bool = False

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.sources.values())

    @property
    def frames_with_target(self) -> int:
        return sum(s.frames_with_target for s in self.sources.values())

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.sources.values())

    @property
    def gave_up(self) -> list[str]:
        return [s.source_id for s in self.sources.values() if s.gave_up is not None]

    @property
    def seconds(self) -> float:
        return (self.finished_at or time.monotonic()) - self.started_at

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        head = "interrupted" if self.interrupted else "done"
        timing = f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} frames/s)"
        if len(self.sources) == 1:
            (only,) = self.sources.values()
            return f"{head}: {timing}, {only.describe(with_count=False)}"
        per_source = "; ".join(f"{s.source_id}: {s.describe()}" for s in self.sources.values())
        return f"{head}: {len(self.sources)} sources, {timing}; {per_source}"
