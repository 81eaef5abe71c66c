"""A full disk, for real: a small tmpfs mounted by the test, filled by the sinks or by another writer.

The outputs left are whole: every line of tracks.jsonl parses, annotated.mp4 plays (up to its
last complete fragment), and the run ends with one line naming the file and saying "disk full",
never a traceback. A disk full before the run starts leaves no output that looks like a run's.

Mounting needs root (CI runs the tests as root); elsewhere these tests are skipped with the
reason, unless FASTSAM_STREAM_REQUIRE_TMPFS=1 makes that a failure.
"""

from __future__ import annotations

import errno
import math
import os
import re
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from fastsam_stream import assemble
from fastsam_stream.core import Frame, FrameResult, Instances, Track, TrackState
from fastsam_stream.errors import DiskFullError
from fastsam_stream.sinks import JsonlSink, MotSink, VideoSink
from fastsam_stream.sinks.jsonl import read_jsonl
from fastsam_stream.sinks.video import ENCODER_DELAY_FRAMES

HANG_S = 120  # only stops a hang: each run here takes seconds
CLIP = "vtest.avi"  # 795 frames at 10 fps: far more than a run writes before the disk is full
CLIP_FPS = 10
# The run refuses to start below assemble's minimum of free space: the tmpfs has that and a little more.
RUN_DISK = getattr(assemble, "MIN_FREE_BYTES", 0) + (4 << 20)


def _unavailable(reason: str) -> None:
    if os.environ.get("FASTSAM_STREAM_REQUIRE_TMPFS") == "1":
        pytest.fail(f"{reason} (FASTSAM_STREAM_REQUIRE_TMPFS=1)")
    pytest.skip(reason)


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Callable[[int], Path]]:
    """Mounts a tmpfs of the size asked for (bytes) under tmp_path; unmounted at teardown."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        if os.geteuid() != 0:
            _unavailable("mounting a tmpfs needs root (CI runs the tests as root)")
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        try:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except FileNotFoundError:
            _unavailable("no mount command here")
        if done.returncode != 0:
            _unavailable(f"cannot mount a tmpfs: {done.stderr.strip() or done.returncode}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        if subprocess.run(["umount", str(point)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)


def fill(disk: Path) -> None:
    """Take every free byte of the disk, as another program writing to it would."""
    with open(disk / "filler", "ab", buffering=0) as filler:
        chunk = b"\0" * (1 << 16)
        while True:
            try:
                filler.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return


def playable_frames(path: Path) -> int:
    """Frames PyAV decodes from the start of the file, which must be undamaged to its end."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def busy_result(index: int, tracks: int = 12) -> FrameResult:
    frame = Frame(np.zeros((576, 768, 3), np.uint8), "cam", index, index / 10, 0.0)
    listed = tuple(
        Track(i + 1, (10.0 * i, 20.0, 10.0 * i + 33.3, 99.9), 0.9, TrackState.TRACKED, 3, 0, False, None)
        for i in range(tracks)
    )
    return FrameResult(frame, Instances.empty((576, 768)), listed)


# ------------------------------------------------------------------------------- sinks on a tmpfs


