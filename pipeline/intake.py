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


class FrameIntake:
    """The bounded buffers of every source, shared by the reader threads (`put`) and the segmenter (`take`).

    One condition guards every buffer, so a take sees the sources in one consistent state and a
    reader blocked for room wakes as soon as frames are taken or the run stops.

    Args:
        policies: Each source's drop policy, by source id; their order is the round-robin order.
        capacity: Frames each buffer holds before its policy applies.
        stop: Set when the run stops: waiting puts and takes return, and nothing more is added.

    Raises:
        ValueError: `capacity` is below 1.
    """

    def __init__(self, policies: dict[str, DropPolicy], capacity: int, stop: threading.Event) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._buffers = {source_id: _Buffer(policy) for source_id, policy in policies.items()}
        self._order = list(policies)
        self._next = 0  # round-robin start
        self._stop = stop
        self._changed = threading.Condition()

    def dropped(self, source_id: str) -> int:
        """Frames of this source dropped so far: by its policy, refused while stopping, or discarded at the stop."""
        with self._changed:
            return self._buffers[source_id].dropped

    @property
    def finished(self) -> bool:
        """Every source's end marker has been taken: the batch just taken is the last."""
        with self._changed:
            return all(b.finished for b in self._buffers.values())

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
            False when the run is stopping and the item was not added (a refused frame counts
            as dropped).
        """
        buffer = self._buffers[source_id]
        is_frame = isinstance(item, Frame)
        with self._changed:
            while not self._stop.is_set() and is_frame and buffer.frames >= self.capacity:
                if buffer.policy is DropPolicy.DROP_OLDEST:
                    self._drop_oldest_frame(buffer)
                else:
                    self._changed.wait(_POLL_S)
            if self._stop.is_set():
                buffer.dropped += is_frame  # a frame decoded but refused is a frame dropped
                return False
            if is_frame:
                buffer.frames += 1
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
                if frames >= max_frames or all(b.finished for b in self._buffers.values()):
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
