"""The LiveSource state machine through real PyAV decoding, with no network.

lavfi's `testsrc` is a short "camera" that ends after a few frames (a lost stream), and a scripted
opener fails on demand between connections and comes back at another size.
"""

from __future__ import annotations

import errno
import random
import threading
from fractions import Fraction
from itertools import islice, pairwise

import av
import pytest

from fastsam_stream.core import EventKind, Frame, SourceEvent
from fastsam_stream.errors import SourceConnectionError
from fastsam_stream.sources import (
    CameraSource,
    LiveSource,
    ReconnectPolicy,
    SourceState,
    StreamSettings,
    open_source,
)

FRAMES_PER_CONNECTION = 5  # testsrc at 25 fps for 0.2 s
# No test here waits for a timeout or a delay to pass: this bound on the waits that should end at
# once (a read, an open of a local lavfi graph, a thread's end) only stops a hang.
HANG_S = 60.0
NEVER_S = 3600.0  # a delay or a lifetime that no run of these tests reaches
URL = "rtsp://admin:s3cr3t@10.0.0.5:554/Streaming/101"  # never dialled: the name only feeds the redactor


def _refused() -> OSError:
    return av.error.ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused", URL)


def _unreachable() -> OSError:
    return OSError(errno.EHOSTUNREACH, "No route to host")


class ScriptedSource(LiveSource):
    """Each connection attempt takes the next step of the script.

    (width, height) opens a real lavfi test source of that size; an exception is raised as the
    attempt's failure. Once the script is spent, every attempt is refused.
    """

    def __init__(self, script, reconnect: ReconnectPolicy, seed: int = 0) -> None:
        self.script = list(script)
        self.attempts = 0
        settings = StreamSettings(open_timeout_s=HANG_S, read_timeout_s=HANG_S, reconnect=reconnect)
        super().__init__(URL, "cam", settings, seed)

    def _open(self):
        self.attempts += 1
        step = self.script.pop(0) if self.script else _refused()
        if isinstance(step, BaseException):
            raise step
        width, height = step
        return av.open(f"testsrc=size={width}x{height}:rate=25:duration=0.2", format="lavfi")


def _fast(max_attempts: int | None, stable_after_s: float = 0.0) -> ReconnectPolicy:
    """No delays; by default every connection that delivered frames counts as a success.

    These lavfi connections last 0.2 s, shorter than any real `stable_after_s`.
    """
    return ReconnectPolicy(initial_delay_s=0.0, jitter=0.0, max_attempts=max_attempts, stable_after_s=stable_after_s)


def _kinds(items) -> list[str]:
    return ["frame" if isinstance(i, Frame) else i.kind.value for i in items]


@pytest.fixture
def reconnecting_run():
    """Connect at 64x48, lose it, two refused attempts, back at 32x24, lose it: gave up.

    The end is three failed attempts (max_attempts=3).
    """
    script = [(64, 48), _refused(), _refused(), (32, 24), _refused(), _refused(), _unreachable()]
    source = ScriptedSource(script, _fast(max_attempts=3))
    items = list(source.frames())
    return source, items


def test_the_event_sequence_through_loss_reconnect_and_giving_up(reconnecting_run):
    source, items = reconnecting_run
    n = FRAMES_PER_CONNECTION
    assert _kinds(items) == ["connected", *["frame"] * n, "lost", "reconnected", *["frame"] * n, "lost", "gave_up"]
    assert source.attempts == 7  # the whole script was used: no attempt more, none less


def test_connected_and_reconnected_carry_the_stream_size_and_rate(reconnecting_run):
    _, items = reconnecting_run
    events = [i for i in items if isinstance(i, SourceEvent)]
    connected, lost, reconnected, lost_again, gave_up = events
    assert (connected.width, connected.height, connected.fps) == (64, 48, 25.0)
    assert connected.next_frame == 0 and connected.source_id == "cam"
    assert lost.message and lost.attempt == 0
    assert reconnected.attempt == 3  # two failures, then success
    assert (reconnected.width, reconnected.height, reconnected.fps) == (32, 24, 25.0)
    assert reconnected.outage_s is not None and reconnected.outage_s >= 0
    assert reconnected.next_frame == FRAMES_PER_CONNECTION
    frames_after = [i for i in items[items.index(reconnected) :] if isinstance(i, Frame)]
    assert {(f.width, f.height) for f in frames_after} == {(32, 24)}
    assert lost_again.next_frame == 2 * FRAMES_PER_CONNECTION


