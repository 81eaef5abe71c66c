"""One source's lane in a running pipeline: its pending target changes, tracker, sinks, counts and state.

Each source is a lane of its own, so a camera that reconnects at another resolution, or a file that
ends, leaves the others alone. A lane lives in the pipeline's thread; other threads only queue
changes on it (under its lock) and read its status.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass

from ..core import EventKind, FrameResult, PlaceState, Prompt, SourceEvent, TargetChange, TrackState, ZoneEvent
from ..errors import PromptError
from ..sinks.base import EventSink, Sink
from ..sources.base import Source
from ..trackers import Tracker
from .batcher import Segmented
from .intake import SourceEnded
from .places import PlaceStage
from .prompts import TextScorer, fit_to_frame, select
from .status import Histogram, RecentFrames, StreamState, StreamStatus
from .summary import SourceSummary

log = logging.getLogger(__name__)

_STATE_AFTER = {  # a live source's events move its stream to these states
    EventKind.CONNECTED: StreamState.STREAMING,
    EventKind.RECONNECTED: StreamState.STREAMING,
    EventKind.LOST: StreamState.RECONNECTING,
    EventKind.GAVE_UP: StreamState.GAVE_UP,
}

MAX_PENDING_COMMANDS = 64  # per source: changes waiting; past it only drops and replaces are taken, ...
MAX_PENDING_CLEARING = 2 * MAX_PENDING_COMMANDS  # ... up to this many (so a flood of them is bounded too)


@dataclass(frozen=True)
class PendingChange:
    """A change of targets waiting for frame `frame` of its source.

    It is a prompt to apply (adding its targets, or replacing every target when `replace`), or,
    with no prompt, targets to drop (`drop_ids`; None: all of them). A `strict` one (given at
    start) ends the run when it selects nothing; any other (the control interface) becomes a
    prompt_failed event. Either kind, superseded (see `Lane.queue`) or still waiting when the
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
        """What the change does, for events and logs."""
        if self.prompt is None:
            return "dropped " + (
                "every target" if self.drop_ids is None else "targets " + ", ".join(map(str, sorted(self.drop_ids)))
            )
        return f"{'replaced every target with' if self.replace else 'added'} {self.prompt.describe()}"


