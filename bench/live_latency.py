"""How far behind a live camera the pipeline runs, with and without dropping frames.

    .venv/bin/python bench/live_latency.py [--weights PATH] [--frames N] [--camera lavfi:GRAPH] [--max-fps N]

A 60 frames/s virtual camera (FFmpeg's lavfi, through the camera source's code path, paced at
the wall clock by `realtime`) feeds the real model. For each drop policy it prints the frames
processed and dropped, the throughput, the bound that tests/test_live_latency.py asserts (every
frame that can be in flight × the time per frame + 0.25 s), and the measured lag (wall time
passed minus camera time passed since the first result) and age (time since decode), in seconds
and in frame times.

The tests hold the model to at most 10 frames/s (tests/pacing.py), so that the camera stays
ahead of it on any machine; `--max-fps 10` measures that setting here (on a GPU the bare model
may outrun the camera, and then nothing is dropped).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from fastsam_stream import BatchSettings, DropPolicy, Pipeline, open_source
from fastsam_stream.pipeline.segmenter import SegmenterSettings, UltralyticsSegmenter, quiet_ultralytics

ROOT = Path(__file__).resolve().parents[1]
SLACK_S = 0.25  # as in tests/test_live_latency.py


def run(segmenter, camera: str, policy: DropPolicy, frames: int, batch: BatchSettings) -> str:
    pipeline = Pipeline(open_source(camera), segmenter, batch=batch, drop_policy=policy)
    lags, ages, first = [], [], None
    for result in pipeline:
        now = time.monotonic()
        first = first or (now, result.frame.pts)
        lags.append((now - first[0]) - (result.frame.pts - first[1]))
        ages.append(now - result.frame.captured_at)
        if len(lags) == frames:
            pipeline.stop()
    s = pipeline.summary
    per_frame = s.seconds / s.frames
    # buffer, 2 batches, results, in hand
    in_flight = batch.buffer_size + 2 * batch.largest_batch + batch.queue_size + 1
    return (
        f"{policy.value:12s} {s.frames} processed, {s.dropped} dropped, {s.fps:.1f} frames/s; "
        f"bound {in_flight * per_frame + SLACK_S:.2f} s ({in_flight} frame times + {SLACK_S} s); "
        f"lag max {max(lags):.2f} s ({max(lags) / per_frame:.1f} frame times), last {lags[-1]:.2f} s; "
        f"age max {max(ages):.2f} s ({max(ages) / per_frame:.1f} frame times)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(ROOT.parent / "shared/models/yolov8n-seg-int8dq.pt"))
    parser.add_argument("--camera", default="lavfi:testsrc2=size=320x240:rate=60,realtime")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-fps", type=float, help="hold the model to at most this many frames/s, as the tests do")
    args = parser.parse_args()
    quiet_ultralytics()
    segmenter = UltralyticsSegmenter(SegmenterSettings(weights=args.weights, device=args.device, conf=0.25))
    paced = ""
    if args.max_fps:
        sys.path.insert(0, str(ROOT / "tests"))
        from pacing import PacedSegmenter  # the tests' own wrapper, so the bench measures what they run

        segmenter = PacedSegmenter(segmenter, 1 / args.max_fps)
        paced = f", model held to {args.max_fps:g} frames/s"
    batch = BatchSettings()
    machine = platform.processor() or platform.machine()
    print(f"{machine}, device {args.device}, camera {args.camera}{paced}, defaults {batch}")
    for policy in (DropPolicy.DROP_OLDEST, DropPolicy.BLOCK):
        print(run(segmenter, args.camera, policy, args.frames, batch))


if __name__ == "__main__":
    main()
