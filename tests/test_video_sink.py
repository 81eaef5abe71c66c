"""annotated.mp4 on constructed results: odd frame sizes, frame rate, the target drawn."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from fastsam_stream.core import DenseMasks, Frame, FrameResult, Instances, Track, TrackState
from fastsam_stream.sinks import VideoSink, annotate
from fastsam_stream.sinks.draw import target_colour


def _result(index: int, height: int, width: int) -> FrameResult:
    image = np.full((height, width, 3), 40, np.uint8)
    mask = np.zeros((1, height, width), bool)
    mask[0, 20:60, 30:90] = True
    instances = Instances(np.array([[30, 20, 90, 60]]), np.array([0.9]), (height, width), masks=DenseMasks(mask))
    track = Track(1, (30.0, 20.0, 90.0, 60.0), 0.9, TrackState.TRACKED, index, 0, True, 0)
    return FrameResult(Frame(image, "s", index, index / 12.5, 0.0), instances, (track,), {1: (0,)})


def test_odd_sized_frames_are_padded_and_every_frame_is_written(tmp_path):
    sink = VideoSink(tmp_path / "a.mp4", fps=Fraction(25, 2))
    for i in range(7):
        sink.write(_result(i, 143, 175))
    sink.close()
    sink.close()  # closing twice is harmless
    with av.open(str(tmp_path / "a.mp4")) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        assert stream.average_rate == Fraction(25, 2)
    assert len(frames) == 7
    assert (frames[0].width, frames[0].height) == (176, 144)


def test_the_target_mask_is_tinted_and_the_rest_is_not():
    result = _result(0, 100, 120)
    drawn = annotate(result)
    inside = drawn[40, 60].astype(int)
    outside = drawn[90, 110].astype(int)
    assert np.array_equal(outside, [40, 40, 40])  # untouched
    assert np.argmax(inside) == np.argmax(target_colour(1))  # tinted towards the target colour
    assert not np.array_equal(inside, [40, 40, 40])
    assert np.array_equal(result.frame.image[40, 60], [40, 40, 40])  # the frame itself is not drawn on


def test_a_sink_that_never_got_a_frame_writes_nothing(tmp_path):
    sink = VideoSink(tmp_path / "none.mp4", fps=Fraction(30))
    sink.close()
    assert not (tmp_path / "none.mp4").exists()


@pytest.mark.parametrize("size", [(144, 176), (60, 80)])
def test_a_frame_of_another_size_is_scaled_not_a_crash(tmp_path, size):
    sink = VideoSink(tmp_path / "b.mp4", fps=Fraction(30))
    sink.write(_result(0, 100, 120))
    sink.write(_result(1, *size))
    sink.close()
    with av.open(str(tmp_path / "b.mp4")) as container:
        frames = list(container.decode(video=0))
    assert [(f.height, f.width) for f in frames] == [(100, 120), (100, 120)]


def test_source_timestamps_are_kept_even_when_irregular(tmp_path):
    """A variable-frame-rate source (or one that skips frames) keeps its timing in annotated.mp4."""
    pts = [0.0, 0.04, 0.08, 0.2, 0.24, 1.0]
    sink = VideoSink(tmp_path / "vfr.mp4", fps=Fraction(25))
    for i, t in enumerate(pts):
        result = _result(i, 100, 120)
        sink.write(FrameResult(Frame(result.frame.image, "s", i, t, 0.0), result.instances, result.tracks, (0,)))
    sink.close()
    with av.open(str(tmp_path / "vfr.mp4")) as container:
        decoded = [float(f.pts * f.time_base) for f in container.decode(video=0)]
    assert decoded == pytest.approx(pts, abs=1e-3)


def test_several_targets_get_their_own_colours():
    image = np.full((80, 160, 3), 40, np.uint8)
    masks = np.zeros((2, 80, 160), bool)
    masks[0, 10:40, 10:60] = True
    masks[1, 10:40, 90:150] = True
    boxes = np.array([[10, 10, 60, 40], [90, 10, 150, 40]], np.float32)
    instances = Instances(boxes, np.array([0.9, 0.8]), (80, 160), masks=DenseMasks(masks))
    tracks = tuple(Track(i + 1, tuple(map(float, boxes[i])), 0.9, TrackState.TRACKED, 0, 0, True, i) for i in range(2))
    drawn = annotate(FrameResult(Frame(image, "s", 0, 0.0, 0.0), instances, tracks, {1: (0,), 2: (1,)}))
    first, second = drawn[25, 35].astype(int), drawn[25, 120].astype(int)
    assert target_colour(1) != target_colour(2)
    assert np.argmax(first) == np.argmax(target_colour(1)) and np.argmax(second) == np.argmax(target_colour(2))
