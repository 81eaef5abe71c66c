"""The pipeline's speed against ultralytics' own loop and the network's forward pass, in one run.

    .venv/bin/python bench/pipeline_speed.py [--clip PATH] [--weights PATH.pt] [--frames N] [--quick]

Same clip, model, imgsz, conf and thread count for everything; per-frame figures are steady state
(warm-up frames are run first and reported apart), medians of interleaved rounds. It prints, for
each engine (PyTorch, and ONNX Runtime on an export of the same weights):
  a. the forward pass alone at the pipeline's batch size (the floor), on the batch exactly as the
     pipeline prepares it (PyTorch: channels-last), and once as ultralytics runs it (default layout),
  b. the pipeline end to end: decode → segment → track → tracks.jsonl, with capture-to-result
     latency p50/p99,
and c. ultralytics' loop, `FastSAM(weights).track(frame, persist=True)` per frame, as it ships
(it sets torch to cores − 1 threads on CPU) and at the pipeline's thread count; then the ratios,
the aggregate frames/s of 1, 4, 8 and 16 sources at once, and memory (RSS) after 200 and 2,000
frames of one long run. Figures vary between machines and runs: compare within one run only.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from fastsam_stream import BatchSettings, FileSource, Frame, JsonlSink, Pipeline
from fastsam_stream.pipeline.segmenter import (
    SegmenterSettings,
    UltralyticsSegmenter,
    cpu_count,
    letterbox,
    load_segmentation_model,
    quiet_ultralytics,
    resolve_device,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WARMUP = 10


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {cpu_count()} cores, {gpu}; torch {torch.__version__}"


def rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def read_frames(clip: Path, count: int) -> list[np.ndarray]:
    with av.open(str(clip)) as container:
        return [f.to_ndarray(format="bgr24") for f in itertools.islice(container.decode(video=0), count)]


def per_frame(seconds: float, frames: int) -> str:
    return f"{seconds / frames * 1000:6.1f} ms/frame {frames / seconds:6.1f} frames/s"


def timed_forward(forward, x: torch.Tensor, frames: int) -> float:
    """Seconds per frame of `forward(x)` alone, x a batch."""
    with torch.inference_mode():
        for _ in range(3):
            forward(x)
        runs = max(frames // len(x), 1)
        start = time.perf_counter()
        for _ in range(runs):
            forward(x)
    return (time.perf_counter() - start) / (runs * len(x))


def floor(segmenter: UltralyticsSegmenter, image: np.ndarray, batch: int, frames: int) -> float:
    """The engine's forward pass alone on a batch exactly as the pipeline prepares it."""
    (prepared,) = segmenter.prepare([Frame(image, "floor", 0, 0.0, 0.0)] * batch)
    return timed_forward(segmenter.engine, prepared.images, frames)


def ultralytics_floor(weights: str, image: np.ndarray, imgsz: int, batch: int, frames: int, device) -> float:
    """The fused network's forward pass as ultralytics runs it: default memory layout, NCHW input."""
    model = load_segmentation_model(weights, device)
    boxed, _ = letterbox(image, imgsz, 32, minimal=True)
    x = torch.from_numpy(np.ascontiguousarray(np.stack([boxed] * batch)[..., ::-1].transpose(0, 3, 1, 2))).float() / 255
    return timed_forward(model, x.to(device), frames)


def pipeline_run(segmenter, sources, batch: BatchSettings, frames: int, out: Path, rss_at=()) -> dict:
    """Steady-state seconds per frame over `frames` results after WARMUP, latency, RSS samples."""
    sinks = {s.source_id: [JsonlSink(out / f"{s.source_id}.jsonl")] for s in sources}
    started = time.perf_counter()
    pipeline = Pipeline(sources, segmenter, batch=batch, sinks_for=lambda s: sinks[s.source_id])
    latencies, rss, n, t0 = [], {}, 0, None
    for result in pipeline:
        n += 1
        now = time.monotonic()
        if n == 1:
            first_result = time.perf_counter() - started
        if n == WARMUP:
            t0 = time.perf_counter()
        elif n > WARMUP:
            latencies.append(now - result.frame.captured_at)
        if n in rss_at:
            rss[n] = rss_mib()
        if n == WARMUP + frames:
            seconds = time.perf_counter() - t0  # before the stop: shutting down is not per-frame work
            pipeline.stop()
    if n < WARMUP + frames:
        seconds = time.perf_counter() - t0
    measured = n - WARMUP
    return {
        "spf": seconds / measured,
        "frames": measured,
        "seconds": seconds,
        "startup": first_result,
        "p50": np.percentile(latencies, 50),
        "p99": np.percentile(latencies, 99),
        "rss": rss,
    }


def ultralytics_loop(
    weights: str, images: list[np.ndarray], imgsz: int, conf: float, threads: int | None, device
) -> float:
    """Seconds per frame of FastSAM(weights).track(frame, persist=True); threads=None: as it ships."""
    from ultralytics import FastSAM

    model = FastSAM(weights)
    kwargs = dict(persist=True, device=str(device), imgsz=imgsz, conf=conf, iou=0.7, verbose=False)
    for image in images[:WARMUP]:
        model.track(image, **kwargs)
    if threads is not None:
        torch.set_num_threads(threads)  # after its set-up, which sets cores − 1 on CPU
    start = time.perf_counter()
    for image in images[WARMUP:]:
        model.track(image, **kwargs)
    return (time.perf_counter() - start) / (len(images) - WARMUP)


