"""FrameHub: each frame is JPEG-encoded once however many viewers watch, never when none does.

A slow viewer gets the newest frame, not a backlog, and closing the hub ends every viewer. The
frames are real: DAVIS "dog" pictures with the dog's real mask as the target's, written from
another thread as the pipeline does. Waits are on conditions; HANG_S only stops a hang.
"""

from __future__ import annotations

import threading
import time

import anyio
import cv2
import numpy as np
import pytest

from fastsam_stream.core import DenseMasks, EventKind, Frame, FrameResult, Instances, SourceEvent, Track, TrackState
from fastsam_stream.service.frames import MJPEG_BOUNDARY, FrameHub, frame_json
from fastsam_stream.sinks import annotate

HANG_S = 30  # only stops a hang: every wait here is over in milliseconds
STREAM = "dog"


@pytest.fixture(scope="module")
def frames(davis) -> list[FrameResult]:
    """Eleven real frames of DAVIS "dog": track 1 the dog (a target, its real mask), track 2 a faint other."""
    results = []
    for index in range(11):
        image = cv2.imread(str(davis / "JPEGImages" / "480p" / "dog" / f"{index:05d}.jpg"))
        mask = cv2.imread(str(davis / "Annotations" / "480p" / "dog" / f"{index:05d}.png"), cv2.IMREAD_GRAYSCALE) > 0
        ys, xs = np.nonzero(mask)
        dog = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        other = (10.0, 10.0, 120.0, 90.0)
        other_mask = np.zeros_like(mask)
        other_mask[10:90, 10:120] = True
        instances = Instances(
            np.array([dog, other]), np.array([0.9, 0.5]), mask.shape, masks=DenseMasks(np.stack([mask, other_mask]))
        )
        tracks = (
            Track(1, dog, 0.9, TrackState.TRACKED, index, 0, True, 0),
            Track(2, other, 0.5, TrackState.TRACKED, index, 0, False, 1),
            Track(3, other, 0.5, TrackState.REMOVED, index, 40, False, None),
        )
        frame = Frame(image, STREAM, index, index / 24, 0.0)
        results.append(FrameResult(frame, instances, tracks, {1: (0,)}))
    return results


