"""annotated.mp4 is a fragmented MP4: what is on disk plays at every moment, and a full disk leaves a file that plays.

Frames of a real clip go through a real VideoSink (x264, PyAV). A copy of the file taken while it
is being written stands for the file a kill leaves; a stand-in `os.pwrite` that runs out of room
stands for a full disk (the real one, on a tmpfs, is in test_outputs_disk_full.py).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from fractions import Fraction
from pathlib import Path

import av
import pytest

from fastsam_stream.core import Frame, FrameResult, Instances
from fastsam_stream.errors import DiskFullError
from fastsam_stream.sinks import VideoSink
from fastsam_stream.sinks.video import ENCODER_DELAY_FRAMES

REAL_PWRITE = os.pwrite
CLIP = "carphone_pristine.mp4"  # 120 frames, 176x144, 30000/1001 fps


@pytest.fixture(scope="module")
def clip(videos) -> tuple[list, Fraction]:
    with av.open(str(videos / CLIP)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        return frames, stream.average_rate


def results(clip) -> list[FrameResult]:
    images, fps = clip
    return [
        FrameResult(Frame(image, "clip", i, float(i / fps), 0.0), Instances.empty(image.shape[:2]), ())
        for i, image in enumerate(images)
    ]


def playable(path: Path) -> tuple[list[float], bool]:
    """The timestamps of the frames PyAV decodes from the start, and whether it stopped at damage."""
    times: list[float] = []
    if path.stat().st_size == 0:  # killed before its first fragment: nothing to play, nothing damaged
        return times, False
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                times.append(float(frame.pts * frame.time_base))
    except av.FFmpegError:
        return times, True
    return times, False


class Room:
    """os.pwrite on a disk with `free` bytes left: a write that does not fit is cut short, the next one fails."""

    def __init__(self, free: int) -> None:
        self.free = free

    def __call__(self, fd: int, data, offset: int) -> int:
        if self.free <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        taken = min(len(data), self.free)
        self.free -= taken
        return REAL_PWRITE(fd, bytes(data[:taken]), offset)


def full_size(clip, tmp_path: Path) -> int:
    sink = VideoSink(tmp_path / "whole.mp4", fps=clip[1])
    for result in results(clip):
        sink.write(result)
    sink.close()
    return (tmp_path / "whole.mp4").stat().st_size


def test_the_file_plays_up_to_its_last_complete_fragment_while_it_is_written(clip, tmp_path):
    path = tmp_path / "annotated.mp4"
    sink = VideoSink(path, fps=clip[1])
    assert sink.frames_at_risk == 30 + ENCODER_DELAY_FRAMES + 1  # a second at 29.97 fps, the encoder, the frame in hand
    seen = []
    for result in results(clip):
        sink.write(result)
        if sink.frames_written % 7 == 0:  # the file as a SIGKILL would leave it now
            copy = tmp_path / f"killed_{sink.frames_written}.mp4"
            shutil.copyfile(path, copy)
            times, damaged = playable(copy)
            assert not damaged and len(times) == sink.frames_complete
            assert sink.frames_complete >= sink.frames_written - (sink.frames_at_risk - 1)
            # Each at its own frame's time; the cut is in decoding order, so a B-frame just before
            # the last frame shown may wait in the next fragment.
            assert times == sorted(times) and {round(t * 30000 / 1001, 2) for t in times} <= set(range(120))
            head = times[:-2]
            assert head == pytest.approx([i * 1001 / 30000 for i in range(len(head))], abs=1e-3)
            seen.append(len(times))
    sink.close()
    assert seen[0] == 0 and seen[-1] >= 60  # fragments came out as the frames went in
    times, damaged = playable(path)
    assert not damaged and len(times) == sink.frames_complete == 120


def test_a_full_disk_while_writing_leaves_a_file_that_plays_and_one_error(clip, tmp_path, monkeypatch):
    size = full_size(clip, tmp_path)
    path = tmp_path / "annotated.mp4"
    sink = VideoSink(path, fps=clip[1])
    given = 0
    with monkeypatch.context() as patch:
        patch.setattr(os, "pwrite", Room(size // 2))
        with pytest.raises(DiskFullError) as error:
            for result in results(clip):
                sink.write(result)
                given += 1
        with pytest.raises(DiskFullError):  # and every write after it: no gap in the frames
            sink.write(results(clip)[given + 1])
        sink.close()  # it finalises what it can, and does not raise the error again
    message = re.fullmatch(
        rf"cannot write {re.escape(str(path))}: disk full \(No space left on device\); its first (\d+) frames play",
        str(error.value),
    )
    assert message, str(error.value)
    complete = int(message.group(1))
    assert complete == sink.frames_complete and complete >= given - (sink.frames_at_risk - 1)
    times, damaged = playable(path)
    assert not damaged and len(times) == complete  # cut back to its last complete fragment


def test_a_disk_that_fills_while_closing_raises_once(clip, tmp_path, monkeypatch):
    size = full_size(clip, tmp_path)
    path = tmp_path / "annotated.mp4"
    sink = VideoSink(path, fps=clip[1])
    with monkeypatch.context() as patch:
        patch.setattr(os, "pwrite", Room(size - 200))  # every fragment fits but the last
        for result in results(clip):
            sink.write(result)
        with pytest.raises(DiskFullError, match=r"disk full .*; its first \d+ frames play$"):
            sink.close()
        sink.close()  # closing twice is harmless
    times, damaged = playable(path)
    assert not damaged and 0 < len(times) == sink.frames_complete < 120


def test_a_full_disk_before_the_first_fragment_leaves_no_file(clip, tmp_path, monkeypatch):
    path = tmp_path / "annotated.mp4"
    sink = VideoSink(path, fps=clip[1])
    with monkeypatch.context() as patch:
        patch.setattr(os, "pwrite", Room(0))
        with pytest.raises(DiskFullError, match="; nothing playable was written$"):
            for result in results(clip):
                sink.write(result)
        sink.close()
    assert sink.frames_written > ENCODER_DELAY_FRAMES  # nothing reaches the disk before the first fragment
    assert not path.exists()


def test_a_closed_sink_is_never_opened_again(clip, tmp_path):
    sink = VideoSink(tmp_path / "a.mp4", fps=clip[1])
    first = results(clip)[:3]
    for result in first:
        sink.write(result)
    sink.close()
    with pytest.raises(ValueError, match="is closed"):
        sink.write(first[0])  # opening it again would empty it
    assert playable(tmp_path / "a.mp4") == (pytest.approx([i * 1001 / 30000 for i in range(3)], abs=1e-3), False)


def test_only_mp4_and_mov_names(tmp_path):
    with pytest.raises(ValueError, match="fragmented MP4"):
        VideoSink(tmp_path / "a.mkv", fps=Fraction(25))
