"""Ctrl-C (and SIGTERM) in the middle of a run: the frames done are all in tracks.jsonl, and annotated.mp4 is finished.

annotated.mp4 is a playable file with exactly those frames.

The run reads vtest.avi through FFmpeg's lavfi `movie` source with `loop=0` (the camera source's
code path): the clip repeats for ever, so the run cannot end by itself, however fast the machine,
and only the signal can have stopped it. `--drop-policy block` keeps every frame the camera makes,
so the frames written are exactly 0, 1, 2, ... up to the stop.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import av
import pytest

HANG_S = 120  # only stops a hang: the first lines come within seconds even on a slow, busy machine
FIRST_LINES = 8  # the signal is sent once this many frames are in tracks.jsonl


def _lavfi_movie(path: Path) -> str:
    """The `lavfi:` source that plays `path` in a loop for ever.

    The path is quoted for the option value, then escaped for the filter graph (FFmpeg's two
    levels of escaping), so any file name works.
    """
    quoted = "'" + str(path).replace("'", "'\\''") + "'"
    return "lavfi:movie=" + re.sub(r"([\\'\[\],;])", r"\\\1", quoted) + ":loop=0"


def _wait_for_lines(path: Path, count: int, process: subprocess.Popen) -> None:
    """Poll until the file has `count` lines (a condition, not a fixed sleep)."""
    end = time.monotonic() + HANG_S
    while time.monotonic() < end:
        if process.poll() is not None:
            pytest.fail(f"the run ended before it was interrupted: {process.stderr.read()}")
        if path.exists() and path.read_text().count("\n") >= count:
            return
        time.sleep(0.05)
    pytest.fail(f"no {count} lines in {path} after {HANG_S} s")


@pytest.mark.parametrize(
    "signals",
    [[signal.SIGINT], [signal.SIGTERM], [signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGINT]],
    ids=["ctrl-c", "sigterm", "impatient-user"],
)
def test_interrupt_leaves_complete_outputs(cli, weights, videos, tmp_path, signals):
    process = subprocess.Popen(
        [
            *cli,
            "run",
            _lavfi_movie(videos / "vtest.avi"),
            "--drop-policy",
            "block",
            "--weights",
            str(weights),
            "--device",
            "cpu",
            "--box",
            "642,241,683,321",
            "--out",
            str(tmp_path),
            "--imgsz",
            "320",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_lines(tmp_path / "tracks.jsonl", FIRST_LINES, process)
        for signum in signals:  # back to back: later signals land while the run is shutting down
            process.send_signal(signum)
        _, stderr = process.communicate(timeout=HANG_S)
    finally:
        process.kill()
    # The source never ends: exiting at all, with 130 and the summary, is the signal's doing.
    assert process.returncode == 130, stderr
    assert "interrupted:" in stderr and "Traceback" not in stderr

    records = [json.loads(line) for line in (tmp_path / "tracks.jsonl").read_text().splitlines()]
    assert len(records) >= FIRST_LINES  # every line there when the signal was sent is still there
    assert [r["frame"] for r in records] == list(range(len(records)))
    assert any(t["target"] for t in records[0]["tracks"])  # the prompt found the person: a real run
    with av.open(str(tmp_path / "annotated.mp4")) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == len(records)
