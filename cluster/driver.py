"""The driver of a cluster run (`--ray`): streams placed on worker actors, their records written home, moves.

Each stream lives on one worker at a time (its tracker state stays there). The driver asks every
worker for what it has (`drain`, one call in flight per worker), writes each frame's line and each
event as it comes, in order per stream, and hands the records to its caller. A worker that dies
(killed, its node lost, its pipeline failed) fails its call: its streams go to the least loaded
survivors, each resuming at its first frame not yet written, its targets re-seeded from their last
boxes with their ids (resume.py), and events.jsonl says `moved`. With no worker left the run ends
with an error, every file complete up to its last line.

Events that come of a frame (target changes, zone events) travel just before that frame's record;
the driver holds them until the record comes, so a stream moved in between does not log them twice.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ..config import Config
from ..core import EventKind, Prompt, SourceEvent
from ..errors import (
    ClusterError,
    OutputError,
    PromptError,
    StreamConflictError,
    UnknownStreamError,
)
from ..pipeline.status import (
    BATCH_SIZE_BUCKETS,
    LATENCY_BUCKETS_S,
    Histogram,
    OutputCounts,
    PipelineMetrics,
    StreamState,
    StreamStatus,
    WorkerStatus,
)
from ..pipeline.summary import RunSummary, SourceSummary
from ..service.frames import FrameHub, event_json
from ..service.metrics import GpuMemory
from ..sinks.jsonl import EventLogSink
from .connect import Connection
from .home import HomeFiles
from .places import StreamPlace, WorkerHandle, least_loaded, merged, merged_counts
from .records import EventRecord, FrameRecord, StreamClosed
from .worker import RemoteStream, StreamSpec, WorkerReport

log = logging.getLogger(__name__)

DRAIN_WAIT_S = 0.2
"""How long a worker's `drain` waits for its first record: the result path's added latency when idle."""
STOP_TIMEOUT_S = 60.0
"""How long workers get to finalise their outputs at the end of a run."""


class ClusterPipeline:
    """A run whose streams are spread over Ray workers; iterate it (FrameRecords) or `run()` it.

    Built by `build_cluster_pipeline` (cluster/build.py). The interface follows Pipeline's:
    `results()`, `run()`, `stop()`, `close()`, `summary`, `streams()`, `metrics()`, `add_prompt()`,
    `drop_targets()`, `targets()`, and for a service `add_source()` and `remove_source()`; results
    are the tracks.jsonl records (FrameRecord, `latency_s` capture to written here), not
    FrameResults (those stay on the workers).

    Args:
        config: The run's configuration.
        connection: Ray, connected.
        workers: The started workers.
        streams: Every stream, in order.
        keep_running: A service's run: it goes on with no stream, streams join (`add_source`) and
            leave (`remove_source`), until `stop()`.
        hub: The viewer's frame hub (service/frames.py): watched streams' frames come home for it.
    """

    def __init__(
        self,
        config: Config,
        connection: Connection,
        workers: list[WorkerHandle],
        streams: list[StreamPlace],
        keep_running: bool = False,
        hub: FrameHub | None = None,
    ) -> None:
        self.config = config
        self.connection = connection
        self.ray: ModuleType = connection.ray
        self.workers = workers
        self.keep_running = keep_running
        self.hub = hub
        # Serialises the loop's bookkeeping with joins, leaves, prompts and deaths; `places` is
        # replaced whole, so it may be read without it.
        self._lock = threading.RLock()
        self.places = {p.source_id: p for p in streams}
        self.summary = RunSummary({i: p.summary for i, p in self.places.items()})
        self.latency = Histogram(LATENCY_BUCKETS_S)  # capture to written on the driver
        # What the control interface checks before a text prompt: CLIP is loaded on each worker, when the config asks.
        self.text_scorer = "on the workers" if config.needs_clip else None
        self._stop_requested = False
        self._stopping = False
        self._started = False
        self._running: Iterator[FrameRecord] | None = None
        self.on_moved: Callable[[str, str, str], object] | None = None  # (stream, from, to), for tests and logs

    @property
    def frame_count(self) -> int | None:
        """Unknown ahead (the workers open the sources)."""
        return None

    @property
    def sources(self) -> list[StreamSpec]:
        """Every stream, as handed to its worker."""
        return [p.spec for p in self.places.values()]

    @property
    def output_paths(self) -> list[str]:
        """The files written so far: the driver's, then each stream's videos (written by its workers)."""
        paths = []
        for place in self.places.values():
            videos = sorted(place.files.folder.glob("annotated*.mp4"))
            paths += [str(path) for path in [*place.files.paths, *videos]]
        return paths

    def worker_of(self, source_id: str) -> WorkerHandle:
        """The worker a stream is on now.

        Raises:
            UnknownStreamError: No such stream, or it is on no worker.
        """
        place = self.places.get(source_id)
        if place is None or place.worker is None:
            raise UnknownStreamError(f"no running stream {source_id!r}")
        return place.worker

    # -- the run -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the run to end after the frames in hand; safe from signal handlers and other threads."""
        self._stop_requested = True

    def close(self) -> None:
        """End the run now (if one is going): workers stopped, outputs finalised."""
        self.stop()
        if self._running is not None:
            self._running.close()

    def __iter__(self) -> Iterator[FrameRecord]:
        return self.results()

    def run(self, on_result: Callable[[FrameRecord], object] | None = None) -> RunSummary:
        """Drive the run to the end of every stream; returns the summary."""
        for record in self.results():
            if on_result is not None:
                on_result(record)
        return self.summary

    def results(self) -> Iterator[FrameRecord]:
        """Yields each frame's record once it is written, each stream's in order.

        Raises (from the iteration):
            ClusterError: Every worker is lost, or (a run) a stream failed: raised once every other
                stream has finished and every file is final.
        """
        if self._started:
            raise RuntimeError("a ClusterPipeline runs once: build a new one")
        self._started = True
        self._running = self._results()
        return self._running

    def _results(self) -> Iterator[FrameRecord]:
        self.summary.started_at = time.monotonic()
        failure: BaseException | None = None
        try:
            for place in list(self.places.values()):
                self._place(place, least_loaded(self.workers))
            while not self._over():
                if self._stop_requested and not self._stopping:
                    self._stop_workers()
                yield from self._round()
            self.summary.interrupted = self._stop_requested
        except BaseException as exc:
            failure = exc
            self.summary.interrupted = isinstance(exc, (KeyboardInterrupt, GeneratorExit))
            raise
        finally:
            self._finish(failure)
        # A service's failed streams were logged as they ended; a run raises the first failure.
        failed = [] if self.keep_running else [p for p in self.places.values() if p.error is not None]
        if failed:
            self.summary.error_source = failed[0].source_id
            raise ClusterError(f"{failed[0].source_id}: {failed[0].error}")

    def _over(self) -> bool:
        if self._stopping:  # every worker done (or gone)
            return all(w.finished or not w.alive for w in self.workers)
        return not self.keep_running and all(p.closed for p in self.places.values())

    def _round(self) -> Iterator[FrameRecord]:
        """Wait for one worker's report (or a second), and take in what came."""
        calls = {}
        for worker in self.workers:
            if worker.alive and not worker.finished:
                if worker.pending is None:
                    worker.pending = worker.actor.drain.remote(DRAIN_WAIT_S, self._watched(worker))
                    worker.pending_since = time.monotonic()
                calls[worker.pending] = worker
        if not calls:
            raise ClusterError(self._all_lost())
        ready, _ = self.ray.wait(list(calls), num_returns=1, timeout=1.0)
        for ref in ready:
            worker = calls[ref]
            worker.pending = None
            try:
                report = self.ray.get(ref)
            except self.ray.exceptions.RayError as exc:  # died, its node lost, or its result lost with it
                with self._lock:
                    self._lost(worker, exc)
                continue
            yield from self._report(worker, report)

    def _report(self, worker: WorkerHandle, report: WorkerReport) -> list[FrameRecord]:
        """Take in one worker's report; returns the frame records written, to hand on."""
        # The call's time beyond the drain's own: transfer both ways, and the driver busy elsewhere.
        overhead = max(0.0, time.monotonic() - worker.pending_since - (report.sent_at - report.started_at))
        with self._lock:
            if not worker.alive:  # found dead meanwhile: its streams have moved, this is stale
                return []
            worker.report = report
            written = self._take(worker, report, overhead)
            if report.finished:
                worker.finished = True
                if report.error is not None and not self._stopping:  # failed, not asked to stop: move its streams
                    self._lost(worker, ClusterError(f"its pipeline failed: {report.error}"))
                else:
                    self._close_left_on(worker, report.error or "its pipeline stopped")
            previews = [p for p in report.previews if self._on(worker, p.source_id)]
        if self.hub is not None:
            for preview in previews:
                self.hub.write_preview(preview)
        return written

    def _on(self, worker: WorkerHandle, source_id: str) -> StreamPlace | None:
        """The stream's place, if it is running on `worker` (with `_lock` held)."""
        place = self.places.get(source_id)
        return place if place is not None and not place.closed and place.worker is worker else None

    def _watched(self, worker: WorkerHandle) -> list[str]:
        """The worker's streams someone watches in the viewer."""
        if self.hub is None:
            return []
        return [source_id for source_id in list(worker.streams) if self.hub.wanted(source_id)]

    def _take(self, worker: WorkerHandle, report: WorkerReport, overhead_s: float) -> list[FrameRecord]:
        """Write what a report brought (with `_lock` held); returns its frame records.

        Each record's latency becomes capture to written here: the worker's, its wait in the
        outbox, and the call's `overhead_s`. In a service, a stream whose files fail (a full disk)
        ends alone; in a run the failure ends the run.
        """
        written = []
        for message in report.messages:
            place = self._on(worker, message.source_id)
            if place is None:
                continue
            try:
                if isinstance(message, FrameRecord):
                    if message.frame < place.next_frame:  # written already (never expected: a guard)
                        continue
                    waited = report.sent_at - message.made_at
                    record = dataclasses.replace(message, latency_s=message.latency_s + waited + overhead_s)
                    self._written(place, record)
                    written.append(record)
                elif isinstance(message, EventRecord):
                    self._event(place, message)
                elif isinstance(message, StreamClosed):
                    if message.cut and not place.removing and not self._stopping:
                        continue  # its worker's failure: the report saying so moves it
                    self._flush(place)
                    self._closed(place, message.summary)
                    worker.streams.discard(place.source_id)
            except OutputError as exc:
                if not self.keep_running:
                    raise
                self._failed(place, worker, exc)
        return written

    def _event(self, place: StreamPlace, message: EventRecord) -> None:
        if message.frame_tied:
            place.held.append(message)
            return
        kind = message.record.get("event")
        if kind == EventKind.RECONNECTED.value:
            place.summary.reconnects += 1
        elif kind == EventKind.GAVE_UP.value:
            place.summary.gave_up = message.record.get("message") or ""
        self._write_event(place, message.record, message.update)

    def _write_event(self, place: StreamPlace, record: dict, update: dict) -> None:
        place.files.event(record)
        if self.hub is not None:
            self.hub.on_update(place.source_id, update)

    def _flush(self, place: StreamPlace) -> None:
        """The held events: their frame's record has come (or the stream ended)."""
        held, place.held = place.held, []
        for message in held:
            self._write_event(place, message.record, message.update)

    def _written(self, place: StreamPlace, record: FrameRecord) -> None:
        self._flush(place)
        place.files.frame(record)
        place.next_frame = record.frame + 1
        tracks = record.record["tracks"]
        place.max_id = max([place.max_id, *(t["id"] for t in tracks)])
        place.targets = {t["id"]: tuple(t["box"]) for t in tracks if t["target"]}
        summary = place.summary
        summary.frames += 1
        summary.frames_with_target += record.target_found
        summary.dropped += record.record["dropped_before"]
        self.latency.observe(record.latency_s)

    def _closed(self, place: StreamPlace, worker_summary: SourceSummary) -> None:
        """A stream is over (with `_lock` held): its files final, its summary complete."""
        place.closed = True
        summary = place.summary
        summary.dropped = max(summary.dropped, place.dropped_before + worker_summary.dropped)
        summary.gave_up = worker_summary.gave_up if worker_summary.gave_up is not None else summary.gave_up
        if worker_summary.error is not None:
            place.error = summary.error = worker_summary.error
        if place.error is not None and self.keep_running:
            log.warning("%s ended: %s", place.source_id, place.error)
        try:
            place.files.close()
        except OutputError as exc:
            if not self.keep_running:
                raise
            place.error = summary.error = str(exc)
        finally:
            place.done.set()
            if place.removing:  # its remover may have given up waiting: the id is free again
                self._forget(place.source_id)

    def _failed(self, place: StreamPlace, worker: WorkerHandle, exc: OutputError) -> None:
        """A service's stream whose files failed (with `_lock` held): it ends alone, and leaves its worker."""
        place.error = place.summary.error = str(exc)
        worker.streams.discard(place.source_id)
        worker.actor.remove_stream.remote(place.source_id, STOP_TIMEOUT_S)  # its answer is not needed
        self._closed(place, SourceSummary(place.source_id))

    # -- moving streams ----------------------------------------------------------------------

    def _place(self, place: StreamPlace, worker: WorkerHandle | None, raising: bool = False) -> None:
        """Hand a stream to a worker (the next least loaded when one turns out dead).

        The call to the worker is made without `_lock` unless the caller holds it (a move). A
        source the worker cannot open ends the stream with that error, or (`raising`: a service's
        request) is raised to the caller.
        """
        while worker is not None:
            try:
                self._get(worker.actor.add_stream.remote(place.spec))
            except self.ray.exceptions.RayError as exc:
                with self._lock:
                    self._lost(worker, exc)
                    worker = least_loaded(self.workers)
                continue
            except Exception as exc:
                if raising:
                    raise
                with self._lock:
                    place.error = place.summary.error = str(exc)
                    self._closed(place, SourceSummary(place.source_id))
                return
            with self._lock:
                if worker.alive:
                    place.worker = worker
                    worker.streams.add(place.source_id)
                    return
                worker = least_loaded(self.workers)  # it died meanwhile, before this stream was its
        raise ClusterError(self._all_lost())

    def _lost(self, worker: WorkerHandle, exc: BaseException) -> None:
        """A worker is gone (with `_lock` held): its streams move to the survivors (or, stopping, end there)."""
        if not worker.alive:
            return
        worker.alive = False
        try:  # a worker only unreachable for now would go on writing and sending alerts for moved streams
            self.ray.kill(worker.actor, no_restart=True)
        except Exception as exc_kill:  # noqa: BLE001 - gone already
            log.debug("killing %s: %s", worker.name, exc_kill)
        reason = str(exc).splitlines()[0] if isinstance(exc, ClusterError) else type(exc).__name__
        orphans = [self.places[i] for i in sorted(worker.streams) if i in self.places and not self.places[i].closed]
        worker.streams.clear()
        log.warning("%s lost (%s), with streams %s", worker.name, reason, [p.source_id for p in orphans])
        for place in orphans:
            if self._stopping or place.removing:  # nothing more is coming: its files end at their last line
                self._flush(place)
                self._closed(place, SourceSummary(place.source_id))
            else:
                self._move(place, worker, reason)

    def _move(self, place: StreamPlace, dead: WorkerHandle, reason: str) -> None:
        """Resume a stream of a dead worker on the least loaded survivor (with `_lock` held)."""
        target = least_loaded(self.workers)
        if target is None:
            raise ClusterError(self._all_lost())
        place.held = []  # their frame's record never came: the new worker makes them again
        place.dropped_before = place.summary.dropped
        place.parts += 1
        start = place.next_frame
        place.spec = dataclasses.replace(
            place.spec,
            start=start,
            prompts=(),
            strict=False,
            seeds=tuple(sorted(place.targets.items())),
            changes=tuple((p, replace) for p, replace in place.changes if p.frame >= start),
            first_free_id=place.max_id + 1,
            video_name=f"annotated-part{place.parts}.mp4",
        )
        message = f"{dead.name} was lost ({reason}); moved to {target.name}, resuming at frame {start}" + (
            f", re-seeding targets {sorted(place.targets)} from their last boxes" if place.targets else ""
        )
        event = SourceEvent(place.source_id, EventKind.MOVED, start, time.time(), message=message)
        self._write_event(place, EventLogSink.record(event), event_json(event))
        log.warning("%s", event.describe())
        place.worker = None
        self._place(place, target)
        if self.on_moved is not None and place.worker is not None:
            self.on_moved(place.source_id, dead.name, place.worker.name)

    def _close_left_on(self, worker: WorkerHandle, why: str) -> None:
        """A finished worker's streams whose end never came home: their files end where they are."""
        for source_id in sorted(worker.streams):
            place = self.places.get(source_id)
            if place is not None and not place.closed:
                place.error = place.summary.error = f"{worker.name} stopped before it ended: {why}"
                self._flush(place)
                self._closed(place, SourceSummary(source_id))
        worker.streams.clear()

    def _all_lost(self) -> str:
        left = [p.source_id for p in self.places.values() if not p.closed]
        return (
            f"every worker is lost ({', '.join(w.name for w in self.workers)}): "
            f"{', '.join(left) or 'no stream'} could not go on; their outputs end at their last line"
        )

    # -- a service's streams joining and leaving ----------------------------------------------

    def add_source(
        self, source: RemoteStream, sinks: Sequence[object] = (), prompts: Sequence[Prompt] = (), places: None = None
    ) -> None:
        """A stream joins a service's run, on the least loaded worker (which opens it); safe from any thread.

        Args:
            source: The stream, checked and its folder claimed (cluster/build.py ClusterStreamFactory).
            sinks: Must be empty: a stream's outputs are made by the driver and its worker.
            prompts: Its first prompts.
            places: Must be None: zones and lines come from the config, on the worker.

        Raises:
            StreamConflictError: The id is taken, the run is stopping, or it is not a service's run.
            SourceError: Its worker cannot open it.
            ClusterError: Every worker is lost.
        """
        if sinks or places is not None:
            raise ValueError("a cluster stream's outputs and places are made on its worker, from the config")
        source_id = source.source_id
        with self._lock:
            if not self.keep_running or self._stopping or self._stop_requested:
                raise StreamConflictError("this run takes no new streams (it is not a service, or it is stopping)")
            if source_id in self.places:
                raise StreamConflictError(f"a stream {source_id!r} is already running: remove it or choose another id")
            spec = dataclasses.replace(source.spec, prompts=tuple(prompts))
            place = StreamPlace(
                spec,
                HomeFiles(Path(spec.folder), self.config.output.mot),
                SourceSummary(source_id, is_live=source.is_live),
                [(p, False) for p in prompts],
            )
            self.places = {**self.places, source_id: place}
            self.summary.sources[source_id] = place.summary
        try:
            self._place(place, least_loaded(self.workers), raising=True)
        except BaseException:
            with self._lock:
                self._forget(source_id)
            raise

    def remove_source(self, source_id: str, timeout_s: float | None = None) -> SourceSummary:
        """A stream leaves: it stops on its worker, and every output is final before this returns.

        Args:
            source_id: The stream.
            timeout_s: How long its outputs may take to be final (None: as long as it takes).

        Returns:
            Its summary.

        Raises:
            UnknownStreamError: No such stream.
            TimeoutError: Its outputs were not final within `timeout_s` (it still leaves).
        """
        with self._lock:
            place = self.places.get(source_id)
            if place is None:
                raise UnknownStreamError(f"no stream {source_id!r}: the streams are {', '.join(self.places) or 'none'}")
            place.removing = True
            worker = place.worker  # an ended stream is still listed there, until removed
            if place.closed:
                self._forget(source_id)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if worker is not None and worker.alive:
            try:
                self._get(worker.actor.remove_stream.remote(source_id, timeout_s), timeout=timeout_s)
            except (UnknownStreamError, self.ray.exceptions.RayError) as exc:  # gone there, or the worker died
                log.debug("removing %s from %s: %s", source_id, worker.name, exc)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not place.done.wait(left):
            raise TimeoutError(f"{source_id}: its outputs were not final within {timeout_s:g} s")
        return place.summary

    def _forget(self, source_id: str) -> None:
        """Take a stream out of the run's lists (with `_lock` held); a later stream may take its id."""
        if source_id not in self.places:
            return
        self.places = {i: p for i, p in self.places.items() if i != source_id}
        self.summary.sources.pop(source_id, None)
        if self.hub is not None:
            self.hub.forget(source_id)

    # -- the end -----------------------------------------------------------------------------

    def _stop_workers(self) -> None:
        self._stopping = True
        for worker in self.workers:
            if worker.alive and not worker.finished:
                worker.actor.stop.remote(STOP_TIMEOUT_S)

    def _finish(self, failure: BaseException | None) -> None:
        """Every file final, every worker stopped and gone, the cluster left (if this run started it)."""
        self.summary.finished_at = time.monotonic()
        errors: list[BaseException] = []
        with self._lock:
            for place in self.places.values():
                try:
                    place.files.close()
                except Exception as exc:  # noqa: BLE001 - every file gets closed before we report
                    errors.append(exc)
                place.done.set()
            live = [w for w in self.workers if w.alive and not w.finished]
            for worker in self.workers:
                worker.alive = False
        if live:  # their videos still get finalised; what they would send home is not read any more
            stops = [w.actor.stop.remote(STOP_TIMEOUT_S, True) for w in live]
            self.ray.wait(stops, num_returns=len(stops), timeout=STOP_TIMEOUT_S)
        for worker in self.workers:
            try:
                self.ray.kill(worker.actor)
            except Exception as exc:  # noqa: BLE001 - gone already
                log.debug("%s: %s", worker.name, exc)
        self.connection.close()
        if errors and failure is None:
            raise errors[0]

    def _get(self, ref: Any, timeout: float | None = None) -> Any:
        """ray.get, raising a remote failure as itself (its one line, not the worker's traceback)."""
        try:
            return self.ray.get(ref, timeout=timeout)
        except self.ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, Exception) and not isinstance(cause, self.ray.exceptions.RayError):
                raise cause from None
            raise

    # -- while it runs: targets, state ---------------------------------------------------------

    def add_prompt(self, prompt: Prompt, replace: bool = False) -> None:
        """Pipeline.add_prompt, on the worker(s) holding the stream(s); kept, so a move re-sends it.

        Raises:
            PromptError: As Pipeline.add_prompt; or the stream's worker was just lost (send it again).
        """
        with self._lock:
            places = self._places(prompt.source_id)
            workers = self._holding(places)
            kept = []
            for place in places:  # kept first, so a move meanwhile re-sends it; applied no earlier than the next frame
                change = (dataclasses.replace(prompt, frame=max(prompt.frame, place.next_frame)), replace)
                place.changes.append(change)
                kept.append((place, change))
        try:
            for worker in workers:
                self._remote(worker.actor.add_prompt.remote(prompt, replace))
        except PromptError:  # refused: nothing to re-send
            with self._lock:
                for place, change in kept:
                    if change in place.changes:
                        place.changes.remove(change)
            raise

    def drop_targets(self, ids: Iterable[int] | None = None, source_id: str | None = None, frame: int = 0) -> None:
        """Pipeline.drop_targets, on the worker(s) holding the stream(s).

        Raises:
            PromptError: As Pipeline.drop_targets; or the stream's worker was just lost (send it again).
        """
        if ids is not None and source_id is None and len(self.places) > 1:
            raise PromptError("target ids are counted per source: name the source to drop them from")
        ids = None if ids is None else list(ids)
        with self._lock:
            workers = self._holding(self._places(source_id))
        for worker in workers:
            only = source_id if source_id is not None or ids is None else next(iter(worker.streams))
            self._remote(worker.actor.drop_targets.remote(ids, only, frame))

    def _remote(self, ref: Any) -> None:
        try:
            self._get(ref)
        except self.ray.exceptions.RayError:
            raise PromptError("the stream's worker was just lost and the stream is moving: send it again") from None

    def targets(self) -> dict[str, list[int]]:
        """Every running stream's target ids, as of its latest frame written."""
        return {i: sorted(p.targets) for i, p in self.places.items() if not p.closed}

    def _places(self, source_id: str | None) -> list[StreamPlace]:
        if source_id is not None and source_id not in self.places:
            raise PromptError(f"no source {source_id!r}: the sources are {', '.join(self.places) or 'none'}")
        chosen = [self.places[source_id]] if source_id is not None else list(self.places.values())
        return [p for p in chosen if not p.closed]

    @staticmethod
    def _holding(places: list[StreamPlace]) -> list[WorkerHandle]:
        running = [p for p in places if p.worker is not None and p.worker.alive]
        if not running:
            raise PromptError("every source has ended, or the run was stopped")
        return list(dict.fromkeys(p.worker for p in running))

    def streams(self) -> list[StreamStatus]:
        """Every stream's status: as its worker last reported it, with the driver's counts."""
        statuses = []
        for source_id, place in self.places.items():
            worker = place.worker
            reported = {s.id: s for s in worker.report.streams} if worker and worker.report and worker.alive else {}
            status = reported.get(source_id)
            if place.closed or status is None:
                state = StreamState.ENDED if place.closed else StreamState.CONNECTING
                status = StreamStatus(id=source_id, state=state, error=place.error, is_live=place.summary.is_live)
            statuses.append(
                dataclasses.replace(
                    status,
                    frames=place.summary.frames,
                    dropped=max(place.dropped_before + status.dropped, place.summary.dropped),
                    reconnects=place.summary.reconnects,
                    targets=tuple(sorted(place.targets)),
                )
            )
        return statuses

    def metrics(self) -> PipelineMetrics:
        """The workers' metrics together: their batch sizes, queue depths and alert outputs; latency to here."""
        reports = [w.report for w in self.workers if w.report is not None and w.alive]
        depths: dict[str, int] = {}
        outputs: dict[str, OutputCounts] = {}  # each worker has its own alert outputs: summed by name
        for report in reports:
            for queue, depth in report.metrics.queue_depth.items():
                depths[queue] = depths.get(queue, 0) + depth
            for counts in report.metrics.outputs:
                seen = outputs.get(counts.output)
                outputs[counts.output] = counts if seen is None else merged_counts(seen, counts)
        batch = [r.metrics.batch_size for r in reports]
        return PipelineMetrics(
            streams=tuple(self.streams()),
            latency=self.latency.snapshot(),
            batch_size=merged(batch) if batch else Histogram(BATCH_SIZE_BUCKETS).snapshot(),
            queue_depth=depths or {"intake": 0, "prepared": 0, "results": 0},
            outputs=tuple(outputs.values()),
            workers=tuple(
                WorkerStatus(w.name, w.alive, len(w.streams), round(w.fps, 3) if w.alive else 0.0) for w in self.workers
            ),
        )

    def gpu_memory(self) -> list[GpuMemory]:
        """Each live worker's CUDA memory, its device named "worker-N/cuda:I" (for /metrics)."""
        return [
            dataclasses.replace(gpu, device=f"{w.name}/{gpu.device}")
            for w in self.workers
            if w.alive and w.report is not None
            for gpu in w.report.gpus
        ]


__all__ = ["ClusterPipeline", "StreamPlace", "WorkerHandle", "least_loaded", "merged"]
