"""The driver of a cluster run (`--ray`): streams placed on worker actors, their records written home, moves.

Each stream lives on one worker at a time (its tracker state stays there). The driver asks every
worker for what it has (`drain`, one call in flight per worker), writes each frame's line and each
event as it comes, in order per stream, and hands the records to its caller. A worker that dies
(killed, its node lost) fails its call: its streams go to the least loaded survivors, each resuming
at its first frame not yet written, its targets re-seeded from their last boxes with their ids
(resume.py), and events.jsonl says `moved`. With no worker left the run ends with an error, every
file complete up to its last line.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..config import Config
from ..core import Box, EventKind, Prompt, SourceEvent
from ..errors import ClusterError, FastSAMStreamError, PromptError, StreamConflictError, UnknownStreamError
from ..pipeline.status import (
    BATCH_SIZE_BUCKETS,
    LATENCY_BUCKETS_S,
    Histogram,
    HistogramSnapshot,
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
from .records import EventRecord, FrameRecord, StreamClosed
from .worker import RemoteStream, StreamSpec, WorkerReport

log = logging.getLogger(__name__)

DRAIN_WAIT_S = 0.2
"""How long a worker's `drain` waits for its first record: the result path's added latency when idle."""
STOP_TIMEOUT_S = 60.0
"""How long workers get to finalise their outputs at the end of a run."""


@dataclass(eq=False)
class WorkerHandle:
    """The driver's view of one worker actor."""

    name: str
    actor: Any
    streams: set[str] = field(default_factory=set)
    alive: bool = True
    finished: bool = False
    pending: Any = None  # the drain call in flight
    report: WorkerReport | None = None  # the latest

    @property
    def fps(self) -> float:
        """Frames/s over its streams, as of its latest report."""
        return sum(s.fps for s in self.report.streams) if self.report else 0.0


@dataclass(eq=False)
class StreamPlace:
    """The driver's bookkeeping of one stream: where it runs, how far it got, what it wrote."""

    spec: StreamSpec
    files: HomeFiles
    summary: SourceSummary
    prompts: list[Prompt]  # every prompt given with a frame, re-sent on a move when still ahead
    worker: WorkerHandle | None = None
    next_frame: int = 0  # the first frame not yet written
    max_id: int = 0
    targets: dict[int, Box] = field(default_factory=dict)  # target id → last box
    parts: int = 1  # the worker it is on is its parts-th
    dropped_before: int = 0  # drops counted on earlier workers
    closed: bool = False
    error: str | None = None
    removing: bool = False  # asked to leave: its worker's death ends it instead of moving it
    done: threading.Event = field(default_factory=threading.Event)  # set once closed, its files final


def least_loaded(workers: Iterable[WorkerHandle]) -> WorkerHandle | None:
    """The live worker with the fewest streams, then the lowest measured frames/s; None when none lives."""
    alive = [w for w in workers if w.alive and not w.finished]
    return min(alive, key=lambda w: (len(w.streams), w.fps), default=None)


