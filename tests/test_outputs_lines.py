"""Line outputs (tracks.jsonl, events.jsonl, mot.txt) are written in whole lines, and read back with read_jsonl.

A write that fails part way (the kernel takes half the line, then the disk is full) leaves the
file at its last whole line and raises one typed line naming the file; a file cut off by a kill
is reported by the reader, naming the line. The failures here are made by a stand-in `os.write`
(the real disk-full case, on a real tmpfs, is in test_outputs_disk_full.py).
"""

from __future__ import annotations

import errno
import json
import os
import time
import warnings

import numpy as np
import pytest

from fastsam_stream.core import EventKind, Frame, FrameResult, Instances, SourceEvent, Track, TrackState
from fastsam_stream.errors import DiskFullError, OutputError, TornLineError
from fastsam_stream.sinks import EventLogSink, JsonlSink, MotSink
from fastsam_stream.sinks.jsonl import TornLineWarning, read_jsonl
from fastsam_stream.sinks.lines import LineFile

REAL_WRITE = os.write


def result(index: int, tracks: int = 2, source: str = "cam") -> FrameResult:
    frame = Frame(np.zeros((48, 64, 3), np.uint8), source, index, index / 25, 0.0)
    listed = tuple(
        Track(i + 1, (1.0 + i, 2.0, 10.0 + i, 20.0), 0.9, TrackState.TRACKED, 3, 0, False, None) for i in range(tracks)
    )
    return FrameResult(frame, Instances.empty((48, 64)), listed)


