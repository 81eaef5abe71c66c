"""CPU time of the segmenter's post-processing (NMS, Instances) at 1 torch thread and at every core.

    .venv/bin/python bench/post_threads.py [--weights PATH] [--clip PATH] [--repeats N]

With the ONNX Runtime and OpenVINO engines, the network runs in its own runtime's threads and
torch only does NMS and mask assembly on small tensors; this measures whether those want torch's
thread pool (they do not: its OpenMP workers spin on the cores the network is using). The
figures are CPU time of the calling thread (`time.thread_time`), medians over `--repeats`
passes on one real frame, so other load on the machine changes them little.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import av
import torch

from fastsam_stream.core import Frame
from fastsam_stream.pipeline.segmenter import SegmenterSettings, UltralyticsSegmenter, cpu_count

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(SHARED / "models/yolov8n-seg-int8dq.pt"))
    parser.add_argument("--clip", default=str(SHARED / "media/videos/vtest.avi"))
    parser.add_argument("--conf", type=float, default=0.4)
    parser.add_argument("--repeats", type=int, default=60)
    args = parser.parse_args()
    with av.open(args.clip) as container:
        image = next(container.decode(video=0)).to_ndarray(format="bgr24")
    segmenter = UltralyticsSegmenter(SegmenterSettings(weights=args.weights, device="cpu", conf=args.conf))
    (prepared,) = segmenter.prepare([Frame(image, "bench", 0, 0.0, 0.0)])
    with torch.inference_mode():
        predictions, protos, _ = segmenter.engine.run(prepared.images, False)
    s = segmenter.settings
    print(f"{Path(args.clip).name} frame 0, {Path(args.weights).name}, conf {args.conf}, {cpu_count()} cores")
    for threads in sorted({1, cpu_count()}):
        torch.set_num_threads(threads)
        nms_s, build_s = [], []
        with torch.inference_mode():
            for _ in range(args.repeats):
                start = time.thread_time()
                (det,) = segmenter._nms(predictions, s.conf, s.iou, agnostic=True, max_det=s.max_det, nc=80)
                middle = time.thread_time()
                instances = segmenter._instances(det, protos[0], None, prepared.letterboxes[0])
                build_s.append(time.thread_time() - middle)
                nms_s.append(middle - start)
        print(
            f"torch threads {threads}: NMS {statistics.median(nms_s) * 1000:.2f} ms CPU, "
            f"Instances {statistics.median(build_s) * 1000:.2f} ms CPU ({len(instances)} instances)"
        )


if __name__ == "__main__":
    main()