def test_giving_up_names_the_attempts_and_the_last_error_without_the_password(reconnecting_run):
    source, items = reconnecting_run
    gave_up = items[-1]
    assert gave_up.kind is EventKind.GAVE_UP
    assert gave_up.attempt == 3
    assert "No route to host" in gave_up.message
    assert "s3cr3t" not in gave_up.message
    assert source.state is SourceState.GAVE_UP


def test_frame_indexes_keep_counting_across_a_reconnect(reconnecting_run):
    _, items = reconnecting_run
    frames = [i for i in items if isinstance(i, Frame)]
    assert [f.index for f in frames] == list(range(2 * FRAMES_PER_CONNECTION))
    assert all(f.source_id == "cam" for f in frames)


def test_pts_strictly_increase_across_a_reconnect(reconnecting_run):
    """Lavfi delivers faster than real time, as a stream that bursts its buffer on connect does.

    (HLS segments, an RTSP server's GOP cache.) The first connection's stream clock runs ahead of
    the wall clock, and the second connection must still not start before the first one ended.
    """
    _, items = reconnecting_run
    pts = [i.pts for i in items if isinstance(i, Frame)]
    assert all(b > a for a, b in pairwise(pts)), pts


def test_close_while_waiting_to_reconnect_stops_at_once_without_giving_up():
    policy = ReconnectPolicy(initial_delay_s=NEVER_S, max_delay_s=NEVER_S, jitter=0.0, max_attempts=5)
    source = ScriptedSource([(64, 48)], policy)
    items: list = []
    lost = threading.Event()

    def consume() -> None:
        for item in source.frames():
            items.append(item)
            if isinstance(item, SourceEvent) and item.kind is EventKind.LOST:
                lost.set()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    assert lost.wait(HANG_S), "the stream was never reported lost"
    source.close()  # the reader is in (or about to enter) the hour-long wait before attempt 1
    reader.join(HANG_S)  # ending at all, before the hour, shows close() woke it
    assert not reader.is_alive(), "close() did not end frames() while it waited to reconnect"
    assert source.state is SourceState.STOPPED
    assert _kinds(items) == ["connected", *["frame"] * FRAMES_PER_CONNECTION, "lost"]
    assert source.attempts == 1  # no reconnect attempt was made after close()


def test_reconnecting_off_gives_up_after_the_first_loss():
    source = ScriptedSource([(64, 48)], _fast(max_attempts=0))
    items = list(source.frames())
    assert _kinds(items)[-2:] == ["lost", "gave_up"]
    assert items[-1].attempt == 0 and items[-1].message
    assert source.attempts == 1 and source.state is SourceState.GAVE_UP


def test_the_first_connection_fails_fast_in_the_constructor():
    with pytest.raises(SourceConnectionError) as caught:
        ScriptedSource([_refused()], _fast(max_attempts=5))
    message = str(caught.value)
    assert "Connection refused" in message
    assert "s3cr3t" not in message and "admin:***@10.0.0.5" in message


def test_an_error_text_holding_the_url_is_redacted_in_the_constructor_error():
    with pytest.raises(SourceConnectionError) as caught:
        ScriptedSource([OSError(f"{URL}: 401 Unauthorized")], _fast(max_attempts=5))
    assert "s3cr3t" not in str(caught.value) and "401 Unauthorized" in str(caught.value)


def test_frames_runs_once():
    source = ScriptedSource([(64, 48)], _fast(max_attempts=0))
    assert len(list(source.frames())) > 0
    assert list(source.frames()) == []


def test_reconnect_delay_grows_exponentially_up_to_the_cap():
    policy = ReconnectPolicy(initial_delay_s=0.5, max_delay_s=4.0, multiplier=2.0, jitter=0.0)
    rng = random.Random(0)
    assert [policy.delay(n, rng) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]


