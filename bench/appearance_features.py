"""Which of the segmenter's own features tell a target from the other instances near it.

    .venv/bin/python bench/appearance_features.py [--root ../shared/eval] [--weights PATH.pt]
        [--max-frames 120] [--seq NAME ...] [--device cpu] [--imgsz 640]

The real model runs on the dev sequences of ../shared/eval: the SOT targets (Car4, Jogging.1,
Jogging.2; OTB boxes, x,y,w,h 1-based) and the DAVIS 2016 sequences (each frame's mask made a
box), read with `evaluation.datasets`. `--seq` picks some by name (a target such as Jogging.1, a
SOT sequence such as Jogging for both of its targets, or a DAVIS sequence); `--max-frames` keeps
the first N frames of each. A folder of frames shared by several targets (Jogging) is segmented
once. A forward pre-hook on the Segment head keeps its inputs, the neck's P3, P4 and P5 maps.

On each frame, the target is the instance whose box has the best IoU with the ground truth, if at
least 0.6 (else the frame is skipped); its rivals are the other instances whose centre lies within
3 ground-truth box diagonals of the target's and whose box overlaps the truth by less than 0.3 (a
piece or a near-copy of the target is no rival). For each candidate descriptor, every instance of
the frame gets a unit vector, and cosine similarity compares them:

- colour: the tracker's hue-saturation histogram of the mask (trackers/appearance.py), square-
  rooted, so that the cosine is the Bhattacharyya coefficient: it ranks as the tracker's
  1 − Bhattacharyya distance does;
- coef: the instance's 32 mask coefficients;
- proto: the mask prototypes (stride 4) averaged under the instance's mask;
- p3, p4, p5: the neck's maps (strides 8, 16, 32) averaged under the mask, at the map's stride;
- a "-c" suffix: the same after subtracting the map's spatial mean from every cell (the
  activations are mostly positive, and a shared offset makes every pair look alike);
- ships: `Instances.embeddings`, the descriptor the tracker uses (pipeline/embeddings.py: p3-c,
  pooled box by box on the CPU). Its agreement with p3-c here is printed as a check.

Masks are `ProtoMasks.low_res()` (prototype resolution, cropped to the box), pooled to each map's
stride as the share of every cell they cover.

Figures, per sequence, their mean over sequences (each sequence weighs the same, however few
frames it scored), and over all scored frames pooled:

- rank-1: the share of scored frames (frames with the target and at least one rival) on which
  the target's own instance is more similar to the reference than every rival is (a tie loses:
  on a grey clip such as Car4 every colour histogram is the same, and colour scores 0). The reference
  is (a) the target's descriptor on the first frame where it was found ("first"), or (b) a
  `trackers.gallery.Gallery` that each found view of the target joins after it is scored, as the
  tracker's does (`looks.remember`: an exemplar when whole, confident and apart from others);
- margin: the median over scored frames of own similarity − the best rival's. Margins compare
  frames and sequences of one descriptor; across descriptors the scales differ.

The figures depend on the model: compare descriptors within one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention

from fastsam_stream.core import Frame, Instances
from fastsam_stream.evaluation.datasets import davis_sequences, sot_targets
from fastsam_stream.pipeline.segmenter import SegmenterSettings, UltralyticsSegmenter
from fastsam_stream.sources.folder import FolderSource
from fastsam_stream.trackers import appearance
from fastsam_stream.trackers.bytetrack.looks import APART_IOU
from fastsam_stream.trackers.bytetrack.reacquire import seen_whole
from fastsam_stream.trackers.bytetrack.settings import ByteTrackerSettings
from fastsam_stream.trackers.gallery import Gallery
from fastsam_stream.trackers.matching import box_iou

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FOUND_IOU = 0.6  # the target's instance: the best box IoU with the truth, at least this
PIECE_IOU = 0.3  # an instance overlapping the truth this much is a piece of the target, not a rival
NEAR_DIAGONALS = 3.0  # rivals are within this many truth box diagonals of the target
KINDS = ("colour", "coef", "proto", "proto-c", "p3", "p3-c", "p4", "p4-c", "p5", "p5-c", "ships")
REFERENCES = ("first", "gallery")


@dataclass(frozen=True)
class Clip:
    """One folder of frames and the targets annotated on it: (name, N×4 xyxy boxes, NaN where absent)."""

    name: str
    frames: tuple[Path, ...]
    targets: tuple[tuple[str, np.ndarray], ...]


def clips(root: Path, names: list[str] | None, max_frames: int) -> list[Clip]:
    """The SOT and DAVIS dev sequences under `root` (all, or those named), cut to `max_frames`."""
    found = []
    by_folder: dict[Path, list] = {}
    for target in sot_targets(root / "sot"):
        x, y, w, h = target.boxes.T
        boxes = np.stack([x - 1, y - 1, x - 1 + w, y - 1 + h], axis=1)  # OTB 1-based x,y,w,h → xyxy
        boxes[(w <= 0) | (h <= 0)] = np.nan
        by_folder.setdefault(target.images, []).append((target.name, target.sequence, boxes))
    for folder, targets in by_folder.items():
        chosen = tuple((n, b[:max_frames]) for n, s, b in targets if names is None or n in names or s in names)
        if chosen:
            frames = tuple(FolderSource(folder).files)  # the order the readers and the pipeline use
            found.append(Clip(targets[0][1], frames[:max_frames], chosen))
    for seq in davis_sequences(root / "davis2016"):
        if names is not None and seq.name not in names:
            continue
        frames = seq.frames[:max_frames]
        found.append(
            Clip(seq.name, frames, ((seq.name, np.stack([mask_box(seq.mask(i)) for i in range(len(frames))])),))
        )
    return found


def mask_box(mask: np.ndarray) -> np.ndarray:
    """The xyxy box of a ground-truth mask (NaN when it is empty)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return np.full(4, np.nan)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


