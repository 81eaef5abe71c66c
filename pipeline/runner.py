"""The Pipeline: sources → segmenter (in its threads) → per source: prompt → tracker → sinks.

Each source is a lane of its own: its own tracker, prompt state, frame size and sinks, so a
camera that reconnects at another resolution, or a file that ends, leaves the others alone.
"""

from __future__ import annotations

import atexit
import functools
import logging
import signal
import threading
import time
import weakref
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from ..core import EventKind, FrameResult, Prompt, SourceEvent
from ..errors import PromptError
from ..sinks.base import Sink, as_sink
from ..sources.base import DropPolicy, Source
from ..trackers import IoUTracker, Tracker
from .batcher import BatchSettings, Segmented, SegmentingStages
from .intake import SourceEnded
from .prompts import select
from .segmenter import Segmenter
from .summary import RunSummary, SourceSummary

log = logging.getLogger(__name__)

SinkLike = Sink | Callable[[FrameResult], object]


class _Lane:
    """One source's state in the caller's thread: prompt, tracker, sinks and counts."""

    def __init__(self, source: Source, tracker: Tracker, sinks: list[Sink], prompt: Prompt | None) -> None:
        self.source = source
        self.tracker = tracker
        self.sinks = sinks
        self.prompt = prompt
        self.prompted = False
        self.size: tuple[int, int] | None = None  # (width, height) of the frames so far
        self.error: BaseException | None = None  # what ended this source, if it failed
        self.summary = SourceSummary(source.source_id, is_live=source.is_live)

    def result(self, item: Segmented) -> FrameResult:
        frame, instances = item.frame, item.instances
        self._follow_size(frame.width, frame.height, frame.index)
        selection = None
        if self.prompt is not None and not self.prompted and frame.index >= self.prompt.frame:
            # Live sources may drop the prompt's own frame: the first frame at or after it is used.
            selection = select(self.prompt, instances)
            self.prompted = True
        tracks = self.tracker.update(instances, target_row=None if selection is None else selection.track_row)
        if selection is not None:
            rows = selection.rows
        else:
            target = next((t for t in tracks if t.is_target and t.instance_index is not None), None)
            rows = () if target is None else (target.instance_index,)
        self.summary.frames += 1
        self.summary.dropped += item.dropped_before
        self.summary.frames_with_target += bool(rows)
        return FrameResult(frame, instances, tracks, rows, item.dropped_before)

    def _follow_size(self, width: int, height: int, index: int) -> None:
        """A stream that comes back at another size: tracks move to the new coordinates."""
        if self.size is not None and self.size != (width, height):
            old_w, old_h = self.size
            rescale = getattr(self.tracker, "rescale", None)
            if rescale is not None:
                rescale(width / old_w, height / old_h)
            self.event(SourceEvent(self.source.source_id, EventKind.RESIZED, index, time.time(),
                                   width=width, height=height, message=f"was {old_w}x{old_h}"))
        self.size = (width, height)

    def event(self, event: SourceEvent) -> None:
        if event.kind is EventKind.RECONNECTED:
            self.summary.reconnects += 1
        elif event.kind is EventKind.GAVE_UP:
            self.summary.gave_up = event.message
        level = logging.INFO if event.kind is EventKind.CONNECTED else logging.WARNING
        log.log(level, "%s", event.describe())
        for sink in self.sinks:
            on_event = getattr(sink, "on_event", None)
            if on_event is not None:
                on_event(event)

    def end(self, ended: SourceEnded, interrupted: bool) -> None:
        """The source has no more frames. A failure, or a prompt never reached, ends this lane with
        an error (raised when the run is over); a live source that gave up is already reported."""
        error = ended.error
        if error is None and self.prompt is not None and not self.prompted and not interrupted and not self.source.is_live:
            error = PromptError(
                f"{self.source.source_id} ended after {self.summary.frames} frames, before prompt frame {self.prompt.frame}"
            )
        if error is not None:
            self.error = error
            self.summary.error = str(error)
            log.error("%s: %s", self.source.source_id, error)


