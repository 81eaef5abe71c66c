"""The logic of cluster runs (cluster/) without Ray: renumbering, resuming, the outbox, placing, addresses.

Fakes stand in for a tracker's and a live source's answers; the file and folder sources are real.
Every wait on a thread is bounded by a long timeout that only stops a hang: each awaited thing
must happen, and happens in far less time.
"""

from __future__ import annotations

import threading
import time
from fractions import Fraction

import cv2
import numpy as np
import pytest

from fastsam_stream.cluster.build import remote_reason
from fastsam_stream.cluster.connect import GCS_PORT, RAY_CLIENT_PORT, host_and_port
from fastsam_stream.cluster.places import WorkerHandle, least_loaded, merged
from fastsam_stream.cluster.records import EventRecord, Outbox
from fastsam_stream.cluster.resume import RenumberedTracker, ResumedSource
from fastsam_stream.cluster.worker import WorkerReport
from fastsam_stream.core import EventKind, Frame, SourceEvent, TargetChange, Track, TrackState
from fastsam_stream.errors import ClusterError
from fastsam_stream.pipeline.status import (
    BATCH_SIZE_BUCKETS,
    LATENCY_BUCKETS_S,
    Histogram,
    PipelineMetrics,
    StreamState,
    StreamStatus,
)
from fastsam_stream.sources import open_source

HANG_S = 60.0  # only stops a hang: what is waited for happens in milliseconds

# --- RenumberedTracker --------------------------------------------------------------------------


def _track(track_id: int, box, target: bool, state: TrackState = TrackState.TRACKED) -> Track:
    return Track(
        track_id, tuple(float(v) for v in box), 0.9, state, 1, 0, target, 0 if state is TrackState.TRACKED else None
    )


class Scripted:
    """A tracker that answers each update with the next frame of tracks it was given, and keeps what it was asked."""

    def __init__(self, *frames: list[Track]) -> None:
        self.frames = list(frames)
        self.changes: list[TargetChange | None] = []
        self.rescaled: list[tuple[float, float]] = []

    def update(self, instances, targets=None, image=None) -> tuple[Track, ...]:
        self.changes.append(targets)
        return tuple(self.frames.pop(0))

    def rescale(self, sx: float, sy: float) -> None:
        self.rescaled.append((sx, sy))


def _iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# Two seeds and the two targets re-made from them. Track A overlaps seed X most, but B overlaps X
# far more and Y hardly at all: matched all at once, A takes Y and B takes X.
SEED_X, SEED_Y = (0, 0, 100, 10), (60, 0, 160, 10)
BOX_A, BOX_B = (20, 0, 120, 10), (0, 0, 90, 10)
ELSEWHERE = (300, 300, 340, 340)


def test_re_seeded_targets_take_their_old_ids_by_overlap_matched_all_at_once():
    """Each re-made target gets the id of the seed it is matched to (jointly), the other tracks fresh ids."""
    assert _iou(BOX_A, SEED_X) > _iou(BOX_A, SEED_Y)  # taken one by one, A would claim X's id
    inner = Scripted(
        [_track(1, BOX_A, True), _track(2, BOX_B, True), _track(3, ELSEWHERE, False)],
        [_track(1, BOX_A, True), _track(2, BOX_B, True), _track(3, ELSEWHERE, False), _track(4, ELSEWHERE, False)],
    )
    tracker = RenumberedTracker(inner, {4: SEED_X, 7: SEED_Y}, first_free=9)
    change = TargetChange(add_rows=(0, 1))
    first = tracker.update(None, change)
    assert {t.id: t.box for t in first} == {7: BOX_A, 4: BOX_B, 9: ELSEWHERE}
    assert inner.changes == [change]  # handed on as it is
    second = tracker.update(None)
    assert [t.id for t in second] == [7, 4, 9, 10]  # ids stay; a new track takes the next free one


