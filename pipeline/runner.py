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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager

from ..core import FrameResult, Prompt, SourceEvent
from ..errors import DiskFullError, PromptError, StreamConflictError, UnknownStreamError
from ..sinks.base import Sink, as_sink
from ..sources.base import DropPolicy, Source
from ..sources.redact import redact_url
from ..trackers import ByteTracker, Tracker
from .batcher import DEFAULT_BATCH_SETTINGS, LIVE_JOIN_S, BatchSettings, Segmented, SegmentingStages
from .intake import SourceEnded
from .lane import MAX_PENDING_CLEARING, MAX_PENDING_COMMANDS, Lane, PendingChange
from .places import PlaceStage
from .prompts import TextScorer, check_source
from .segmenter import Segmenter
from .status import (
    BATCH_SIZE_BUCKETS,
    LATENCY_BUCKETS_S,
    CountedOutput,
    Histogram,
    PipelineMetrics,
    StreamStatus,
)
from .summary import RunSummary, SourceSummary

__all__ = ["MAX_PENDING_CLEARING", "MAX_PENDING_COMMANDS", "Pipeline", "SinkLike"]

log = logging.getLogger(__name__)

SinkLike = Sink | Callable[[FrameResult], object]


class Pipeline:
    """Iterate it for FrameResults, or call `run()` to drive it to the end for the sinks.

    `sources`: one Source or several; their frames share the segmenter's batches, and everything
    after segmentation is per source. `tracker`: a Tracker (one source) or a zero-argument
    factory (default ByteTracker), called once per source. `sinks` receive every source's
    results; `sinks_for(source)` gives sinks of one source's own. Sinks may be Sink objects or
    plain callables; a sink with an `on_event(SourceEvent)` method also gets its sources' events.
    `prompt`: one Prompt or several, each for its frame and source (None: every source); text
    prompts need a `text_scorer` (pipeline/clip.py). `places_for(source)` gives a source's zones
    and lines (pipeline/places.py: their states go onto its results, their events to its event
    sinks). While it runs, `add_prompt()` and
    `drop_targets()` change the targets from any thread (the control interface uses them).
    A pipeline runs once; `stop()` ends a run cleanly from a signal handler or another thread,
    and `close()` (or leaving a `with` block) ends it at once.
    """

    def __init__(
        self,
        sources: Source | Sequence[Source],
        segmenter: Segmenter,
        *,
        prompt: Prompt | Sequence[Prompt] | None = None,
        text_scorer: TextScorer | None = None,
        tracker: Tracker | Callable[[], Tracker] | None = None,
        sinks: Sequence[SinkLike] = (),
        sinks_for: Callable[[Source], Sequence[SinkLike]] | None = None,
        batch: BatchSettings = DEFAULT_BATCH_SETTINGS,
        drop_policy: DropPolicy | str | None = None,
        keep_running: bool = False,
        places_for: Callable[[Source], PlaceStage | None] | None = None,
    ) -> None:
        self.sources = [sources] if isinstance(sources, Source) else list(sources)
        if not self.sources and not keep_running:
            raise ValueError("a Pipeline needs at least one source")
        ids = [s.source_id for s in self.sources]
        if len(set(ids)) != len(ids):
            raise ValueError(f"source ids must be unique, got {ids}")
        self.segmenter = segmenter
        self.text_scorer = text_scorer
        self.keep_running = keep_running
        given = [prompt] if isinstance(prompt, Prompt) else list(prompt or ())
        self.prompts = [p for p in given if not p.is_empty]
        for p in self.prompts:
            self._check_prompt(p, ids)
        self.batch = batch
        self.drop_policy = drop_policy
        self._tracker = tracker
        self._shared = [as_sink(s) for s in sinks]
        self.latency = Histogram(LATENCY_BUCKETS_S)  # capture to result, every frame of every source
        self._lanes_lock = threading.Lock()  # serialises joins and leaves; `_lanes` is replaced whole (read freely)
        self._lanes: dict[str, Lane] = {}
        for s in self.sources:
            own = [as_sink(k) for k in (sinks_for(s) if sinks_for else ())]
            places = places_for(s) if places_for else None
            self._lanes[s.source_id] = self._new_lane(s, self._prompts_for(s), own, places)
        self.sinks = list(dict.fromkeys(self._shared + [k for lane in self._lanes.values() for k in lane.sinks]))
        self.summary = RunSummary({i: lane.summary for i, lane in self._lanes.items()})
        self._stop_requested = threading.Event()
        self._started = False
        self._running: Iterator[FrameResult] | None = None
        self._stages: SegmentingStages | None = None

    def _new_lane(
        self,
        source: Source,
        pending: list[PendingChange],
        own: list[Sink],
        places: PlaceStage | None = None,
        tracker: Tracker | None = None,
    ) -> Lane:
        tracker = tracker if tracker is not None else self._tracker_for(self._tracker)
        return Lane(source, tracker, self._shared + own, pending, self.text_scorer, own, self.latency, places)

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
            return ByteTracker()
        if isinstance(tracker, Tracker) and not isinstance(tracker, type):  # an instance, not a class or factory
            if len(self.sources) > 1 or self.keep_running:
                raise ValueError("several sources need a tracker each: pass a factory (e.g. a class), not an instance")
            return tracker
        return tracker()

    def _check_prompt(self, prompt: Prompt, source_ids: Sequence[str]) -> None:
        check_source(prompt.source_id, list(source_ids))
        if prompt.text and self.text_scorer is None:
            raise PromptError("text prompts need CLIP: pass a text_scorer (load_clip) / set clip weights")

    def _prompts_for(self, source: Source) -> list[PendingChange]:
        pending = []
        for p in self.prompts:
            if p.source_id not in (None, source.source_id):
                continue
            total = source.frame_count
            if total is not None and p.frame >= total:
                raise PromptError(
                    f"prompt frame {p.frame} is past the end of {source.source_id} "
                    f"(its container announces {total} frames)"
                )
            # A service never ends for a prompt that selects nothing: it is a prompt_failed event.
            pending.append(PendingChange(p.frame, p, strict=not self.keep_running))
        return pending

    def add_source(
        self,
        source: Source,
        sinks: Sequence[SinkLike] = (),
        prompts: Sequence[Prompt] = (),
        places: PlaceStage | None = None,
        tracker: Tracker | None = None,
        strict: bool | None = None,
    ) -> None:
        """A source joins: before the run, or while it runs when `keep_running`; safe from any thread.

        Args:
            source: The new source; its id must not be taken by a source still in the pipeline.
            sinks: Its own outputs (closed when it leaves); the pipeline's shared sinks get its results too.
            prompts: Prompts for it (their `source_id` None or its id); one that selects nothing is a
                prompt_failed event.
            places: Its zones and lines (pipeline/places.py), or None.
            tracker: Its own tracker (a stream moved from another worker keeps its targets' ids);
                None: one from the pipeline's tracker factory.
            strict: Whether a prompt that selects nothing, or whose frame the source never reaches,
                is the source's error (as at the start of a run); None: not in a `keep_running`
                pipeline (a prompt_failed event), as a run's start prompts otherwise.

        Raises:
            StreamConflictError: The id is taken, the run is stopping, or it is a run (not `keep_running`)
                that has started.
            PromptError: A text prompt without CLIP.
        """
        if self._stop_requested.is_set():
            raise StreamConflictError("the pipeline is stopping")
        for p in prompts:
            self._check_prompt(p, [source.source_id])
        own = [as_sink(k) for k in sinks]
        with self._lanes_lock:
            if self._started and not self.keep_running:
                raise StreamConflictError(
                    "this run has started: sources join a running pipeline only with keep_running"
                )
            if source.source_id in self._lanes:
                raise StreamConflictError(
                    f"a stream {source.source_id!r} is already running: remove it or choose another id"
                )
            strict = not self.keep_running if strict is None else strict
            pending = [PendingChange(p.frame, p, strict=strict) for p in prompts if not p.is_empty]
            lane = self._new_lane(source, pending, own, places, tracker)
            before = self._lanes
            self._lanes = {**before, source.source_id: lane}  # before its reader starts: its items find it
            if self._stages is not None:
                try:
                    self._stages.add_source(source)
                except ValueError as exc:
                    self._lanes = before
                    raise StreamConflictError(f"cannot add {source.source_id}: {exc}") from None
            self.sources = [*self.sources, source]
            self.sinks = list(dict.fromkeys([*self.sinks, *own]))
            self.summary.sources[source.source_id] = lane.summary

    def remove_source(self, source_id: str, timeout_s: float | None = None) -> SourceSummary:
        """A source leaves: it stops, and its own outputs are finalised before this returns; safe from any thread.

        Changes still waiting for it become prompt_failed events. Its results before the removal
        have reached every sink.

        Args:
            source_id: The source to remove.
            timeout_s: How long to wait for its outputs to be final (None: as long as it takes).

        Returns:
            Its summary: frames, drops, reconnects.

        Raises:
            UnknownStreamError: No such source.
            TimeoutError: Its outputs were not final within `timeout_s` (it still leaves).
        """
        with self._lanes_lock:
            lane = self._lanes.get(source_id)
            if lane is None:
                raise UnknownStreamError(f"no stream {source_id!r}: the streams are {', '.join(self._lanes) or 'none'}")
            lane.removing = True
            stages = self._stages
            # Not running; or ended and closed already; or (a run) ended, its outputs waiting for the
            # run's end: the pipeline's thread has nothing more to do with it, so it is closed here.
            settled = stages is None or lane.closed.is_set() or lane.ended
            if settled:
                self._forget(lane)
                if not lane.closed.is_set():
                    lane.abandon("the source was removed")
                    self._log_close_errors(lane.close_outputs())
                    lane.closed.set()
        if not settled:
            stages.remove_source(source_id)
            if not lane.closed.wait(timeout_s):
                raise TimeoutError(f"{source_id}: its outputs were not final within {timeout_s:g} s")
        return lane.summary

    def _forget(self, lane: Lane) -> None:
        """Take a removed lane out of the pipeline (with `_lanes_lock` held)."""
        self._lanes = {i: other for i, other in self._lanes.items() if other is not lane}
        self.sources = [s for s in self.sources if s is not lane.source]

    def _finish_lane(self, lane: Lane, stages: SegmentingStages) -> None:
        """A lane has ended while the pipeline goes on: its outputs are finalised now.

        A removed lane also leaves the pipeline; one that ended by itself stays listed (ended,
        gave up) until it is removed.
        """
        if lane.error is not None:
            log.warning("%s ended: %s", lane.source.source_id, lane.error)
        # A file's reader stops at its next refused frame; a live one may sit in a network read,
        # and closes its own stream when the read returns.
        stages.join_reader(lane.source.source_id, LIVE_JOIN_S if lane.source.is_live else None)
        lane.summary.dropped = max(lane.summary.dropped, stages.dropped(lane.source.source_id))
        own = list(lane.own_sinks)
        self._log_close_errors(lane.close_outputs())
        lane.mark_ended()
        with self._lanes_lock:  # with remove_source's check: a removal now is either seen here or settled there
            if lane.removing:
                self._forget(lane)
                stages.forget(lane.source.source_id)
                self.sinks = [sink for sink in self.sinks if sink not in own]
            lane.closed.set()

    @staticmethod
    def _log_close_errors(errors: list[tuple[str, BaseException]]) -> None:
        for what, exc in errors:
            log.error("%s failed: %s", what, exc)

    @property
    def max_batch(self) -> int | None:
        """Frames per batch: `batch.max_batch`, or the size measured at start-up (None until then)."""
        stages = self._stages
        return stages.max_batch if stages is not None else self.batch.max_batch

    def streams(self) -> list[StreamStatus]:
        """Every source's status now (state, counts, fps, latency, targets); safe from any thread."""
        stages = self._stages
        return [
            lane.status(stages.dropped(source_id) if stages is not None else 0)
            for source_id, lane in self._lanes.items()
        ]

    def metrics(self) -> PipelineMetrics:
        """What `/metrics` exposes: every stream's status, the latency and batch size histograms, queue depths."""
        stages = self._stages
        return PipelineMetrics(
            streams=tuple(self.streams()),
            latency=self.latency.snapshot(),
            batch_size=(stages.batch_sizes if stages is not None else Histogram(BATCH_SIZE_BUCKETS)).snapshot(),
            queue_depth=stages.queue_depths() if stages is not None else {"intake": 0, "prepared": 0, "results": 0},
            outputs=tuple(sink.counts() for sink in self._shared if isinstance(sink, CountedOutput)),
        )

    def _submit(self, source_id: str | None, pending: PendingChange) -> None:
        """Queue on one source, or (None) on every source still running; all of them or none."""
        now = self._lanes
        if source_id is not None and source_id not in now:
            raise PromptError(f"no source {redact_url(source_id)!r}: the sources are {', '.join(now) or 'none'}")
        lanes = [now[source_id]] if source_id is not None else list(now.values())
        with ExitStack() as held:
            for lane in lanes:  # always in the same order: no two callers wait for each other
                held.enter_context(lane.lock)
            if source_id is None:
                lanes = [lane for lane in lanes if not lane.ended]
                if not lanes:
                    (only,) = now.values() if len(now) == 1 else (None,)
                    raise PromptError(
                        only.ended_why if only is not None else "every source has ended, or the run was stopped"
                    )
            for lane in lanes:
                lane.room_for(pending)
            for lane in lanes:
                lane.queue(pending)

    def add_prompt(self, prompt: Prompt, replace: bool = False) -> None:
        """Apply `prompt` on frame `prompt.frame` of its source(s), or on the next frame when that has passed.

        Its targets are added (or, with `replace`, become the only targets). Safe from any thread;
        a prompt that then selects nothing is a prompt_failed event, not an error.

        Args:
            prompt: A non-empty prompt; `prompt.source_id` None applies it to every source still running.
            replace: Replace every current target instead of adding to them.

        Raises:
            PromptError: The prompt is empty, names an unknown source, needs CLIP that was not
                loaded, or its source(s) cannot take another change: ended, stopped, or
                MAX_PENDING_COMMANDS changes waiting (a replace is still taken then, up to
                MAX_PENDING_CLEARING; it supersedes the changes waiting for its frame).
        """
        if prompt.is_empty:
            raise PromptError("the prompt is empty: give points, boxes, text or a mask")
        self._check_prompt(prompt, list(self._lanes))
        self._submit(prompt.source_id, PendingChange(prompt.frame, prompt, replace=replace))

    def drop_targets(self, ids: Iterable[int] | None = None, source_id: str | None = None, frame: int = 0) -> None:
        """Stop following targets `ids` (None: every target) from frame `frame` (or the next frame) on.

        Ids are counted per source, so dropping ids in a run of several sources needs `source_id`.

        Args:
            ids: Target ids to drop; None drops every target.
            source_id: The source to drop them from; None: every source (with ids: the only source).
            frame: The first frame without them.

        Raises:
            PromptError: No ids given (an empty list), ids without a source in a run of several,
                an unknown source, or a source that cannot take another change (ended, stopped,
                or MAX_PENDING_CLEARING changes waiting: a drop is taken past MAX_PENDING_COMMANDS).
        """
        if ids is None:
            return self._submit(source_id, PendingChange(frame))
        drop = frozenset(int(i) for i in ids)
        if source_id is None and len(self._lanes) > 1:
            raise PromptError("target ids are counted per source: name the source to drop them from")
        if not drop:
            raise PromptError("no target ids given to drop (give none at all to drop every target)")
        if source_id is None and not self._lanes:
            raise PromptError("there is no stream to drop targets from")
        only = source_id if source_id is not None else next(iter(self._lanes))
        self._submit(only, PendingChange(frame, drop_ids=drop))

    def targets(self) -> dict[str, list[int]]:
        """Current target ids of every source (as of its latest change); safe from any thread."""
        return {source_id: sorted(lane.target_ids) for source_id, lane in self._lanes.items()}

    def __iter__(self) -> Iterator[FrameResult]:
        return self.results()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stop(self) -> None:
        """Ask the run to end after the frame in hand; safe from signal handlers and other threads.

        Every sink then has the same frames, and is finalised.
        """
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
        with self._lanes_lock:  # a source joining now is in these stages' sources, or added to them
            stages = SegmentingStages(
                self.sources, self.segmenter, self.batch, self._stop_requested, self.drop_policy, self.keep_running
            )
            self._stages = stages
        # A caller that leaves the loop without close() leaves the threads running; at interpreter
        # exit they would die inside torch or FFmpeg (an abort). Close such a run first. The weak
        # reference keeps the registration from holding the pipeline alive.
        at_exit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(at_exit)
        try:
            stages.start()
            for item in stages:
                if isinstance(item, Segmented):
                    lane = self._lanes[item.frame.source_id]  # a lane leaves only after its SourceEnded
                    result = self._handled(lane, stages, item)
                    if result is None:
                        continue
                    yield result
                    if self._stop_requested.is_set():
                        break
                elif isinstance(item, SourceEvent):
                    self._handled(self._lanes[item.source_id], stages, item)
                elif isinstance(item, SourceEnded):
                    lane = self._lanes[item.source_id]
                    lane.end(item, self._stop_requested.is_set())
                    if lane.removing or self.keep_running:
                        self._finish_lane(lane, stages)  # shown ended once its outputs are final
                    else:
                        lane.mark_ended()
            self.summary.interrupted = self._stop_requested.is_set()
        except BaseException as exc:
            self.summary.interrupted = isinstance(exc, (KeyboardInterrupt, GeneratorExit))
            atexit.unregister(at_exit)
            stopped = self.summary.interrupted or self._stop_requested.is_set()
            self._shut_down(stages, "the run was stopped" if stopped else "the run ended with an error", raising=exc)
            raise
        atexit.unregister(at_exit)
        # A service's failed sources were reported as they ended; a run raises the first failure.
        failed = [] if self.keep_running else [lane for lane in self._lanes.values() if lane.error is not None]
        self._shut_down(stages, "the run was stopped", raising=failed[0].error if failed else None)
        if failed:  # after every other source has finished and every sink is final
            self.summary.error_source = failed[0].source.source_id  # its summary only points at the error
            raise failed[0].error

    def _handled(self, lane: Lane, stages: SegmentingStages, item: Segmented | SourceEvent) -> FrameResult | None:
        """A frame's result through its lane and sinks, or an event to its lane; None for an event or a failed lane.

        In a run, a failure (a sink's full disk, a bug) ends the run. In a service it ends only its
        own stream: the stream leaves the stages, shows as ended with the error, and its outputs are
        finalised when its end comes through; the other streams go on.
        """
        if lane.failed:  # what its stages still hand on after the failure is not written
            return None
        try:
            if isinstance(item, SourceEvent):
                lane.event(item)
                return None
            result = lane.result(item)
            for sink in lane.sinks:
                sink.write(result)
            return result
        except Exception as exc:
            if not self.keep_running:
                raise
            lane.failed, lane.error, lane.summary.error = True, exc, str(exc)
            stages.remove_source(lane.source.source_id)
            return None

    def run(self, on_result: Callable[[FrameResult], object] | None = None) -> RunSummary:
        """Drive the pipeline to the end of every source; returns the summary."""
        for result in self.results():
            if on_result is not None:
                on_result(result)
        return self.summary

    def _shut_down(self, stages: SegmentingStages, why: str, raising: BaseException | None) -> None:
        """Stop the threads, report the changes left waiting, finalise every sink, close the sources.

        Signals wait meanwhile. Changes still waiting on a source that has not ended are
        prompt_failed events saying `why`, written before the sinks close. A failure while doing
        so is raised only when no error (`raising`) is already on its way out, so it never hides
        the error that ended the run; one not raised is logged.
        """
        self.summary.finished_at = time.monotonic()
        errors: list[tuple[str, BaseException]] = []
        with _interrupts_deferred():
            stages.stop()
            for source_id, lane in self._lanes.items():  # drops after the last result count too
                lane.summary.dropped = max(lane.summary.dropped, stages.dropped(source_id))
            for lane in self._lanes.values():
                try:
                    lane.abandon(why)
                except Exception as exc:  # noqa: BLE001 - an event sink that fails must not keep the others open
                    errors.append((f"reporting the changes left for {lane.source.source_id}", exc))
            with self._lanes_lock:  # a remove_source now closes its lane itself, or leaves it to us
                open_lanes = [lane for lane in self._lanes.values() if not lane.closed.is_set()]
                for lane in open_lanes:
                    lane.closed.set()
            own = [sink for lane in open_lanes for sink in lane.own_sinks]
            places = [lane.places for lane in open_lanes if lane.places is not None]
            sources = [lane.source for lane in open_lanes]
            for closing in [*dict.fromkeys([*self._shared, *own]), *places, *sources]:
                try:
                    closing.close()
                except Exception as exc:  # noqa: BLE001 - every sink gets closed before we report
                    errors.append((f"closing {type(closing).__name__}", exc))
            for lane in open_lanes:
                lane.own_sinks, lane.places = [], None
        raised = errors[0][1] if errors and raising is None else None
        reported = raising if raising is not None else raised
        for what, exc in errors:
            # The caller reports `reported`: one line, not two. A full disk fails every sink on it;
            # the first failure says so, the others follow from it (--debug shows them).
            if exc is raised or (isinstance(exc, DiskFullError) and isinstance(reported, DiskFullError)):
                log.debug("%s failed: %s", what, exc)
            else:
                log.error("%s failed: %s", what, exc)
        if raised is not None:
            raise raised


def _close_at_exit(pipeline_ref: weakref.ref[Pipeline]) -> None:
    pipeline = pipeline_ref()
    if pipeline is None:
        return
    try:
        pipeline.close()
    except ValueError:  # "generator already executing": its loop runs in another (daemon) thread
        pipeline.stop()


@contextmanager
def _interrupts_deferred():
    """Hold Ctrl-C and SIGTERM off while threads stop and sinks finalise.

    A video is then never left without its trailer. (Signal handlers can only be changed from
    the main thread.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
