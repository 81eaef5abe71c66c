"""Threads and bounded queues between the source, the segmenter and the caller.

    reader thread ──Frame──▶ [frames queue] ──▶ segmenter thread ──(Frame, Instances)──▶ [results queue] ──▶ caller

Decoding (PyAV) and the forward pass (torch) release the GIL, so plain threads overlap them. Every
queue is bounded: a file source's reader waits when the segmenter is behind (no frame is lost).
Errors raised in a thread travel down the queues as `_Failed` and are raised again in the caller.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Iterator

from ..core import Frame, Instances
from ..sources.base import Source
from .segmenter import Segmenter

_POLL_S = 0.1  # how often a blocked thread looks at the stop flag


@dataclass(frozen=True)
class BatchSettings:
    max_batch: int = 4  # frames per forward pass
    max_wait_ms: float = 5.0  # how long a partial batch waits to fill before it goes
    queue_size: int = 8  # frames buffered between stages


class _End:
    """Marks the end of a stream."""


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_END = _End()


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
    """Runs the reader and segmenter threads; iterate it for (frame, instances) in source order.

    Iteration also ends when `interrupt` is set (a caller asked the run to stop); `stop()` then
    ends the threads.
    """

    def __init__(
        self,
        source: Source,
        segmenter: Segmenter,
        settings: BatchSettings = BatchSettings(),
        interrupt: threading.Event | None = None,
    ) -> None:
        self.source = source
        self.segmenter = segmenter
        self.settings = settings
        self._frames: queue.Queue = queue.Queue(maxsize=settings.queue_size)
        self._results: queue.Queue = queue.Queue(maxsize=settings.queue_size)
        self._stop = threading.Event()
        self._interrupt = interrupt or threading.Event()
        self._threads = [
            threading.Thread(target=self._read, name=f"read-{source.source_id}", daemon=True),
            threading.Thread(target=self._segment, name="segment", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop both threads and wait for them; frames not yet segmented are dropped."""
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join()

    def __iter__(self) -> Iterator[tuple[Frame, Instances]]:
        while not self._interrupt.is_set():
            try:
                item = self._results.get(timeout=_POLL_S)
            except queue.Empty:
                if not any(t.is_alive() for t in self._threads) and self._results.empty():
                    raise RuntimeError("the reader and segmenter threads ended without a result")
                continue
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def _read(self) -> None:
        try:
            for frame in self.source.frames():
                if not _put(self._frames, frame, self._stop):
                    return
            _put(self._frames, _END, self._stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, whatever it is
            _put(self._frames, _Failed(exc), self._stop)

    def _next_batch(self) -> tuple[list[Frame], object | None]:
        """Up to max_batch frames, waiting at most max_wait_ms after the first; plus an end/failure marker."""
        first = None
        while first is None and not self._stop.is_set():
            try:
                first = self._frames.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        if not isinstance(first, Frame):
            return [], first
        batch, deadline = [first], time.monotonic() + self.settings.max_wait_ms / 1000
        while len(batch) < self.settings.max_batch:
            try:
                item = self._frames.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                break
            if not isinstance(item, Frame):
                return batch, item
            batch.append(item)
        return batch, None

    def _segment(self) -> None:
        try:
            while not self._stop.is_set():
                batch, marker = self._next_batch()
                segmented = self.segmenter.segment(batch)
                if len(segmented) != len(batch):
                    raise RuntimeError(f"the segmenter returned {len(segmented)} results for {len(batch)} frames")
                for frame, instances in zip(batch, segmented):
                    if not _put(self._results, (frame, instances), self._stop):
                        return
                if marker is not None:
                    _put(self._results, marker, self._stop)
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, whatever it is
            _put(self._results, _Failed(exc), self._stop)
