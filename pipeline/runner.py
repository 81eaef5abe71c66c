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
from dataclasses import dataclass

from ..core import EventKind, FrameResult, Prompt, SourceEvent, TargetChange, TrackState
from ..errors import DiskFullError, PromptError
from ..sinks.base import EventSink, Sink, as_sink
from ..sources.base import DropPolicy, Source
from ..sources.redact import redact_url
from ..trackers import ByteTracker, Tracker
from .batcher import DEFAULT_BATCH_SETTINGS, BatchSettings, Segmented, SegmentingStages
from .intake import SourceEnded
from .prompts import TextScorer, check_source, fit_to_frame, select
from .segmenter import Segmenter
from .summary import RunSummary, SourceSummary

log = logging.getLogger(__name__)

SinkLike = Sink | Callable[[FrameResult], object]
MAX_PENDING_COMMANDS = 64  # per source: changes waiting; past it only drops and replaces are taken, ...
MAX_PENDING_CLEARING = 2 * MAX_PENDING_COMMANDS  # ... up to this many (so a flood of them is bounded too)


@dataclass(frozen=True)
class _Pending:
    """A change of targets waiting for frame `frame` of its source.

    It is a prompt to apply (adding its targets, or replacing every target when `replace`), or,
    with no prompt, targets to drop (`drop_ids`; None: all of them). A `strict` one (given at
    start) ends the run when it selects nothing; any other (the control interface) becomes a
    prompt_failed event. Either kind, superseded (see `_Lane.queue`) or still waiting when the
    run stops, is a prompt_failed event.
    """

    frame: int
    prompt: Prompt | None = None
    replace: bool = False
    drop_ids: frozenset[int] | None = None
    strict: bool = False

    @property
    def clears(self) -> bool:
        """A replace or a drop of every target: every change applied on its frame before it no longer matters."""
        return self.replace or (self.prompt is None and self.drop_ids is None)

    @property
    def taken_when_full(self) -> bool:
        """Not an add: a drop or a replace, which a full queue still takes."""
        return self.prompt is None or self.replace

    def describe(self) -> str:
        if self.prompt is None:
            return "dropped " + (
                "every target" if self.drop_ids is None else "targets " + ", ".join(map(str, sorted(self.drop_ids)))
            )
        return f"{'replaced every target with' if self.replace else 'added'} {self.prompt.describe()}"


