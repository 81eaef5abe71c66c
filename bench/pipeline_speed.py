"""The pipeline's speed on each engine against ultralytics' own loops and the forward pass, in one run.

    .venv/bin/python bench/pipeline_speed.py [--clip PATH] [--weights PATH.pt] [--frames N] [--rounds N]
        [--engines pytorch,onnxruntime,openvino,openvino-int8] [--no-anchors] [--quick]

Same clip, model, imgsz, conf and thread count for everything; per-frame figures are steady state
(warm-up frames are run first and reported apart), medians of interleaved rounds. The ONNX and
OpenVINO models are exported from the same weights in this run (dynamic batch and size, in a
temporary folder). It prints the anchors (skipped with --no-anchors):
  c. ultralytics' PyTorch loop, `FastSAM(weights).track(frame, persist=True)` per frame, as it
     ships (it sets torch to cores − 1 threads on CPU) and at the pipeline's thread count;
  c. ultralytics' OpenVINO loop, `YOLO(export, task="segment").track(frame, persist=True)` per
     frame, compiled as ultralytics compiles it (LATENCY hint) at the pipeline's thread count, on
     the float export and (with the openvino-int8 engine) on the same int8 export the engine runs;
  a. the PyTorch forward pass at batch 1 as ultralytics runs it (default layout, float NCHW);
then, for each engine (PyTorch, ONNX Runtime, OpenVINO, and OpenVINO on an int8 export
calibrated on 100 frames of the clip as `fastsam-stream export --int8` makes it; --engines
picks some):
  the batch size the pipeline chooses with max_batch unset (batch 1, 2 and 4 timed on the first
     frame, pipeline/batch_probe.py) and the probe's timings,
  a. its forward pass alone (the floor) at batch 1 and at the chosen size, on the batch exactly as
     the segmenter prepares it (B×H×W×3 uint8 BGR, which the engine converts in its forward pass),
  b. the pipeline end to end: decode → segment → track → tracks.jsonl, with capture-to-result
     latency p50/p99 and the batch size it ran at,
and the ratios: b against each ultralytics loop, b over its own forward pass at both sizes. A
summary holds the fastest engine to ≥ 1.5× ultralytics' OpenVINO loop and ≥ 2× its PyTorch loop
at the same threads, and each engine's b to ≤ +5% over its batch-1 forward pass (the median of
the rounds' ratios, each pipeline run against the forward pass measured just before it; PASS/MISS
printed; a miss does not change the exit status). Without --quick, the fastest engine then runs
1, 4, 8 and 16 sources at once (aggregate frames/s) and one long run for memory (RSS after 200
and 2,000 frames). Figures vary between machines and runs: compare within one run only.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from fastsam_stream import BatchSettings, FileSource, Frame, JsonlSink, Pipeline
from fastsam_stream.pipeline.export import ultralytics_export
from fastsam_stream.pipeline.segmenter import (
    SegmenterSettings,
    UltralyticsSegmenter,
    cpu_count,
    letterbox,
    letterbox_on_device,
    load_segmentation_model,
    quiet_ultralytics,
    resolve_device,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WARMUP = 10
ENGINES = ("pytorch", "onnxruntime", "openvino", "openvino-int8")
CALIBRATION = 100  # frames of the clip the int8 export is calibrated on (the export command's default)
VS_OPENVINO_LOOP = 1.5  # targets: the fastest engine's pipeline against ultralytics' OpenVINO loop,
VS_PYTORCH_LOOP = 2.0  # against its PyTorch loop at the same threads,
OVER_FORWARD = 0.05  # and each engine's pipeline over its own batch-1 forward pass


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


def verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def timed_forward(forward, x: torch.Tensor, frames: int) -> float:
    """Seconds per frame of `forward(x)` alone, x a batch."""
    with torch.inference_mode():
        for _ in range(3):
            forward(x)
        runs = max(frames // len(x), 1)
        start = time.perf_counter()
        for _ in range(runs):
            forward(x)
        if x.is_cuda:
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / (runs * len(x))


def floor(segmenter: UltralyticsSegmenter, image: np.ndarray, batch: int, frames: int) -> float:
    """The engine's forward pass alone on a batch exactly as the segmenter prepares it and `infer` hands it over."""
    (prepared,) = segmenter.prepare([Frame(image, "floor", 0, 0.0, 0.0)] * batch)
    images = prepared.images  # B×H×W×3 uint8 BGR, letterboxed, on the CPU
    if prepared.on_device:  # PyTorch on a GPU: raw frames, letterboxed there as `infer` does
        images = letterbox_on_device(images.to(segmenter.device), prepared.letterboxes[0])
    return timed_forward(segmenter.engine, images, frames)