def _decoded(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image


def _closest(jpeg: bytes, results: list[FrameResult]) -> int:
    """The index of the result whose annotated frame this JPEG shows (JPEG is lossy: the nearest one)."""
    image = _decoded(jpeg).astype(np.float32)
    errors = [float(np.abs(image - annotate(r).astype(np.float32)).mean()) for r in results]
    return int(np.argmin(errors))


def _rest(result: FrameResult) -> tuple:
    """A result's fields after its frame, to make the same result on another Frame."""
    return result.instances, result.tracks, result.target_rows


async def _write(hub: FrameHub, result: FrameResult) -> None:
    """Write from a worker thread, as the pipeline does from its own."""
    await anyio.to_thread.run_sync(hub.write, result)


async def _until(condition, what: str) -> None:
    """Let the loop run until `condition()` holds (each check is one turn of the loop); HANG_S stops a hang."""
    with anyio.fail_after(HANG_S):
        while not condition():
            await anyio.sleep(0.001)
    assert condition(), what


def test_three_viewers_share_one_encoding_per_frame(frames):
    hub = FrameHub(max_fps=None)
    count = 6

    async def main():
        received = [[] for _ in range(3)]

        async def viewer(got: list[bytes]) -> None:
            async for jpeg in hub.jpegs(STREAM):
                got.append(jpeg)

        async with anyio.create_task_group() as tg:
            for got in received:
                tg.start_soon(viewer, got)
            await _until(lambda: hub.viewers == 3, "three viewers subscribed")
            for k in range(count):
                await _write(hub, frames[k])
                await _until(lambda k=k: all(len(got) == k + 1 for got in received), f"frame {k} reached all viewers")
            hub.close()
        return received

    received = anyio.run(main)
    assert hub.encoded == count  # once per frame, not once per viewer
    for k in range(count):
        assert received[0][k] == received[1][k] == received[2][k]  # the very same encoding
        assert _closest(received[0][k], frames[:count]) == k
    assert hub.viewers == 0


def test_no_viewer_means_no_encoding(frames):
    hub = FrameHub()
    for result in frames:
        hub.write(result)
    assert hub.encoded == 0
    assert hub.latest_jpeg("nobody") is None
    jpeg = hub.latest_jpeg(STREAM)
    assert _closest(jpeg, frames) == len(frames) - 1
    assert hub.latest_jpeg(STREAM) == jpeg and hub.encoded == 1  # the same frame asked again: not encoded again
    hub.write(frames[0])
    assert hub.encoded == 1  # a new frame nobody asks for is not encoded
    assert _closest(hub.latest_jpeg(STREAM), frames) == 0 and hub.encoded == 2


def test_a_slow_viewer_gets_the_newest_frame_not_a_backlog(frames):
    hub = FrameHub(max_fps=None)

    async def main():
        fast: list[bytes] = []

        async def fast_viewer() -> None:
            async for jpeg in hub.jpegs(STREAM):
                fast.append(jpeg)

        slow = hub.jpegs(STREAM)
        async with anyio.create_task_group() as tg:
            tg.start_soon(fast_viewer)
            first = anyio.Event()
            firsts: list[bytes] = []

            async def slow_first() -> None:
                firsts.append(await slow.__anext__())
                first.set()

            tg.start_soon(slow_first)
            await _until(lambda: hub.viewers == 2, "both viewers subscribed")
            await _write(hub, frames[0])
            with anyio.fail_after(HANG_S):
                await first.wait()
            # The slow viewer reads nothing while ten more frames go by; the fast one sees each.
            for k in range(1, len(frames)):
                await _write(hub, frames[k])
                await _until(lambda k=k: len(fast) == k + 1, f"the fast viewer got frame {k}")
            with anyio.fail_after(HANG_S):
                second = await slow.__anext__()
            await slow.aclose()
            hub.close()
        return firsts[0], second, fast

    first, second, fast = anyio.run(main)
    assert _closest(first, frames) == 0
    assert _closest(second, frames) == len(frames) - 1  # the newest, not frame 1
    assert second == fast[-1]  # and the encoding the fast viewer already caused, not a second one
    assert [_closest(j, frames) for j in fast] == list(range(len(frames)))
    assert hub.encoded == len(frames)


def test_closing_the_hub_ends_every_viewer_and_forget_ends_one_stream(frames):
    hub = FrameHub()

    async def main():
        ended: list[str] = []

        async def drain(name: str, iterator) -> None:
            async for _ in iterator:
                pass
            ended.append(name)

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain, "jpegs", hub.jpegs(STREAM))
            tg.start_soon(drain, "updates", hub.updates(STREAM))
            tg.start_soon(drain, "other", hub.jpegs("other"))
            await _until(lambda: hub.viewers == 3, "three viewers waiting for a first frame")
            await anyio.to_thread.run_sync(hub.forget, "other")
            await _until(lambda: ended == ["other"], "forgetting a stream ends its viewer only")
            assert hub.viewers == 2
            await anyio.to_thread.run_sync(hub.close)  # from another thread, as a server shutting down
            await _until(lambda: len(ended) == 3, "closing ends every viewer")
        # A viewer that comes after the close ends at once.
        assert [j async for j in hub.jpegs(STREAM)] == []

    anyio.run(main)
    assert hub.viewers == 0
    hub.write(frames[0])  # frames after the close are ignored
    assert hub.latest_jpeg(STREAM) is None and hub.encoded == 0


def test_updates_carry_tracks_and_events_in_order(frames):
    hub = FrameHub()
    event = SourceEvent(STREAM, EventKind.TARGETS_CHANGED, 2, 1.0e9, message="1 point", added=(1,))
    lost = SourceEvent(STREAM, EventKind.LOST, 3, 1.0e9 + 1, message="connection reset")

    async def main():
        updates = hub.updates(STREAM)
        got = []
        pulling = anyio.Event()

        async def first() -> None:
            pulling.set()
            got.append(await updates.__anext__())

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            with anyio.fail_after(HANG_S):
                await pulling.wait()
            await _until(lambda: hub.viewers == 1, "the viewer subscribed")
            await _write(hub, frames[0])
        # Not reading: an event, a frame, another event go by; then it reads them in that order.
        hub.on_event(event)
        await _write(hub, frames[1])
        hub.on_event(lost)
        with anyio.fail_after(HANG_S):
            got += [await updates.__anext__() for _ in range(3)]
        await updates.aclose()
        return got

    got = anyio.run(main)
    assert [u.get("event", u.get("frame")) for u in got] == [0, "targets_changed", 1, "lost"]
    assert got[0] == frame_json(frames[0])
    assert got[2]["targets"] == [1] and (got[2]["width"], got[2]["height"]) == (854, 480)
    assert [(t["id"], t["target"], t["state"]) for t in got[2]["tracks"]] == [
        (1, True, "tracked"),
        (2, False, "tracked"),
    ]
    assert got[1] == {
        "event": "targets_changed",
        "stream": STREAM,
        "frame": 2,
        "at": 1.0e9,
        "message": "1 point",
        "added": [1],
    }
    assert got[3]["message"] == "connection reset"
    assert hub.viewers == 0


