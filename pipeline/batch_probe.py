"""The batch size, chosen by measurement at start-up when `batch.max_batch` is not set.

Whether batching pays depends on the machine: on a GPU, a batch of 4 costs little more than one
frame; on a small CPU, a larger batch can be slower per frame (its activations leave the cache),
so the best size of one machine is the worst of another. The segmenter is timed at batch 1, 2
and 4 on the first frame's actual size (after a warm-up pass per size, which also lets a dynamic
engine settle on the shape) and the fastest per frame is taken, the smaller on a near tie: a
smaller batch waits less for frames to fill it. Each size is timed twice and the faster pass
counts: on a shared machine, other work only ever makes a pass slower, so the minimum is the
engine's own speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..core import Frame

CANDIDATES = (1, 2, 4)
"""The sizes timed; the largest is also the bound a run with an unset max_batch can be sure of."""

NEAR_TIE = 0.03
"""A larger batch must be this much faster per frame to be taken over a smaller one: closer is noise."""


@dataclass(frozen=True)
class BatchChoice:
    """What the probe measured and chose.

    Attributes:
        size: The chosen frames per batch.
        seconds_per_frame: Each size timed, in seconds per frame.
    """

    size: int
    seconds_per_frame: dict[int, float]

    def timings(self) -> str:
        """What was measured, e.g. "1 61.2, 2 63.0, 4 66.8" (batch size, then ms per frame)."""
        return ", ".join(f"{size} {seconds * 1000:.1f}" for size, seconds in self.seconds_per_frame.items())

    def describe(self) -> str:
        """The choice and its timings, e.g. "batch 1 (ms/frame: 1 61.2, 2 63.0, 4 66.8)"."""
        if not self.seconds_per_frame:
            return f"batch {self.size} (the model's fixed batch)"
        return f"batch {self.size} (ms/frame: {self.timings()})"


def measure_batch_sizes(
    run: Callable[[list[Frame]], object],
    frame: Frame,
    candidates: tuple[int, ...] = CANDIDATES,
    clock: Callable[[], float] = time.perf_counter,
    passes: int = 2,
) -> BatchChoice:
    """Time `run` on batches of `frame` and choose the fastest size per frame.

    Args:
        run: What the network stage does with a batch (the segmenter's prepare-then-infer).
        frame: A real frame of the run, so the input size is the run's own.
        candidates: The batch sizes to time, smallest first.
        clock: What time is read from (tests give a clock their engine advances).
        passes: Timed passes per size after the warm-up; the fastest counts.

    Returns:
        The sizes' timings and the choice.
    """
    timings: dict[int, float] = {}
    for size in candidates:
        batch = [frame] * size
        run(batch)  # warm-up: the first pass at a new shape is slow (allocation, kernel choice)
        fastest = float("inf")
        for _ in range(passes):
            start = clock()
            run(batch)
            fastest = min(fastest, clock() - start)
        timings[size] = fastest / size
    best = candidates[0]
    for size in candidates[1:]:
        if timings[size] < timings[best] * (1 - NEAR_TIE):
            best = size
    return BatchChoice(best, timings)
