"""Text-prompt scoring speed: our batched CLIP scorer against one forward pass per crop, in one run.

    .venv/bin/python bench/clip_speed.py [--device cpu|cuda:N] [--counts 10 50 200] [--rounds 3]

Real instances of real frames (01_dog.mp4 and bedroom.mp4, frame 0, segmented at a low confidence;
rows repeat when a frame holds fewer instances than asked), scored against one text with ViT-B-32 at
random weights (timings do not depend on the weights' values). For each number of instances it prints
crops per second for:
  a. the paper's way: each crop masked (ultralytics' FastSAM: pixels outside the mask black),
     preprocessed with open_clip's own PIL transform and encoded in its own `encode_image` call,
     the text encoded once per call;
  a2. the same PIL preprocessing per crop, then one batched `encode_image` call, as ultralytics'
     FastSAM and the FastSAM repo do (the repo also reloads CLIP on every prompt: not counted here);
  b. ours (pipeline/clip.py): crops cut and normalised in numpy/torch, one batched call, the text
     embedding cached, in both crop modes;
and the ratios b/a. Everything includes the mask assembly its crop mode needs. Medians of
interleaved rounds; compare within one run only.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import time
from pathlib import Path

import av
import numpy as np
import open_clip
import torch
from PIL import Image
from torch.nn.functional import normalize

from fastsam_stream import Frame
from fastsam_stream.core import Instances
from fastsam_stream.pipeline.clip import MASK_CHUNK, ClipTextScorer
from fastsam_stream.pipeline.segmenter import (
    SegmenterSettings,
    UltralyticsSegmenter,
    cpu_count,
    quiet_ultralytics,
    resolve_device,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TEXT = "a photo of a dog"


def machine(device: torch.device) -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU used"
    return (
        f"{cpu}, {cpu_count()} cores, torch threads {torch.get_num_threads()}, {gpu}; "
        f"torch {torch.__version__}, open_clip {open_clip.__version__}; {load()}"
    )


def load() -> str:
    """How busy the machine was: other processes on the cores skew CPU figures.

    This run's own threads count too, so expect about the thread count after the runs.
    """
    return f"load average (1 min) {os.getloadavg()[0]:.2f}"


def first_frame(clip: Path) -> np.ndarray:
    with av.open(str(clip)) as container:
        return next(container.decode(video=0)).to_ndarray(format="bgr24")


def per_crop_baseline(model, preprocess, tokenizer, image, instances: Instances, rows: list[int], device, dtype):
    """The paper's way: masked crop → PIL → open_clip's preprocess → encode_image, one crop at a time."""
    with torch.inference_mode():
        text = normalize(model.encode_text(tokenizer([TEXT]).to(device)).float(), dim=-1)[0]
        scores = []
        for crop in masked_pil_crops(image, instances, rows):
            x = preprocess(crop).unsqueeze(0).to(device, dtype)
            scores.append(normalize(model.encode_image(x).float(), dim=-1)[0] @ text)
        return torch.stack(scores).cpu().numpy()


def pil_batched_baseline(model, preprocess, tokenizer, image, instances: Instances, rows: list[int], device, dtype):
    """Ultralytics' FastSAM way: the same PIL preprocessing per crop, then one batched encode_image."""
    with torch.inference_mode():
        text = normalize(model.encode_text(tokenizer([TEXT]).to(device)).float(), dim=-1)[0]
        x = torch.stack([preprocess(crop) for crop in masked_pil_crops(image, instances, rows)]).to(device, dtype)
        return (normalize(model.encode_image(x).float(), dim=-1) @ text).cpu().numpy()


def masked_pil_crops(image: np.ndarray, instances: Instances, rows: list[int]):
    """Box crops with the pixels outside the mask black (ultralytics' FastSAM), as RGB PIL images."""
    for start in range(0, len(rows), MASK_CHUNK):  # same memory bound as ours
        chunk = rows[start : start + MASK_CHUNK]
        for row, mask in zip(chunk, instances.masks(chunk), strict=True):  # one mask per row
            x1, y1, x2, y2 = (int(v) for v in instances.boxes[row])
            x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
            crop = image[y1:y2, x1:x2] * mask[y1:y2, x1:x2, None]
            yield Image.fromarray(np.ascontiguousarray(crop[..., ::-1]))


