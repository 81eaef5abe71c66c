"""What the tracker's camera motion and network appearance cost a frame: `ByteTracker.update` against today's.

    .venv/bin/python bench/tracker_cost.py [--video PATH] [--size 1280x720] [--frames 60]
        [--repeats 7] [--targets 10] [--weights PATH.pt] [--segment-repeats 2]

The issue's bar: the tracker with both parts costs at most 4 ms a frame more than today's at
1280×720 with 10 tracks, and nothing when neither part is on. Today's tracker is bytetrack with
`appearance: colour` (colour histograms, for re-acquisition only) and `camera_motion: false`.

The clip's first `--frames` frames are decoded (PyAV) and resized to `--size` (OpenCV, bilinear)
when they are not that size already. The default clip, vtest.avi (people crossing a square,
768×576, stretched to 1280×720), is the one in ../shared/media with 10 or more instances a frame:
the 1280×720 clips there have fewer (01_dog 2-8, 02_cups 4-11 with a median of 6,
05_default_juggle 2). Each frame is segmented by the real model on the CPU, twice with one loaded
network: by a segmenter built with `features=True` (instances with lazy descriptors) and by one
without; both sets of instances are kept in memory, and the segmentation is not part of the
tracker's figures. On frame 0, the `--targets` highest-scoring instances become targets
(`TargetChange.only`); every other confident instance starts a plain track, as in the pipeline.
The tracker's figure is the wall time of `update(instances, None, image)` on every later frame,
for five configurations:

- today, on instances from a segmenter without features: today's pipeline, the baseline;
- neither part on (today's settings) on instances with features: what carrying them costs;
- camera motion only; network appearance only; both (the new default).

Descriptors are lazy (`Instances.embeddings` computes them on request, and the tracker's
`FrameLooks` keeps them for one `update` only), so their computation is inside the timed calls,
on every repeat: a counting pass (untimed) checks that a second run over the same instances
computes as many descriptors as the first, and the per-repeat means are printed to show that
repeats do not get cheaper. Each repeat runs every configuration once with a fresh tracker, in
an order rotated from one repeat to the next, so that a machine that slows mid-run slows every
configuration. A frame's time is its median over the repeats; the table gives the mean, median
and 90th percentile over frames of those, in milliseconds, and the mean's difference from the
baseline measured in the same run. Tracks and targets are the mean per frame of live tracks and
of targets matched to an instance.

The segmenter's feature capture (a hook that keeps the P3 map) is timed on the same frames:
`segment` with and without features, alternately, `--segment-repeats` times over the clip, and
the median of the per-frame differences.

The tracker runs alone here, OpenCV with its default threads; in the pipeline it runs beside the
network's forward pass. Figures vary between machines and runs: compare within one run only.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from fastsam_stream.core import Frame, Instances, TargetChange, TrackState
from fastsam_stream.pipeline import embeddings
from fastsam_stream.pipeline.segmenter import SegmenterSettings, UltralyticsSegmenter, load_engine, resolve_device
from fastsam_stream.trackers.bytetrack import ByteTracker, ByteTrackerSettings

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@dataclass(frozen=True)
class Config:
    """One tracker configuration and the instances it runs on."""

    label: str
    appearance: str
    camera_motion: bool
    features: bool  # instances from the segmenter built with features=True

    def tracker(self) -> ByteTracker:
        settings = ByteTrackerSettings(appearance=self.appearance, camera_motion=self.camera_motion)
        return ByteTracker(settings)


CONFIGS = (
    Config("today (segmenter without features)", "colour", False, False),
    Config("neither part on", "colour", False, True),
    Config("camera motion only", "colour", True, True),
    Config("network appearance only", "features", False, True),
    Config("both (the new default)", "features", True, True),
)


def decode(path: Path, count: int, size: tuple[int, int]) -> tuple[list[np.ndarray], tuple[int, int]]:
    """The clip's first `count` frames as BGR arrays of `size` (width, height), and the clip's own size."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) == count:
                break
    native = (frames[0].shape[1], frames[0].shape[0])
    if native != size:
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in frames]
    return frames, native


