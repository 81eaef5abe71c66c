"""A run killed with SIGKILL (nothing is finalised): its outputs are still evidence.

Every whole line of tracks.jsonl parses (read_jsonl names a cut-off last line, if the kill landed
in the middle of one), and annotated.mp4, a fragmented MP4, plays up to its last complete
fragment: at most VideoSink.frames_at_risk frames fewer than tracks.jsonl has lines.
"""

from __future__ import annotations

import math
import signal
import subprocess
import time
import warnings
from pathlib import Path

import av

from fastsam_stream.sinks.jsonl import TornLineWarning, read_jsonl
from fastsam_stream.sinks.video import ENCODER_DELAY_FRAMES

HANG_S = 120  # only stops a hang: the lines come within seconds even on a slow, busy machine
KILL_AT = 45  # lines in tracks.jsonl when the run is killed: a few complete fragments of video
CLIP_FPS = 10  # vtest.avi: 795 frames, far more than the run gets through before the kill


def _playable(path: Path) -> tuple[int, bool]:
    """Frames PyAV decodes from the start, and whether it stopped at damage (a fragment cut by the kill)."""
    if path.stat().st_size == 0:
        return 0, False
    frames = 0
    try:
        with av.open(str(path)) as container:
            for _ in container.decode(video=0):
                frames += 1
    except av.FFmpegError:
        return frames, True
    return frames, False


def test_sigkill_leaves_whole_lines_and_a_video_that_plays(cli, weights, videos, tmp_path):
    process = subprocess.Popen(
        [*cli, "run", str(videos / "vtest.avi"), "--drop-policy", "block", "--weights", str(weights)]
        + ["--imgsz", "320", "--device", "cpu", "--out", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    tracks = tmp_path / "tracks.jsonl"
    try:
        end = time.monotonic() + HANG_S
        while not (tracks.exists() and tracks.read_bytes().count(b"\n") >= KILL_AT):
            assert process.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < end, f"no {KILL_AT} lines in {tracks} after {HANG_S} s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=HANG_S)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = read_jsonl(tracks)
    torn = [w for w in caught if issubclass(w.category, TornLineWarning)]
    assert len(torn) <= 1  # a kill in the middle of a line's write: named, and left out
    lines = len(records)
    assert lines >= KILL_AT and [r["frame"] for r in records] == list(range(lines))

    frames, damaged = _playable(tmp_path / "annotated.mp4")
    # VideoSink.frames_at_risk at 10 fps: one second of video, the encoder's look-ahead, the frame in hand.
    at_risk = math.ceil(CLIP_FPS) + ENCODER_DELAY_FRAMES + 1
    if damaged:  # the kill landed while a fragment was being written: that fragment is lost too
        at_risk += math.ceil(CLIP_FPS) + 2  # (and the decoder's B-frame reordering stops short at the damage)
    assert lines - at_risk <= frames <= lines + 1  # + 1: the video may have the frame whose line was torn