def timed(run, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N")
    parser.add_argument("--model", default="ViT-B-32", help="an open_clip model name (random weights)")
    parser.add_argument("--weights", default=str(SHARED / "models/yolov8n-seg-int8dq.pt"), help="the segmenter")
    parser.add_argument(
        "--clips",
        nargs="+",
        default=[str(SHARED / "media/videos/01_dog.mp4"), str(SHARED / "media/videos/bedroom.mp4")],
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[10, 50, 200], help="instances scored per call")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats; medians are reported")
    args = parser.parse_args()
    quiet_ultralytics()
    device = resolve_device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32  # what load_clip picks

    settings = SegmenterSettings(weights=args.weights, device=str(device), conf=0.05, max_det=300)
    segmenter = UltralyticsSegmenter(settings)
    frames = [first_frame(Path(c)) for c in args.clips]
    found = [
        segmenter.segment([Frame(f, Path(c).stem, 0, 0.0, 0.0)])[0] for f, c in zip(frames, args.clips, strict=True)
    ]
    # the frame with the most instances
    image, instances = max(zip(frames, found, strict=True), key=lambda pair: len(pair[1]))

    precision = "fp16" if dtype == torch.float16 else "fp32"
    model, _, preprocess = open_clip.create_model_and_transforms(
        args.model, pretrained=None, device=device, precision=precision
    )
    model.eval()
    tokenizer = open_clip.get_tokenizer(args.model)
    ours = {crop: ClipTextScorer.from_model(model, tokenizer, crop, dtype) for crop in ("masked", "box")}
    methods = {
        "a": lambda rows: per_crop_baseline(model, preprocess, tokenizer, image, instances, rows, device, dtype),
        "a2": lambda rows: pil_batched_baseline(model, preprocess, tokenizer, image, instances, rows, device, dtype),
        "masked": lambda rows: ours["masked"].similarities(image, instances, rows, TEXT),
        "box": lambda rows: ours["box"].similarities(image, instances, rows, TEXT),
    }

    print(f"machine: {machine(device)}")
    print(
        f"CLIP {args.model} with random weights (pretrained=None): timings do not depend on the weights' values; "
        f"{str(dtype).replace('torch.', '')} on {device}"
    )
    print(
        "instances: "
        + ", ".join(
            f"{Path(c).name} frame 0 ({f.shape[1]}x{f.shape[0]}): {len(i)}"
            for c, f, i in zip(args.clips, frames, found, strict=True)
        )
        + f"; scoring the frame with {len(instances)}, rows repeated past that"
    )
    for run in methods.values():  # warm-up: first calls allocate, and ours caches the text
        run(list(range(min(4, len(instances)))))

    print(
        f"{'crops':>5} | {'a. per-crop':>12} | {'a2. PIL+batch':>13} | {'b. ours masked':>14} | "
        f"{'b. ours box':>11} | {'masked/a':>8} | {'box/a':>6}   (crops/s)"
    )
    for count in args.counts:
        rows = [i % len(instances) for i in range(count)]
        seconds = {name: [] for name in methods}
        for _ in range(args.rounds):  # interleaved, so drift on a noisy machine hits every method alike
            for name, run in methods.items():
                seconds[name].append(timed(functools.partial(run, rows), device))
        rate = {name: count / statistics.median(s) for name, s in seconds.items()}
        print(
            f"{count:>5} | {rate['a']:>12.1f} | {rate['a2']:>13.1f} | {rate['masked']:>14.1f} | "
            f"{rate['box']:>11.1f} | {rate['masked'] / rate['a']:>7.2f}x | {rate['box'] / rate['a']:>5.2f}x"
        )
    print(f"after the runs: {load()}")


if __name__ == "__main__":
    main()