def segment_all(
    frames: list[np.ndarray], plain: UltralyticsSegmenter, featured: UltralyticsSegmenter, repeats: int
) -> tuple[list[Instances], list[Instances], list[float], list[float]]:
    """Both segmenters on every frame, alternating which goes first; the first pass's instances and every call's ms."""
    kept_plain, kept_featured = [], []
    off_ms, on_ms = [], []
    for image in frames[:2]:  # warm-up: the first calls allocate and pick kernels
        plain.segment([Frame(image, "bench", 0, 0.0, 0.0)])
        featured.segment([Frame(image, "bench", 0, 0.0, 0.0)])
    for repeat in range(repeats):
        for index, image in enumerate(frames):
            frame = Frame(image, "bench", index, 0.0, 0.0)
            order = [(plain, off_ms), (featured, on_ms)]
            if (index + repeat) % 2:
                order.reverse()
            for segmenter, times in order:
                start = time.perf_counter()
                instances = segmenter.segment([frame])[0]
                times.append((time.perf_counter() - start) * 1e3)
                if repeat == 0:
                    (kept_featured if segmenter is featured else kept_plain).append(instances)
    return kept_plain, kept_featured, off_ms, on_ms


def run_once(
    config: Config, instances: list[Instances], frames: list[np.ndarray], targets: tuple[int, ...]
) -> tuple[list[float], int, int]:
    """A fresh tracker over the clip: each update's ms after frame 0, and live tracks and matched targets summed."""
    tracker = config.tracker()
    tracker.update(instances[0], TargetChange.only(*targets), frames[0])
    times, live, matched = [], 0, 0
    gc.collect()
    for current, image in zip(instances[1:], frames[1:], strict=True):
        start = time.perf_counter()
        tracks = tracker.update(current, None, image)
        times.append((time.perf_counter() - start) * 1e3)
        live += sum(t.state != TrackState.REMOVED for t in tracks)
        matched += sum(t.is_target and t.row is not None for t in tracks)
    return times, live, matched


def count_descriptors(instances: list[Instances], frames: list[np.ndarray], targets: tuple[int, ...]) -> list[int]:
    """Descriptor rows computed by two passes of the new default over the same instances (untimed)."""
    computed = [0]
    original = embeddings.PooledEmbeddings.compute

    def counting(self: embeddings.PooledEmbeddings) -> np.ndarray:
        computed[0] += len(self)
        return original(self)

    embeddings.PooledEmbeddings.compute = counting
    try:
        counts = []
        for _ in range(2):
            computed[0] = 0
            run_once(CONFIGS[-1], instances, frames, targets)
            counts.append(computed[0])
    finally:
        embeddings.PooledEmbeddings.compute = original
    return counts