class NeckMaps:
    """Keeps the Segment head's inputs (P3, P4, P5) of the last forward pass."""

    def __init__(self, segmenter: UltralyticsSegmenter) -> None:
        model = getattr(segmenter.engine, "model", None)
        if model is None:
            raise SystemExit("this bench hooks a PyTorch model: pass --weights *.pt")
        self.maps: list[torch.Tensor] = []
        model.model[-1].register_forward_pre_hook(self._keep)

    def _keep(self, _module: object, inputs: tuple) -> None:
        self.maps = [m.detach() for m in inputs[0]]


def pool(fmap: torch.Tensor, masks: torch.Tensor, centred: bool) -> torch.Tensor:
    """Each mask's average of a C×h×w map, masks N×mh×mw at a finer stride (pooled to the map's)."""
    channels, height, width = fmap.shape
    factor = max(masks.shape[1] // height, 1)
    weights = F.avg_pool2d(masks[:, None], factor)[:, 0] if factor > 1 else masks
    weights = weights[:, :height, :width].reshape(len(masks), -1)
    weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1e-6)
    cells = fmap.float().reshape(channels, -1)
    if centred:
        cells = cells - cells.mean(dim=1, keepdim=True)
    return weights @ cells.T


def unit(vectors: torch.Tensor | np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


@torch.inference_mode()
def descriptors(instances: Instances, image: np.ndarray, maps: list[torch.Tensor]) -> dict[str, np.ndarray]:
    """Every candidate descriptor of every instance: kind → N×D unit vectors (zeros: none)."""
    proto_masks = instances._masks  # noqa: SLF001 - the prototypes and coefficients are what is measured
    low = proto_masks.low_res().float()
    protos = proto_masks.protos.float()
    out = {"coef": unit(proto_masks.coefficients.float()), "ships": instances.embeddings()}
    for name, fmap in (("proto", protos), ("p3", maps[0][0]), ("p4", maps[1][0]), ("p5", maps[2][0])):
        out[name] = unit(pool(fmap, low, centred=False))
        out[f"{name}-c"] = unit(pool(fmap, low, centred=True))
    colours = np.zeros((len(instances), appearance.HUE_BINS * appearance.SATURATION_BINS), np.float32)
    for row, (mask, box) in enumerate(zip(instances.masks(), instances.boxes, strict=True)):
        histogram = appearance.colour_histogram(image, mask, box)
        if histogram is not None:
            colours[row] = np.sqrt(histogram.reshape(-1))
    out["colour"] = colours
    return out


@dataclass
class Score:
    """One target's figures for one descriptor and reference: a win and a margin per scored frame."""

    wins: list[bool] = field(default_factory=list)
    margins: list[float] = field(default_factory=list)

    def add(self, own: float, rivals: np.ndarray) -> None:
        best = float(rivals.max())
        self.wins.append(own > best)
        self.margins.append(own - best)


@dataclass
class Target:
    """What one target has seen so far: its first descriptors and a gallery per kind, its figures."""

    name: str
    boxes: np.ndarray
    first: dict[str, np.ndarray] | None = None
    galleries: dict[str, Gallery] = field(default_factory=lambda: {k: Gallery() for k in KINDS})
    scores: dict[tuple[str, str], Score] = field(
        default_factory=lambda: {(k, r): Score() for k in KINDS for r in REFERENCES}
    )
    frames: int = 0  # frames with the truth given
    found: int = 0  # frames where its instance was found
    agreement: list[float] = field(default_factory=list)  # cosine of p3-c with the shipped descriptor


def observe(target: Target, index: int, instances: Instances, looks: dict[str, np.ndarray]) -> None:
    """Score frame `index` for one target, then let its view join the galleries."""
    truth = target.boxes[index]
    if np.isnan(truth).any():
        return
    target.frames += 1
    if not len(instances):
        return
    iou = box_iou(truth, instances.boxes)[0]
    own = int(iou.argmax())
    if iou[own] < FOUND_IOU:
        return
    target.found += 1
    target.agreement.append(float(looks["p3-c"][own] @ looks["ships"][own]))
    centres = (instances.boxes[:, :2] + instances.boxes[:, 2:]) / 2
    reach = NEAR_DIAGONALS * float(np.hypot(*(truth[2:] - truth[:2])))
    near = np.hypot(*(centres - (truth[:2] + truth[2:]) / 2).T) <= reach
    rivals = np.flatnonzero(near & (iou < PIECE_IOU))
    if target.first is None:
        target.first = {k: looks[k][own] for k in KINDS}
    elif len(rivals):
        for kind in KINDS:
            vectors = looks[kind]
            similarity = vectors[[own, *rivals]] @ target.first[kind]
            target.scores[(kind, "first")].add(float(similarity[0]), similarity[1:])
            similarity = target.galleries[kind].similarity(vectors[[own, *rivals]])
            target.scores[(kind, "gallery")].add(float(similarity[0]), similarity[1:])
    others = np.delete(instances.boxes, own, axis=0)
    clean = (
        (not len(others) or box_iou(instances.boxes[own], others).max() <= APART_IOU)
        and float(instances.scores[own]) >= ByteTrackerSettings().high_score
        and seen_whole(instances.boxes[own], instances.image_shape)
    )
    for kind in KINDS:
        target.galleries[kind].add(looks[kind][own], exemplar=clean)


def run_clip(
    clip: Clip, segmenter: UltralyticsSegmenter, neck: NeckMaps, targets: list[Target]
) -> Iterator[tuple[int, int]]:
    """Segment the clip's frames one by one and let each target score them; yields (done, total)."""
    for index, path in enumerate(clip.frames):
        image = cv2.imread(str(path))
        if image is None:
            raise SystemExit(f"cannot read {path}")
        instances = segmenter.segment([Frame(image, clip.name, index, 0.0, 0.0)])[0]
        looks = descriptors(instances, image, neck.maps) if len(instances) else {}
        for target in targets:
            observe(target, index, instances, looks)
        yield index + 1, len(clip.frames)


def figure_of(results: list[Score], figure: str) -> float | None:
    """Rank-1 (share of wins) or the median margin over the scored frames of `results`; None without any."""
    if figure == "rank1":
        wins = [w for r in results for w in r.wins]
        return float(np.mean(wins)) if wins else None
    margins = [m for r in results for m in r.margins]
    return statistics.median(margins) if margins else None


def table(title: str, targets: list[Target], reference: str, figure: str) -> None:
    """Sequences as rows, descriptors as columns; then the mean over sequences, and all frames pooled."""

    def cell(value: float | None) -> str:
        return f"{'-':>7}" if value is None else f"{value:>7.3f}" if figure == "rank1" else f"{value:>+7.3f}"

    print(f"\n{title}")
    print(f"{'sequence':<15} {'scored':>6} " + " ".join(f"{k:>7}" for k in KINDS))
    for target in targets:
        scored = len(target.scores[(KINDS[0], reference)].wins)
        row = [cell(figure_of([target.scores[(k, reference)]], figure)) for k in KINDS]
        print(f"{target.name:<15} {scored:>6} " + " ".join(row))
    means = []
    for kind in KINDS:
        values = [figure_of([t.scores[(kind, reference)]], figure) for t in targets]
        values = [v for v in values if v is not None]
        means.append(cell(float(np.mean(values)) if values else None))
    print(f"{'mean':<15} {'':>6} " + " ".join(means))
    total = sum(len(t.scores[(KINDS[0], reference)].wins) for t in targets)
    pooled = [cell(figure_of([t.scores[(k, reference)] for t in targets], figure)) for k in KINDS]
    print(f"{'all frames':<15} {total:>6} " + " ".join(pooled))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=SHARED / "eval", help="holds sot/ and davis2016/")
    parser.add_argument("--weights", default=str(SHARED / "models" / "yolov8n-seg-int8dq.pt"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--max-frames", type=int, default=120, help="the first N frames of each sequence")
    parser.add_argument("--seq", nargs="+", help="sequences or targets by name (default: all)")
    args = parser.parse_args()

    chosen = clips(args.root, args.seq, args.max_frames)
    named = {t for c in chosen for t, _ in c.targets} | {c.name for c in chosen}
    missing = sorted(set(args.seq or ()) - named)
    if missing or not chosen:
        parser.error(f"no sequence {', '.join(missing) or '(none chosen)'} under {args.root}")
    settings = SegmenterSettings(weights=args.weights, device=args.device, imgsz=args.imgsz)
    segmenter = UltralyticsSegmenter(settings, features=True)
    neck = NeckMaps(segmenter)
    print(
        f"{Path(args.weights).name} on {args.device}, imgsz {args.imgsz}; at most {args.max_frames} frames a sequence"
    )

    start = time.perf_counter()
    targets: list[Target] = []
    for clip in chosen:
        mine = [Target(name, boxes) for name, boxes in clip.targets]
        for done, total in run_clip(clip, segmenter, neck, mine):
            if sys.stderr.isatty():
                print(f"\r{clip.name}: {done}/{total} frames", end="", file=sys.stderr, flush=True)
        if sys.stderr.isatty():
            print(file=sys.stderr)
        targets += mine
    elapsed = time.perf_counter() - start

    frames = sum(len(c.frames) for c in chosen)
    print(f"{frames} frames segmented in {elapsed:.0f} s")
    print(f"\n{'target':<15} {'frames':>6} {'found':>6} {'p3-c·ships':>10}")
    for target in targets:
        agreement = f"{min(target.agreement):.3f}" if target.agreement else "-"
        print(f"{target.name:<15} {target.frames:>6} {target.found:>6} {agreement:>10}")
    print("(found: the best instance's box IoU with the truth ≥ 0.6; p3-c·ships: the least cosine between them)")
    table("rank-1 against the first frame's descriptor", targets, "first", "rank1")
    table("rank-1 against the gallery of the target's views", targets, "gallery", "rank1")
    table("median margin (own − best rival) against the first frame's descriptor", targets, "first", "margin")
    table("median margin (own − best rival) against the gallery", targets, "gallery", "margin")


if __name__ == "__main__":
    main()
