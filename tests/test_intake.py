"""FrameIntake: the per-source bounded buffers between reader threads and the segmenter.

Unit tests of its logic with tiny frames; threads only where blocking is the behaviour under test,
and then with events and bounded joins, never with sleeps.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fastsam_stream.core import EventKind, Frame, SourceEvent
from fastsam_stream.pipeline.intake import FrameIntake, SourceEnded, Taken
from fastsam_stream.sources.base import DropPolicy

BLOCK, DROP = DropPolicy.BLOCK, DropPolicy.DROP_OLDEST
JOIN_S = 60.0  # bound on waiting for a thread that should already be able to finish: it only stops a hang
NEVER_S = 3600.0  # a wait that no run of these tests sits out: a thread still in it after JOIN_S never left it
BLOCKED_S = 0.2  # how long a put must stay blocked to count as waiting (longer only makes the check stricter)


def frame(source_id: str, index: int) -> Frame:
    return Frame(np.zeros((4, 4, 3), np.uint8), source_id, index, index / 25, time.monotonic())


def event(source_id: str, next_frame: int, message: str = "") -> SourceEvent:
    return SourceEvent(source_id, EventKind.LOST, next_frame, time.time(), message=message)


def intake(capacity: int = 4, **policies: DropPolicy) -> tuple[FrameIntake, threading.Event]:
    stop = threading.Event()
    return FrameIntake(policies or {"a": BLOCK}, capacity, stop), stop


def drain(buffers: FrameIntake, max_frames: int = 100) -> list[Taken]:
    """Everything waiting now (take returns without waiting for more: max_wait_s=0)."""
    return buffers.take(max_frames, 0.0)


def indexes(taken: list[Taken], source_id: str | None = None) -> list[int]:
    return [t.frame.index for t in taken if t.frame is not None and source_id in (None, t.source_id)]


def test_capacity_below_one_is_an_error():
    for capacity in (0, -1):
        with pytest.raises(ValueError, match="capacity"):
            FrameIntake({"a": BLOCK}, capacity, threading.Event())


def test_drop_oldest_keeps_the_newest_frames_and_counts_every_drop():
    buffers, _ = intake(3, cam=DROP)
    assert all(buffers.put("cam", frame("cam", i)) for i in range(10))
    assert buffers.dropped("cam") == 7
    taken = drain(buffers)
    assert indexes(taken) == [7, 8, 9]
    assert [t.dropped_before for t in taken] == [7, 0, 0]
    assert buffers.dropped("cam") == 7


def test_dropped_before_counts_the_drops_since_the_previous_taken_frame():
    buffers, _ = intake(2, cam=DROP)
    for i in range(5):  # 0, 1, 2 are pushed out
        buffers.put("cam", frame("cam", i))
    first = buffers.take(1, 0.0)
    assert indexes(first) == [3] and first[0].dropped_before == 3
    for i in range(5, 8):  # 4 (waiting since before) and 5 are pushed out
        buffers.put("cam", frame("cam", i))
    rest = drain(buffers)
    assert indexes(rest) == [6, 7]
    assert [t.dropped_before for t in rest] == [2, 0]
    assert buffers.dropped("cam") == 5


def test_events_and_the_end_are_never_dropped_and_keep_their_place():
    buffers, _ = intake(1, cam=DROP)
    lost, back = event("cam", 1, "lost"), event("cam", 2, "back")
    buffers.put("cam", frame("cam", 0))
    buffers.put("cam", lost)
    buffers.put("cam", frame("cam", 1))  # pushes frame 0 out, not the event
    buffers.put("cam", back)
    buffers.put("cam", frame("cam", 2))  # pushes frame 1 out
    buffers.put("cam", SourceEnded("cam"))
    taken = drain(buffers)
    assert len(taken) == 2
    assert taken[0].events == (lost, back) and taken[0].frame.index == 2 and taken[0].dropped_before == 2
    assert taken[1].events == () and taken[1].frame is None and taken[1].ended == SourceEnded("cam")
    assert buffers.finished


def test_events_between_frames_come_with_the_frame_they_precede():
    buffers, _ = intake(4, a=BLOCK)
    e1, e2, e3 = event("a", 1, "one"), event("a", 2, "two"), event("a", 2, "three")
    for item in [frame("a", 0), e1, frame("a", 1), e2, e3, SourceEnded("a")]:
        assert buffers.put("a", item)
    taken = drain(buffers)
    assert [(t.events, indexes([t]), t.ended is not None) for t in taken] == [
        ((), [0], False),
        ((e1,), [1], False),
        ((e2, e3), [], True),
    ]


def test_take_hands_events_on_at_once_when_no_frame_is_waiting():
    """With only an event waiting, take returns it rather than waiting for frames to fill a batch.

    max_wait_s is an hour: a take that waited would still be running when the join gives up.
    """
    buffers, stop = intake(4, a=BLOCK, b=BLOCK)
    connected = event("a", 0, "connected")
    buffers.put("a", connected)
    got: list[list[Taken]] = []
    taker = threading.Thread(target=lambda: got.append(buffers.take(4, max_wait_s=NEVER_S)), daemon=True)
    taker.start()
    taker.join(JOIN_S)
    stop.set()
    buffers.wake()
    assert not taker.is_alive(), "take() sat on an event waiting for frames"
    assert got == [[Taken("a", (connected,))]]


def test_a_take_waiting_for_frames_returns_nothing_when_stopped():
    buffers, stop = intake(4, a=BLOCK)
    got: list[list[Taken]] = []
    started = threading.Event()

    def take() -> None:
        started.set()
        got.append(buffers.take(4, 0.0))

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    assert started.wait(JOIN_S)
    stop.set()
    buffers.wake()
    taker.join(JOIN_S)
    assert not taker.is_alive(), "take() did not notice the stop flag"
    assert got == [[]]


def test_take_returns_nothing_once_stopped_even_with_frames_waiting():
    buffers, stop = intake(4, a=BLOCK)
    buffers.put("a", frame("a", 0))
    stop.set()
    assert buffers.take(4, 0.0) == []


def test_put_on_a_full_buffer_returns_false_once_stopped():
    for policy in (BLOCK, DROP):
        buffers, stop = intake(2, a=policy)
        buffers.put("a", frame("a", 0))
        buffers.put("a", frame("a", 1))
        stop.set()
        assert buffers.put("a", frame("a", 2)) is False
        # The refused frame was decoded and will never be processed: it counts as dropped; the
        # frames already waiting are not pushed out for it.
        assert buffers.dropped("a") == 1
        stop.clear()
        assert indexes(drain(buffers)) == [0, 1]


def _blocked_reader(buffers, item) -> tuple[threading.Thread, list[bool]]:
    """A reader thread putting `item` into source "a"'s full BLOCK buffer; it must be waiting.

    Nothing can make room meanwhile, so a put that has not returned BLOCKED_S after it began is
    waiting, on any machine; one that returns wrongly may only be seen on a fast one.
    """
    results: list[bool] = []
    putting = threading.Event()

    def put() -> None:
        putting.set()
        results.append(buffers.put("a", item))

    reader = threading.Thread(target=put, daemon=True)
    reader.start()
    assert putting.wait(JOIN_S)
    reader.join(BLOCKED_S)
    assert reader.is_alive() and results == [], "put() on a full BLOCK buffer returned instead of waiting"
    return reader, results


def test_a_reader_blocked_on_a_full_buffer_is_released_by_stop():
    buffers, stop = intake(1, a=BLOCK)
    buffers.put("a", frame("a", 0))
    reader, results = _blocked_reader(buffers, frame("a", 1))
    stop.set()
    buffers.wake()
    reader.join(JOIN_S)
    assert not reader.is_alive() and results == [False]


def test_block_waits_for_room_and_resumes_when_the_consumer_takes():
    buffers, stop = intake(2, a=BLOCK)
    buffers.put("a", frame("a", 0))
    buffers.put("a", frame("a", 1))
    reader, results = _blocked_reader(buffers, frame("a", 2))
    first = buffers.take(1, 0.0)
    reader.join(JOIN_S)
    try:
        assert not reader.is_alive(), "the reader was not woken when room was made"
    finally:
        stop.set()
        buffers.wake()
    assert results == [True]
    stop.clear()
    assert indexes(first) + indexes(drain(buffers)) == [0, 1, 2]
    assert buffers.dropped("a") == 0


def test_block_delivers_every_frame_in_order_to_a_slower_consumer():
    n = 60
    buffers, stop = intake(2, a=BLOCK)
    refused: list[int] = []

    def read() -> None:
        for i in range(n):
            if not buffers.put("a", frame("a", i)):
                refused.append(i)
                return
        buffers.put("a", SourceEnded("a"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    taken: list[Taken] = []
    try:
        while not buffers.finished and len(taken) <= n:
            taken += buffers.take(3, 0.001)
        reader.join(JOIN_S)
        assert not reader.is_alive()
    finally:
        stop.set()
        buffers.wake()
    assert refused == []
    assert indexes(taken) == list(range(n))
    assert all(t.dropped_before == 0 for t in taken)
    assert buffers.dropped("a") == 0 and taken[-1].ended == SourceEnded("a")


def test_round_robin_a_busy_source_does_not_starve_the_others():
    buffers, _ = intake(10, busy=BLOCK, quiet=BLOCK, rare=BLOCK)
    for i in range(10):
        buffers.put("busy", frame("busy", i))
    buffers.put("quiet", frame("quiet", 0))
    buffers.put("rare", frame("rare", 0))
    batch = buffers.take(3, 0.0)
    assert sorted(t.source_id for t in batch) == ["busy", "quiet", "rare"]
    batch = buffers.take(4, 0.0)  # only busy has frames left: they fill the batch, in order
    assert [t.source_id for t in batch] == ["busy"] * 4
    assert indexes(batch) == [1, 2, 3, 4]


def test_a_batch_holds_a_frame_of_every_source_that_has_one():
    buffers, _ = intake(8, a=BLOCK, b=BLOCK)
    for i in range(8):
        buffers.put("a", frame("a", i))
    buffers.put("b", frame("b", 0))
    batch = buffers.take(2, 0.0)
    assert {t.source_id for t in batch} == {"a", "b"}


def test_round_robin_start_rotates_between_takes():
    buffers, _ = intake(4, a=BLOCK, b=BLOCK, c=BLOCK)
    for source_id in "abc":
        for i in range(3):
            buffers.put(source_id, frame(source_id, i))
    taken = [t for _ in range(6) for t in buffers.take(1, 0.0)]
    order = [t.source_id for t in taken]
    assert sorted(order[:3]) == ["a", "b", "c"] and order[3:] == order[:3]
    taken += drain(buffers)
    for source_id in "abc":  # each source's frames stay in order whatever the interleaving
        assert indexes(taken, source_id) == [0, 1, 2]


def test_finished_only_after_every_end_marker_is_taken():
    buffers, _ = intake(4, a=BLOCK, b=BLOCK)
    buffers.put("a", frame("a", 0))
    buffers.put("a", SourceEnded("a"))
    assert not buffers.finished  # put, not yet taken
    taken = drain(buffers)
    assert [t.ended for t in taken if t.ended] == [SourceEnded("a")]
    assert not buffers.finished  # b is still going
    error = RuntimeError("decoder failed")
    buffers.put("b", SourceEnded("b", error))
    taken = drain(buffers)
    assert [t.ended.error for t in taken if t.ended] == [error]
    assert buffers.finished
    assert drain(buffers) == []  # finished: take returns at once, empty
