"""The OpenVINO forward pass under each CPU configuration: what the engine's HINTS constant rests on.

    .venv/bin/python bench/openvino_hints.py [--model DIR_openvino_model] [--rounds N] [--passes N]

pipeline/openvino_engine.py compiles with HINTS (the LATENCY hint, one stream using every thread,
one synchronous request). This times the alternatives on the same input as the engine's: a real
vtest.avi frame (768×576) letterboxed to 640×480 as the segmenter does, B×H×W×3 uint8 BGR into a
model with the engine's own conversion in its graph (`_with_uint8_input`), at batch 1, 2 and 4:
  the engine itself (OpenVinoEngine, whose outputs become torch tensors),
  HINTS compiled alone, and with CPU pinning on and off, one synchronous request per batch,
  THROUGHPUT (OpenVINO chooses the streams) with one synchronous request for the whole batch,
  THROUGHPUT with an AsyncInferQueue of 2 requests, each taking one frame of the batch.
Every configuration gets the same thread count (every core). Figures are ms per frame, medians
of interleaved rounds after warm-up passes. HINTS stays while no other row beats the LATENCY rows
beyond the noise between rounds, at batch 1 and at the size the pipeline chooses. Without
--model, the stand-in weights are exported (ultralytics, dynamic batch and size) into a
temporary folder. Compare within one run only.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import torch
from pipeline_speed import machine  # the same description as the speed benchmark's (bench/ is on the path)

from fastsam_stream.pipeline.export import ultralytics_export
from fastsam_stream.pipeline.openvino_engine import HINTS, OpenVinoEngine, _with_uint8_input, model_xml
from fastsam_stream.pipeline.segmenter import cpu_count, letterbox, quiet_ultralytics

SHARED = Path(__file__).resolve().parents[2] / "shared"
SIZES = (1, 2, 4)


def sync(compiled):
    request = compiled.create_infer_request()
    return lambda batch: request.infer({0: batch})  # outputs copied, as the engine has them


def async_queue(compiled, jobs: int = 2):
    queue = ov.AsyncInferQueue(compiled, jobs)
    queue.set_callback(lambda request, _: [request.get_output_tensor(i).data.copy() for i in range(2)])

    def run(batch: np.ndarray) -> None:
        for i in range(len(batch)):
            queue.start_async({0: batch[i : i + 1]})
        queue.wait_all()

    return run


def described(compiled) -> str:
    props = ("PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS", "ENABLE_CPU_PINNING")
    return ", ".join(f"{p} {compiled.get_property(p)}" for p in props)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="an ultralytics *_openvino_model folder (default: export the stand-in)")
    parser.add_argument("--weights", default=str(SHARED / "models/yolov8n-seg-int8dq.pt"), help="what to export")
    parser.add_argument("--clip", default=str(SHARED / "media/videos/vtest.avi"))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats; medians are reported")
    parser.add_argument("--passes", type=int, default=5, help="timed forward passes per configuration and round")
    args = parser.parse_args()
    quiet_ultralytics()
    threads = cpu_count()
    ok, image = cv2.VideoCapture(args.clip).read()
    if not ok:
        parser.error(f"cannot read a frame of {args.clip}")
    boxed, _ = letterbox(image, 640, 32, minimal=True)  # 768×576 → 640×480, as the segmenter prepares it
    batches = {size: np.ascontiguousarray(np.stack([boxed] * size)) for size in SIZES}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.model) if args.model else ultralytics_export(Path(args.weights), "openvino", Path(tmp))
        core = ov.Core()
        model = _with_uint8_input(core.read_model(str(model_xml(folder))))
        engine = OpenVinoEngine(folder, threads)

        def compiled(config: dict):
            return core.compile_model(model, "CPU", {**config, "INFERENCE_NUM_THREADS": threads})

        configs = {
            "LATENCY (HINTS)": compiled(HINTS),
            "LATENCY, pinning on": compiled({**HINTS, "ENABLE_CPU_PINNING": True}),
            "LATENCY, pinning off": compiled({**HINTS, "ENABLE_CPU_PINNING": False}),
            "THROUGHPUT": compiled({"PERFORMANCE_HINT": "THROUGHPUT"}),
        }
        runners = {
            "engine (HINTS)": lambda batch: engine(torch.from_numpy(batch)),
            **{f"{name}, 1 sync request": sync(c) for name, c in configs.items()},
            "THROUGHPUT, async queue of 2": async_queue(configs["THROUGHPUT"]),
        }
        print(f"machine: {machine()}; openvino {ov.get_version()}")
        print(f"model {folder.name}, input {boxed.shape[1]}×{boxed.shape[0]} uint8 BGR, {threads} threads")
        print(f"engine: HINTS {HINTS}; compiled as:")
        for name, c in configs.items():
            print(f"  {name:22s} {described(c)}")
        for run in runners.values():  # warm-up: the first passes at a shape are slow
            for batch in batches.values():
                run(batch)
                run(batch)
        times: dict[tuple[str, int], list[float]] = {(name, size): [] for name in runners for size in SIZES}
        for _ in range(args.rounds):  # interleaved, medians reported: this kind of machine is noisy
            for name, run in runners.items():
                for size, batch in batches.items():
                    start = time.perf_counter()
                    for _ in range(args.passes):
                        run(batch)
                    times[name, size].append((time.perf_counter() - start) / (args.passes * size))
        print(f"ms/frame, median of {args.rounds} rounds of {args.passes} passes:")
        print(f"{'configuration':38s}" + "".join(f"{f'batch {size}':>10s}" for size in SIZES))
        for name in runners:
            row = "".join(f"{statistics.median(times[name, size]) * 1000:10.1f}" for size in SIZES)
            print(f"{name:38s}{row}")


if __name__ == "__main__":
    main()