def test_seeds_can_be_claimed_only_on_the_re_seeding_frame_and_only_by_overlap():
    """A target overlapping no seed gets a fresh id, and later targets never take a seed's id."""
    inner = Scripted(
        [_track(1, SEED_X, True), _track(2, ELSEWHERE, True)],  # 2 overlaps no seed
        [_track(1, SEED_X, True), _track(2, ELSEWHERE, True), _track(3, SEED_Y, True)],  # a later prompt
    )
    tracker = RenumberedTracker(inner, {4: SEED_X, 7: SEED_Y}, first_free=9)
    assert [t.id for t in tracker.update(None, TargetChange(add_rows=(0, 1)))] == [4, 9]
    assert [t.id for t in tracker.update(None, TargetChange(add_rows=(2,)))] == [4, 9, 10]  # not 7


def test_fresh_ids_start_above_every_seed():
    """first_free below a seed's id (the driver's count is behind): fresh ids still never reuse a seed's."""
    inner = Scripted([_track(1, SEED_X, True), _track(2, ELSEWHERE, False)])
    tracker = RenumberedTracker(inner, {12: SEED_X}, first_free=5)
    assert [t.id for t in tracker.update(None, TargetChange(add_rows=(0,)))] == [12, 13]


def test_dropped_ids_are_translated_to_the_inner_trackers():
    """drop_targets names the stream's ids; the inner tracker gets its own (an unknown id matches none)."""
    inner = Scripted([_track(1, BOX_A, True), _track(2, BOX_B, True)], [], [])
    tracker = RenumberedTracker(inner, {4: SEED_X, 7: SEED_Y}, first_free=9)
    tracker.update(None, TargetChange(add_rows=(0, 1)))  # inner 1 → 7, inner 2 → 4
    tracker.update(None, TargetChange(drop_ids=frozenset({7, 99})))
    assert inner.changes[1].drop_ids == frozenset({1, -1})
    everything = TargetChange(drop_all=True)
    tracker.update(None, everything)
    assert inner.changes[2] is everything
    tracker.rescale(2.0, 0.5)
    assert inner.rescaled == [(2.0, 0.5)]


# --- ResumedSource ------------------------------------------------------------------------------


def test_a_resumed_file_starts_at_its_frame_with_the_files_own_indexes(videos):
    """The frames before `start` are passed over; the first handed on is the file's frame `start` itself."""
    path = videos / "carphone_pristine.mp4"
    plain = list(open_source(path, source_id="car").frames())
    resumed = ResumedSource(open_source(path, source_id="car"), 100)
    try:
        frames = list(resumed.frames())
    finally:
        resumed.close()
    assert (resumed.source_id, resumed.frame_count, resumed.is_live) == ("car", 120, False)
    assert resumed.fps == Fraction(30000, 1001)
    assert [f.index for f in frames] == list(range(100, 120))
    assert [f.pts for f in frames] == [f.pts for f in plain[100:]]
    assert all(np.array_equal(f.image, p.image) for f, p in zip(frames, plain[100:], strict=True))


def test_a_resumed_image_folder_starts_at_its_image(davis):
    """An image folder resumes at the image of that number."""
    folder = davis / "JPEGImages" / "480p" / "blackswan"
    resumed = ResumedSource(open_source(folder, source_id="swan"), 45)
    try:
        frames = list(resumed.frames())
    finally:
        resumed.close()
    assert [f.index for f in frames] == [45, 46, 47, 48, 49]
    assert np.array_equal(frames[0].image, cv2.imread(str(folder / "00045.jpg")))


class FakeLive:
    """A live source reconnecting once: frames 0, 1, then lost and reconnected, then frame 2."""

    source_id, fps, frame_count, is_live = "cam", Fraction(25), None, True
    buffer_size = 3

    def __init__(self) -> None:
        self.closed = False

    def frames(self):
        image = np.zeros((8, 8, 3), np.uint8)
        yield Frame(image, "cam", 0, 0.0, time.monotonic())
        yield Frame(image, "cam", 1, 0.04, time.monotonic())
        yield SourceEvent("cam", EventKind.LOST, 2, time.time())
        yield SourceEvent("cam", EventKind.RECONNECTED, 2, time.time(), attempt=1)
        yield Frame(image, "cam", 2, 0.0, time.monotonic())

    def close(self) -> None:
        self.closed = True


