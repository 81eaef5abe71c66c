"""The Pipeline: source → segmenter (in its threads) → prompt → tracker → sinks, one FrameResult a frame."""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from ..core import Frame, FrameResult, Instances, Prompt
from ..errors import PromptError
from ..sinks.base import Sink, as_sink
from ..sources.base import Source
from ..trackers import IoUTracker, Tracker
from .batcher import BatchSettings, SegmentingStages
from .prompts import select
from .segmenter import Segmenter

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """Counts for the end-of-run line; filled in as frames go by, so it is right after Ctrl-C too."""

    frames: int = 0
    frames_with_target: int = 0
    started_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    interrupted: bool = False

    @property
    def seconds(self) -> float:
        return (self.finished_at or time.monotonic()) - self.started_at

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        head = "interrupted" if self.interrupted else "done"
        return (
            f"{head}: {self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} frames/s), "
            f"target found in {self.frames_with_target}/{self.frames} frames"
        )


class Pipeline:
    """Iterate it for FrameResults, or call `run()` to drive it to the end for the sinks.

    Collaborators are passed in, so tests and callers can hand in their own source, segmenter,
    tracker or sinks. Sinks may be Sink objects or plain callables taking a FrameResult.
    """

    def __init__(
        self,
        source: Source,
        segmenter: Segmenter,
        *,
        prompt: Prompt | None = None,
        tracker: Tracker | None = None,
        sinks: Sequence[Sink | Callable[[FrameResult], object]] = (),
        batch: BatchSettings = BatchSettings(),
    ) -> None:
        self.source = source
        self.segmenter = segmenter
        self.prompt = prompt if prompt is not None and not prompt.is_empty else None
        self.tracker = tracker if tracker is not None else IoUTracker()
        self.sinks = [as_sink(s) for s in sinks]
        self.batch = batch
        self.summary = RunSummary()
        self._target_id: int | None = None
        total = source.frame_count
        if self.prompt is not None and total is not None and self.prompt.frame >= total:
            raise PromptError(f"prompt frame {self.prompt.frame} is past the end of {source.source_id} ({total} frames)")

    def __iter__(self) -> Iterator[FrameResult]:
        return self.results()

    def results(self) -> Iterator[FrameResult]:
        """Yields one FrameResult per source frame, in order, after every sink has had it.

        Sinks are closed when the iteration ends for any reason: the end of the source, an error,
        Ctrl-C, or the caller breaking out of the loop.
        """
        self.summary = RunSummary()
        try:
            with SegmentingStages(self.source, self.segmenter, self.batch) as stages:
                for frame, instances in stages:
                    result = self._track(frame, instances)
                    for sink in self.sinks:
                        sink.write(result)
                    self.summary.frames += 1
                    self.summary.frames_with_target += result.target_found
                    yield result
            if self.prompt is not None and self._target_id is None:
                raise PromptError(f"the source ended before prompt frame {self.prompt.frame}")
        except KeyboardInterrupt:
            self.summary.interrupted = True
            raise
        finally:
            self.summary.finished_at = time.monotonic()
            self._close()

    def run(self, on_result: Callable[[FrameResult], object] | None = None) -> RunSummary:
        """Drive the pipeline to the end of the source; returns the summary."""
        for result in self.results():
            if on_result is not None:
                on_result(result)
        return self.summary

    def _track(self, frame: Frame, instances: Instances) -> FrameResult:
        selection = None
        if self.prompt is not None and frame.index == self.prompt.frame:
            selection = select(self.prompt, instances)
        tracks = self.tracker.update(instances, target_row=None if selection is None else selection.track_row)
        if selection is not None:
            self._target_id = next(t.id for t in tracks if t.is_target)
            return FrameResult(frame, instances, tracks, selection.rows)
        target = next((t for t in tracks if t.is_target and t.instance_index is not None), None)
        return FrameResult(frame, instances, tracks, () if target is None else (target.instance_index,))

    def _close(self) -> None:
        with _interrupts_deferred():
            self._close_all()

    def _close_all(self) -> None:
        self.source.close()
        errors: list[BaseException] = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001 - every sink gets closed before we report
                errors.append(exc)
        if errors:
            raise errors[0]



@contextmanager
def _interrupts_deferred():
    """Ignore a second Ctrl-C while sinks finalise, so a video is never left without its trailer."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