def test_mjpeg_parts_end_with_the_next_boundary(frames):
    hub = FrameHub(max_fps=None)

    async def main():
        body = hub.mjpeg(STREAM)
        with anyio.fail_after(HANG_S):
            opening = await body.__anext__()
            hub.write(frames[3])
            part = await body.__anext__()
        await body.aclose()
        return opening, part

    opening, part = anyio.run(main)
    boundary = f"--{MJPEG_BOUNDARY}\r\n".encode()
    assert opening == boundary and part.endswith(b"\r\n" + boundary)
    head, jpeg = part[: -len(boundary) - 2].split(b"\r\n\r\n", 1)
    assert f"Content-Length: {len(jpeg)}".encode() in head and b"Content-Type: image/jpeg" in head
    assert _closest(jpeg, frames) == 3


def test_max_fps_paces_the_encodings(frames):
    """At most max_fps encodings a second: a burst of frames faster than that is shown in fewer frames."""
    starts: list[float] = []
    indices: list[int] = []

    class TimedHub(FrameHub):
        def _encode(self, result):
            starts.append(time.monotonic())
            indices.append(result.frame.index)
            return super()._encode(result)

    hub = TimedHub(max_fps=20)

    async def main():
        shown: list[bytes] = []

        async def viewer() -> None:
            async for jpeg in hub.jpegs(STREAM):
                shown.append(jpeg)

        async with anyio.create_task_group() as tg:
            tg.start_soon(viewer)
            await _until(lambda: hub.viewers == 1, "the viewer subscribed")
            for k in range(40):  # 40 frames as fast as they come
                r = frames[k % len(frames)]
                await _write(hub, FrameResult(Frame(r.frame.image, STREAM, k, k / 24, 0.0), *_rest(r)))
            # The last frame is shown once its turn comes.
            await _until(lambda: indices and indices[-1] == 39 and len(shown) == len(indices), "the newest frame shown")
            hub.close()
        return shown

    shown = anyio.run(main)
    assert len(shown) == hub.encoded == len(starts) < 40
    # Each encoding starts at least 1/max_fps after the one before it ended, so after it started.
    assert all(gap >= 1 / 20 - 0.001 for gap in np.diff(starts)), np.diff(starts)  # 1 ms: the clock's rounding


def test_writes_never_wait_for_a_viewer(frames):
    """A viewer that stopped reading holds no lock the pipeline needs: writes go through from another thread."""
    hub = FrameHub(max_fps=None)

    async def main():
        stalled = hub.jpegs(STREAM)
        hub.write(frames[0])
        with anyio.fail_after(HANG_S):
            await stalled.__anext__()  # subscribed, then never reads again
        done = threading.Event()

        def pipeline() -> None:
            for k in range(200):
                hub.write(frames[k % len(frames)])
            done.set()

        await anyio.to_thread.run_sync(pipeline)
        assert done.is_set()
        await stalled.aclose()

    anyio.run(main)
    assert hub.encoded == 1


def test_a_viewer_arriving_after_its_stream_was_forgotten_ends_until_the_id_is_added_again(frames):
    hub = FrameHub()

    async def main():
        hub.forget(STREAM)  # the viewer's request raced the stream's removal
        assert [j async for j in hub.jpegs(STREAM)] == []
        assert hub.viewers == 0
        hub.expect(STREAM)  # the id is added again: a viewer waits for its first frame
        async with anyio.create_task_group() as tg:
            got: list[bytes] = []

            async def first() -> None:
                async for jpeg in hub.jpegs(STREAM):
                    got.append(jpeg)
                    return

            tg.start_soon(first)
            await _until(lambda: hub.viewers == 1, "a viewer waiting")
            await _write(hub, frames[0])
        assert got and got[0][:2] == b"\xff\xd8"

    anyio.run(main)
