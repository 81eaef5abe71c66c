"""Snapshots of zone events: the annotated frame of each event as a JPEG, written off the frame path.

`SnapshotWriter.save()` names the file at once (the event carries its path) and hands the drawing,
encoding and writing to its own thread through a bounded queue; when the queue is full the
snapshot is skipped, counted and logged (the event says `snapshot: null`), so a burst of events
never slows the frames. At most `max_count` snapshots are kept in the folder: the oldest go first.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from pathlib import Path

import cv2

from ..core import FrameResult, ZoneEvent
from ..errors import error_reason
from .draw import annotate

log = logging.getLogger(__name__)

JPEG_QUALITY = 85
QUEUE_SIZE = 32  # snapshots waiting to be written; past it they are skipped
MAX_SNAPSHOTS = 1000  # per stream folder
CLOSE_WAIT_S = 10.0  # close() waits this long for the queue to drain
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class SnapshotWriter:
    """Writes `snapshots/<UTC start>-<frame>-<event>-<place>-<track>.jpg` for zone events, in a thread of its own.

    Args:
        folder: The stream's output folder; snapshots go in its `snapshots/`.
        max_count: Snapshots kept; the oldest are deleted past it.
    """

    def __init__(self, folder: str | Path, max_count: int = MAX_SNAPSHOTS) -> None:
        if max_count < 1:
            raise ValueError(f"max_count must be >= 1, got {max_count}")
        self.folder = Path(folder) / "snapshots"
        self.max_count = max_count
        # Frame numbers start again with each run (or a stream added again): the writer's UTC start
        # keeps names apart, and in time order.
        self._stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.written = 0
        self.skipped = 0
        # An earlier run's snapshots count too, oldest first (frame numbers start again with each run).
        earlier = self.folder.glob("*.jpg") if self.folder.is_dir() else []
        self._kept: list[Path] = sorted(earlier, key=lambda p: p.stat().st_mtime)
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread = threading.Thread(target=self._run, name="snapshots", daemon=True)
        self._thread.start()

    def save(self, result: FrameResult, event: ZoneEvent) -> str | None:
        """Queue the snapshot of `event`'s frame; returns its path relative to the stream folder (None: skipped)."""
        place = _UNSAFE.sub("-", event.place)
        name = f"{self._stamp}-{event.frame:08d}-{event.kind.value}-{place}-{event.track_id}.jpg"
        try:
            self._queue.put_nowait((result, self.folder / name))
        except queue.Full:
            self.skipped = n = self.skipped + 1
            if n == 1 or self.skipped % 100 == 0:
                log.warning("%s: %d snapshots skipped: events come faster than they are written", self.folder, n)
            return None
        return f"snapshots/{name}"

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            result, path = item
            try:
                self._write(result, path)
            except Exception as exc:  # noqa: BLE001 - a snapshot lost must not stop the others
                log.warning("cannot write snapshot %s: %s", path, error_reason(exc))

    def _write(self, result: FrameResult, path: Path) -> None:
        ok, jpeg = cv2.imencode(".jpg", annotate(result), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise OSError("the JPEG encoder failed")
        self.folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg.tobytes())
        self.written += 1
        if path not in self._kept:
            self._kept.append(path)
        while len(self._kept) > self.max_count:
            self._kept.pop(0).unlink(missing_ok=True)

    def write(self, result: FrameResult) -> None:
        """Frames are not snapshots: only events are (see save)."""

    def close(self) -> None:
        """Write what is queued (within CLOSE_WAIT_S), then stop the thread."""
        try:
            self._queue.put(None, timeout=CLOSE_WAIT_S)
        except queue.Full:
            log.warning("%s: snapshots still waiting at the end were not written", self.folder)
            return
        self._thread.join(CLOSE_WAIT_S)