class Pipeline:
    """Iterate it for FrameResults, or call `run()` to drive it to the end for the sinks.

    `sources`: one Source or several; their frames share the segmenter's batches, and everything
    after segmentation is per source. `tracker`: a Tracker (one source) or a zero-argument
    factory (default IoUTracker), called once per source. `sinks` receive every source's
    results; `sinks_for(source)` gives sinks of one source's own. Sinks may be Sink objects or
    plain callables; a sink with an `on_event(SourceEvent)` method also gets its sources' events.
    A pipeline runs once; `stop()` ends a run cleanly from a signal handler or another thread,
    and `close()` (or leaving a `with` block) ends it at once.
    """

    def __init__(
        self,
        sources: Source | Sequence[Source],
        segmenter: Segmenter,
        *,
        prompt: Prompt | None = None,
        tracker: Tracker | Callable[[], Tracker] | None = None,
        sinks: Sequence[SinkLike] = (),
        sinks_for: Callable[[Source], Sequence[SinkLike]] | None = None,
        batch: BatchSettings = BatchSettings(),
        drop_policy: DropPolicy | str | None = None,
    ) -> None:
        self.sources = [sources] if isinstance(sources, Source) else list(sources)
        if not self.sources:
            raise ValueError("a Pipeline needs at least one source")
        ids = [s.source_id for s in self.sources]
        if len(set(ids)) != len(ids):
            raise ValueError(f"source ids must be unique, got {ids}")
        self.segmenter = segmenter
        self.prompt = prompt if prompt is not None and not prompt.is_empty else None
        self.batch = batch
        self.drop_policy = drop_policy
        if self.prompt is not None and self.prompt.source_id not in (None, *ids):
            raise PromptError(f"the prompt is for source {self.prompt.source_id!r}, but the sources are {', '.join(ids)}")
        shared = [as_sink(s) for s in sinks]
        self._lanes = {
            s.source_id: _Lane(s, self._tracker_for(tracker), shared + [as_sink(k) for k in (sinks_for(s) if sinks_for else ())],
                               self._prompt_for(s))
            for s in self.sources
        }
        self.sinks = list(dict.fromkeys(shared + [k for lane in self._lanes.values() for k in lane.sinks]))
        self.summary = RunSummary({i: lane.summary for i, lane in self._lanes.items()})
        self._stop_requested = threading.Event()
        self._started = False
        self._running: Iterator[FrameResult] | None = None

    @property
    def source(self) -> Source:
        """The first (for one-source runs: the) source."""
        return self.sources[0]

    @property
    def frame_count(self) -> int | None:
        """Frames expected over every source, when all of them announce it."""
        counts = [s.frame_count for s in self.sources]
        return None if any(c is None for c in counts) else sum(counts)

    def _tracker_for(self, tracker: Tracker | Callable[[], Tracker] | None) -> Tracker:
        if tracker is None:
            return IoUTracker()
        if not isinstance(tracker, type) and hasattr(tracker, "update"):  # an instance, not a class
            if len(self.sources) > 1:
                raise ValueError("several sources need a tracker each: pass a factory (e.g. a class), not an instance")
            return tracker
        return tracker()

    def _prompt_for(self, source: Source) -> Prompt | None:
        p = self.prompt
        if p is None or p.source_id not in (None, source.source_id):
            return None
        total = source.frame_count
        if total is not None and p.frame >= total:
            raise PromptError(
                f"prompt frame {p.frame} is past the end of {source.source_id} (its container announces {total} frames)"
            )
        return p

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
        """Yields one FrameResult per segmented frame, each source's in order, after every sink has had it.

        Sinks are closed when the iteration ends for any reason: the end of every source, an
        error, `stop()`, Ctrl-C, or the caller leaving the loop (at once with `close()`).
        """
        if self._started:
            raise RuntimeError("a Pipeline runs once (its sources are consumed): build a new one")
        self._started = True
        self._running = self._results()
        return self._running

    def _results(self) -> Iterator[FrameResult]:
        self.summary.started_at = time.monotonic()
        stages = SegmentingStages(self.sources, self.segmenter, self.batch, self._stop_requested, self.drop_policy)
        # A caller that leaves the loop without close() leaves the threads running; at interpreter
        # exit they would die inside torch or FFmpeg (an abort). Close such a run first. The weak
        # reference keeps the registration from holding the pipeline alive.
        at_exit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(at_exit)
        try:
            stages.start()
            for item in stages:
                if isinstance(item, Segmented):
                    lane = self._lanes[item.frame.source_id]
                    result = lane.result(item)
                    for sink in lane.sinks:
                        sink.write(result)
                    yield result
                    if self._stop_requested.is_set():
                        break
                elif isinstance(item, SourceEvent):
                    self._lanes[item.source_id].event(item)
                elif isinstance(item, SourceEnded):
                    self._lanes[item.source_id].end(item, self._stop_requested.is_set())
            self.summary.interrupted = self._stop_requested.is_set()
        except BaseException as exc:
            self.summary.interrupted = isinstance(exc, (KeyboardInterrupt, GeneratorExit))
            atexit.unregister(at_exit)
            self._shut_down(stages, report_errors=False)
            raise
        atexit.unregister(at_exit)
        self._shut_down(stages, report_errors=True)
        failed = [lane.error for lane in self._lanes.values() if lane.error is not None]
        if failed:  # after every other source has finished and every sink is final
            raise failed[0]

    def run(self, on_result: Callable[[FrameResult], object] | None = None) -> RunSummary:
        """Drive the pipeline to the end of every source; returns the summary."""
        for result in self.results():
            if on_result is not None:
                on_result(result)
        return self.summary

    def _shut_down(self, stages: SegmentingStages, report_errors: bool) -> None:
        """Stop the threads, finalise every sink, then close the sources; signals wait meanwhile.

        A failure while closing is raised only when nothing else is already on its way out,
        so it never hides the error that ended the run.
        """
        self.summary.finished_at = time.monotonic()
        errors: list[BaseException] = []
        with _interrupts_deferred():
            stages.stop()
            for source_id, lane in self._lanes.items():  # drops after the last result count too
                lane.summary.dropped = max(lane.summary.dropped, stages.dropped(source_id))
            for close in [sink.close for sink in self.sinks] + [source.close for source in self.sources]:
                try:
                    close()
                except Exception as exc:  # noqa: BLE001 - every sink gets closed before we report
                    errors.append(exc)
                    log.error("closing %s failed: %s", getattr(close, "__self__", close), exc)
        if errors and report_errors:
            raise errors[0]


def _close_at_exit(pipeline_ref: "weakref.ref[Pipeline]") -> None:
    pipeline = pipeline_ref()
    if pipeline is None:
        return
    try:
        pipeline.close()
    except ValueError:  # "generator already executing": its loop runs in another (daemon) thread
        pipeline.stop()


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
