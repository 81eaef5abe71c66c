"""SegmentingStages' counts: every frame a source yields reaches the caller or is counted as dropped.

The batches that fail (the segmenter raises in `prepare` or `infer`, or a source's end is a bug
that ends the run) are the cases checked here, with fake sources and segmenters; the order of
events is fixed with threading.Event, never with sleeps.
"""

from __future__ import annotations

import threading
import time
from fractions import Fraction

import numpy as np
import pytest

from fastsam_stream.core import Frame, Instances
from fastsam_stream.pipeline.batcher import BatchSettings, Segmented, SegmentingStages
from fastsam_stream.pipeline.intake import SourceEnded, Taken

JOIN_S = 60.0  # bound on waiting for something that should already have happened: it only stops a hang
FRAMES = 6
# Small batches and buffers: frames wait in every stage; no waiting for a batch to fill.
SETTINGS = BatchSettings(max_batch=2, max_wait_ms=0, buffer_size=2)


def frame(source_id: str, index: int) -> Frame:
    return Frame(np.zeros((4, 4, 3), np.uint8), source_id, index, index / 25, time.monotonic())


def no_instances() -> Instances:
    return Instances(np.zeros((0, 4)), np.zeros(0), (4, 4))


class FakeSource:
    """A source of `count` tiny frames.

    A live one then waits until it is closed (as a camera would go on), which the stages do first
    thing in `stop()`; a file-like one ends.

    `yielded` counts the frames handed to the reader: it takes every frame it is given (a put
    refused while stopping counts as a drop), so this is the number of frames decoded.
    """

    fps, frame_count = Fraction(25), None

    def __init__(self, source_id: str = "cam", count: int = FRAMES, live: bool = False) -> None:
        self.source_id, self.count, self.is_live = source_id, count, live
        self.yielded = 0
        self.closed = threading.Event()

    def frames(self):
        for index in range(self.count):
            self.yielded += 1
            yield frame(self.source_id, index)
        if self.is_live:
            self.closed.wait(JOIN_S)

    def close(self) -> None:
        self.closed.set()


class FailsWhenStopping:
    """A segmenter whose first batch fails once the run is stopping (its live source is closed)."""

    def __init__(self, source: FakeSource) -> None:
        self.source = source
        self.entered = threading.Event()

    def segment(self, frames: list[Frame]) -> list[Instances]:
        self.entered.set()
        self.source.closed.wait(JOIN_S)
        raise RuntimeError("the segmenter failed while the run was stopping")


class FailsAtOnce:
    def segment(self, frames: list[Frame]) -> list[Instances]:
        raise RuntimeError("the segmenter failed")


class PrepareFails:
    """A two-stage segmenter whose pre-processing fails."""

    def segment(self, frames: list[Frame]) -> list[Instances]:
        return self.infer(self.prepare(frames))

    def prepare(self, frames: list[Frame]) -> object:
        raise RuntimeError("pre-processing failed")

    def infer(self, prepared: object) -> list[Instances]:
        raise AssertionError("never reached")


def received(stages: SegmentingStages) -> list[Segmented]:
    """What the caller gets before the run's error (which it expects)."""
    got: list[Segmented] = []
    with pytest.raises(RuntimeError, match="failed"):
        for item in stages:
            if isinstance(item, Segmented):
                got.append(item)
    return got


def test_a_batch_that_fails_while_stopping_is_counted_as_dropped():
    source = FakeSource(live=True)
    segmenter = FailsWhenStopping(source)
    stages = SegmentingStages([source], segmenter, SETTINGS)
    stages.start()
    assert segmenter.entered.wait(JOIN_S)  # a batch of at least one frame is in the network
    stages.stop()  # closes the source: the segmenter raises, and its error cannot be handed on
    assert source.yielded >= 1
    assert stages.dropped("cam") == source.yielded


@pytest.mark.parametrize("segmenter", [FailsAtOnce(), PrepareFails()], ids=["infer", "prepare"])
def test_a_batch_that_fails_is_counted_as_dropped(segmenter):
    source = FakeSource()
    stages = SegmentingStages([source], segmenter, SETTINGS)
    stages.start()
    got = received(stages)
    stages.stop()
    assert got == [] and source.yielded >= 1
    assert stages.dropped("cam") == source.yielded


def test_frames_after_a_fatal_end_in_the_same_batch_are_counted_as_dropped():
    """A source whose end carries a bug (not a FastSAMStreamError) ends the run at once."""
    broken, other = FakeSource("broken", count=0), FakeSource("other", count=1)
    stages = SegmentingStages([broken, other], FailsAtOnce(), SETTINGS)  # never started: the batch is given
    batch = [
        Taken("broken", ended=SourceEnded("broken", ValueError("a bug"))),
        Taken("other", frame=frame("other", 0)),
    ]
    assert not stages._hand_on(batch, [no_instances()])
    stages.stop()
    assert stages.dropped("other") == 1