class HalfThenFails:
    """os.write that takes half of the next write it is given, then fails the call after it with `code`."""

    def __init__(self, code: int = errno.ENOSPC) -> None:
        self.code = code
        self.calls = 0

    def __call__(self, fd: int, data) -> int:
        self.calls += 1
        if self.calls == 1:
            return REAL_WRITE(fd, bytes(data[: len(data) // 2]))
        raise OSError(self.code, os.strerror(self.code))


def test_a_write_cut_short_by_a_full_disk_leaves_the_file_at_its_last_whole_line(tmp_path, monkeypatch):
    path = tmp_path / "tracks.jsonl"
    sink = JsonlSink(path)
    for i in range(3):
        sink.write(result(i))
    before = path.read_bytes()
    failing = HalfThenFails()
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", failing)
        with pytest.raises(DiskFullError) as error:
            sink.write(result(3))
    assert failing.calls == 2  # half the line went to the disk before the failure: it was taken back
    assert str(error.value) == (
        f"cannot write {path}: disk full (No space left on device); the 3 lines before are complete"
    )
    assert path.read_bytes() == before
    with pytest.raises(DiskFullError):  # no later line: a gap in the frames would go unnoticed
        sink.write(result(4))
    sink.close()  # the error was raised once, by the write
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no torn line to warn about
        assert [r["frame"] for r in read_jsonl(path)] == [0, 1, 2]


def test_an_io_error_is_an_output_error_but_not_disk_full(tmp_path, monkeypatch):
    path = tmp_path / "tracks.jsonl"
    sink = JsonlSink(path)
    sink.write(result(0))
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", HalfThenFails(errno.EIO))
        with pytest.raises(OutputError) as error:
            sink.write(result(1))
    assert not isinstance(error.value, DiskFullError)
    assert str(error.value) == f"cannot write {path}: Input/output error; the 1 line before is complete"
    sink.close()
    assert len(read_jsonl(path)) == 1


def test_a_full_disk_before_the_first_line_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "run" / "tracks.jsonl"
    sink = JsonlSink(path)
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", HalfThenFails())
        with pytest.raises(DiskFullError, match="disk full .*; nothing was written$"):
            sink.write(result(0))
    sink.close()
    assert not path.exists()  # no empty tracks.jsonl that looks like a run's


def test_ctrl_c_between_two_parts_of_a_line_takes_the_part_back(tmp_path, monkeypatch):
    path = tmp_path / "lines.txt"
    lines = LineFile(path)
    lines.append("one\n")
    calls = []

    def interrupted(fd: int, data) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return REAL_WRITE(fd, bytes(data[:3]))
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", interrupted)
        with pytest.raises(KeyboardInterrupt):
            lines.append("two two\n")
    assert path.read_text() == "one\n"
    lines.append("three\n")  # not a write failure: the file goes on, whole
    lines.close()
    assert path.read_text() == "one\nthree\n" and lines.lines == 2


def test_a_line_file_takes_only_whole_lines(tmp_path):
    lines = LineFile(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="whole lines"):
        lines.append("no newline")
    lines.close()


def test_mot_lines_of_a_frame_are_written_all_or_none(tmp_path, monkeypatch):
    path = tmp_path / "mot.txt"
    sink = MotSink(path)
    sink.write(result(0, tracks=3))
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", HalfThenFails())
        with pytest.raises(DiskFullError, match=r"mot\.txt: disk full .*; the 3 lines before are complete$"):
            sink.write(result(1, tracks=3))
    sink.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(line.startswith("1,") for line in lines)


def test_event_lines_too(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    sink = EventLogSink(path)
    event = SourceEvent("cam", EventKind.LOST, 12, time.time(), message="read timed out")
    sink.on_event(event)
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", HalfThenFails())
        with pytest.raises(DiskFullError, match=r"events\.jsonl: disk full .*; the 1 line before is complete$"):
            sink.on_event(event)
    sink.close()
    assert [e["event"] for e in read_jsonl(path)] == ["lost"]


def test_a_failure_reported_only_by_the_sync_at_close_is_typed_and_raised_once(tmp_path, monkeypatch):
    path = tmp_path / "tracks.jsonl"
    sink = JsonlSink(path)
    sink.write(result(0))

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", full)
        with pytest.raises(DiskFullError, match="disk full .*; its last lines may be missing$"):
            sink.close()
    sink.close()  # closed: nothing more to say


# ----------------------------------------------------------------------------------------- reading


def test_a_torn_last_line_is_left_out_and_named(tmp_path):
    path = tmp_path / "tracks.jsonl"
    whole = [json.dumps({"frame": i}) + "\n" for i in range(56)]
    path.write_text("".join(whole) + '{"frame": 56, "tracks": [{"id"')  # a kill in the middle of line 57
    message = f"{path}: line 57 is cut off (the run was killed while writing it); the 56 lines before it are whole"
    with pytest.warns(TornLineWarning) as caught:
        records = read_jsonl(path)
    assert [str(w.message) for w in caught] == [message]
    assert [r["frame"] for r in records] == list(range(56))
    with pytest.raises(TornLineError) as error:
        read_jsonl(path, torn="raise")
    assert str(error.value) == message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_jsonl(path, torn="ignore")) == 56


def test_a_torn_line_of_a_valid_json_prefix_or_of_zeros_is_torn_too(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"frame": 0}\n{"frame": 1}')  # no newline: the write was not finished
    with pytest.raises(TornLineError, match="line 2 is cut off .*; the 1 line before it is whole$"):
        read_jsonl(path, torn="raise")
    path.write_bytes(b'{"frame": 0}\n' + b"\0" * 4096)  # a power loss can leave zeros where a line was going
    with pytest.raises(TornLineError, match="line 2 is cut off"):
        read_jsonl(path, torn="raise")


def test_a_damaged_line_before_the_last_is_an_error_naming_it(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"frame": 0}\n{"frame": \n{"frame": 2}\n')
    with pytest.raises(OutputError, match=r"a\.jsonl: line 2 is not JSON \(.*\): the file is damaged$"):
        read_jsonl(path)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    assert read_jsonl(tmp_path / "empty.jsonl") == []
    with pytest.raises(OutputError, match="cannot read .*missing.jsonl"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_a_closed_file_is_never_opened_again(tmp_path):
    path = tmp_path / "tracks.jsonl"
    sink = JsonlSink(path)
    sink.write(result(0))
    sink.close()
    with pytest.raises(ValueError, match="is closed"):
        sink.write(result(1))  # opening it again would empty it
    assert len(read_jsonl(path)) == 1
