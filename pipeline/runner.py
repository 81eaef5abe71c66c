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
    A pipeline runs once (its source is consumed); `stop()` ends a run cleanly from a signal
    handler or another thread, and `close()` (or leaving a `with` block) ends it at once.
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
        self._stop_requested = threading.Event()
        self._started = False
        self._running: Iterator[FrameResult] | None = None
        total = source.frame_count
        if self.prompt is not None and total is not None and self.prompt.frame >= total:
            raise PromptError(
                f"prompt frame {self.prompt.frame} is past the end of {source.source_id} "
                f"(its container announces {total} frames)"
            )

    def __iter__(self) -> Iterator[FrameResult]:
        return self.results()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stop(self) -> None:
        """Ask the run to end after the frame in hand; safe from signal handlers and other threads.
        Every sink then has the same frames, and is finalised."""
        self._stop_requested.set()

    def close(self) -> None:
        """End the run now (if one is going) and finalise the sinks."""
        self.stop()
        if self._running is not None:
            self._running.close()

    def results(self) -> Iterator[FrameResult]:
        """Yields one FrameResult per source frame, in order, after every sink has had it.

        Sinks are closed when the iteration ends for any reason: the end of the source, an error,
        `stop()`, Ctrl-C, or the caller leaving the loop (at once with `close()`).
        """
        if self._started:
            raise RuntimeError("a Pipeline runs once (its source is consumed): build a new one")
        self._started = True
        self._running = self._results()
        return self._running

    def _results(self) -> Iterator[FrameResult]:
        self.summary = RunSummary()
        stages = SegmentingStages(self.source, self.segmenter, self.batch, interrupt=self._stop_requested)
        try:
            stages.start()
            for frame, instances in stages:
                result = self._track(frame, instances)
                for sink in self.sinks:
                    sink.write(result)
                self.summary.frames += 1
                self.summary.frames_with_target += result.target_found
                yield result
                if self._stop_requested.is_set():
                    break
            self.summary.interrupted = self._stop_requested.is_set()
            if self.prompt is not None and self._target_id is None and not self.summary.interrupted:
                raise PromptError(
                    f"{self.source.source_id} ended after {self.summary.frames} frames, "
                    f"before prompt frame {self.prompt.frame}"
                )
        except BaseException as exc:
            self.summary.interrupted = isinstance(exc, (KeyboardInterrupt, GeneratorExit))
            self._shut_down(stages, report_errors=False)
            raise
        self._shut_down(stages, report_errors=True)

    def run(self, on_result: Callable[[FrameResult], object] | None = None) -> RunSummary:
        """Drive the pipeline to the end of the source; returns the summary."""
        for result in self.results():
            if on_result is not None:
                on_result(result)
        return self.summary

    def _track(self, frame: Frame, instances: Instances) -> FrameResult:
        selection = None
        if self._prompt_applies_to(frame):
            selection = select(self.prompt, instances)
        tracks = self.tracker.update(instances, target_row=None if selection is None else selection.track_row)
        if selection is not None:
            self._target_id = next(t.id for t in tracks if t.is_target)
            return FrameResult(frame, instances, tracks, selection.rows)
        target = next((t for t in tracks if t.is_target and t.instance_index is not None), None)
        return FrameResult(frame, instances, tracks, () if target is None else (target.instance_index,))

    def _prompt_applies_to(self, frame: Frame) -> bool:
        p = self.prompt
        return p is not None and frame.index == p.frame and p.source_id in (None, frame.source_id)

    def _shut_down(self, stages: SegmentingStages, report_errors: bool) -> None:
        """Stop the threads, finalise every sink, then close the source; signals wait meanwhile.

        A failure while closing is raised only when nothing else is already on its way out,
        so it never hides the error that ended the run.
        """
        self.summary.finished_at = time.monotonic()
        errors: list[BaseException] = []
        with _interrupts_deferred():
            stages.stop()
            for close in [sink.close for sink in self.sinks] + [self.source.close]:
                try:
                    close()
                except Exception as exc:  # noqa: BLE001 - every sink gets closed before we report
                    errors.append(exc)
                    log.error("closing %s failed: %s", getattr(close, "__self__", close), exc)
        if errors and report_errors:
            raise errors[0]


@contextmanager
def _interrupts_deferred():
    """Hold Ctrl-C and SIGTERM off while threads stop and sinks finalise, so a video is never left
    without its trailer. (Signal handlers can only be changed from the main thread.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
