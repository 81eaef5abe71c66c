"""What any tracker could score on ../shared/eval with this segmenter: an oracle picks the best instances each frame.

A tracker only chooses among the instances the segmenter gives: it cannot score more than a
tracker that knows the ground truth and picks, on every frame, the instance (or union of
instances) closest to it. This measures that ceiling with the evaluation's own metrics and
protocol (`fastsam-stream eval`: DAVIS J&F over all frames but the first and the last, OTB
success AUC with the first frame's box given), so the tracker's scores can be read against it:

- SOT: each frame's box is the instance box with the highest IoU with the ground-truth box (the
  ground truth itself on frame 0, as the protocol gives it);
- DAVIS, single: the instance mask with the highest IoU with the ground-truth mask;
- DAVIS, union: instance masks added greedily (those most inside the ground truth first) while
  they raise the IoU: what a tracker that merges parts perfectly would output.

Run from the repository root (takes ~4 min on 2 CPU cores: the network runs on every frame):

    .venv/bin/python bench/eval_ceiling.py [--weights ../shared/models/yolov8n-seg-int8dq.pt] [--imgsz 640]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fastsam_stream.core import Frame
from fastsam_stream.evaluation.datasets import davis_sequences, sot_targets
from fastsam_stream.evaluation.metrics import (
    boundary_f_measure,
    davis_sequence_scores,
    region_similarity,
    success_curve,
)
from fastsam_stream.evaluation.runner import read_image
from fastsam_stream.pipeline.segmenter import SegmenterSettings, UltralyticsSegmenter, quiet_ultralytics
from fastsam_stream.trackers.matching import box_iou

SHARED = Path(__file__).resolve().parents[2] / "shared"


def sot_ceiling(segmenter: UltralyticsSegmenter, root: Path) -> dict[str, float]:
    """Per OTB target: the success AUC of the best instance box on every frame."""
    scores = {}
    for target in sot_targets(root, None):
        gt = np.asarray(target.boxes, np.float64)
        files = sorted(Path(target.images).glob("*.jpg"))[: len(gt)]
        picked = [gt[0]]
        for index, path in enumerate(files[1:], start=1):
            instances = segmenter.segment([Frame(read_image(path), target.name, index, 0.0, 0.0)])[0]
            x, y, w, h = gt[index]
            truth = np.array([x - 1, y - 1, x - 1 + w, y - 1 + h])  # 1-based xywh → 0-based xyxy
            if len(instances) == 0:
                picked.append(np.zeros(4))
                continue
            best = instances.boxes[int(box_iou(truth, instances.boxes)[0].argmax())]
            picked.append(np.array([best[0] + 1, best[1] + 1, best[2] - best[0], best[3] - best[1]]))
        scores[target.name] = float(success_curve(np.array(picked), gt).mean())
    return scores


def best_union(masks: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Instance masks added, those most inside the truth first, while each raises the IoU."""
    inside = (masks & truth).sum(axis=(1, 2)) / np.maximum(masks.sum(axis=(1, 2)), 1)
    union, best = np.zeros_like(truth), 0.0
    for row in np.argsort(-inside):
        candidate = union | masks[row]
        score = region_similarity(candidate, truth)
        if score > best:
            union, best = candidate, score
    return union


def davis_ceiling(segmenter: UltralyticsSegmenter, root: Path) -> dict[str, dict[str, float]]:
    """Per DAVIS sequence: J&F of the best single instance mask and of the best union, every frame."""
    scores = {}
    for seq in davis_sequences(root, None):
        files = sorted(Path(seq.images).glob("*.jpg"))
        single = ([1.0], [1.0])  # frame 0 is not scored (davis_sequence_scores drops it)
        union = ([1.0], [1.0])
        for index, path in enumerate(files[1:], start=1):
            truth = seq.mask(index)
            instances = segmenter.segment([Frame(read_image(path), seq.name, index, 0.0, 0.0)])[0]
            masks = instances.masks() if len(instances) else np.zeros((0, *truth.shape), bool)
            if len(masks):
                iou = [region_similarity(m, truth) for m in masks]
                one, many = masks[int(np.argmax(iou))], best_union(masks, truth)
            else:
                one = many = np.zeros_like(truth)
            for kept, mask in ((single, one), (union, many)):
                kept[0].append(region_similarity(mask, truth))
                kept[1].append(boundary_f_measure(mask, truth))
        scores[seq.name] = {
            "single": davis_sequence_scores(*single)["J&F"],
            "union": davis_sequence_scores(*union)["J&F"],
        }
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(SHARED / "models" / "yolov8n-seg-int8dq.pt"))
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--eval-root", default=str(SHARED / "eval"))
    args = parser.parse_args()
    quiet_ultralytics()
    segmenter = UltralyticsSegmenter(SegmenterSettings(weights=args.weights, device="cpu", imgsz=args.imgsz))
    root = Path(args.eval_root)
    davis = davis_ceiling(segmenter, root / "davis2016")
    print(f"{'DAVIS sequence':16s} {'single J&F':>10s} {'union J&F':>10s}")
    for name, row in davis.items():
        print(f"{name:16s} {row['single']:10.3f} {row['union']:10.3f}")
    for kind in ("single", "union"):
        print(f"DAVIS mean J&F ceiling ({kind}): {np.mean([r[kind] for r in davis.values()]):.3f}")
    sot = sot_ceiling(segmenter, root / "sot")
    for name, auc in sot.items():
        print(f"SOT {name:12s} AUC ceiling {auc:.3f}")
    print(f"SOT mean AUC ceiling: {np.mean(list(sot.values())):.3f}")


if __name__ == "__main__":
    main()
