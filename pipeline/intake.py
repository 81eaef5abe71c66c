"""Per-source bounded buffers between the reader threads and the segmenter, with drop policies.

Each source has its own buffer of `capacity` frames. Under DROP_OLDEST (live sources) a new
frame pushes the oldest waiting one out, and the drop is counted; under BLOCK (files) the
reader waits for room. Events and end markers are never dropped and keep their place between
frames, so a consumer sees a source's history in order. The segmenter takes frames
round-robin across sources, so one busy camera cannot starve the others.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from ..core import Frame, SourceEvent
from ..sources.base import DropPolicy

_POLL_S = 0.1  # how often a waiting thread looks at the stop flag


@dataclass(frozen=True)
class SourceEnded:
    """A source has no more frames: it reached its end, gave up, or failed with `error`."""

    source_id: str
    error: BaseException | None = None


@dataclass(frozen=True)
class Taken:
    """What the segmenter took from one source in one go.

    The events before a frame, the frame (None when only events or the end were waiting), how
    many frames were dropped before it, and the end marker if the source has finished.
    """

    source_id: str
    events: tuple[SourceEvent, ...] = ()
    frame: Frame | None = None
    dropped_before: int = 0
    ended: SourceEnded | None = None


@dataclass
class _Buffer:
    policy: DropPolicy
    items: deque = field(default_factory=deque)  # Frame | SourceEvent | SourceEnded
    frames: int = 0
    dropped: int = 0  # total
    dropped_pending: int = 0  # since the last frame taken
    finished: bool = False  # its SourceEnded has been taken
    retiring: bool = False  # removed while running: its end is queued, nothing more is taken in
    end_queued: bool = False  # its SourceEnded is in `items`


class FrameIntake:
    """The bounded buffers of every source, shared by the reader threads (`put`) and the segmenter (`take`).

    One condition guards every buffer, so a take sees the sources in one consistent state and a
    reader blocked for room wakes as soon as frames are taken or the run stops.

    Args:
        policies: Each source's drop policy, by source id; their order is the round-robin order.
        capacity: Frames each buffer holds before its policy applies.
        stop: Set when the run stops: waiting puts and takes return, and nothing more is added.
        open_ended: Sources may join later (a service): the intake is never `finished`, even
            with every source ended or none at all; only `stop` ends it.

    Raises:
        ValueError: `capacity` is below 1.
    """

    def __init__(
        self, policies: dict[str, DropPolicy], capacity: int, stop: threading.Event, open_ended: bool = False
    ) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.open_ended = open_ended
        self._buffers = {source_id: _Buffer(policy) for source_id, policy in policies.items()}
        self._order = list(policies)
        self._next = 0  # round-robin start
        self._stop = stop
        self._changed = threading.Condition()

    def add(self, source_id: str, policy: DropPolicy) -> None:
        """A source joins while running (an open-ended intake); an id whose source has ended may come back.

        Raises:
            ValueError: A source with this id is still in the intake (its end not yet taken).
        """
        with self._changed:
            old = self._buffers.get(source_id)
            if old is not None and not old.finished:
                raise ValueError(f"source {source_id!r} is still in the intake")
            self._buffers[source_id] = _Buffer(policy)
            if source_id not in self._order:
                self._order.append(source_id)
            self._changed.notify_all()

    def retire(self, source_id: str) -> None:
        """A source leaves while running: its waiting frames are dropped (counted) and its end queued now.

        Its reader's next put is refused, which tells it to stop; a source already ended is left alone.
        """
        with self._changed:
            buffer = self._buffers[source_id]
            if buffer.finished or buffer.retiring:
                return
            buffer.retiring = True
            buffer.dropped += buffer.frames
            buffer.items = deque(item for item in buffer.items if not isinstance(item, Frame))
            buffer.frames = 0
            if not buffer.end_queued:
                buffer.items.append(SourceEnded(source_id))
                buffer.end_queued = True
            self._changed.notify_all()

    def forget(self, source_id: str) -> None:
        """Drop a finished source's buffer and its place in the round-robin (a long service adds and removes many)."""
        with self._changed:
            buffer = self._buffers.get(source_id)
            if buffer is not None and buffer.finished:
                del self._buffers[source_id]
                self._order.remove(source_id)
                self._next = 0

    def waiting(self) -> int:
        """Frames decoded and waiting for the segmenter, over every source."""
        with self._changed:
            return sum(b.frames for b in self._buffers.values())

    def _all_finished(self) -> bool:
        return not self.open_ended and all(b.finished for b in self._buffers.values())

    def dropped(self, source_id: str) -> int:
        """Frames of this source dropped so far: by its policy, refused while stopping, or discarded at the stop."""
        with self._changed:
            buffer = self._buffers.get(source_id)  # a source joining has no buffer for a moment
            return buffer.dropped if buffer is not None else 0

    @property
    def finished(self) -> bool:
        """Every source's end marker has been taken: the batch just taken is the last."""
        with self._changed:
            return self._all_finished()

    def wake(self) -> None:
        """Wake waiting threads (after `stop` is set)."""
        with self._changed:
            self._changed.notify_all()

    def discard_waiting(self) -> None:
        """Drop every frame still waiting (the run is stopping); they count as dropped."""
        with self._changed:
            for buffer in self._buffers.values():
                buffer.dropped += buffer.frames
                buffer.items = deque(item for item in buffer.items if not isinstance(item, Frame))
                buffer.frames = 0

    def put(self, source_id: str, item: Frame | SourceEvent | SourceEnded) -> bool:
        """Add an item; a frame may wait (BLOCK) or push the oldest frame out (DROP_OLDEST).

        Args:
            source_id: The source the item is from.
            item: A frame, an event or the source's end marker.

        Returns:
            False when the run is stopping, or the source was removed, and the item was not added
            (a refused frame counts as dropped).
        """
        is_frame = isinstance(item, Frame)
        with self._changed:
            buffer = self._buffers[source_id]
            while not self._stop.is_set() and not buffer.retiring and is_frame and buffer.frames >= self.capacity:
                if buffer.policy is DropPolicy.DROP_OLDEST:
                    self._drop_oldest_frame(buffer)
                else:
                    self._changed.wait(_POLL_S)
            if self._stop.is_set() or buffer.retiring:
                buffer.dropped += is_frame  # a frame decoded but refused is a frame dropped
                return False
            if is_frame:
                buffer.frames += 1
            buffer.end_queued = buffer.end_queued or isinstance(item, SourceEnded)
            buffer.items.append(item)
            self._changed.notify_all()
            return True

    @staticmethod
    def _drop_oldest_frame(buffer: _Buffer) -> None:
        for i, item in enumerate(buffer.items):
            if isinstance(item, Frame):
                del buffer.items[i]
                buffer.frames -= 1
                buffer.dropped += 1
                buffer.dropped_pending += 1
                return

    def take(self, max_frames: int, max_wait_s: float) -> list[Taken]:
        """Up to `max_frames` frames across sources, round-robin.

        It waits at most `max_wait_s` after the first frame for more to arrive; events and ends
        come back at once.

        Args:
            max_frames: The most frames to take (the batch size).
            max_wait_s: How long a partial batch waits to fill, in seconds.

        Returns:
            What was taken, one Taken per source and round, in order. Empty when stopping or finished.
        """
        taken: list[Taken] = []
        deadline: float | None = None
        with self._changed:
            while not self._stop.is_set():
                self._take_round_robin(taken, max_frames)
                frames = sum(t.frame is not None for t in taken)
                if frames >= max_frames or self._all_finished():
                    break
                if taken and frames == 0:
                    break  # only events or ends: hand them on now
                if frames and deadline is None:
                    deadline = time.monotonic() + max_wait_s
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._changed.wait(min(remaining, _POLL_S))
                else:
                    self._changed.wait(_POLL_S)
            self._changed.notify_all()  # blocked readers may have room now
        return taken

    def _take_round_robin(self, taken: list[Taken], max_frames: int) -> None:
        """One frame per source per round (with the events before it), until full or dry."""
        progress = True
        while progress and sum(t.frame is not None for t in taken) < max_frames:
            progress = False
            n = len(self._order)
            if n == 0:  # an open-ended intake with no source yet
                return
            for k in range(n):
                source_id = self._order[(self._next + k) % n]
                item = self._take_one(source_id)
                if item is not None:
                    taken.append(item)
                    progress = progress or item.frame is not None
                    if sum(t.frame is not None for t in taken) >= max_frames:
                        self._next = (self._next + k + 1) % n
                        return
            self._next = (self._next + 1) % n

    def _take_one(self, source_id: str) -> Taken | None:
        buffer = self._buffers[source_id]
        events: list[SourceEvent] = []
        while buffer.items:
            item = buffer.items.popleft()
            if isinstance(item, SourceEvent):
                events.append(item)
            elif isinstance(item, SourceEnded):
                buffer.finished = True
                return Taken(source_id, tuple(events), ended=item)
            else:
                buffer.frames -= 1
                dropped, buffer.dropped_pending = buffer.dropped_pending, 0
                return Taken(source_id, tuple(events), item, dropped)
        return Taken(source_id, tuple(events)) if events else None