def test_a_resumed_live_source_numbers_its_frames_and_events_on_from_start():
    """A live source starts again from its own 0: its frames and events are numbered on from `start`."""
    inner = FakeLive()
    resumed = ResumedSource(inner, 50)
    items = list(resumed.frames())
    assert [(type(i).__name__, i.index if isinstance(i, Frame) else i.next_frame) for i in items] == [
        ("Frame", 50),
        ("Frame", 51),
        ("SourceEvent", 52),
        ("SourceEvent", 52),
        ("Frame", 52),
    ]
    assert [i.kind for i in items if isinstance(i, SourceEvent)] == [EventKind.LOST, EventKind.RECONNECTED]
    assert resumed.buffer_size == 3  # anything else the source offers passes through
    resumed.close()
    assert inner.closed


# --- Outbox -------------------------------------------------------------------------------------


class WatchedCondition(threading.Condition):
    """A Condition that says when someone waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout=None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


def _message(n: int) -> EventRecord:
    return EventRecord("cam", {"n": n}, {"n": n})


def _in_thread(call) -> tuple[threading.Thread, threading.Event, list]:
    done, result = threading.Event(), []

    def run() -> None:
        result.append(call())
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done, result


def test_a_full_outbox_holds_the_lane_back_until_the_driver_takes():
    """Put on a full outbox waits (nothing is dropped or reordered), and goes on once the messages are taken."""
    outbox = Outbox(capacity=2)
    outbox._changed = watched = WatchedCondition()
    outbox.put(_message(1))
    outbox.put(_message(2))
    assert not watched.waiting.is_set()  # room for both: no wait
    thread, done, _ = _in_thread(lambda: outbox.put(_message(3)))
    assert watched.waiting.wait(HANG_S)  # the third put waits for room...
    assert not done.is_set() and len(outbox) == 2  # ...and has not added its message
    assert outbox.take(0) == [_message(1), _message(2)]
    assert done.wait(HANG_S)  # room again: the put completes
    thread.join(HANG_S)
    assert outbox.take(0) == [_message(3)]


def test_take_waits_for_the_first_message_and_a_closed_outbox_waits_for_nothing():
    """Take wakes on a put (not at the end of its wait); once closed, put never blocks and take returns at once."""
    outbox = Outbox(capacity=1)
    outbox._changed = watched = WatchedCondition()
    _, taken, result = _in_thread(lambda: outbox.take(10 * HANG_S))
    assert watched.waiting.wait(HANG_S)  # take is waiting
    outbox.put(_message(1))
    assert taken.wait(HANG_S)  # woken by the put, long before its own wait would end
    assert result == [[_message(1)]]

    outbox.put(_message(2))
    outbox.close()
    _, put, _ = _in_thread(lambda: outbox.put(_message(3)))  # full, but closed: no wait
    assert put.wait(HANG_S)
    assert outbox.take(10 * HANG_S) == [_message(2), _message(3)]
    _, taken, result = _in_thread(lambda: outbox.take(10 * HANG_S))  # empty and closed: at once
    assert taken.wait(HANG_S) and result == [[]]


# --- placing streams ----------------------------------------------------------------------------


def _worker(name: str, streams: set[str], fps: float = 0.0, alive: bool = True, finished: bool = False) -> WorkerHandle:
    histogram = Histogram(BATCH_SIZE_BUCKETS).snapshot()
    metrics = PipelineMetrics(streams=(), latency=histogram, batch_size=histogram, queue_depth={})
    statuses = tuple(StreamStatus(id=s, state=StreamState.STREAMING, fps=fps / len(streams)) for s in streams)
    report = WorkerReport(messages=(), streams=statuses, metrics=metrics, finished=finished)
    return WorkerHandle(name, actor=None, streams=set(streams), alive=alive, finished=finished, report=report)


def test_least_loaded_takes_the_fewest_streams_then_the_lowest_frame_rate_among_the_living():
    a = _worker("a", {"s1", "s2"}, fps=5.0)
    b = _worker("b", {"s3"}, fps=40.0)
    c = _worker("c", {"s4"}, fps=10.0)
    assert least_loaded([a, b, c]) is c  # one stream each for b and c: the slower one
    assert least_loaded([a, b]) is b  # fewer streams beats a lower rate
    c.alive = False
    assert least_loaded([a, b, c]) is b
    b.finished = True
    assert least_loaded([a, b, c]) is a
    a.alive = False
    assert least_loaded([a, b, c]) is None
    assert least_loaded([]) is None
    fresh = WorkerHandle("fresh", actor=None)  # no report yet: counts 0 frames/s
    assert least_loaded([_worker("d", {"s5"}, fps=1.0), fresh]) is fresh


# --- addresses and remote errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("auto", None),
        ("ray://head.example:10002", ("head.example", 10002)),
        ("ray://head.example", ("head.example", RAY_CLIENT_PORT)),
        ("ray://user:secret@head.example:10001", ("head.example", 10001)),
        ("10.0.0.5:6380", ("10.0.0.5", 6380)),
        ("head.example", ("head.example", GCS_PORT)),
        ("[::1]:6379", ("::1", 6379)),
    ],
)
def test_host_and_port_of_an_address(address, expected):
    assert host_and_port(address) == expected


def test_an_address_with_a_port_that_is_not_a_number_is_one_line():
    with pytest.raises(ClusterError) as caught:
        host_and_port("head.example:six")
    assert str(caught.value) == "cluster address 'head.example:six': the port must be a number"


class FakeRayError(Exception):
    """Like a Ray error: the remote traceback in its text, the remote exception (if any) as `cause`."""

    def __init__(self, text: str, cause: BaseException | None = None) -> None:
        super().__init__(text)
        self.cause = cause


RAY_TEXT = (
    "The actor died because of an error raised in its creation task, ray::StreamWorker.__init__() "
    "(pid=4242, ip=10.0.0.7, actor_id=ab12)\n"
    "Traceback (most recent call last):\n"
    '  File "/work/fastsam_stream/cluster/worker.py", line 101, in __init__\n'
    "    segmenter = UltralyticsSegmenter(config.model)\n"
    "ValueError: an earlier failure, chained\n"
    "\n"
    "During handling of the above exception, another exception occurred:\n"
    "fastsam_stream.errors.ModelError: weights file not found: /models/missing.pt\n"
)


def test_remote_reason_is_the_remote_exceptions_own_line():
    """The remote exception itself when Ray hands it over; else the last `SomeError: message` line of the text."""
    cause = FileNotFoundError("no such file: /data/clip.mp4\n(more detail)")
    assert remote_reason(FakeRayError(RAY_TEXT, cause)) == "FileNotFoundError: no such file: /data/clip.mp4"
    assert remote_reason(FakeRayError(RAY_TEXT)) == "ModelError: weights file not found: /models/missing.pt"
    assert remote_reason(FakeRayError(RAY_TEXT, FakeRayError("same kind"))) == (
        "ModelError: weights file not found: /models/missing.pt"  # a cause of its own kind says nothing more
    )
    assert remote_reason(FakeRayError("The node running the actor died\nsecond line")) == (
        "The node running the actor died"
    )


# --- metrics ------------------------------------------------------------------------------------


def test_merged_histograms_count_every_observation_once():
    """The workers' histograms added up equal one histogram that saw every observation."""
    values = [[0.004, 0.03, 0.03, 7.0], [0.2, 12.0], [0.05]]
    parts, whole = [], Histogram(LATENCY_BUCKETS_S)
    for worker_values in values:
        part = Histogram(LATENCY_BUCKETS_S)
        for value in worker_values:
            part.observe(value)
            whole.observe(value)
        parts.append(part.snapshot())
    total = merged(parts)
    expected = whole.snapshot()
    assert (total.bounds, total.cumulative, total.count) == (expected.bounds, expected.cumulative, 7)
    assert total.total == pytest.approx(expected.total)
    assert merged([parts[0]]) == parts[0]
