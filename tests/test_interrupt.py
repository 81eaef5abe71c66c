"""Ctrl-C (and SIGTERM) in the middle of a run: the frames done are all in tracks.jsonl and
annotated.mp4 is a finished, playable file with exactly those frames.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import av
import pytest

DEADLINE_S = 120  # generous bound for the first lines to appear on a slow machine


def _wait_for_lines(path: Path, count: int, process: subprocess.Popen) -> None:
    """Poll until the file has `count` lines (a condition, not a fixed sleep)."""
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        if process.poll() is not None:
            pytest.fail(f"the run ended before it was interrupted: {process.stderr.read()}")
        if path.exists() and path.read_text().count("\n") >= count:
            return
        time.sleep(0.05)
    pytest.fail(f"no {count} lines in {path} after {DEADLINE_S} s")


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
            str(videos / "vtest.avi"),
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
        _wait_for_lines(tmp_path / "tracks.jsonl", 8, process)
        for signum in signals:  # back to back: later signals land while the run is shutting down
            process.send_signal(signum)
        _, stderr = process.communicate(timeout=DEADLINE_S)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted:" in stderr and "Traceback" not in stderr

    records = [json.loads(line) for line in (tmp_path / "tracks.jsonl").read_text().splitlines()]
    assert 8 <= len(records) < 795  # stopped part-way
    assert [r["frame"] for r in records] == list(range(len(records)))
    with av.open(str(tmp_path / "annotated.mp4")) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == len(records)
