"""Bounded latency on a live source that produces frames faster than the segmenter takes them.

The source is FFmpeg's lavfi virtual camera through the camera source's own code path
(`lavfi:testsrc2=...,realtime` paces frames at the wall clock, like a real camera). The segmenter
is the real model behind `pacing.PacedSegmenter`, which never lets it run faster than
PACED_FPS, a sixth of the camera's rate: on a GPU the bare model would outrun the camera and
there would be nothing to drop. Where the model is slower than that (this 2-core CPU, a busy
core) the pacing is idle and the camera is even further ahead; nothing asserted needs more than
"the camera makes at least CAMERA_FPS / PACED_FPS frames per segmented frame", which holds on any
machine. Every time bound is in units of the measured time per frame.

With DROP_OLDEST (the live default) the frame being processed stays recent and every dropped
frame is counted; the same run with BLOCK, the file policy, falls further and further behind:
that is what the bound guards against.

FASTSAM_STREAM_TEST_FAST_SEGMENTER=1 runs both with a network that takes ~1 ms (see
tests/pacing.py): what they prove must hold for a model of any speed.
"""

from __future__ import annotations

import time

import pytest
from pacing import PacedSegmenter, segmenter_for

from fastsam_stream import BatchSettings, DropPolicy, Pipeline
from fastsam_stream.sources import CameraSource, open_source

CAMERA_FPS = 60
PACED_FPS = 10  # the segmenter's fastest: at least 6 camera frames for each frame segmented
CAMERA = f"lavfi:testsrc2=size=320x240:rate={CAMERA_FPS},realtime"
BATCH = BatchSettings()  # the defaults a user gets
# Frames that can be between the camera and the caller: its buffer, a batch in the network and
# one prepared behind it, the results queue, plus the one in hand.
IN_FLIGHT = BATCH.buffer_size + 2 * BATCH.largest_batch + BATCH.queue_size + 1
# Thread hand-offs and decoding one small camera frame: milliseconds on any machine, not a
# function of the model's speed (that is the IN_FLIGHT × time-per-frame term).
SLACK_S = 0.25
RESULTS = 60


@pytest.fixture
def paced(request) -> PacedSegmenter:
    return segmenter_for(request, seconds_per_frame=1 / PACED_FPS)


def _run(segmenter: PacedSegmenter, policy: DropPolicy):
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
    summary = pipeline.summary
    # The premise, measured: no batch ran faster than the pacing allows, so the camera made at
    # least CAMERA_FPS / PACED_FPS frames for every frame segmented (more where the model is slower).
    assert segmenter.frames >= RESULTS
    assert all(b.total_s >= b.frames / PACED_FPS - 1e-6 for b in segmenter.batches)  # 1e-6: float rounding
    # The bound: everything in flight, at the run's own measured time per frame, plus slack.
    bound = IN_FLIGHT * summary.seconds / summary.frames + SLACK_S
    return summary, results, lags, ages, bound


def test_drop_oldest_keeps_the_processed_frame_recent_and_counts_every_drop(paced):
    summary, results, lags, ages, bound = _run(paced, DropPolicy.DROP_OLDEST)
    assert max(lags) < bound, f"lags {[round(v, 2) for v in lags]} exceed {bound:.2f} s"
    assert max(ages) < bound, f"ages {[round(v, 2) for v in ages]} exceed {bound:.2f} s"

    # The camera made far more frames than were segmented (at least 6 per result, less the few
    # buffered at the start): every one not segmented is counted.
    last = results[-1].frame.index
    assert sum(r.dropped_before for r in results) == last + 1 - len(results) > 2 * RESULTS
    assert summary.dropped >= sum(r.dropped_before for r in results)  # it also counts drops after the last result
    assert [r.frame.index for r in results] == sorted({r.frame.index for r in results})


def test_block_falls_behind_the_camera(paced):
    """The control: without dropping, the lag grows past the same bound, and nothing is dropped.

    Each result is at least 1/PACED_FPS of wall time after the one before but only 1/CAMERA_FPS of
    camera time: after RESULTS frames the lag is about RESULTS × (1 - PACED_FPS/CAMERA_FPS) = 50
    frame times, twice the bound's IN_FLIGHT (21) whatever a frame time is on this machine.
    """
    summary, results, lags, _, bound = _run(paced, DropPolicy.BLOCK)
    assert [r.frame.index for r in results] == list(range(RESULTS))  # nothing dropped on the way
    assert summary.dropped < IN_FLIGHT  # only what was still waiting when the run stopped
    assert lags[-1] > bound, f"lags {[round(v, 2) for v in lags]} stay under {bound:.2f} s"
    assert lags[-1] > lags[len(lags) // 2] > lags[2]  # and keeps growing