class _Lane:
    """One source's state in the caller's thread: pending prompts, tracker, sinks and counts."""

    def __init__(
        self,
        source: Source,
        tracker: Tracker,
        sinks: list[Sink],
        pending: list[_Pending],
        scorer: TextScorer | None = None,
    ) -> None:
        self.source = source
        self.tracker = tracker
        self.sinks = sinks
        self.event_sinks = [sink for sink in sinks if isinstance(sink, EventSink)]
        self.scorer = scorer
        self.pending = pending  # in arrival order
        self._inbox: list[_Pending] = []  # from other threads, moved to `pending` at each frame
        self._superseded: list[tuple[_Pending, _Pending]] = []  # (change, the one that superseded it), to report
        self._lock = threading.Lock()  # guards pending, _inbox, _superseded, _next_due and ended between the threads
        self._next_due = 0  # the first frame a change queued now can apply on (frames up to it have taken theirs)
        self.target_ids: frozenset[int] = frozenset()  # replaced whole, so other threads may read it
        self.ended = False
        self.ended_why = f"source {source.source_id} has ended"  # what a change sent after the end is told
        self.next_index = 0  # the index after the latest frame's
        self.shape: tuple[int, int] | None = None  # (height, width) of the frames so far
        self.error: BaseException | None = None  # what ended this source, if it failed
        self.summary = SourceSummary(source.source_id, is_live=source.is_live)

    @property
    def lock(self) -> threading.Lock:
        """Held to queue a change on several lanes at once (all of them or none), with `room_for` and `queue`."""
        return self._lock

    def check_room(self, pending: _Pending | None = None) -> None:
        """PromptError unless this lane can take `pending` now (None: one more add)."""
        with self._lock:
            self.room_for(pending)

    def room_for(self, pending: _Pending | None) -> None:
        """PromptError unless this lane can take `pending` (None: one more add); call it with `lock` held.

        An add is refused once MAX_PENDING_COMMANDS changes wait; a drop or a replace is still
        taken, with what it supersedes counted out, up to MAX_PENDING_CLEARING.
        """
        if self.ended:
            raise PromptError(self.ended_why)
        waiting = len(self._inbox) + len(self.pending)
        if pending is None or not pending.taken_when_full:
            if waiting >= MAX_PENDING_COMMANDS:
                raise PromptError(
                    f"{MAX_PENDING_COMMANDS} changes are already waiting for {self.source.source_id}: "
                    "wait for them to apply, or send a drop or a replace (those are still taken)"
                )
        elif waiting - len(self._moot(pending)) >= MAX_PENDING_CLEARING:
            raise PromptError(f"{MAX_PENDING_CLEARING} changes are already waiting for {self.source.source_id}")

    def _moot(self, pending: _Pending) -> list[_Pending]:
        """The waiting changes a replace or drop of every target makes moot: those applying on its frame, before it.

        A change applies on the first frame at or after both its own frame and `_next_due`; two
        with the same such frame apply on the same frame, in arrival order, and a clearing change
        undoes whatever came before it there.
        """
        if not pending.clears:
            return []
        frame = max(pending.frame, self._next_due)
        return [p for p in (*self.pending, *self._inbox) if max(p.frame, self._next_due) == frame]

    def queue(self, pending: _Pending) -> None:
        """Queue a change, with `lock` held and `room_for(pending)` passed: it supersedes what it makes moot."""
        moot = {id(p) for p in self._moot(pending)}
        if moot:
            self._superseded += [(p, pending) for p in (*self.pending, *self._inbox) if id(p) in moot]
            self.pending = [p for p in self.pending if id(p) not in moot]
            self._inbox = [p for p in self._inbox if id(p) not in moot]
        self._inbox.append(pending)

    def submit(self, pending: _Pending) -> None:
        """Queue a change from any thread; it applies on the first frame at or after `pending.frame`."""
        with self._lock:
            self.room_for(pending)
            self.queue(pending)

    def result(self, item: Segmented) -> FrameResult:
        frame, instances = item.frame, item.instances
        self.next_index = frame.index + 1
        self._follow_shape(frame.height, frame.width, frame.index)
        change, notes = self._due_changes(item)
        tracks = self.tracker.update(instances, change, frame.image)
        # A target's rows come from its tracker alone (on a prompt's frame: the prompt's selection,
        # which the tracker took from TargetChange.parts).
        rows = {t.id: (t.row, *t.parts) for t in tracks if t.is_target and t.row is not None}
        before, self.target_ids = (
            self.target_ids,
            frozenset(t.id for t in tracks if t.is_target and t.state is not TrackState.REMOVED),
        )
        if change is not None:
            self.event(
                SourceEvent(
                    self.source.source_id,
                    EventKind.TARGETS_CHANGED,
                    frame.index,
                    time.time(),
                    message="; ".join(notes),
                    added=tuple(sorted(self.target_ids - before)),
                    dropped=tuple(sorted(before - self.target_ids)),
                )
            )
        self.summary.frames += 1
        self.summary.dropped += item.dropped_before
        self.summary.frames_with_target += bool(rows)
        return FrameResult(frame, instances, tracks, rows, item.dropped_before)

    def _due_changes(self, item: Segmented) -> tuple[TargetChange | None, list[str]]:
        """The changes due on this frame, merged in arrival order.

        Live sources may drop a prompt's own frame: the first frame at or after it is used.
        """
        index = item.frame.index
        with self._lock:
            self.pending += self._inbox
            self._inbox.clear()
            due = [p for p in self.pending if p.frame <= index]
            self.pending = [p for p in self.pending if p.frame > index]
            self._next_due = index + 1
        self._report_superseded(index)
        change, notes = None, []
        for pending in due:
            note = pending.describe()
            if pending.prompt is None and pending.drop_ids is not None and not pending.drop_ids & self.target_ids:
                self._failed(pending, index, f"no such target (targets: {sorted(self.target_ids)})")
                continue
            if pending.prompt is None:
                step = TargetChange(drop_ids=pending.drop_ids or frozenset(), drop_all=pending.drop_ids is None)
            else:
                clipped: tuple[str, ...] = ()
                try:
                    height, width = item.instances.image_shape
                    prompt, clipped = fit_to_frame(pending.prompt, height, width)
                    for line in clipped:  # the event says it too
                        log.warning("%s: frame %d: %s", self.source.source_id, index, line)
                    chosen = select(prompt, item.instances, item.frame.image, self.scorer)
                except Exception as exc:  # noqa: BLE001 - a prompt sent while running must never end the run
                    if pending.strict:
                        raise
                    reason = str(exc) if isinstance(exc, PromptError) else f"{type(exc).__name__}: {exc}"
                    self._failed(pending, index, "; ".join((*clipped, reason)))
                    continue
                step = TargetChange(
                    add_rows=tuple(s.track_row for s in chosen),
                    drop_all=pending.replace,
                    parts={s.track_row: s.rows for s in chosen if len(s.rows) > 1},
                )
                if clipped:
                    note += f" ({'; '.join(clipped)})"
            notes.append(note)
            change = step if change is None else change.then(step)
        return change, notes

    def _follow_shape(self, height: int, width: int, index: int) -> None:
        """A stream that comes back at another size: tracks move to the new coordinates."""
        if self.shape is not None and self.shape != (height, width):
            old_h, old_w = self.shape
            self.tracker.rescale(width / old_w, height / old_h)
            self.event(
                SourceEvent(
                    self.source.source_id,
                    EventKind.RESIZED,
                    index,
                    time.time(),
                    width=width,
                    height=height,
                    message=f"was {old_w}x{old_h}",
                )
            )
        self.shape = (height, width)

    def event(self, event: SourceEvent) -> None:
        if event.kind is EventKind.RECONNECTED:
            self.summary.reconnects += 1
        elif event.kind is EventKind.GAVE_UP:
            self.summary.gave_up = event.message
        level = logging.INFO if event.kind in (EventKind.CONNECTED, EventKind.TARGETS_CHANGED) else logging.WARNING
        log.log(level, "%s", event.describe())
        for sink in self.event_sinks:
            sink.on_event(event)

    def _failed(self, pending: _Pending, index: int, reason: str) -> None:
        """A change that did not apply: a prompt_failed event (with `index` as its next_frame) saying why."""
        self.event(
            SourceEvent(
                self.source.source_id,
                EventKind.PROMPT_FAILED,
                index,
                time.time(),
                message=f"{pending.describe()}: {reason}",
            )
        )

    def _report_superseded(self, index: int) -> None:
        with self._lock:
            superseded, self._superseded = self._superseded, []
        for pending, by in superseded:
            self._failed(pending, index, f"superseded by a later change for the same frame ({by.describe()})")

    def _close_queue(self, why: str) -> list[_Pending]:
        """Take no more changes (`why` says so to whoever sends one); returns those still waiting."""
        with self._lock:
            self.ended = True
            self.ended_why = why
            left, self.pending = self.pending + self._inbox, []
            self._inbox.clear()
        return left

    def end(self, ended: SourceEnded, interrupted: bool) -> None:
        """The source has no more frames.

        A change still waiting becomes a prompt_failed event (a change sent while running is never
        lost silently). A failure, or a prompt given at start that a file never reached, ends this
        lane with an error (raised when the run is over); a live source that gave up is already
        reported.
        """
        left = self._close_queue(f"source {self.source.source_id} has ended")
        self._report_superseded(self.next_index)
        error = ended.error
        strict = [p.frame for p in left if p.strict]
        if error is None and strict and not interrupted and not self.source.is_live:
            error = PromptError(
                f"{self.source.source_id} ended after {self.summary.frames} frames, before prompt frame {min(strict)}"
            )
            left = [p for p in left if not p.strict]  # the error says it
        for pending in left:
            self._failed(
                pending, self.next_index, f"the source ended before frame {max(pending.frame, self.next_index)}"
            )
        if error is not None:
            self.error = error
            self.summary.error = str(error)
            # Not logged as an error: the run raises it when every source is done (the command line prints it).
            log.debug("%s failed: %s", self.source.source_id, error)

    def abandon(self, why: str) -> None:
        """The run is over before this source's end: every change still waiting becomes a prompt_failed event."""
        left = [] if self.ended else self._close_queue(f"{why}: source {self.source.source_id} takes no more changes")
        self._report_superseded(self.next_index)
        for pending in left:
            self._failed(pending, self.next_index, f"{why} before frame {max(pending.frame, self.next_index)}")


