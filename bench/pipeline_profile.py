"""Where the pipeline's CPU goes, per thread, against the engine's own forward pass.

    .venv/bin/python bench/pipeline_profile.py --weights MODEL [--clip PATH] [--frames N] [--max-batch N]
        [--threads N] [--pairs N]

Runs decode → segment → track → tracks.jsonl (no video), as `fastsam-stream run --no-video`
does, on one clip, and reads each thread's CPU time from /proc (so other load on the machine
changes the figures little): the reader (decoding), the prepare stage (letterbox), the segment
stage (the engine's calling thread: its share of the forward pass, NMS), the caller's thread
(tracking and the JSONL sink) and the threads the process did not name (the network runtime's
worker threads, FFmpeg's and OpenCV's pools). Then, for comparison, the forward pass alone on
the same frames and its CPU per frame. For a sampled profile of every thread, run py-spy on the
same command.

On a shared machine the speed of the same forward pass moves by more than 5% from one minute to
the next, so a pipeline measured minutes apart from its forward pass says little about the cost
of the pipeline itself. `--pairs N` measures them N times in turn, each pipeline run right before
its forward pass, and reports the median of the N ratios (and their spread):

    .venv/bin/py-spy record -r 200 --threads -f speedscope -o profile.json -- .venv/bin/python bench/pipeline_profile.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

from fastsam_stream import BatchSettings, FileSource, Frame, JsonlSink, Pipeline
from fastsam_stream.pipeline.segmenter import SegmenterSettings, UltralyticsSegmenter

SHARED = Path(__file__).resolve().parents[2] / "shared"
WARMUP = 10
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_by_thread() -> dict[int, float]:
    """CPU seconds (user + system) of every thread of this process, by native id."""
    seconds = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        seconds[int(tid)] = (int(fields[11]) + int(fields[12])) / TICKS
    return seconds


def profile_pipeline(segmenter, clip: Path, frames: int, max_batch: int | None) -> tuple[float, dict[str, float]]:
    """Wall seconds per frame and CPU seconds per frame by thread name, over `frames` after WARMUP."""
    with tempfile.TemporaryDirectory() as out:
        sink = JsonlSink(Path(out) / "tracks.jsonl")
        pipeline = Pipeline(
            [FileSource(clip)], segmenter, batch=BatchSettings(max_batch=max_batch), sinks_for=lambda _: [sink]
        )
        names: dict[int, str] = {}
        n = 0
        for n, _ in enumerate(pipeline, start=1):
            if n == WARMUP:
                names = {t.native_id: t.name for t in threading.enumerate()}
                before, start = cpu_by_thread(), time.perf_counter()
            if n == WARMUP + frames:
                wall = time.perf_counter() - start
                after = cpu_by_thread()
                pipeline.stop()
    if n < WARMUP + frames:
        raise SystemExit(f"{clip.name} has {n} frames: ask for at most {max(n - WARMUP, 0)} with --frames")
    by_name: dict[str, float] = {}
    for tid, seconds in after.items():
        name = names.get(tid, "unnamed (network runtime, FFmpeg, OpenCV pools)")
        name = "caller (tracking, sinks)" if name == "MainThread" else name
        by_name[name] = by_name.get(name, 0.0) + (seconds - before.get(tid, 0.0)) / frames
    return wall / frames, by_name


def forward_alone(segmenter, image, frames: int) -> tuple[float, float]:
    """Wall and process CPU seconds per frame of the engine's forward pass on the prepared frame."""
    (prepared,) = segmenter.prepare([Frame(image, "profile", 0, 0.0, 0.0)])
    with torch.inference_mode():
        for _ in range(3):
            segmenter.engine(prepared.images)
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(frames):
            segmenter.engine(prepared.images)
        return (time.perf_counter() - start) / frames, (time.process_time() - cpu) / frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(SHARED / "models/yolov8n-seg-int8dq.pt"))
    parser.add_argument("--clip", default=str(SHARED / "media/videos/vtest.avi"))
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--max-batch", type=int, default=1, help="0: measured at start-up, as by default")
    parser.add_argument("--conf", type=float, default=0.4)
    parser.add_argument("--threads", type=int, help="the network's CPU threads (default: every core)")
    parser.add_argument("--pairs", type=int, default=1, help="pipeline, then forward pass, this many times in turn")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    settings = SegmenterSettings(weights=args.weights, device="cpu", conf=args.conf, threads=args.threads)
    segmenter = UltralyticsSegmenter(settings)
    source = FileSource(Path(args.clip))
    image = next(iter(source.frames())).image
    source.close()
    threads = f"{args.threads} network threads" if args.threads else "network threads: every core"
    print(f"{Path(args.clip).name}, {Path(args.weights).name}, {threads}, {args.frames} frames after {WARMUP}")
    ratios, cpu_by_name = [], []
    for _ in range(args.pairs):
        wall, by_name = profile_pipeline(segmenter, Path(args.clip), args.frames, args.max_batch or None)
        floor_wall, floor_cpu = forward_alone(segmenter, image, min(args.frames, 60))
        ratios.append(wall / floor_wall)
        cpu_by_name.append(by_name)
        print(
            f"pipeline {wall * 1000:.1f} ms/frame wall; forward pass alone {floor_wall * 1000:.1f} ms/frame wall, "
            f"{floor_cpu * 1000:.1f} ms CPU; pipeline over it {100 * (wall / floor_wall - 1):+.1f}%",
            flush=True,
        )
    if args.pairs > 1:
        over = [100 * (ratio - 1) for ratio in ratios]
        print(
            f"pipeline over its forward pass, median of {args.pairs} pairs: {statistics.median(over):+.1f}% "
            f"(from {min(over):+.1f}% to {max(over):+.1f}%)"
        )
    print("pipeline CPU per frame, by thread" + (f" (median of {args.pairs} pairs):" if args.pairs > 1 else ":"))
    names = {name for by_name in cpu_by_name for name in by_name}
    medians = {name: statistics.median(by_name.get(name, 0.0) for by_name in cpu_by_name) for name in names}
    for name, seconds in sorted(medians.items(), key=lambda item: -item[1]):
        if seconds > 0.00005:
            print(f"  {name:48s} {seconds * 1000:6.1f} ms")
    print(f"  {'all (the sum of the above)':48s} {sum(medians.values()) * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
