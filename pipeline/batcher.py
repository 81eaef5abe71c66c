"""Threads and bounded buffers between the sources, the segmenter and the caller.

    reader thread per source ──▶ FrameIntake (a bounded buffer per source, drop policy)
        ──▶ prepare thread (a batch across sources; letterbox) ──▶ [one batch]
        ──▶ segment thread (the network, NMS) ──▶ [results queue] ──▶ caller

Decoding (PyAV) and the forward pass (torch) release the GIL, so plain threads overlap them.
Decoding never waits for the segmenter on a live source (its buffer drops the oldest frame),
and the segmenter never waits for decoding beyond `max_wait_ms` for a batch to fill. A file
source's reader waits for room instead, so no frame of a file is lost. Errors raised in a
thread travel down as markers and are raised again in the caller's thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from ..core import Frame, Instances, SourceEvent
from ..errors import FastSAMStreamError
from ..settings import Settings, default_of
from ..sources.base import DropPolicy, Source
from .batch_probe import CANDIDATES
from .intake import FrameIntake, SourceEnded
from .segmenter import Segmenter, StagedSegmenter, staged
from .status import BATCH_SIZE_BUCKETS, Histogram

_POLL_S = 0.1  # how often a blocked thread looks at the stop flag
LIVE_JOIN_S = 1.0  # a live reader may sit in a network read; it closes its own stream when it returns
log = logging.getLogger(__name__)


BufferSize = Annotated[
    int, Field(ge=1, le=1000, description="frames buffered per source before its drop policy applies")
]
"""Written once, used twice: BatchSettings.buffer_size and the config's `source.buffer_size`."""


class BatchConfig(Settings):
    """How frames are batched across sources: config section `batch`."""

    max_batch: int | None = Field(
        None,
        ge=1,
        le=256,
        description="frames per forward pass, taken across sources (default: measured at start-up, the "
        "fastest per frame of 1, 2 and 4)",
    )
    max_wait_ms: float = Field(5.0, ge=0, description="how long a partial batch waits to fill before it goes")
    queue_size: int = Field(8, ge=1, description="segmented frames waiting for the trackers and sinks")

    @property
    def largest_batch(self) -> int:
        """The most frames a batch can hold: max_batch, or the largest size the start-up measurement may choose."""
        return self.max_batch or max(CANDIDATES)


class BatchSettings(BatchConfig):
    """What the segmenting stages need: the batch section plus each source's buffer (`source.buffer_size`)."""

    buffer_size: BufferSize = 4


DEFAULT_BUFFER_SIZE = default_of(BatchSettings, "buffer_size")
DEFAULT_BATCH_SETTINGS = BatchSettings()
"""The settings a run gets when it is given none; frozen, so one instance serves every default."""


@dataclass(frozen=True)
class Segmented:
    """One frame and the segmenter's instances for it, on its way to the caller."""

    frame: Frame
    instances: Instances
    dropped_before: int  # frames of this source dropped since its previous Segmented


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class _AllEnded:
    """Every source has ended."""


Item = Segmented | SourceEvent | SourceEnded


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Blocking put that gives up when `stop` is set. False when it gave up."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