def ultralytics_floor(weights: str, image: np.ndarray, imgsz: int, batch: int, frames: int, device) -> float:
    """The fused network's forward pass as ultralytics runs it: default memory layout, NCHW input."""
    model = load_segmentation_model(weights, device)
    boxed, _ = letterbox(image, imgsz, 32, minimal=True)
    x = torch.from_numpy(np.ascontiguousarray(np.stack([boxed] * batch)[..., ::-1].transpose(0, 3, 1, 2))).float() / 255
    return timed_forward(model, x.to(device), frames)


def pipeline_run(segmenter, sources, batch: BatchSettings, frames: int, out: Path, rss_at=()) -> dict:
    """Steady-state seconds per frame over `frames` results after WARMUP, latency, RSS samples, batch size."""
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
        "max_batch": pipeline.max_batch,  # what the run measured and used, max_batch being unset
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


def ultralytics_openvino_loop(
    model_dir: Path, images: list[np.ndarray], imgsz: int, conf: float, threads: int
) -> tuple[float, str]:
    """Seconds per frame of YOLO(export, task="segment").track(frame, persist=True), and how OpenVINO ran it."""
    import openvino as ov
    from ultralytics import YOLO

    model = YOLO(str(model_dir), task="segment")
    kwargs = dict(persist=True, imgsz=imgsz, conf=conf, iou=0.7, verbose=False)
    for image in images[:WARMUP]:
        model.track(image, **kwargs)
    # torch keeps the count ultralytics' set-up gave it (cores − 1): it only runs the pre- and
    # post-processing here, as in this pipeline's OpenVINO engine (one torch thread), where more
    # threads make NMS slower (bench/post_threads.py).
    # ultralytics (nn/backends/openvino.py) compiles with {"PERFORMANCE_HINT": "LATENCY"} alone, on
    # "CPU" (or "AUTO" where OpenVINO sees another device), and runs synchronous requests: one
    # stream, INFERENCE_NUM_THREADS left to OpenVINO, which takes every core it may run on. Where
    # that is not the pipeline's count, it is recompiled with the same hint at that count.
    backend = model.predictor.model.backend
    if backend.ov_compiled_model.get_property("INFERENCE_NUM_THREADS") != threads:
        ov_model = ov.Core().read_model(str(next(Path(model_dir).glob("*.xml"))))
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
        backend.ov_compiled_model = backend.compile_model(ov_model, config=config)
        for image in images[:3]:
            model.track(image, **kwargs)
    compiled = backend.ov_compiled_model
    how = (
        f"{compiled.get_property('PERFORMANCE_HINT')}, {compiled.get_property('NUM_STREAMS')} stream, "
        f"{compiled.get_property('INFERENCE_NUM_THREADS')} threads"
    )
    start = time.perf_counter()
    for image in images[WARMUP:]:
        model.track(image, **kwargs)
    return (time.perf_counter() - start) / (len(images) - WARMUP), how


def export_openvino_int8(exported: Path, clip: Path, imgsz: int, folder: Path) -> Path:
    """The int8 version of an OpenVINO export, as `fastsam-stream export --int8 --calibrate CLIP` makes it."""
    from fastsam_stream.pipeline.quantize import calibration_frames, quantize_export

    frames = calibration_frames(clip, CALIBRATION)
    return quantize_export(exported, frames, imgsz, folder / "int8_openvino_model", clip.name)


def measure_anchors(args, weights: dict[str, str], images: list[np.ndarray], threads: int, device):
    """Ultralytics' own loops and forward pass, printed.

    PyTorch as shipped and at `threads`; OpenVINO on the float export and, when the run has one,
    on the int8 export; the PyTorch forward pass at batch 1 as ultralytics runs it.

    Returns:
        Seconds per frame: (PyTorch as shipped, PyTorch at `threads`, OpenVINO, OpenVINO int8 or None).
    """
    rounds, frames = range(args.rounds), args.frames
    loops, how, ov_dir = (
        {"shipped": [], "matched": [], "openvino": [], "int8": []},
        "",
        Path(weights["openvino"]),
    )
    for _ in rounds:
        loops["shipped"].append(ultralytics_loop(args.weights, images, args.imgsz, args.conf, None, device))
        loops["matched"].append(ultralytics_loop(args.weights, images, args.imgsz, args.conf, threads, device))
        seconds, how = ultralytics_openvino_loop(ov_dir, images, args.imgsz, args.conf, threads)
        loops["openvino"].append(seconds)
        if "openvino-int8" in weights:  # like for like: its loop on the very int8 model the engine runs
            int8_dir = Path(weights["openvino-int8"])
            loops["int8"].append(ultralytics_openvino_loop(int8_dir, images, args.imgsz, args.conf, threads)[0])
    shipped, matched, ov_loop = (statistics.median(loops[k]) for k in ("shipped", "matched", "openvino"))
    ov_int8_loop = statistics.median(loops["int8"]) if loops["int8"] else None
    torch.set_num_threads(threads)
    native = statistics.median(
        ultralytics_floor(args.weights, images[0], args.imgsz, 1, frames, device) for _ in rounds
    )
    print(f"c. ultralytics FastSAM.track, as it ships     {per_frame(shipped, 1)}")
    print(f"c. ultralytics FastSAM.track, {threads} threads       {per_frame(matched, 1)}")
    print(f"c. ultralytics OpenVINO YOLO.track ({how})  {per_frame(ov_loop, 1)}")
    if ov_int8_loop is not None:
        print(f"c. ultralytics OpenVINO YOLO.track, the int8 export  {per_frame(ov_int8_loop, 1)}")
    print(f"a. forward pass as ultralytics runs it, batch 1, {threads} threads  {per_frame(native, 1)}")
    return shipped, matched, ov_loop, ov_int8_loop