class Pipeline:
    """Iterate it for FrameResults, or call `run()` to drive it to the end for the sinks.

    `sources`: one Source or several; their frames share the segmenter's batches, and everything
    after segmentation is per source. `tracker`: a Tracker (one source) or a zero-argument
    factory (default ByteTracker), called once per source. `sinks` receive every source's
    results; `sinks_for(source)` gives sinks of one source's own. Sinks may be Sink objects or
    plain callables; a sink with an `on_event(SourceEvent)` method also gets its sources' events.
    `prompt`: one Prompt or several, each for its frame and source (None: every source); text
    prompts need a `text_scorer` (pipeline/clip.py). While it runs, `add_prompt()` and
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
    ) -> None:
        self.sources = [sources] if isinstance(sources, Source) else list(sources)
        if not self.sources:
            raise ValueError("a Pipeline needs at least one source")
        ids = [s.source_id for s in self.sources]
        if len(set(ids)) != len(ids):
            raise ValueError(f"source ids must be unique, got {ids}")
        self.segmenter = segmenter
        self.text_scorer = text_scorer
        given = [prompt] if isinstance(prompt, Prompt) else list(prompt or ())
        self.prompts = [p for p in given if not p.is_empty]
        for p in self.prompts:
            self._check_prompt(p)
        self.batch = batch
        self.drop_policy = drop_policy
        shared = [as_sink(s) for s in sinks]
        self._lanes = {
            s.source_id: _Lane(
                s,
                self._tracker_for(tracker),
                shared + [as_sink(k) for k in (sinks_for(s) if sinks_for else ())],
                self._prompts_for(s),
                text_scorer,
            )
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
            return ByteTracker()
        if isinstance(tracker, Tracker) and not isinstance(tracker, type):  # an instance, not a class or factory
            if len(self.sources) > 1:
                raise ValueError("several sources need a tracker each: pass a factory (e.g. a class), not an instance")
            return tracker
        return tracker()

    def _check_prompt(self, prompt: Prompt) -> None:
        check_source(prompt.source_id, [s.source_id for s in self.sources])
        if prompt.text and self.text_scorer is None:
            raise PromptError("text prompts need CLIP: pass a text_scorer (load_clip) / set clip weights")

    def _prompts_for(self, source: Source) -> list[_Pending]:
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
            pending.append(_Pending(p.frame, p, strict=True))
        return pending

    def _submit(self, source_id: str | None, pending: _Pending) -> None:
        """Queue on one source, or (None) on every source still running; all of them or none."""
        if source_id is not None and source_id not in self._lanes:
            raise PromptError(f"no source {redact_url(source_id)!r}: the sources are {', '.join(self._lanes)}")
        lanes = [self._lanes[source_id]] if source_id is not None else list(self._lanes.values())
        with ExitStack() as held:
            for lane in lanes:  # always in the same order: no two callers wait for each other
                held.enter_context(lane.lock)
            if source_id is None:
                lanes = [lane for lane in lanes if not lane.ended]
                if not lanes:
                    (only,) = self._lanes.values() if len(self._lanes) == 1 else (None,)
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
        self._check_prompt(prompt)
        self._submit(prompt.source_id, _Pending(prompt.frame, prompt, replace=replace))

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
            return self._submit(source_id, _Pending(frame))
        drop = frozenset(int(i) for i in ids)
        if source_id is None and len(self._lanes) > 1:
            raise PromptError("target ids are counted per source: name the source to drop them from")
        if not drop:
            raise PromptError("no target ids given to drop (give none at all to drop every target)")
        self._submit(source_id if source_id is not None else self.sources[0].source_id, _Pending(frame, drop_ids=drop))

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
            stopped = self.summary.interrupted or self._stop_requested.is_set()
            self._shut_down(stages, "the run was stopped" if stopped else "the run ended with an error", raising=exc)
            raise
        atexit.unregister(at_exit)
        failed = [lane for lane in self._lanes.values() if lane.error is not None]
        self._shut_down(stages, "the run was stopped", raising=failed[0].error if failed else None)
        if failed:  # after every other source has finished and every sink is final
            self.summary.error_source = failed[0].source.source_id  # its summary only points at the error
            raise failed[0].error

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
            for closing in [*self.sinks, *self.sources]:
                try:
                    closing.close()
                except Exception as exc:  # noqa: BLE001 - every sink gets closed before we report
                    errors.append((f"closing {type(closing).__name__}", exc))
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
