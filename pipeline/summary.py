"""Counts for the end-of-run line, per source; filled in as results go by, so they are right after Ctrl-C too."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class SourceSummary:
    """One source's counts, kept up to date by its lane as results go by."""

    source_id: str
    is_live: bool = False
    frames: int = 0
    frames_with_target: int = 0
    dropped: int = 0  # frames never processed: discarded by the drop policy, or still waiting at a stop
    reconnects: int = 0
    gave_up: str | None = None  # why, when a live source ran out of reconnect attempts
    error: str | None = None  # why, when the source failed (the run goes on with the others)

    def describe(self, with_count: bool = True, error_below: bool = False) -> str:
        """This source's part of the end-of-run line.

        Args:
            with_count: Start with the frame count (a run of one source gives it in its timing).
            error_below: Its error is the one the run raised, which the caller prints on its own
                line after this one: say "failed" and point there instead of repeating it.

        Returns:
            e.g. "120 frames, target found in 118/120 frames", with drops and reconnects for a
            live source, and why it gave up or failed.
        """
        text = f"target found in {self.frames_with_target}/{self.frames} frames"
        if with_count:
            text = f"{self.frames} frames, {text}"
        if self.is_live:
            text += f", {self.dropped} dropped, {self.reconnects} reconnect{'s' if self.reconnects != 1 else ''}"
        if self.gave_up is not None:
            text += f", gave up reconnecting ({self.gave_up})" if self.gave_up else ", gave up reconnecting"
        if self.error is not None:
            text += ", failed (the error below)" if error_below else f", failed: {self.error}"
        return text


@dataclass
class RunSummary:
    """The counts of a whole run: each source's summary, the run's timing and whether it was interrupted."""

    sources: dict[str, SourceSummary] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    interrupted: bool = False
    # The source whose error the run raised (the others' errors are only in their summaries):
    # the line names it as failed and leaves the message to the error's own line.
    error_source: str | None = None

    @property
    def frames(self) -> int:
        """Frames segmented, over every source."""
        return sum(s.frames for s in self.sources.values())

    @property
    def frames_with_target(self) -> int:
        """Frames with at least one target, over every source."""
        return sum(s.frames_with_target for s in self.sources.values())

    @property
    def dropped(self) -> int:
        """Frames never processed, over every source (see SourceSummary.dropped)."""
        return sum(s.dropped for s in self.sources.values())

    @property
    def gave_up(self) -> list[str]:
        """Ids of the live sources that ran out of reconnect attempts."""
        return [s.source_id for s in self.sources.values() if s.gave_up is not None]

    @property
    def seconds(self) -> float:
        """How long the run took, or has taken so far while it runs."""
        return (self.finished_at or time.monotonic()) - self.started_at

    @property
    def fps(self) -> float:
        """Frames segmented per second of the run, over every source; 0 before any time has passed."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """The end-of-run line the command line prints: timing and counts, per source when there are several."""
        head = "interrupted" if self.interrupted else "done"
        timing = f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} frames/s)"
        if len(self.sources) == 1:
            (only,) = self.sources.values()
            return (
                f"{head}: {timing}, {only.describe(with_count=False, error_below=only.source_id == self.error_source)}"
            )
        per_source = "; ".join(
            f"{s.source_id}: {s.describe(error_below=s.source_id == self.error_source)}" for s in self.sources.values()
        )
        return f"{head}: {len(self.sources)} sources, {timing}; {per_source}"