class ClusterPipeline:
    """A run whose streams are spread over Ray workers; iterate it (FrameRecords) or `run()` it.

    Built by `build_cluster_pipeline` (cluster/build.py). The interface follows Pipeline's:
    `results()`, `run()`, `stop()`, `close()`, `summary`, `streams()`, `metrics()`, `add_prompt()`,
    `drop_targets()` and `targets()`; results are the tracks.jsonl records (FrameRecord), not
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
        # Serialises the loop's bookkeeping with joins, leaves and deaths; `places` is replaced whole (read freely).
        self._lock = threading.RLock()
        self.places = {p.spec.source_id: p for p in streams}
        self.summary = RunSummary({i: p.summary for i, p in self.places.items()})
        self.latency = Histogram(LATENCY_BUCKETS_S)
        # The control interface's check: text prompts need CLIP, which each worker loads when the config asks.
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
        """The worker a stream is on now."""
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
        """Yields each frame's record once it is written, each stream's in order."""
        if self._started:
            raise RuntimeError("a ClusterPipeline runs once: build a new one")
        self._started = True
        self._running = self._results()
        return self._running

    def _results(self) -> Iterator[FrameRecord]:
        self.summary.started_at = time.monotonic()
        failure: BaseException | None = None
        try:
            for place in self.places.values():
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
        if failed:  # after every other stream has finished and every file is final
            self.summary.error_source = failed[0].spec.source_id
            raise ClusterError(f"{failed[0].spec.source_id}: {failed[0].error}")

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
                calls[worker.pending] = worker
        if not calls:
            raise ClusterError(self._all_lost())
        ready, _ = self.ray.wait(list(calls), num_returns=1, timeout=1.0)
        for ref in ready:
            worker = calls[ref]
            worker.pending = None
            try:
                report = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as exc:
                with self._lock:
                    self._lost(worker, exc)
                continue
            worker.report = report
            with self._lock:
                written = self._take(worker, report)
                if report.finished:
                    worker.finished = True
                    self._close_left_on(worker, report.error or "its pipeline stopped")
            if self.hub is not None:
                for preview in report.previews:
                    self.hub.write_preview(preview)
            yield from written

    def _watched(self, worker: WorkerHandle) -> list[str]:
        """The worker's streams someone watches in the viewer."""
        if self.hub is None:
            return []
        return [source_id for source_id in list(worker.streams) if self.hub.wanted(source_id)]

    def _take(self, worker: WorkerHandle, report: WorkerReport) -> list[FrameRecord]:
        """Write what a report brought (with `_lock` held); returns its frame records, to hand on."""
        written = []
        for message in report.messages:
            place = self.places.get(message.source_id)
            if place is None or place.closed:
                continue
            if isinstance(message, FrameRecord):
                self._written(place, message)
                written.append(message)
            elif isinstance(message, EventRecord):
                place.files.event(message.record)
                if self.hub is not None:
                    self.hub.on_update(message.source_id, message.update)
            elif isinstance(message, StreamClosed):
                self._closed(place, message.summary)
                worker.streams.discard(place.spec.source_id)
        return written

    def _written(self, place: StreamPlace, record: FrameRecord) -> None:
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
        place.closed = True
        summary = place.summary
        summary.dropped = max(summary.dropped, place.dropped_before + worker_summary.dropped)
        summary.reconnects += worker_summary.reconnects
        summary.gave_up = worker_summary.gave_up
        if worker_summary.error is not None:
            place.error = summary.error = worker_summary.error
        if place.error is not None and self.keep_running:
            log.warning("%s ended: %s", place.spec.source_id, place.error)
        try:
            place.files.close()
        finally:
            place.done.set()

    # -- moving streams ----------------------------------------------------------------------

    def _place(self, place: StreamPlace, worker: WorkerHandle | None, raising: bool = False) -> None:
        """Hand a stream to a worker (the next least loaded when one turns out dead).

        A source the worker cannot open ends the stream with that error, or (`raising`: a service's
        request) is raised to the caller.
        """
        while worker is not None:
            try:
                self._get(worker.actor.add_stream.remote(place.spec))
            except self.ray.exceptions.RayActorError as exc:
                self._lost(worker, exc)
                worker = least_loaded(self.workers)
                continue
            except FastSAMStreamError as exc:
                if raising:
                    raise
                place.error = place.summary.error = str(exc)
                self._closed(place, SourceSummary(place.spec.source_id))
                return
            place.worker = worker
            worker.streams.add(place.spec.source_id)
            return
        raise ClusterError(self._all_lost())

    def _lost(self, worker: WorkerHandle, exc: BaseException) -> None:
        """A worker died: its streams move to the survivors (or, while stopping, end where they are)."""
        worker.alive = False
        reason = type(exc).__name__
        orphans = [self.places[i] for i in sorted(worker.streams) if not self.places[i].closed]
        worker.streams.clear()
        log.warning("%s lost (%s), with streams %s", worker.name, reason, [p.spec.source_id for p in orphans])
        for place in orphans:
            if self._stopping or place.removing:  # nothing more is coming: its files end at their last line
                self._closed(place, SourceSummary(place.spec.source_id))
            else:
                self._move(place, worker, reason)

    def _move(self, place: StreamPlace, dead: WorkerHandle, reason: str) -> None:
        target = least_loaded(self.workers)
        if target is None:
            raise ClusterError(self._all_lost())
        place.dropped_before = place.summary.dropped
        place.parts += 1
        start = place.next_frame
        place.spec = dataclasses.replace(
            place.spec,
            start=start,
            prompts=tuple(p for p in place.prompts if p.frame >= start),
            seeds=tuple(sorted(place.targets.items())),
            first_free_id=place.max_id + 1,
            video_name=f"annotated-part{place.parts}.mp4",
        )
        message = f"{dead.name} was lost ({reason}); moved to {target.name}, resuming at frame {start}" + (
            f", targets {sorted(place.targets)} re-seeded from their last boxes" if place.targets else ""
        )
        event = SourceEvent(place.spec.source_id, EventKind.MOVED, start, time.time(), message=message)
        place.files.event(EventLogSink.record(event))
        if self.hub is not None:
            self.hub.on_update(place.spec.source_id, event_json(event))
        log.warning("%s", event.describe())
        self._place(place, target)
        if self.on_moved is not None and place.worker is not None:
            self.on_moved(place.spec.source_id, dead.name, place.worker.name)

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
            folder = Path(spec.folder)
            place = StreamPlace(
                spec,
                HomeFiles(folder, self.config.output.mot),
                SourceSummary(source_id, is_live=source.is_live),
                [p for p in prompts if p.frame > 0],
            )
            self.places = {**self.places, source_id: place}
            self.summary.sources[source_id] = place.summary
            try:
                self._place(place, least_loaded(self.workers), raising=True)
            except BaseException:
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
            worker = place.worker if not place.closed else None
        if worker is not None and worker.alive:
            try:
                self._get(worker.actor.remove_stream.remote(source_id, timeout_s), timeout=timeout_s)
            except self.ray.exceptions.RayActorError:
                pass  # the loop finds it dead and ends the stream where its files are
        if not place.done.wait(timeout_s):
            raise TimeoutError(f"{source_id}: its outputs were not final within {timeout_s:g} s")
        with self._lock:
            self._forget(source_id)
        return place.summary

    def _forget(self, source_id: str) -> None:
        """Take a stream out of the run's lists (with `_lock` held); a later stream may take its id."""
        self.places = {i: p for i, p in self.places.items() if i != source_id}
        self.summary.sources.pop(source_id, None)
        if self.hub is not None:
            self.hub.forget(source_id)

    def _close_left_on(self, worker: WorkerHandle, why: str) -> None:
        """A finished worker's streams whose end never came home: their files end where they are."""
        for source_id in sorted(worker.streams):
            place = self.places[source_id]
            if not place.closed:
                place.error = place.summary.error = f"{worker.name} stopped before it ended: {why}"
                self._closed(place, SourceSummary(source_id))
        worker.streams.clear()

    def _all_lost(self) -> str:
        left = [p.spec.source_id for p in self.places.values() if not p.closed]
        return (
            f"every worker is lost ({', '.join(w.name for w in self.workers)}): "
            f"{', '.join(left) or 'no stream'} could not go on; their outputs end at their last line"
        )

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
        for place in self.places.values():
            try:
                place.files.close()
            except Exception as exc:  # noqa: BLE001 - every file gets closed before we report
                errors.append(exc)
        live = [w for w in self.workers if w.alive and not w.finished]
        if live:  # an error or an interrupt: their outputs (videos) still get finalised
            try:
                self.ray.get([w.actor.stop.remote(STOP_TIMEOUT_S) for w in live], timeout=STOP_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - a worker that died meanwhile has nothing more to finalise
                log.debug("stopping workers: %s", exc)
        for worker in self.workers:
            try:
                self.ray.kill(worker.actor)
            except Exception as exc:  # noqa: BLE001 - gone already
                log.debug("%s: %s", worker.name, exc)
        self.connection.close()
        if errors and failure is None:
            raise errors[0]

    def _get(self, ref: Any, timeout: float | None = None) -> Any:
        """ray.get, raising a remote FastSAMStreamError as itself (one line, not a remote traceback)."""
        try:
            return self.ray.get(ref, timeout=timeout)
        except self.ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, FastSAMStreamError):
                raise exc.cause from None
            raise

    # -- while it runs: targets, state ---------------------------------------------------------

    def add_prompt(self, prompt: Prompt, replace: bool = False) -> None:
        """Pipeline.add_prompt, on the worker(s) holding the stream(s); a prompt with a frame is kept for moves."""
        for worker in self._holding(prompt.source_id):
            self._get(worker.actor.add_prompt.remote(prompt, replace))
        if prompt.frame > 0:
            for place in self._places(prompt.source_id):
                place.prompts.append(prompt)

    def drop_targets(self, ids: Iterable[int] | None = None, source_id: str | None = None, frame: int = 0) -> None:
        """Pipeline.drop_targets, on the worker(s) holding the stream(s)."""
        if ids is not None and source_id is None and len(self.places) > 1:
            raise PromptError("target ids are counted per source: name the source to drop them from")
        ids = None if ids is None else list(ids)
        for worker in self._holding(source_id):
            only = source_id if source_id is not None or ids is None else next(iter(worker.streams))
            self._get(worker.actor.drop_targets.remote(ids, only, frame))

    def targets(self) -> dict[str, list[int]]:
        """Every running stream's target ids, as of its latest frame written."""
        return {i: sorted(p.targets) for i, p in self.places.items() if not p.closed}

    def _places(self, source_id: str | None) -> list[StreamPlace]:
        if source_id is not None and source_id not in self.places:
            raise PromptError(f"no source {source_id!r}: the sources are {', '.join(self.places)}")
        chosen = [self.places[source_id]] if source_id is not None else list(self.places.values())
        return [p for p in chosen if not p.closed]

    def _holding(self, source_id: str | None) -> list[WorkerHandle]:
        running = [p for p in self._places(source_id) if p.worker is not None and p.worker.alive]
        if not running:
            raise PromptError("every source has ended, or the run was stopped")
        return list(dict.fromkeys(p.worker for p in running))

    def streams(self) -> list[StreamStatus]:
        """Every stream's status: as its worker last reported it, or (ended) the driver's counts."""
        reported = {s.id: s for w in self.workers if w.report and w.alive for s in w.report.streams}
        statuses = []
        for source_id, place in self.places.items():
            status = reported.get(source_id)
            if place.closed or status is None:
                state = StreamState.ENDED if place.closed else StreamState.CONNECTING
                status = StreamStatus(id=source_id, state=state, error=place.error)
            statuses.append(
                dataclasses.replace(
                    status,
                    frames=place.summary.frames,
                    dropped=max(status.dropped, place.summary.dropped),
                    targets=tuple(sorted(place.targets)),
                )
            )
        return statuses

    def metrics(self) -> PipelineMetrics:
        """The workers' metrics together: their batch sizes and queue depths, the latency to the driver."""
        reports = [w.report for w in self.workers if w.report is not None and w.alive]
        depths: dict[str, int] = {}
        for report in reports:
            for queue, depth in report.metrics.queue_depth.items():
                depths[queue] = depths.get(queue, 0) + depth
        batch = [r.metrics.batch_size for r in reports]
        outputs: dict[str, OutputCounts] = {}  # each worker has its own alert outputs: summed by name
        for report in reports:
            for counts in report.metrics.outputs:
                seen = outputs.get(counts.output)
                outputs[counts.output] = counts if seen is None else merged_counts(seen, counts)
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


def merged_counts(a: OutputCounts, b: OutputCounts) -> OutputCounts:
    """Two workers' counts of the same alert output, added."""
    return OutputCounts(a.output, a.sent + b.sent, a.dropped + b.dropped, a.failed + b.failed)


def merged(snapshots: list[HistogramSnapshot]) -> HistogramSnapshot:
    """Histograms of the same buckets added together."""
    first = snapshots[0]
    return HistogramSnapshot(
        first.bounds,
        tuple(sum(column) for column in zip(*(s.cumulative for s in snapshots), strict=True)),
        sum(s.total for s in snapshots),
    )
