"""MotSink: the MOTChallenge results line format, from constructed FrameResults."""

from __future__ import annotations

import numpy as np
import pytest

from fastsam_stream.core import Frame, FrameResult, Instances, Track, TrackState
from fastsam_stream.errors import OutputError
from fastsam_stream.sinks.mot import MotSink, mot_line


def track(track_id: int, box, state=TrackState.TRACKED, score: float = 0.9, target: bool = False) -> Track:
    return Track(
        track_id,
        tuple(float(v) for v in box),
        score,
        state,
        age=3,
        frames_lost=0 if state is TrackState.TRACKED else 2,
        is_target=target,
        row=0 if state is TrackState.TRACKED else None,
    )


def result(index: int, tracks, source: str = "seq") -> FrameResult:
    frame = Frame(np.zeros((48, 64, 3), np.uint8), source, index, index / 30, 0.0)
    return FrameResult(frame, Instances.empty((48, 64)), tuple(tracks))


def test_one_line_is_1_based_xywh_with_the_score():
    # xyxy (10, 20, 40, 60) on frame index 0 → frame 1, bb_left 11, bb_top 21, width 30, height 40.
    assert mot_line(0, track(3, (10, 20, 40, 60), score=0.87654)) == "1,3,11.00,21.00,30.00,40.00,0.8765,-1,-1,-1"
    assert mot_line(9, track(1, (0.5, 0, 1.75, 2))) == "10,1,1.50,1.00,1.25,2.00,0.9000,-1,-1,-1"


def test_only_tracked_tracks_are_written_frame_by_frame(tmp_path):
    path = tmp_path / "out" / "SEQ.txt"
    sink = MotSink(path)
    assert not path.exists()  # opened on the first frame, not before
    sink.write(
        result(
            0,
            [
                track(1, (0, 0, 10, 10)),
                track(2, (20, 20, 30, 40), TrackState.LOST, target=True),
                track(4, (5, 5, 6, 6), TrackState.REMOVED),
            ],
        )
    )
    assert path.read_text() == "1,1,1.00,1.00,10.00,10.00,0.9000,-1,-1,-1\n"  # flushed before close
    sink.write(result(1, []))  # nothing tracked: no line
    sink.write(result(2, [track(1, (1, 0, 11, 10)), track(2, (20, 20, 30, 40), target=True)]))
    sink.close()
    sink.close()  # closing twice is harmless
    lines = path.read_text().splitlines()
    assert lines[1:] == ["3,1,2.00,1.00,10.00,10.00,0.9000,-1,-1,-1", "3,2,21.00,21.00,10.00,20.00,0.9000,-1,-1,-1"]
    for line in lines:
        fields = line.split(",")
        assert len(fields) == 10 and int(fields[0]) >= 1 and fields[7:] == ["-1", "-1", "-1"]


def test_a_run_with_nothing_tracked_still_leaves_a_file(tmp_path):
    sink = MotSink(tmp_path / "empty.txt")
    sink.write(result(0, []))
    sink.close()
    assert (tmp_path / "empty.txt").read_text() == ""


def test_unwritable_path_is_a_one_line_output_error(tmp_path):
    (tmp_path / "file").write_text("x")
    sink = MotSink(tmp_path / "file" / "SEQ.txt")  # a folder that is a file
    with pytest.raises(OutputError, match="cannot write") as error:
        sink.write(result(0, [track(1, (0, 0, 10, 10))]))
    assert "\n" not in str(error.value)


def test_one_sink_holds_one_source(tmp_path):
    sink = MotSink(tmp_path / "a.txt")
    sink.write(result(0, [], source="a"))
    with pytest.raises(ValueError, match="one source"):
        sink.write(result(0, [], source="b"))
    sink.close()
