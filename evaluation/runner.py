"""Run the real pipeline on benchmark sequences and score what it outputs.

The pipeline is build_pipeline's, with the config's tracker and batching. This module owns the
protocol of each benchmark:

- DAVIS: prompt on frame 0 from its ground-truth mask (its box, its deepest pixel, or the mask
  itself); the prediction of frame i is `result.target_mask` (empty when the target is not found).
- SOT: a box prompt from frame 0's ground-truth box; the prediction of frame i is the target's
  box, also while it is lost (its last or predicted box, as OTB trackers always report a box),
  a zero box when there is no target at all; frame 0 reports the ground truth, as OTB and pysot
  do (a tracker's output on its initialisation frame is the box it was given).
- MOT: no prompt, every instance is tracked; MotSink writes the results in TrackEval's layout.

The segmenter is loaded once by the caller and shared by every sequence; frames/s is frames
over the wall time of the pipeline run (model load and one warm-up forward pass excluded).
A prompt that selects nothing does not stop the evaluation: that sequence scores as missed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from ..assemble import build_pipeline
from ..config import Config, PromptConfig
from ..core import EventKind, Frame, FrameResult, Prompt, SourceEvent
from ..errors import SourceError
from ..pipeline.segmenter import Segmenter
from ..sinks.mot import MotSink
from ..sources.folder import FolderSource
from .datasets import DAVIS_FPS, OTB_FPS, DavisSequence, MotSequence, SotTarget
from .metrics import (
    boundary_f_measure,
    davis_sequence_scores,
    mot_scores,
    precision_at,
    region_similarity,
    success_curve,
)

TRACKER_NAME = "fastsam-stream"  # the results folder's name in TrackEval's layout
Log = Callable[[str], None]


class _Collector:
    """A sink keeping `take(result)` for each frame, by frame index, and the prompts that failed."""

    def __init__(self, take: Callable[[FrameResult], object]) -> None:
        self.take = take
        self.by_frame: dict[int, object] = {}
        self.prompt_failures: list[str] = []

    def write(self, result: FrameResult) -> None:
        self.by_frame[result.frame.index] = self.take(result)

    def on_event(self, event: SourceEvent) -> None:
        if event.kind is EventKind.PROMPT_FAILED:
            self.prompt_failures.append(event.message)

    def close(self) -> None:
        pass


def evaluation_config(config: Config) -> Config:
    """The config without its sources and prompts: the evaluation brings both, per sequence."""
    return config.model_copy(update={"sources": [], "prompt": PromptConfig(), "prompts": []})


def open_frames(images: Path, source_id: str, fps: float, max_frames: int | None) -> FolderSource:
    """The sequence's frames as the pipeline's folder source, cut to the first `max_frames`."""
    source = FolderSource(images, fps=fps, source_id=source_id)
    if max_frames is not None and max_frames < source.frame_count:
        source.files = source.files[:max_frames]
        source.frame_count = max_frames
    return source


def read_image(path: Path) -> np.ndarray:
    """A benchmark image as the pipeline sees it: H×W×3 uint8 BGR.

    Args:
        path: The image file.

    Returns:
        The decoded image.

    Raises:
        SourceError: OpenCV cannot read the file.
    """
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"cannot read image {path}")
    return image


def warm_up(segmenter: Segmenter, image_path: Path) -> None:
    """One forward pass before any timing: the first one pays for kernel selection and allocation."""
    segmenter.segment([Frame(read_image(image_path), "warm-up", 0, 0.0, time.monotonic())])


def run_sequence(
    config: Config, segmenter: Segmenter, source: FolderSource, sinks: Sequence[object], prompt: Prompt | None = None
) -> tuple[int, float]:
    """(frames processed, seconds) for one pipeline run over `source`."""
    pipeline = build_pipeline(config, source=source, segmenter=segmenter, sinks=list(sinks))
    if prompt is not None:
        pipeline.add_prompt(prompt)  # not strict: a prompt that selects nothing leaves the target missing
    start = time.perf_counter()
    summary = pipeline.run()
    return summary.frames, time.perf_counter() - start


def prompt_from_mask(mask: np.ndarray, kind: str) -> Prompt:
    """The frame-0 prompt of a DAVIS run: the mask's box (xyxy, pixel edges), its deepest pixel, or the mask."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        raise SourceError("the first frame's annotation is empty: nothing to prompt with")
    if kind == "box":
        return Prompt(boxes=[[float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]])
    if kind == "point":
        return Prompt(points=[deepest_point(mask)], labels=[1])
    if kind == "mask":
        return Prompt(mask=mask)
    raise ValueError(f"unknown prompt kind {kind!r}")


def deepest_point(mask: np.ndarray) -> list[float]:
    """[x, y] of the mask pixel farthest from the background (cv2.distanceTransform).

    Of several equally deep pixels (a ridge), the one nearest the mask's centroid.
    """
    # Padded by one background pixel, so the image border counts as the object's edge.
    depth = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    rows, cols = np.nonzero(depth >= depth.max() - 1e-3)
    ys, xs = np.nonzero(mask)
    nearest = int(np.argmin((rows - ys.mean()) ** 2 + (cols - xs.mean()) ** 2))
    return [float(cols[nearest]), float(rows[nearest])]