class Lane:
    """One source's state in the caller's thread: pending prompts, tracker, sinks and counts."""

    def __init__(
        self,
        source: Source,
        tracker: Tracker,
        sinks: list[Sink],
        pending: list[PendingChange],
        scorer: TextScorer | None = None,
        own_sinks: list[Sink] | None = None,
        latency: Histogram | None = None,
        places: PlaceStage | None = None,
    ) -> None:
        self.source = source
        self.tracker = tracker
        self.sinks = sinks
        self.own_sinks = list(own_sinks or [])  # this lane's alone: closed when it leaves a running pipeline
        self.event_sinks = [sink for sink in sinks if isinstance(sink, EventSink)]
        self.scorer = scorer
        self.pending = pending  # in arrival order
        self._inbox: list[PendingChange] = []  # from other threads, moved to `pending` at each frame
        self._superseded: list[tuple[PendingChange, PendingChange]] = []  # (change, what superseded it), to report
        self._lock = threading.Lock()  # guards pending, _inbox, _superseded, _next_due and ended between the threads
        self._next_due = 0  # the first frame a change queued now can apply on (frames up to it have taken theirs)
        self.target_ids: frozenset[int] = frozenset()  # replaced whole, so other threads may read it
        self.ended = False
        self.ended_why = f"source {source.source_id} has ended"  # what a change sent after the end is told
        self.next_index = 0  # the index after the latest frame's
        self.shape: tuple[int, int] | None = None  # (height, width) of the frames so far
        self.error: BaseException | None = None  # what ended this source, if it failed
        self.summary = SourceSummary(source.source_id, is_live=source.is_live)
        self.state = StreamState.CONNECTING  # replaced whole, read by other threads
        self.recent = RecentFrames()
        self.latency = latency  # the pipeline's histogram, shared by its lanes
        self.removing = False  # asked to leave; `closed` is set once it has, with its outputs final
        self.failed = False  # a sink or a stage failed on it (a service): it is leaving, its results unwritten
        self.closed = threading.Event()
        self.places = places  # its zones and lines, if any are configured
        self.place_states: tuple[PlaceState, ...] = ()  # as of the latest frame, read by other threads
        self.zone_events: Counter[tuple[str, str]] = Counter()  # (place, event kind) -> count

    def status(self, dropped: int) -> StreamStatus:
        """This stream's status now; `dropped` is the stages' count (the summary's lags behind)."""
        fps, p50, p99 = self.recent.rates()
        height, width = self.shape if self.shape is not None else (None, None)
        return StreamStatus(
            id=self.source.source_id,
            state=self.state,
            frames=self.summary.frames,
            dropped=max(dropped, self.summary.dropped),
            reconnects=self.summary.reconnects,
            fps=fps,
            latency_p50_ms=p50,
            latency_p99_ms=p99,
            targets=tuple(sorted(self.target_ids)),
            is_live=self.source.is_live,
            width=width,
            height=height,
            error=self.summary.gave_up or self.summary.error,
            places=self.place_states,
            zone_events=tuple((place, kind, n) for (place, kind), n in sorted(self.zone_events.items())),
        )

    @property
    def lock(self) -> threading.Lock:
        """Held to queue a change on several lanes at once (all of them or none), with `room_for` and `queue`."""
        return self._lock

    def check_room(self, pending: PendingChange | None = None) -> None:
        """PromptError unless this lane can take `pending` now (None: one more add)."""
        with self._lock:
            self.room_for(pending)

    def room_for(self, pending: PendingChange | None) -> None:
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

    def _moot(self, pending: PendingChange) -> list[PendingChange]:
        """The waiting changes a replace or drop of every target makes moot: those applying on its frame, before it.

        A change applies on the first frame at or after both its own frame and `_next_due`; two
        with the same such frame apply on the same frame, in arrival order, and a clearing change
        undoes whatever came before it there.
        """
        if not pending.clears:
            return []
        frame = max(pending.frame, self._next_due)
        return [p for p in (*self.pending, *self._inbox) if max(p.frame, self._next_due) == frame]

    def queue(self, pending: PendingChange) -> None:
        """Queue a change, with `lock` held and `room_for(pending)` passed: it supersedes what it makes moot."""
        moot = {id(p) for p in self._moot(pending)}
        if moot:
            self._superseded += [(p, pending) for p in (*self.pending, *self._inbox) if id(p) in moot]
            self.pending = [p for p in self.pending if id(p) not in moot]
            self._inbox = [p for p in self._inbox if id(p) not in moot]
        self._inbox.append(pending)

    def submit(self, pending: PendingChange) -> None:
        """Queue a change from any thread; it applies on the first frame at or after `pending.frame`."""
        with self._lock:
            self.room_for(pending)
            self.queue(pending)

    def result(self, item: Segmented) -> FrameResult:
        """The frame's result: due changes applied, tracks updated, counts and rates kept."""
        frame, instances = item.frame, item.instances
        now = time.monotonic()
        self.recent.add(now, now - frame.captured_at)
        if self.latency is not None:
            self.latency.observe(now - frame.captured_at)
        if self.state is not StreamState.RECONNECTING:  # a frame decoded before the loss may still come
            self.state = StreamState.STREAMING
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
        result = FrameResult(frame, instances, tracks, rows, item.dropped_before)
        if self.places is not None:
            result, events = self.places(result)
            self.place_states = result.places
            for event in events:
                self.zone_event(event)
        return result

    def zone_event(self, event: ZoneEvent) -> None:
        """A zone or line event of this source: counted, logged and handed to the event sinks."""
        self.zone_events[(event.place, event.kind.value)] += 1
        direction = f" ({event.direction})" if event.direction else ""
        log.info(
            "%s: %s%s %s, track %d, frame %d",
            event.source_id,
            event.kind.value,
            direction,
            event.place,
            event.track_id,
            event.frame,
        )
        for sink in self.event_sinks:
            sink.on_event(event)

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
        """An event of this source: counted, its state moved, logged and handed to the event sinks."""
        if event.kind is EventKind.RECONNECTED:
            self.summary.reconnects += 1
        elif event.kind is EventKind.GAVE_UP:
            self.summary.gave_up = event.message
        self.state = _STATE_AFTER.get(event.kind, self.state)
        level = logging.INFO if event.kind in (EventKind.CONNECTED, EventKind.TARGETS_CHANGED) else logging.WARNING
        log.log(level, "%s", event.describe())
        for sink in self.event_sinks:
            sink.on_event(event)

    def _failed(self, pending: PendingChange, index: int, reason: str) -> None:
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

    def _close_queue(self, why: str) -> list[PendingChange]:
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
        left = self._close_queue(f"source {self.source.source_id} {'was removed' if self.removing else 'has ended'}")
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

    def mark_ended(self) -> None:
        """Show the stream as ended (a live source that gave up stays `gave_up`): its outputs are final or closing."""
        if self.state is not StreamState.GAVE_UP:
            self.state = StreamState.ENDED

    def close_outputs(self) -> list[tuple[str, BaseException]]:
        """Finalise this lane's own sinks and snapshots, and close its source; returns what failed, (what, error)."""
        errors = []
        for closing in [*self.own_sinks, *([self.places] if self.places else []), self.source]:
            try:
                closing.close()
            except Exception as exc:  # noqa: BLE001 - every sink gets closed before we report
                errors.append((f"closing {type(closing).__name__} of {self.source.source_id}", exc))
        self.own_sinks, self.places = [], None
        return errors

    def abandon(self, why: str) -> None:
        """The run is over before this source's end: every change still waiting becomes a prompt_failed event."""
        left = [] if self.ended else self._close_queue(f"{why}: source {self.source.source_id} takes no more changes")
        self._report_superseded(self.next_index)
        for pending in left:
            self._failed(pending, self.next_index, f"{why} before frame {max(pending.frame, self.next_index)}")
