"""Outputs in segments (output.segment_minutes) with retention (output.retention), on a real clip.

The frames are a real clip's (tree.avi, 68 frames); the wall clock is a stand-in that moves one
second per frame, so where segments begin and end is known exactly.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from fastsam_stream.config import OutputConfig, RetentionConfig
from fastsam_stream.core import DenseMasks, EventKind, FrameResult, Instances, SourceEvent, Track, TrackState
from fastsam_stream.sinks import EventLogSink, JsonlSink, read_jsonl
from fastsam_stream.sinks.rotating import (
    SEGMENT_GLOBS,
    RotatingSink,
    SegmentClock,
    rotating_sinks,
    segment_stamp,
    stamp_start,
)
from fastsam_stream.sources.file import FileSource

T0 = 1_764_499_500.0  # 2025-11-30 10:45:00 UTC
SEGMENT_S = 10  # with one frame a second: a segment every 10 frames


class FakeClock:
    """The wall clock, moved by the test."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def results(videos) -> list[FrameResult]:
    """Every frame of a real clip, each with one target (its mask a box in the middle) and one other track."""
    source = FileSource(videos / "tree.avi")
    out = []
    for frame in source.frames():
        h, w = frame.height, frame.width
        masks = np.zeros((2, h, w), bool)
        masks[0, h // 4 : h // 2, w // 4 : w // 2] = True
        masks[1, 10:40, 10:40] = True
        boxes = np.array([[w // 4, h // 4, w // 2, h // 2], [10, 10, 40, 40]], np.float32)
        instances = Instances(boxes, np.array([0.9, 0.6]), (h, w), masks=DenseMasks(masks))
        tracks = (
            Track(1, tuple(map(float, boxes[0])), 0.9, TrackState.TRACKED, frame.index, 0, True, 0),
            Track(2, tuple(map(float, boxes[1])), 0.6, TrackState.TRACKED, frame.index, 0, False, 1),
        )
        out.append(FrameResult(frame, instances, tracks, {1: (0,)}))
    assert len(out) == 68
    return out


def _output(video: bool = True, **retention) -> OutputConfig:
    return OutputConfig(segment_minutes=SEGMENT_S / 60, video=video, retention=RetentionConfig(**retention))


def _run(folder: Path, results: list[FrameResult], output: OutputConfig, clock: FakeClock | None = None):
    """Every frame through the stream's rotating sinks, the clock one second further at each frame."""
    clock = clock or FakeClock()
    sinks = rotating_sinks(folder, output, fps=Fraction(15), now=clock)
    for i, result in enumerate(results):
        clock.t = T0 + i
        for sink in sinks:
            sink.write(result)
    for sink in sinks:
        sink.close()
    return sinks


def _stamps(folder: Path, pattern: str) -> list[str]:
    stem, suffix = pattern.split("-*")
    return sorted(p.name[len(stem) + 1 : -len(suffix)] for p in folder.glob(pattern))


def _decoded(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_segments_are_complete_and_add_up_to_the_frames(tmp_path, results):
    sinks = _run(tmp_path, results, _output())
    tracks = sorted(tmp_path.glob("tracks-*.jsonl"))
    videos = sorted(tmp_path.glob("annotated-*.mp4"))
    assert len(tracks) == len(videos) == 7  # 68 frames, 10 a segment
    # Each stream's tracks and video segments share their starts, named by the UTC time of their first frame.
    assert _stamps(tmp_path, "tracks-*.jsonl") == _stamps(tmp_path, "annotated-*.mp4")
    assert [stamp_start(s) for s in _stamps(tmp_path, "tracks-*.jsonl")] == [
        round((T0 + i) * 1000) for i in range(0, 68, SEGMENT_S)
    ]
    assert tracks[0].name == "tracks-20251130T104500.000Z.jsonl"
    assert sinks[0].segments == tracks  # opened in the order their names sort in
    frames = []
    for track_file, video_file in zip(tracks, videos, strict=True):
        lines = read_jsonl(track_file, torn="raise")
        assert [line["frame"] for line in lines] == list(range(lines[0]["frame"], lines[0]["frame"] + len(lines)))
        assert _decoded(video_file) == len(lines)  # each video plays on its own, the same frames as its tracks
        assert lines[0]["tracks"][0]["target"] and "mask" in lines[0]["tracks"][0]
        frames += [line["frame"] for line in lines]
    assert frames == list(range(68))  # every frame written once, none lost at a boundary
    assert [len(read_jsonl(p)) for p in tracks] == [10] * 6 + [8]


def test_a_stream_without_frames_for_a_while_starts_a_new_segment_with_its_next_frame(tmp_path, results):
    clock = FakeClock()
    (sink,) = rotating_sinks(tmp_path, _output(video=False), fps=Fraction(15), now=clock)
    for result, t in zip(results[:4], (0, 1, 500, 501), strict=True):  # an outage of 8 minutes after frame 1
        clock.t = T0 + t
        sink.write(result)
    sink.close()
    assert [len(read_jsonl(p)) for p in sorted(tmp_path.glob("tracks-*.jsonl"))] == [2, 2]
    assert _stamps(tmp_path, "tracks-*.jsonl")[1] == segment_stamp(round((T0 + 500) * 1000))


def test_retention_by_age_deletes_the_oldest_segments_whole(tmp_path, results):
    _run(tmp_path, results, _output(max_age_hours=25 / 3600))
    # The last rotation was at frame 60 (clock T0+60): segments begun before T0+35 were deleted, both their files.
    kept = [round((T0 + i) * 1000) for i in (40, 50, 60)]
    assert [stamp_start(s) for s in _stamps(tmp_path, "tracks-*.jsonl")] == kept
    assert [stamp_start(s) for s in _stamps(tmp_path, "annotated-*.mp4")] == kept
    for video in tmp_path.glob("annotated-*.mp4"):
        assert _decoded(video) > 0


def test_retention_never_deletes_the_open_segment(tmp_path, results):
    """A max age shorter than a segment: each finished segment goes at once, the open one (and the last) stays."""
    _run(tmp_path, results, _output(max_age_hours=5 / 3600))
    assert [stamp_start(s) for s in _stamps(tmp_path, "tracks-*.jsonl")] == [round((T0 + 60) * 1000)]
    assert len(read_jsonl(next(tmp_path.glob("tracks-*.jsonl")))) == 8
    assert _decoded(next(tmp_path.glob("annotated-*.mp4"))) == 8


def test_retention_by_size_keeps_the_stream_under_its_limit(tmp_path, results):
    _run(tmp_path, results, _output(max_total_mb=1e-6))  # one byte: only the segment in hand may stay
    assert [stamp_start(s) for s in _stamps(tmp_path, "annotated-*.mp4")] == [round((T0 + 60) * 1000)]
    assert len(list(tmp_path.iterdir())) == 2


def _old_segment(folder: Path, start_s: float, size: int, stems=(("tracks", ".jsonl"), ("annotated", ".mp4"))):
    stamp = segment_stamp(round(start_s * 1000))
    for stem, suffix in stems:
        (folder / f"{stem}-{stamp}{suffix}").write_bytes(b"x" * size)
    return stamp


def test_an_earlier_runs_segments_are_pruned_oldest_first_when_the_stream_opens(tmp_path, results):
    stamps = [_old_segment(tmp_path, T0 - 3600 + 60 * i, 100_000) for i in range(5)]  # 5 pairs, 200 kB each
    (tmp_path / "notes.txt").write_text("not a segment")
    (tmp_path / "tracks-not-a-stamp.jsonl").write_text("{}\n")
    clock = FakeClock()
    sinks = rotating_sinks(tmp_path, _output(max_total_mb=0.5), fps=Fraction(15), now=clock)
    for sink in sinks:
        sink.write(results[0])
    # At open: 1 MB of old segments (and a few bytes of the new one) over 0.5 MB: the 3 oldest pairs go.
    assert _stamps(tmp_path, "annotated-*.mp4")[:2] == stamps[3:]
    assert not any(s in p.name for s in stamps[:3] for p in tmp_path.iterdir())
    assert (tmp_path / "notes.txt").exists() and (tmp_path / "tracks-not-a-stamp.jsonl").exists()
    for sink in sinks:
        sink.close()


def test_a_segment_that_cannot_be_deleted_is_one_warning_not_a_crash(tmp_path, results, monkeypatch, caplog):
    stuck = _old_segment(tmp_path, T0 - 7200, 10)
    gone = _old_segment(tmp_path, T0 - 7100, 10)
    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        if stuck in self.name:
            raise PermissionError(13, "Permission denied")
        real_unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    with caplog.at_level(logging.WARNING, logger="fastsam_stream.sinks.rotating"):
        _run(tmp_path, results[:35], _output(max_age_hours=1))  # prunes at open and at 3 rotations
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2  # one per file that stays, once each however often retention runs
    assert all(stuck in r.getMessage() and "Permission denied" in r.getMessage() for r in warned)
    assert not any(gone in p.name for p in tmp_path.iterdir())
    assert len(list(tmp_path.glob("tracks-*.jsonl"))) == 5  # the stuck one and the run's 4


def test_events_reach_a_segment_sink_that_takes_them(tmp_path, results):
    clock = FakeClock()
    segments = SegmentClock(SEGMENT_S / 60, now=clock)
    events = RotatingSink(segments, EventLogSink, tmp_path, "events", ".jsonl")
    tracks = RotatingSink(segments, JsonlSink, tmp_path, "tracks", ".jsonl")
    event = SourceEvent("tree", EventKind.CONNECTED, next_frame=0, at=T0)
    for sink in (events, tracks):
        sink.on_event(event)  # before any frame: no segment to take it yet
    for i, result in enumerate(results[:12]):
        clock.t = T0 + i
        for sink in (events, tracks):
            sink.write(result)
            sink.on_event(event)
    for sink in (events, tracks):
        sink.close()
    assert [len(read_jsonl(p)) for p in sorted(tmp_path.glob("events-*.jsonl"))] == [10, 2]
    assert [len(read_jsonl(p)) for p in sorted(tmp_path.glob("tracks-*.jsonl"))] == [10, 2]
    with pytest.raises(ValueError, match="closed"):
        tracks.write(results[0])


def test_segment_names_sort_by_time_and_read_back():
    moments = [0, 999, 1_000, 59_999, 1_764_499_500_123, 1_764_499_500_124, 1_767_225_599_999, 1_767_225_600_000]
    stamps = [segment_stamp(ms) for ms in moments]
    assert stamps == sorted(stamps)
    assert [stamp_start(s) for s in stamps] == moments
    assert segment_stamp(1_767_225_599_999) == "20251231T235959.999Z"
    for bad in ("20251231T235959Z", "20251331T000000.000Z", "x20251231T235959.999Z", ""):
        assert stamp_start(bad) is None


def test_the_clock_answers_every_sink_alike_for_one_frame(results):
    clock = FakeClock()
    segments = SegmentClock(SEGMENT_S / 60, now=clock)
    first = segments.start_for(results[0].frame)
    clock.t += SEGMENT_S  # the segment is due to end, but the other sinks still get the same frame's answer
    assert segments.start_for(results[0].frame) == first
    assert segments.start_for(results[1].frame) == first + SEGMENT_S * 1000


def test_rotating_sinks_builds_what_the_config_asks_for(tmp_path):
    sinks = rotating_sinks(tmp_path, OutputConfig(segment_minutes=1, video=True, mot=True), fps=Fraction(25))
    assert [s.pattern for s in sinks] == list(SEGMENT_GLOBS)
    assert len({id(s.clock) for s in sinks}) == 1  # one clock: the same frames in every output's segments
    assert [
        s.pattern for s in rotating_sinks(tmp_path, OutputConfig(segment_minutes=1, video=False), Fraction(25))
    ] == ["tracks-*.jsonl"]
    with pytest.raises(ValueError, match="segment_minutes"):
        rotating_sinks(tmp_path, OutputConfig(), fps=Fraction(25))
    for sink in sinks:
        sink.close()
    assert list(tmp_path.iterdir()) == []  # no frame, no file