def engine_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(ENGINES))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown) or 'nothing'}: choose from {', '.join(ENGINES)}")
    return list(dict.fromkeys(names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default=str(SHARED / "media/videos/vtest.avi"))
    parser.add_argument("--weights", default=str(SHARED / "models/yolov8n-seg-int8dq.pt"))
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.4)
    parser.add_argument("--frames", type=int, default=100, help="steady-state frames per measurement")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N, for every measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats; medians are reported")
    parser.add_argument(
        "--engines", type=engine_names, default=list(ENGINES), help=f"comma-separated (default {','.join(ENGINES)})"
    )
    parser.add_argument("--no-anchors", action="store_true", help="skip ultralytics' loops and forward pass")
    parser.add_argument("--quick", action="store_true", help="skip the many-source and memory runs")
    args = parser.parse_args()
    quiet_ultralytics()
    device = resolve_device(args.device)
    if device.type != "cpu" and {"openvino", "openvino-int8"} & set(args.engines):
        parser.error("the OpenVINO engine runs on the CPU only: leave it out of --engines for --device cuda")
    threads = cpu_count()
    batch = BatchSettings()  # max_batch unset: each pipeline measures and chooses its batch size
    clip, frames, anchors = Path(args.clip), args.frames, not args.no_anchors
    print(f"machine: {machine()}")
    print(
        f"clip {clip.name}, weights {Path(args.weights).name}, imgsz {args.imgsz}, conf {args.conf}, "
        f"{threads} threads, max_batch chosen per engine, {frames} steady-state frames after {WARMUP}"
    )
    images = read_frames(clip, WARMUP + frames)
    rounds = range(args.rounds)  # interleaved, medians reported: this kind of machine is noisy

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        weights = {"pytorch": args.weights}
        if "onnxruntime" in args.engines:
            weights["onnxruntime"] = str(ultralytics_export(Path(args.weights), "onnx", out))
        if {"openvino", "openvino-int8"} & set(args.engines) or anchors:
            weights["openvino"] = str(ultralytics_export(Path(args.weights), "openvino", out))
        if "openvino-int8" in args.engines:
            weights["openvino-int8"] = str(export_openvino_int8(Path(weights["openvino"]), clip, args.imgsz, out))

        shipped = matched = ov_loop = ov_int8_loop = None
        if anchors:
            shipped, matched, ov_loop, ov_int8_loop = measure_anchors(args, weights, images, threads, device)

        results = {}  # engine → (segmenter, b, its median paired ratio over the batch-1 forward pass, less 1)
        for name in args.engines:
            segmenter = UltralyticsSegmenter(
                SegmenterSettings(
                    weights=weights[name], device=args.device, imgsz=args.imgsz, conf=args.conf, threads=threads
                )
            )
            # What the pipeline measures on its first frame (cached per frame size: the runs below reuse it).
            choice = segmenter.best_batch(Frame(images[0], "probe", 0, 0.0, 0.0))
            print(f"[{name}] chosen: {choice.describe()}")
            sizes = sorted({1, choice.size})
            floors, runs = {size: [] for size in sizes}, []
            for _ in rounds:
                for size in sorted(sizes, reverse=True):  # batch 1 last: right before the pipeline run
                    floors[size].append(floor(segmenter, images[0], size, frames))
                runs.append(pipeline_run(segmenter, [FileSource(clip)], batch, frames, out))
            a = {size: statistics.median(v) for size, v in floors.items()}
            b = sorted(runs, key=lambda r: r["spf"])[len(runs) // 2]
            for size, seconds in a.items():
                print(f"[{name}] a. its forward pass alone, batch {size}, as prepared  {per_frame(seconds, 1)}")
            ran_at = {r["max_batch"] for r in runs}  # the probe's choice, unless the pipeline chose otherwise
            print(
                f"[{name}] b. pipeline end to end         {per_frame(b['spf'], 1)}  "
                f"latency p50 {b['p50'] * 1000:.0f} ms p99 {b['p99'] * 1000:.0f} ms; start-up {b['startup']:.2f} s; "
                f"ran at batch {', '.join(map(str, sorted(ran_at)))}"
                + ("" if ran_at == {choice.size} else f", NOT the chosen {choice.size}")
            )
            same_model = (
                f"vs ultralytics' loop on the same int8 model {ov_int8_loop / b['spf']:.2f}x, "
                if anchors and name == "openvino-int8" and ov_int8_loop is not None
                else ""
            )
            vs = (
                f"b vs ultralytics OpenVINO loop {ov_loop / b['spf']:.2f}x, {same_model}"
                f"vs ultralytics FastSAM at {threads} threads {matched / b['spf']:.2f}x "
                f"(as shipped {shipped / b['spf']:.2f}x); "
                if anchors
                else ""
            )
            overs = ", ".join(f"batch {size} {100 * (b['spf'] / seconds - 1):+.1f}%" for size, seconds in a.items())
            print(f"[{name}] ratios: {vs}b over its own forward pass at {overs}")
            # The bar's figure pairs each round's pipeline run with the batch-1 forward pass measured
            # just before it: this machine's speed drifts by more than the bar between rounds.
            paired = [run["spf"] / seconds for run, seconds in zip(runs, floors[1], strict=True)]
            over = statistics.median(paired) - 1
            spread = ", ".join(f"{100 * (ratio - 1):+.1f}%" for ratio in paired)
            print(f"[{name}] b over its batch-1 forward pass, round by round: {spread}; median {100 * over:+.1f}%")
            results[name] = (segmenter, b, over)

        fastest = min(results, key=lambda name: results[name][1]["spf"])
        best, b, _ = results[fastest]
        print(f"summary: fastest engine {fastest}, pipeline {per_frame(b['spf'], 1)}")
        if anchors:
            for what, anchor, target in (
                ("ultralytics' OpenVINO loop", ov_loop, VS_OPENVINO_LOOP),
                (f"ultralytics' PyTorch loop at {threads} threads", matched, VS_PYTORCH_LOOP),
            ):
                speedup = anchor / b["spf"]
                print(f"  {fastest} vs {what}: {speedup:.2f}x (target ≥ {target}x) {verdict(speedup >= target)}")
            if "openvino" in results:  # like for like: the same float model in OpenVINO on both sides
                float_spf = results["openvino"][1]["spf"]
                print(f"  openvino (float) vs ultralytics' OpenVINO loop: {ov_loop / float_spf:.2f}x")
            if "openvino-int8" in results and ov_int8_loop is not None:
                int8_spf = results["openvino-int8"][1]["spf"]
                ratio = ov_int8_loop / int8_spf
                print(f"  openvino-int8 vs ultralytics' OpenVINO loop on the same int8 model: {ratio:.2f}x")
        else:
            print("  against ultralytics' loops: not measured (--no-anchors)")
        for name, (_, _, over) in results.items():
            print(
                f"  [{name}] pipeline over its batch-1 forward pass (median of the rounds' ratios): {100 * over:+.1f}% "
                f"(target ≤ +{100 * OVER_FORWARD:.0f}%) {verdict(over <= OVER_FORWARD)}"
            )
        results.clear()  # the other engines' memory is not the long run's
        if args.quick:
            return
        for streams in (1, 4, 8, 16):
            run = pipeline_run(best, [FileSource(clip, source_id=f"s{i}") for i in range(streams)], batch, frames, out)
            print(
                f"[{fastest}] {streams:2d} sources at once: aggregate {1 / run['spf']:6.1f} frames/s "
                f"({run['frames']} frames, batch {run['max_batch']}), "
                f"latency p50 {run['p50'] * 1000:.0f} ms p99 {run['p99'] * 1000:.0f} ms"
            )
        long_sources = [FileSource(clip, source_id=f"loop{i}") for i in range(3)]  # 3 × 795 frames ≥ 2,010
        run = pipeline_run(best, long_sources, batch, 2000, out, rss_at=(200, 2000))
        r200, r2000 = run["rss"][200], run["rss"][2000]
        print(
            f"[{fastest}] memory: RSS {r200:.0f} MiB after 200 frames, {r2000:.0f} MiB after 2000 "
            f"({100 * (r2000 / r200 - 1):+.1f}%)"
        )


if __name__ == "__main__":
    main()