def test_reconnect_delay_jitter_stays_within_bounds_and_is_used():
    policy = ReconnectPolicy(initial_delay_s=1.0, max_delay_s=8.0, multiplier=2.0, jitter=0.25)
    rng = random.Random(1234)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        draws = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(0.75 * base <= d <= 1.25 * base for d in draws), (attempt, min(draws), max(draws))
        assert min(draws) < 0.9 * base and max(draws) > 1.1 * base  # really jittered, both ways
    again = [ReconnectPolicy(jitter=0.25).delay(3, random.Random(7)) for _ in range(2)]
    assert again[0] == again[1]  # a seeded source retries on a reproducible schedule


def test_gives_up_after_counts_attempts():
    assert not ReconnectPolicy(max_attempts=None).gives_up_after(10_000)
    assert ReconnectPolicy(max_attempts=0).gives_up_after(0)
    assert not ReconnectPolicy(max_attempts=3).gives_up_after(2)
    assert ReconnectPolicy(max_attempts=3).gives_up_after(3)


def test_open_source_lavfi_is_a_live_camera_that_connects_first():
    settings = StreamSettings(reconnect=_fast(max_attempts=2))
    source = open_source("lavfi:testsrc=size=64x48:rate=25:duration=0.2", stream=settings)
    try:
        assert isinstance(source, CameraSource) and source.format == "lavfi"
        assert source.is_live and source.frame_count is None
        assert source.source_id == "lavfi-testsrc"
        assert source.fps == Fraction(25)
        frames = source.frames()
        first = list(islice(frames, 2 + FRAMES_PER_CONNECTION))
        frames.close()
    finally:
        source.close()
    connected = first[0]
    assert isinstance(connected, SourceEvent) and connected.kind is EventKind.CONNECTED
    assert (connected.width, connected.height) == (64, 48)
    assert _kinds(first[1:]) == [*["frame"] * FRAMES_PER_CONNECTION, "lost"]
    assert first[1].image.shape == (48, 64, 3) and first[1].source_id == "lavfi-testsrc"


def test_a_flapping_stream_backs_off_and_gives_up():
    """Every connection delivers frames and then drops at once (5 lavfi frames, far under `stable_after_s`).

    Each counts as a failed attempt, so the delays grow and max_attempts ends it, where a reset on
    every success would retry at the first delay forever.
    """
    policy = ReconnectPolicy(initial_delay_s=0.0, jitter=0.0, max_attempts=3, stable_after_s=NEVER_S)
    source = ScriptedSource([(64, 48)] * 10, policy)
    items = list(source.frames())
    kinds = [k for k in _kinds(items) if k != "frame"]
    assert kinds == [
        "connected",
        "lost",
        "reconnected",
        "lost",
        "reconnected",
        "lost",
        "reconnected",
        "lost",
        "gave_up",
    ]
    assert [e.attempt for e in items if isinstance(e, SourceEvent) and e.kind is not EventKind.LOST] == [0, 1, 2, 3, 3]
    assert source.attempts == 4 and source.state is SourceState.GAVE_UP
    assert items[-1].message == "the stream kept dropping"


def test_delay_survives_thousands_of_attempts():
    """2.0 ** 1024 overflows a float: an outage of hours must keep retrying at the cap, not crash."""
    policy = ReconnectPolicy(initial_delay_s=0.5, max_delay_s=30.0, multiplier=2.0, jitter=0.0)
    assert policy.delay(10_000, random.Random(0)) == 30.0


def test_a_stream_clock_that_jumps_back_continues_the_timeline():
    """A discontinuity (HLS, an MPEG-TS wrap): the stream's pts fall back 1.6 s at frame 25.

    Our pts keep their 40 ms spacing instead of freezing until the stream clock catches up.
    """
    graph = "testsrc=size=32x24:rate=25:duration=2,setpts='if(lt(N,25),N,N-40)/25/TB'"
    source = open_source(f"lavfi:{graph}", stream=StreamSettings(reconnect=_fast(max_attempts=0)))
    pts = [item.pts for item in source.frames() if isinstance(item, Frame)]
    steps = [b - a for a, b in pairwise(pts)]
    assert len(pts) == 50 and min(steps) > 0
    assert sorted(steps)[5] > 0.02  # at most a few frames bunched at the jump, not 40 of them