def size_arg(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=SHARED / "media" / "videos" / "vtest.avi")
    parser.add_argument("--size", type=size_arg, default=(1280, 720), help="WxH the frames are resized to")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=7, help="runs of every tracker configuration")
    parser.add_argument("--targets", type=int, default=10, help="targets made on frame 0, by score")
    parser.add_argument("--weights", default=str(SHARED / "models" / "yolov8n-seg-int8dq.pt"))
    parser.add_argument("--segment-repeats", type=int, default=2, help="passes timing segment with/without features")
    args = parser.parse_args()

    frames, native = decode(args.video, args.frames, args.size)
    settings = SegmenterSettings(weights=args.weights, device="cpu", imgsz=640)
    engine = load_engine(settings, resolve_device("cpu"))  # one network for both segmenters
    plain = UltralyticsSegmenter(settings, engine=engine)
    featured = UltralyticsSegmenter(settings, engine=engine, features=True)
    resized = f", resized from {native[0]}x{native[1]}" if native != args.size else ""
    print(f"{args.video.name}: {len(frames)} frames of {args.size[0]}x{args.size[1]}{resized}")
    print(f"{Path(args.weights).name} on the CPU ({platform.processor() or platform.machine()}), imgsz 640")

    start = time.perf_counter()
    kept_plain, kept_featured, off_ms, on_ms = segment_all(frames, plain, featured, args.segment_repeats)
    print(f"segmented in {time.perf_counter() - start:.0f} s")
    same = all(
        len(a) == len(b) and np.array_equal(a.boxes, b.boxes) for a, b in zip(kept_plain, kept_featured, strict=True)
    )
    counts = [len(i) for i in kept_featured]
    confident = [int((i.scores >= ByteTrackerSettings().high_score).sum()) for i in kept_featured]
    print(
        f"instances a frame: {min(counts)}-{max(counts)}, median {statistics.median(counts):g} "
        f"({statistics.median(confident):g} confident); with and without features the same boxes: {same}"
    )
    print(
        f"embeddings carried: without features {sum(i.has_embeddings for i in kept_plain)} frames, "
        f"with {sum(i.has_embeddings for i in kept_featured)}"
    )
    order = np.argsort(-kept_featured[0].scores, kind="stable")
    targets = tuple(int(r) for r in order[: args.targets])
    fewer = f" (frame 0 has only {len(targets)} instances)" if len(targets) < args.targets else ""
    print(f"{len(targets)} targets on frame 0{fewer}, scores {kept_featured[0].scores[order[0]]:.2f}-", end="")
    print(f"{kept_featured[0].scores[order[len(targets) - 1]]:.2f}")

    counted = count_descriptors(kept_featured, frames, targets)
    print(
        f"descriptors computed by the new default: {counted[0] / (len(frames) - 1):.1f} a frame; "
        f"a second pass over the same instances computed {counted[1]} rows to the first's {counted[0]}"
    )

    times: dict[Config, list[list[float]]] = {c: [] for c in CONFIGS}
    tracks: dict[Config, tuple[int, int]] = {}
    for repeat in range(args.repeats):
        shift = repeat % len(CONFIGS)
        for config in CONFIGS[shift:] + CONFIGS[:shift]:
            instances = kept_featured if config.features else kept_plain
            ms, live, matched = run_once(config, instances, frames, targets)
            times[config].append(ms)
            tracks[config] = (live, matched)

    updates = len(frames) - 1
    base = float(np.mean(np.median(times[CONFIGS[0]], axis=0)))
    print(f"\nByteTracker.update, ms per frame over {updates} frames (each frame's median of {args.repeats} repeats)")
    head = (
        f"{'configuration':<36} {'appearance':>10} {'camera':>6} {'mean':>6} {'median':>6} {'p90':>6} {'vs today':>8}"
    )
    print(f"{head} {'tracks':>6} {'targets':>7}")
    for config in CONFIGS:
        per_frame = np.median(times[config], axis=0)
        mean = float(np.mean(per_frame))
        live, matched = tracks[config]
        print(
            f"{config.label:<36} {config.appearance:>10} {'on' if config.camera_motion else 'off':>6} "
            f"{mean:>6.2f} {np.median(per_frame):>6.2f} {np.percentile(per_frame, 90):>6.2f} {mean - base:>+8.2f} "
            f"{live / updates:>6.1f} {matched / updates:>7.1f}"
        )
    print("\nmean ms per frame of each repeat, in the order run (repeats getting cheaper would show caching)")
    for config in CONFIGS:
        print(f"{config.label:<36} " + " ".join(f"{np.mean(ms):6.2f}" for ms in times[config]))

    difference = np.array(on_ms) - np.array(off_ms)
    print(f"\nsegment(), ms per frame over {len(off_ms)} calls each (passes: {args.segment_repeats}, alternating)")
    print(f"{'features':<9} {'median':>7} {'p90':>7}")
    for label, ms in (("off", off_ms), ("on", on_ms)):
        print(f"{label:<9} {statistics.median(ms):>7.1f} {np.percentile(ms, 90):>7.1f}")
    spread = f"{np.percentile(difference, 25):+.1f} to {np.percentile(difference, 75):+.1f}"
    print(f"on − off, the median of per-frame differences: {np.median(difference):+.1f} ms (quartiles {spread})")


if __name__ == "__main__":
    main()