def _describe(prompt: Prompt) -> str:
    if len(prompt.boxes):
        return "box " + ",".join(f"{v:g}" for v in prompt.boxes[0])
    if len(prompt.points):
        return "point " + ",".join(f"{v:g}" for v in prompt.points[0])
    return f"mask ({int(np.count_nonzero(prompt.mask))} px)"


def _packed_mask(result: FrameResult) -> tuple[np.ndarray, tuple[int, int]] | None:
    mask = result.target_mask
    return None if mask is None else (np.packbits(mask), mask.shape)  # 8× smaller while the run goes on


def _unpacked(kept: object, shape: tuple[int, int]) -> np.ndarray:
    if kept is None:
        return np.zeros(shape, bool)
    bits, kept_shape = kept
    return np.unpackbits(bits, count=int(np.prod(kept_shape))).reshape(kept_shape).astype(bool)


def davis_sequence(
    seq: DavisSequence, config: Config, segmenter: Segmenter, prompt_kind: str, max_frames: int | None = None
) -> dict:
    """One DAVIS sequence: the run, per-frame J and F, and the sequence scores."""
    source = open_frames(seq.images, seq.name, DAVIS_FPS, max_frames)
    first = seq.mask(0)
    if not first.any():
        raise SourceError(
            f"DAVIS sequence {seq.name}: the first frame's annotation is empty, so there is nothing to prompt with"
        )
    prompt = prompt_from_mask(first, prompt_kind)
    collector = _Collector(_packed_mask)
    frames, seconds = run_sequence(config, segmenter, source, [collector], prompt)
    j, f = [], []
    for index in range(source.frame_count):
        gt = first if index == 0 else seq.mask(index)
        pred = _unpacked(collector.by_frame.get(index), gt.shape)
        j.append(region_similarity(pred, gt))
        f.append(boundary_f_measure(pred, gt))
    found = sum(v is not None for v in collector.by_frame.values())
    return {
        **davis_sequence_scores(j, f),
        "frames": frames,
        "found": found,
        "seconds": seconds,
        "fps": frames / seconds if seconds > 0 else None,
        "prompt": _describe(prompt),
        "prompt_failed": collector.prompt_failures,
        "J_per_frame": [round(v, 4) for v in j],
        "F_per_frame": [round(v, 4) for v in f],
    }


def evaluate_davis(
    sequences: Sequence[DavisSequence],
    config: Config,
    segmenter: Segmenter,
    prompt_kind: str,
    max_frames: int | None = None,
    log: Log = lambda _: None,
) -> dict:
    """Every sequence, then the means over sequences (frames/s over all frames)."""
    warm_up(segmenter, sequences[0].frames[0])
    scores = {}
    for seq in sequences:
        scores[seq.name] = result = davis_sequence(seq, config, segmenter, prompt_kind, max_frames)
        log(f"{seq.name}: J&F {result['J&F']:.3f} over {result['frames']} frames ({result['fps']:.1f} frames/s)")
    mean = {key: float(np.mean([s[key] for s in scores.values()])) for key in ("J", "F", "J&F")}
    return {"sequences": scores, "mean": {**mean, **_throughput(scores.values())}}


def _throughput(runs: object) -> dict:
    runs = list(runs)
    frames, seconds = sum(r["frames"] for r in runs), sum(r["seconds"] for r in runs)
    return {"frames": frames, "seconds": seconds, "fps": frames / seconds if seconds > 0 else None}


def _target_box(result: FrameResult) -> tuple[tuple[float, ...], str] | None:
    target = result.target
    return None if target is None else (tuple(float(v) for v in target.box), target.state.value)


def _prompt_box(name: str, gt_xywh: np.ndarray, width: int, height: int) -> Prompt:
    """Frame 0's OTB box (1-based pixels) as a prompt box in the pipeline's 0-based pixel edges, inside the frame."""
    x, y, w, h = (float(v) for v in gt_xywh)
    if not (np.isfinite([x, y, w, h]).all() and w > 0 and h > 0):
        raise SourceError(f"SOT target {name}: the first frame's ground-truth box {x:g},{y:g},{w:g},{h:g} is not a box")
    x1, y1 = min(max(x - 1, 0.0), width - 1.0), min(max(y - 1, 0.0), height - 1.0)
    return Prompt(
        boxes=[[x1, y1, max(min(x - 1 + w, float(width)), x1 + 1), max(min(y - 1 + h, float(height)), y1 + 1)]]
    )


def _otb_boxes(kept: dict[int, object], count: int, first: np.ndarray) -> tuple[np.ndarray, int]:
    """Predicted OTB boxes (1-based x,y,w,h) for frames 0..count-1, and how many were tracked (not lost)."""
    boxes, tracked = np.zeros((count, 4)), 0
    for index in range(count):
        entry = kept.get(index)
        if entry is not None:
            (x1, y1, x2, y2), state = entry
            boxes[index] = (x1 + 1, y1 + 1, x2 - x1, y2 - y1)
            tracked += state == "tracked"
    boxes[0] = first  # OTB/pysot: the initialisation frame reports the box the tracker was given
    return boxes, tracked