class SegmentingStages:
    """Runs one reader thread per source and the two segmenting stages (prepare, segment), each in a thread.

    Iterate it for Segmented results, SourceEvents and SourceEnded markers; each source's items
    come in its own order. A source that fails with a FastSAMStreamError (a broken file, an
    unreadable image) ends with that error in its SourceEnded and the others go on; any other
    exception ends the run.

    Iteration also ends when `interrupt` is set (a caller asked the run to stop); `stop()` then
    ends the threads. With `open_ended`, sources join (`add_source`) and leave (`remove_source`)
    while it runs, and iteration goes on with none left until the stop.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        segmenter: Segmenter,
        settings: BatchSettings = DEFAULT_BATCH_SETTINGS,
        interrupt: threading.Event | None = None,
        drop_policy: DropPolicy | str | None = None,
        open_ended: bool = False,
    ) -> None:
        self.sources = list(sources)
        self.segmenter: StagedSegmenter = staged(segmenter)
        self.settings = settings
        self.drop_policy = drop_policy
        self._stop = threading.Event()
        self._interrupt = interrupt or threading.Event()
        policies = {s.source_id: DropPolicy.for_source(s, drop_policy) for s in self.sources}
        self.intake = FrameIntake(policies, settings.buffer_size, self._stop, open_ended=open_ended)
        self._results: queue.Queue = queue.Queue(maxsize=settings.queue_size)
        self._unseen: Counter[str] = Counter()  # taken from the intake, never handed to the caller
        self._unseen_lock = threading.Lock()
        self._readers = [
            threading.Thread(target=self._read, args=(s,), name=f"read-{s.source_id}", daemon=True)
            for s in self.sources
        ]
        self._members = threading.Lock()  # guards sources and _readers, which add_source extends
        self._started = False
        self.batch_sizes = Histogram(BATCH_SIZE_BUCKETS)  # frames per batch through the network
        # Frames per batch: the setting, or, when it is unset, measured on the first frame.
        self.max_batch: int | None = settings.max_batch
        # One prepared batch waits while the network runs the one before it: two stages overlapped.
        self._prepared: queue.Queue = queue.Queue(maxsize=1)
        self._ahead = threading.Semaphore(1)
        self._prepare_thread = threading.Thread(target=self._prepare, name="prepare", daemon=True)
        self._segmenter_thread = threading.Thread(target=self._segment, name="segment", daemon=True)

    def start(self) -> None:
        """Start the reader threads and both stages; results then wait in a bounded queue for the iteration."""
        with self._members:
            self._started = True
            threads = [*self._readers, self._prepare_thread, self._segmenter_thread]
        for thread in threads:
            thread.start()

    def add_source(self, source: Source) -> None:
        """A source joins the running stages (`open_ended` ones): its reader starts now.

        Raises:
            ValueError: The stages are stopping, or a source with this id has not finished leaving.
        """
        with self._members:
            if self._stop.is_set():
                raise ValueError("the run is stopping")
            for old, reader in zip(self.sources, self._readers, strict=True):
                if old.source_id == source.source_id and reader.is_alive():
                    raise ValueError(f"source {source.source_id!r} is still closing: try again in a moment")
            self.intake.add(source.source_id, DropPolicy.for_source(source, self.drop_policy))
            thread = threading.Thread(target=self._read, args=(source,), name=f"read-{source.source_id}", daemon=True)
            self.sources.append(source)
            self._readers.append(thread)
            if self._started:
                thread.start()

    def remove_source(self, source_id: str) -> None:
        """A source leaves: its waiting frames are dropped and its end is queued; its reader stops.

        Its SourceEnded then reaches the caller after the frames already taken.
        """
        self.intake.retire(source_id)
        for source in self._members_now()[0]:
            if source.source_id == source_id and source.is_live:
                source.close()  # wakes a reader sleeping between reconnect attempts, or in a read

    def join_reader(self, source_id: str, timeout_s: float | None = None) -> bool:
        """Wait for the latest reader of `source_id` to end; True when it has (or never started)."""
        sources, readers = self._members_now()
        for source, thread in reversed(list(zip(sources, readers, strict=True))):
            if source.source_id == source_id:
                if thread.is_alive() and thread is not threading.current_thread():
                    thread.join(timeout_s)
                return not thread.is_alive()
        return True

    def forget(self, source_id: str) -> None:
        """Let go of a source that has left and whose reader has ended (a service adds and removes many)."""
        with self._members:
            keep = [
                (source, thread)
                for source, thread in zip(self.sources, self._readers, strict=True)
                if source.source_id != source_id or thread.is_alive()
            ]
            self.sources = [source for source, _ in keep]
            self._readers = [thread for _, thread in keep]
        if not any(s.source_id == source_id for s in self._members_now()[0]):
            self.intake.forget(source_id)

    def _members_now(self) -> tuple[list[Source], list[threading.Thread]]:
        with self._members:
            return list(self.sources), list(self._readers)

    def queue_depths(self) -> dict[str, int]:
        """Items waiting per stage: decoded frames, prepared batches, segmented results."""
        return {"intake": self.intake.waiting(), "prepared": self._prepared.qsize(), "results": self._results.qsize()}

    def stop(self) -> None:
        """Stop every thread and wait for them; frames not yet segmented are dropped."""
        self._stop.set()
        sources, readers = self._members_now()
        for source in sources:
            if source.is_live:
                source.close()  # wakes a reader sleeping between reconnect attempts
        self.intake.wake()
        for source, thread in zip(sources, readers, strict=True):
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(LIVE_JOIN_S if source.is_live else None)
                if thread.is_alive():
                    log.debug(
                        "%s: reader still in a read; it will close its stream when the read returns", source.source_id
                    )
        for stage in (self._prepare_thread, self._segmenter_thread):
            if stage.ident is not None and stage.is_alive() and stage is not threading.current_thread():
                stage.join()
        # Frames the caller will never see count as dropped: a frame dropped is a frame counted.
        self.intake.discard_waiting()
        while True:
            try:
                batch = self._prepared.get_nowait()
            except queue.Empty:
                break
            if isinstance(batch, _Batch):
                self._count_unseen(batch.frames)
        while True:
            try:
                item = self._results.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Segmented):
                self._count_unseen([item.frame])

    def _count_unseen(self, frames: list[Frame]) -> None:
        with self._unseen_lock:
            self._unseen.update(frame.source_id for frame in frames)

    def dropped(self, source_id: str) -> int:
        """Frames of this source that never reached the caller.

        They were dropped by the policy, were still waiting when the run stopped, or were in a
        batch that failed. With the frames the caller got, they make up every frame decoded.

        Args:
            source_id: One of the sources' ids.

        Returns:
            The count so far; final once `stop()` has returned.
        """
        return self.intake.dropped(source_id) + self._unseen[source_id]

    def __iter__(self) -> Iterator[Item]:
        while not self._interrupt.is_set():
            try:
                item = self._results.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._segmenter_thread.is_alive() and self._results.empty():
                    raise RuntimeError("the segmenter thread ended without a result") from None
                continue
            if isinstance(item, _AllEnded):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def _read(self, source: Source) -> None:
        frames: Iterator = iter(())
        try:
            frames = source.frames()  # inside the try: a frames() that raises at once must still end its lane
            for item in frames:
                if not self.intake.put(source.source_id, item):
                    return
            self.intake.put(source.source_id, SourceEnded(source.source_id))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, whatever it is
            self.intake.put(source.source_id, SourceEnded(source.source_id, exc))
        finally:
            if isinstance(frames, Generator):
                frames.close()  # a generator left early closes its stream in this thread, not later in another

    def _prepare(self) -> None:
        """Stage 1: take a batch across sources and pre-process it (letterbox, normalise).

        This runs while the previous batch is in the network.
        """
        s = self.settings
        try:
            while not self._stop.is_set():
                # Only one batch ahead of the network: frames left in the intake can still be
                # dropped for newer ones (live sources), frames taken cannot.
                if not self._ahead.acquire(timeout=_POLL_S):
                    continue
                taken = self.intake.take(self.max_batch or 1, s.max_wait_ms / 1000)
                frames = [t.frame for t in taken if t.frame is not None]
                try:
                    if self.max_batch is None and frames:
                        self.max_batch = self._choose_batch(frames[0])
                    prepared = self.segmenter.prepare(frames) if frames else frames
                except BaseException:
                    self._count_unseen(frames)  # the run ends with this error: these frames never reach the caller
                    raise
                finished = self.intake.finished
                if not _put(self._prepared, _Batch(taken, frames, prepared, finished), self._stop):
                    self._count_unseen(frames)
                    return
                if finished:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, whatever it is
            _put(self._prepared, _Failed(exc), self._stop)

    def _choose_batch(self, frame: Frame) -> int:
        """The batch size for an unset `max_batch`: measured on the run's first frame (pipeline/batch_probe.py).

        This runs before the first batch goes to the network, so the measurement has the cores
        to itself. A segmenter that cannot be measured (one without `best_batch`) gets the
        largest size; one whose measurement fails (out of memory at batch 4, say) gets 1.
        """
        best_batch = getattr(self.segmenter, "best_batch", None)
        if best_batch is None:
            log.info("max_batch %d (not measured: the segmenter has no best_batch)", max(CANDIDATES))
            return max(CANDIDATES)
        try:
            choice = best_batch(frame)
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory at batch 4: the run may still work at 1
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("max_batch 1: measuring the batch size failed (%s)", why)
            return 1
        if choice.seconds_per_frame:
            height, width = frame.image.shape[:2]
            timings = choice.timings()
            log.info("max_batch %d, measured on %dx%d frames (ms/frame: %s)", choice.size, width, height, timings)
        else:
            log.info("max_batch %d, the model's fixed batch", choice.size)
        return choice.size

    def _segment(self) -> None:
        """Stage 2: the network and post-processing, then each result to the caller in order."""
        try:
            while not self._stop.is_set():
                try:
                    batch = self._prepared.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                self._ahead.release()  # the prepare stage may take the next batch now
                if isinstance(batch, _Failed):
                    _put(self._results, batch, self._stop)
                    return
                try:
                    segmented = self._run(batch)
                except BaseException:
                    # The run ends with this error (handed on below, or lost when stopping): either
                    # way these frames never reach the caller.
                    self._count_unseen(batch.frames)
                    raise
                if not self._hand_on(batch.taken, segmented) or batch.finished:
                    if batch.finished:
                        _put(self._results, _AllEnded(), self._stop)
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, whatever it is
            _put(self._results, _Failed(exc), self._stop)

    def _run(self, batch: _Batch) -> list[Instances]:
        if not batch.frames:
            return []
        self.batch_sizes.observe(len(batch.frames))
        segmented = self.segmenter.infer(batch.prepared)
        if len(segmented) != len(batch.frames):
            raise RuntimeError(f"the segmenter returned {len(segmented)} results for {len(batch.frames)} frames")
        return segmented

    def _hand_on(self, taken: list, segmented: list[Instances]) -> bool:
        """Each source's events, results and end, in order. False when the run must stop here."""
        results = iter(segmented)
        for position, t in enumerate(taken):
            items: list[object] = list(t.events)
            if t.frame is not None:
                items.append(Segmented(t.frame, next(results), t.dropped_before))
            # A bug, not a bad source, ends a run; a service (open-ended) keeps it to that source.
            fatal = (
                not self.intake.open_ended
                and t.ended is not None
                and t.ended.error is not None
                and not isinstance(t.ended.error, FastSAMStreamError)
            )
            if t.ended is not None:
                items.append(_Failed(t.ended.error) if fatal else t.ended)
            for item in items:
                if not _put(self._results, item, self._stop):  # stopping: what was not handed on is counted
                    self._count_unseen([later.frame for later in taken[position:] if later.frame is not None])
                    return False
            if fatal:  # the run ends here: frames later in the batch never reach the caller
                self._count_unseen([later.frame for later in taken[position + 1 :] if later.frame is not None])
                return False
        return True


@dataclass(frozen=True)
class _Batch:
    """What the prepare stage hands the segment stage."""

    taken: list  # what the intake gave: events, frames, ends, per source
    frames: list[Frame]
    prepared: object  # the segmenter's pre-processed batch (or the frames, for a plain segmenter)
    finished: bool  # every source has ended: this is the last batch
