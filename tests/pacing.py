"""A segmenter whose speed the test sets.

For tests whose claims need the model to be slower than a live source, whatever the machine: the
real one may run 5 frames/s on a 2-core CPU or 500 on a GPU.

`PacedSegmenter` wraps any segmenter (the real one by default) and holds each batch until it has
taken at least `seconds_per_frame` × its frames: it is never faster than the rate the test chose,
and where the wrapped model is slower than that (a slow machine, a busy core) it runs at the
model's own speed. Either way it is at most 1 / `seconds_per_frame` frames/s, which is all a test
built on it may assume; the batches it ran are recorded, so a test can check that premise and
derive its bounds from what was measured.

It keeps the pipeline's two stages (`prepare` on the prepare thread, `infer` on the segmenter
thread, overlapped) when the wrapped segmenter has them, so the real pipeline runs as it does for
a user. Only `infer` is paced: that is the stage the network occupies.

Importable from tests as ``pacing`` (pytest puts ``tests/`` on ``sys.path``: it has no
``__init__.py``). With ``FASTSAM_STREAM_TEST_FAST_SEGMENTER=1`` in the environment, `segmenter_for`
puts `InstantSegmenter` (no network, about a millisecond a batch) inside the pacing instead of the
real model: the machine-speed check for a model 10× faster than this machine (a GPU). The default
run uses the real model.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from fastsam_stream.core import Frame, Instances

FAST_ENV = "FASTSAM_STREAM_TEST_FAST_SEGMENTER"


def fast_segmenter_requested() -> bool:
    """True when the run asks for `InstantSegmenter` instead of the real model (see the module doc)."""
    return os.environ.get(FAST_ENV, "") not in ("", "0")


class InstantSegmenter:
    """A network on a machine far faster than this one: finds nothing, in about 1 ms a batch."""

    def segment(self, frames: Sequence[Frame]) -> list[Instances]:
        time.sleep(0.001)
        return [Instances.empty(f.image.shape[:2]) for f in frames]


@dataclass(frozen=True)
class PacedBatch:
    frames: int
    work_s: float  # the wrapped segmenter's own time for the batch
    total_s: float  # with the pacing: never under frames × seconds_per_frame


class PacedSegmenter:
    """`inner`, never faster than one frame per `seconds_per_frame` (see the module doc)."""

    def __init__(self, inner, seconds_per_frame: float) -> None:
        if seconds_per_frame <= 0:
            raise ValueError("seconds_per_frame must be > 0")
        self.inner = inner
        self.seconds_per_frame = seconds_per_frame
        self.batches: list[PacedBatch] = []
        self._lock = threading.Lock()
        self._staged = callable(getattr(inner, "prepare", None)) and callable(getattr(inner, "infer", None))

    # The Segmenter protocol, and the two stages the pipeline runs separately when they exist.
    def segment(self, frames: Sequence[Frame]) -> list[Instances]:
        return self.infer(self.prepare(frames))

    def prepare(self, frames: Sequence[Frame]) -> tuple[int, object]:
        return len(frames), (self.inner.prepare(frames) if self._staged else list(frames))

    def infer(self, prepared: tuple[int, object]) -> list[Instances]:
        count, inner_prepared = prepared
        started = time.monotonic()
        out = self.inner.infer(inner_prepared) if self._staged else self.inner.segment(inner_prepared)
        worked = time.monotonic() - started
        due = started + count * self.seconds_per_frame
        while (left := due - time.monotonic()) > 0:  # a sleep may end early; never a batch too soon
            time.sleep(left)
        with self._lock:
            self.batches.append(PacedBatch(count, worked, time.monotonic() - started))
        return out

    # What the runs measured.
    @property
    def frames(self) -> int:
        return sum(b.frames for b in self.batches)

    def seconds_per_frame_measured(self) -> float:
        """Mean time per frame of the batches run so far, pacing included (≥ seconds_per_frame)."""
        return sum(b.total_s for b in self.batches) / max(self.frames, 1)

    def work_seconds_per_frame(self) -> float:
        """Mean time per frame the wrapped segmenter itself took: the pacing is idle where this is larger."""
        return sum(b.work_s for b in self.batches) / max(self.frames, 1)


def segmenter_for(request, seconds_per_frame: float) -> PacedSegmenter:
    """The paced segmenter for a test.

    Around the session's real model (the `segmenter` fixture), or around `InstantSegmenter` when
    FASTSAM_STREAM_TEST_FAST_SEGMENTER=1 (the model is then never loaded).
    """
    inner = InstantSegmenter() if fast_segmenter_requested() else request.getfixturevalue("segmenter")
    return PacedSegmenter(inner, seconds_per_frame)
