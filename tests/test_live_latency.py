"""Bounded latency on a live source that produces frames faster than the segmenter takes them.

The source is FFmpeg's lavfi virtual camera through the camera source's own code path
(`lavfi:testsrc2=...,realtime` paces frames at the wall clock, like a real camera), the model is
the real one on CPU, far slower than the 60 frames/s the camera makes. With DROP_OLDEST (the
live default) the frame being processed stays recent and every dropped frame is counted; the
same run with BLOCK, the file policy, falls further and further behind: that is what the bound
guards against.
"""

from __future__ import annotations

import time

import pytest

from fastsam_stream import BatchSettings, DropPolicy, Pipeline
from fastsam_stream.sources import CameraSource, open_source

CAMERA = "lavfi:testsrc2=size=320x240:rate=60,realtime"
BATCH = BatchSettings()  # the defaults a user gets
# Frames that can be between the camera and the caller: its buffer, a batch in the network and
# one prepared behind it, the results queue, plus the one in hand.
IN_FLIGHT = BATCH.buffer_size + 2 * BATCH.max_batch + BATCH.queue_size + 1
RESULTS = 60


def _run(segmenter, policy: DropPolicy):
    source = open_source(CAMERA)
    assert isinstance(source, CameraSource) and source.is_live
    pipeline = Pipeline(source, segmenter, batch=BATCH, drop_policy=policy)
    results, lags, ages = [], [], []
    for result in pipeline:
        now = time.monotonic()
        ages.append(now - result.frame.captured_at)  # since the reader decoded it
        if not results:
            first_now, first_pts = now, result.frame.pts
        # How far the frame in hand is behind the camera: wall time passed minus camera time passed.
        lags.append((now - first_now) - (result.frame.pts - first_pts))
        results.append(result)
        if len(results) == RESULTS:
            pipeline.stop()
    return pipeline.summary, results, lags, ages


def test_drop_oldest_keeps_the_processed_frame_recent_and_counts_every_drop(segmenter):
    summary, results, lags, ages = _run(segmenter, DropPolicy.DROP_OLDEST)
    seconds_per_frame = summary.seconds / summary.frames
    bound = IN_FLIGHT * seconds_per_frame + 0.25  # the stated bound: everything in flight, plus scheduling slack
    assert max(lags) < bound, f"lags {[round(v, 2) for v in lags]} exceed {bound:.2f} s"
    assert max(ages) < bound, f"ages {[round(v, 2) for v in ages]} exceed {bound:.2f} s"

    # The camera made far more frames than were segmented; every one not segmented is counted.
    last = results[-1].frame.index
    assert sum(r.dropped_before for r in results) == last + 1 - len(results) > RESULTS
    assert summary.dropped >= sum(r.dropped_before for r in results)  # it also counts drops after the last result
    assert [r.frame.index for r in results] == sorted({r.frame.index for r in results})


def test_block_falls_behind_the_camera(segmenter):
    """The control: without dropping, the lag grows past the same bound, and nothing is dropped."""
    summary, results, lags, _ = _run(segmenter, DropPolicy.BLOCK)
    seconds_per_frame = summary.seconds / summary.frames
    bound = IN_FLIGHT * seconds_per_frame + 0.25
    assert [r.frame.index for r in results] == list(range(RESULTS))  # nothing dropped on the way
    assert summary.dropped < IN_FLIGHT  # only what was still waiting when the run stopped
    assert lags[-1] > bound
    assert lags[-1] > lags[len(lags) // 2] > lags[2]  # and keeps growing
