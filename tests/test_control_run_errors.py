"""An error that ends a run is said once (issue #12): raised to the caller, not also logged at ERROR.

A source that fails while others go on is reported once at the end: the run raises its error,
and the end-of-run line names it as failed without repeating the message. A failure while
closing is raised, or logged when another error is already on its way out; never both.

Real sources (an image folder with a broken image, a real clip); the segmenter is a fake, since
what it finds does not matter here. The command line runs the real model.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from fakes import Middle

import fastsam_stream as fs
from fastsam_stream.errors import OutputError, SourceError

HANG_S = 300  # only stops a hang


def _broken_folder(root: Path) -> Path:
    """Five stills, the fourth of which is not an image."""
    folder = root / "stills"
    folder.mkdir()
    for i in range(5):
        assert cv2.imwrite(str(folder / f"img{i}.png"), np.full((30, 40, 3), 40 * i, np.uint8))
    (folder / "img3.png").write_bytes(b"not a png")
    return folder


class FailsToClose:
    def __init__(self, why: str) -> None:
        self.why = why

    def write(self, result) -> None:
        pass

    def close(self) -> None:
        raise OutputError(self.why)


def _errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_failing_source_is_raised_not_logged(tmp_path, caplog):
    pipeline = fs.Pipeline(fs.FolderSource(_broken_folder(tmp_path)), Middle())
    with caplog.at_level(logging.DEBUG), pytest.raises(SourceError, match="img3.png"):
        pipeline.run()
    assert not _errors(caplog)
    assert "img3.png" in pipeline.summary.sources["stills"].error  # the summary keeps it for Python callers


def test_with_several_sources_the_end_line_names_the_failure_and_the_error_says_it(videos, tmp_path, caplog):
    clip = fs.FileSource(videos / "carphone_pristine.mp4")
    pipeline = fs.Pipeline([clip, fs.FolderSource(_broken_folder(tmp_path))], Middle())
    with caplog.at_level(logging.DEBUG), pytest.raises(SourceError) as raised:
        pipeline.run()
    assert not _errors(caplog)
    line = pipeline.summary.line()
    assert "stills: 3 frames, target found in 0/3 frames, failed (the error below)" in line, line
    assert "carphone_pristine: 120 frames" in line and str(raised.value) not in line, line


def test_a_failure_while_closing_is_raised_or_logged_never_both(videos, caplog):
    pipeline = fs.Pipeline(
        fs.FileSource(videos / "carphone_pristine.mp4"),
        Middle(),
        sinks=[FailsToClose("first sink"), FailsToClose("second sink")],
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(OutputError, match="first sink"):
        pipeline.run()
    assert _errors(caplog) == ["closing FailsToClose failed: second sink"]  # not raised: logged, once


def test_a_failure_while_closing_after_a_source_failed_is_logged_and_the_source_raised(tmp_path, caplog):
    pipeline = fs.Pipeline(fs.FolderSource(_broken_folder(tmp_path)), Middle(), sinks=[FailsToClose("a sink")])
    with caplog.at_level(logging.DEBUG), pytest.raises(SourceError, match="img3.png"):
        pipeline.run()
    assert _errors(caplog) == ["closing FailsToClose failed: a sink"]


def _run(cli: list[str], weights: Path, out: Path, *sources: str) -> subprocess.CompletedProcess:
    args = [*cli, "run", *sources, "--weights", str(weights), "--device", "cpu", "--imgsz", "320"]
    return subprocess.run(
        [*args, "--out", str(out), "--no-video", "--quiet"], capture_output=True, text=True, timeout=HANG_S
    )


def test_the_command_line_says_a_source_error_in_one_line(cli, weights, tmp_path):
    done = _run(cli, weights, tmp_path / "out", str(_broken_folder(tmp_path)))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastsam-stream: error: ") and "img3.png" in lines[0], done.stderr


def test_the_command_line_says_a_failure_among_several_sources_once(cli, weights, videos, tmp_path):
    done = _run(cli, weights, tmp_path / "out", str(videos / "carphone_pristine.mp4"), str(_broken_folder(tmp_path)))
    assert done.returncode == 1
    summary, error = done.stderr.splitlines()
    assert "stills: 3 frames" in summary and "failed (the error below)" in summary, done.stderr
    assert error.startswith("fastsam-stream: error: ") and "img3.png" in error, done.stderr
    assert done.stderr.count("img3.png") == 1, done.stderr