def test_line_sinks_fill_a_real_disk_and_stop_at_a_whole_line(tmpfs):
    disk = tmpfs(64 << 10)
    tracks, mot = JsonlSink(disk / "tracks.jsonl"), MotSink(disk / "mot.txt")
    with pytest.raises(DiskFullError) as error:
        for index in range(100_000):
            for sink in (tracks, mot):
                sink.write(busy_result(index))
    tracks.close()
    mot.close()
    failed = Path(str(error.value).split(": disk full")[0].removeprefix("cannot write "))
    assert failed in (disk / "tracks.jsonl", disk / "mot.txt")
    complete = int(re.search(r"; the (\d+) lines? before (?:is|are) complete$", str(error.value)).group(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torn last line would warn
        records = read_jsonl(disk / "tracks.jsonl")
    assert [r["frame"] for r in records] == list(range(len(records)))
    mot_lines = (disk / "mot.txt").read_text().splitlines()
    assert len(mot_lines) % 12 == 0 and all(len(line.split(",")) == 10 for line in mot_lines)
    assert complete == (len(records) if failed.name == "tracks.jsonl" else len(mot_lines))


def test_the_video_sink_fills_a_real_disk_and_what_is_left_plays(tmpfs, videos):
    disk = tmpfs(256 << 10)
    sink = VideoSink(disk / "annotated.mp4", fps=Fraction(CLIP_FPS))
    with av.open(str(videos / CLIP)) as container, pytest.raises(DiskFullError) as error:
        for index, frame in enumerate(container.decode(video=0)):
            image = frame.to_ndarray(format="bgr24")
            sink.write(FrameResult(Frame(image, "cam", index, index / CLIP_FPS, 0.0), Instances.empty((576, 768)), ()))
    sink.close()  # no second error
    assert re.fullmatch(r"cannot write .*annotated\.mp4: disk full \(.*\); its first \d+ frames play", str(error.value))
    assert playable_frames(disk / "annotated.mp4") == sink.frames_complete > 0
    assert sink.frames_complete >= sink.frames_written - (sink.frames_at_risk - 1)


def test_sinks_on_a_disk_full_from_the_start_leave_no_file(tmpfs):
    disk = tmpfs(64 << 10)
    fill(disk)
    sink = JsonlSink(disk / "run" / "tracks.jsonl")
    with pytest.raises(DiskFullError, match=r"tracks\.jsonl: disk full \(No space left on device\); nothing was"):
        sink.write(busy_result(0))
    sink.close()
    video = VideoSink(disk / "run" / "annotated.mp4", fps=Fraction(25))
    with pytest.raises(DiskFullError, match="nothing playable was written$"):
        for index in range(200):  # the first fragment is written after a second of video
            video.write(busy_result(index, tracks=0))
    video.close()
    assert list((disk / "run").iterdir()) == []


# ----------------------------------------------------------------------------- the command on a tmpfs


def _start(cli, weights, source: Path, out: Path, *options: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*cli, "run", str(source), "--weights", str(weights), "--imgsz", "320", "--device", "cpu"]
        + ["--out", str(out), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_lines(path: Path, count: int, process: subprocess.Popen) -> None:
    """Poll until the file has `count` lines (a condition; the deadline only stops a hang)."""
    end = time.monotonic() + HANG_S
    while time.monotonic() < end:
        if process.poll() is not None:
            pytest.fail(f"the run ended before the disk was full: {process.communicate()[1]}")
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.05)
    pytest.fail(f"no {count} lines in {path} after {HANG_S} s")


def _the_one_error(stderr: str, out: Path) -> str:
    """The error line, checked: one line naming the file and saying 'disk full', no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if not line.startswith("WARNING ")]  # e.g. "only 20 MiB free"
    assert lines, stderr
    names = "|".join(re.escape(str(out / name)) for name in ("tracks.jsonl", "annotated.mp4"))
    assert re.fullmatch(
        rf"fastsam-stream: error: cannot write ({names}): disk full \(No space left on device\); .+", lines[-1]
    ), stderr
    # Exactly one line. This needs pipeline/runner.py's _shut_down to log, at DEBUG, a second
    # disk-full failure while closing (the video cannot finish on the full disk either) when a
    # DiskFullError is already on its way out; until then an "ERROR ... closing VideoSink failed"
    # line can come before it.
    assert lines == [lines[-1]], stderr
    return lines[-1]


@pytest.mark.parametrize("video", [True, False], ids=["with-video", "no-video"])
def test_a_run_that_fills_the_disk_stops_with_one_line_and_whole_outputs(cli, weights, videos, tmpfs, video):
    disk = tmpfs(RUN_DISK)
    out = disk / "run"
    options = ["--drop-policy", "block"] + ([] if video else ["--no-video", "--masks", "all"])
    process = _start(cli, weights, videos / CLIP, out, *options)
    try:
        # Enough lines for some complete fragments of video (frames_at_risk is 22 at 10 fps).
        _wait_for_lines(out / "tracks.jsonl", 40, process)
        fill(disk)  # another program takes the rest of the disk
        _, stderr = process.communicate(timeout=HANG_S)
    finally:
        process.kill()
    assert process.returncode not in (0, None), stderr
    error = _the_one_error(stderr, out)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torn last line would warn
        records = read_jsonl(out / "tracks.jsonl")
    assert len(records) >= 40 and [r["frame"] for r in records] == list(range(len(records)))
    if "tracks.jsonl" in error:
        assert error.endswith(f"; the {len(records)} lines before are complete")
    if not video:
        assert not (out / "annotated.mp4").exists()
        return
    frames = playable_frames(out / "annotated.mp4")
    at_risk = math.ceil(CLIP_FPS) + ENCODER_DELAY_FRAMES + 1  # VideoSink.frames_at_risk at the clip's rate
    assert len(records) - at_risk <= frames <= len(records)
    if "annotated.mp4" in error:
        assert error.endswith(f"; its first {frames} frames play")


def test_a_run_on_a_full_disk_says_so_and_leaves_nothing(cli, weights, videos, tmpfs):
    disk = tmpfs(1 << 20)
    fill(disk)
    out = disk / "run"
    done = subprocess.run(
        [*cli, "run", str(videos / CLIP), "--weights", str(weights), "--imgsz", "320", "--device", "cpu"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("WARNING ")]
    assert len(lines) == 1 and lines[0].startswith("fastsam-stream: error: ") and "disk full" in lines[0], done.stderr
    left = sorted(p.name for p in out.rglob("*")) if out.exists() else []
    assert left == [], left  # no empty tracks.jsonl or unplayable annotated.mp4 that looks like a run