def export_onnx(weights: Path, folder: Path) -> Path:
    from ultralytics import YOLO

    copy = Path(shutil.copy(weights, folder / weights.name))
    return Path(YOLO(str(copy)).export(format="onnx", dynamic=True, simplify=True, opset=17))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default=str(SHARED / "media/videos/vtest.avi"))
    parser.add_argument("--weights", default=str(SHARED / "models/yolov8n-seg-int8dq.pt"))
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.4)
    parser.add_argument("--frames", type=int, default=100, help="steady-state frames per measurement")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N, for every measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats; medians are reported")
    parser.add_argument("--quick", action="store_true", help="skip the many-source and memory runs")
    args = parser.parse_args()
    quiet_ultralytics()
    device = resolve_device(args.device)
    threads = cpu_count()
    batch = BatchSettings()
    clip, frames = Path(args.clip), args.frames
    print(f"machine: {machine()}")
    print(
        f"clip {clip.name}, weights {Path(args.weights).name}, imgsz {args.imgsz}, conf {args.conf}, "
        f"torch threads {threads}, max_batch {batch.max_batch}, {frames} steady-state frames after {WARMUP}"
    )
    images = read_frames(clip, WARMUP + frames)
    rounds = range(args.rounds)  # interleaved, medians reported: this kind of machine is noisy

    shipped = statistics.median(
        ultralytics_loop(args.weights, images, args.imgsz, args.conf, None, device) for _ in rounds
    )
    matched = statistics.median(
        ultralytics_loop(args.weights, images, args.imgsz, args.conf, threads, device) for _ in rounds
    )
    torch.set_num_threads(threads)
    native = {
        size: statistics.median(
            ultralytics_floor(args.weights, images[0], args.imgsz, size, frames, device) for _ in rounds
        )
        for size in (1, batch.max_batch)
    }
    print(f"c. ultralytics FastSAM.track, as it ships     {per_frame(shipped, 1)}")
    print(f"c. ultralytics FastSAM.track, {threads} threads       {per_frame(matched, 1)}")
    for size, seconds in native.items():
        print(f"a. forward pass as ultralytics runs it, batch {size}, {threads} threads  {per_frame(seconds, 1)}")
    native_floor = min(native.values())

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        engines = {"pytorch": args.weights, "onnxruntime": str(export_onnx(Path(args.weights), out))}
        for name, weights in engines.items():
            segmenter = UltralyticsSegmenter(
                SegmenterSettings(
                    weights=weights, device=args.device, imgsz=args.imgsz, conf=args.conf, threads=threads
                )
            )
            floors, runs = [], []
            for _ in rounds:
                floors.append(floor(segmenter, images[0], batch.max_batch, frames))
                runs.append(pipeline_run(segmenter, [FileSource(clip)], batch, frames, out))
            a = statistics.median(floors)
            b = sorted(runs, key=lambda r: r["spf"])[len(runs) // 2]
            print(f"[{name}] a. its forward pass alone, batch {batch.max_batch}, as prepared  {per_frame(a, 1)}")
            print(
                f"[{name}] b. pipeline end to end         {per_frame(b['spf'], 1)}  "
                f"latency p50 {b['p50'] * 1000:.0f} ms p99 {b['p99'] * 1000:.0f} ms; start-up {b['startup']:.2f} s"
            )
            print(
                f"[{name}] ratios: b vs ultralytics as shipped {shipped / b['spf']:.2f}x, "
                f"vs ultralytics at {threads} threads {matched / b['spf']:.2f}x; "
                f"b over its own engine's floor {100 * (b['spf'] / a - 1):+.1f}%, "
                f"over the faster forward pass as ultralytics runs it {100 * (b['spf'] / native_floor - 1):+.1f}%"
            )
            best = segmenter
        if args.quick:
            return
        for streams in (1, 4, 8, 16):
            run = pipeline_run(best, [FileSource(clip, source_id=f"s{i}") for i in range(streams)], batch, frames, out)
            print(
                f"[onnxruntime] {streams:2d} sources at once: aggregate {1 / run['spf']:6.1f} frames/s "
                f"({run['frames']} frames), latency p50 {run['p50'] * 1000:.0f} ms p99 {run['p99'] * 1000:.0f} ms"
            )
        long_sources = [FileSource(clip, source_id=f"loop{i}") for i in range(3)]  # 3 × 795 frames ≥ 2,010
        run = pipeline_run(best, long_sources, batch, 2000, out, rss_at=(200, 2000))
        r200, r2000 = run["rss"][200], run["rss"][2000]
        print(
            f"[onnxruntime] memory: RSS {r200:.0f} MiB after 200 frames, {r2000:.0f} MiB after 2000 "
            f"({100 * (r2000 / r200 - 1):+.1f}%)"
        )


if __name__ == "__main__":
    main()