def sot_target(target: SotTarget, config: Config, segmenter: Segmenter, max_frames: int | None = None) -> dict:
    """One OTB target: the run, per-frame boxes, success curve, AUC and precision at 20 px."""
    source = open_frames(target.images, target.name, OTB_FPS, max_frames)
    height, width = read_image(source.files[0]).shape[:2]
    prompt = _prompt_box(target.name, target.boxes[0], width, height)
    collector = _Collector(_target_box)
    frames, seconds = run_sequence(config, segmenter, source, [collector], prompt)
    gt = target.boxes[: source.frame_count]
    boxes, tracked = _otb_boxes(collector.by_frame, len(gt), gt[0])
    curve = success_curve(boxes, gt)
    return {
        "AUC": float(curve.mean()),
        "precision@20px": precision_at(boxes, gt, 20.0),
        "frames": frames,
        "tracked": tracked,
        "seconds": seconds,
        "fps": frames / seconds if seconds > 0 else None,
        "prompt": _describe(prompt),
        "prompt_failed": collector.prompt_failures,
        "success_curve": curve.tolist(),
        "boxes": np.round(boxes, 2).tolist(),
    }


def evaluate_sot(
    targets: Sequence[SotTarget],
    config: Config,
    segmenter: Segmenter,
    max_frames: int | None = None,
    log: Log = lambda _: None,
) -> dict:
    """Every OTB target, then the means over targets (frames/s over all frames).

    Args:
        targets: The targets to run, each from its first frame's ground-truth box.
        config: The run's settings, without sources or prompts (see evaluation_config).
        segmenter: The loaded model, shared by every target; warmed up once before the first.
        max_frames: Only the first N frames of each target.
        log: Called with one progress line per target.

    Returns:
        {"targets": each target's scores, "mean": the mean AUC and precision@20px, with the
        overall frames, seconds and frames/s}.
    """
    warm_up(segmenter, FolderSource(targets[0].images).files[0])
    scores = {}
    for target in targets:
        scores[target.name] = result = sot_target(target, config, segmenter, max_frames)
        log(
            f"{target.name}: AUC {result['AUC']:.3f}, precision@20px {result['precision@20px']:.3f} "
            f"over {result['frames']} frames ({result['fps']:.1f} frames/s)"
        )
    mean = {key: float(np.mean([s[key] for s in scores.values()])) for key in ("AUC", "precision@20px")}
    return {"targets": scores, "mean": {**mean, **_throughput(scores.values())}}


def write_cut_truth(seq: MotSequence, frames: int, folder: Path) -> None:
    """Write the sequence's gt.txt limited to frames 1..`frames`, and a seqinfo.ini saying so.

    Both go under folder/<seq>/: TrackEval's ground-truth layout, for exactly the frames that were run.
    """
    try:
        lines = seq.gt.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and int(float(line.split(",", 1)[0])) <= frames]
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SourceError(f"cannot read MOT ground truth {seq.gt}: {exc}") from None
    target = folder / seq.name
    (target / "gt").mkdir(parents=True, exist_ok=True)
    (target / "gt" / "gt.txt").write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    (target / "seqinfo.ini").write_text(
        f"[Sequence]\nname={seq.name}\nimDir={seq.images.name}\nframeRate={seq.fps:g}\nseqLength={frames}\n",
        encoding="utf-8",
    )


def evaluate_mot(
    sequences: Sequence[MotSequence],
    config: Config,
    segmenter: Segmenter,
    out: Path,
    max_frames: int | None = None,
    log: Log = lambda _: None,
) -> dict:
    """Track everything in each sequence and score the tracks with TrackEval.

    The tracks go to out/trackers/<name>/data/<seq>.txt and the ground truth of the frames run to
    out/gt/<seq>/.
    """
    warm_up(segmenter, FolderSource(sequences[0].images).files[0])
    tracker_folder, runs = out / "trackers" / TRACKER_NAME, {}
    for seq in sequences:
        source = open_frames(seq.images, seq.name, seq.fps, max_frames)
        results = tracker_folder / "data" / f"{seq.name}.txt"
        frames, seconds = run_sequence(config, segmenter, source, [MotSink(results)])
        write_cut_truth(seq, source.frame_count, out / "gt")
        runs[seq.name] = {
            "frames": frames,
            "seconds": seconds,
            "fps": frames / seconds if seconds > 0 else None,
            "frames_scored": source.frame_count,
            "seq_length": seq.length,
            "results": str(results),
        }
        log(f"{seq.name}: {frames} frames ({runs[seq.name]['fps']:.1f} frames/s)")
    scores = mot_scores(out / "gt", tracker_folder, {name: run["frames_scored"] for name, run in runs.items()})
    sequences_report = {name: {**scores[name], **run} for name, run in runs.items()}
    return {"sequences": sequences_report, "combined": {**scores["COMBINED"], **_throughput(runs.values())}}
