"""`fastsam-stream eval davis` and `eval sot` on ../shared/eval, for each part of the tracker on and off.

Issue #16 added two parts to the bytetrack tracker: appearance from the segmenter's own features
(`tracker.appearance: features`, against `colour`, the histogram it had before) and camera-motion
compensation (`tracker.camera_motion`). This runs the evaluation's own protocol
(fastsam_stream.evaluation.runner, as the `eval` command does) for the four combinations, with the
same segmenter results for all four: the network runs once per frame (with its features on,
which changes no box, score or mask), and its results are kept in memory for the other runs.

Run from the repository root (~5 min on 2 CPU cores, most of it the network's first pass):

    .venv/bin/python bench/tracker_parts_eval.py [--weights PATH] [--imgsz 640]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fastsam_stream.config import load_config
from fastsam_stream.core import Frame, Instances
from fastsam_stream.evaluation import runner
from fastsam_stream.evaluation.datasets import davis_sequences, sot_targets
from fastsam_stream.pipeline.segmenter import UltralyticsSegmenter, quiet_ultralytics

SHARED = Path(__file__).resolve().parents[2] / "shared"
PARTS = {
    "before #16 (colour, no camera motion)": {"appearance": "colour", "camera_motion": False},
    "camera motion only": {"appearance": "colour", "camera_motion": True},
    "features only": {"appearance": "features", "camera_motion": False},
    "both (the default)": {"appearance": "features", "camera_motion": True},
}


class KeptResults:
    """A segmenter that runs the network once per frame and hands back the kept result after that."""

    def __init__(self, segmenter: UltralyticsSegmenter) -> None:
        self.segmenter = segmenter
        self.device = segmenter.device
        self.kept: dict[tuple, Instances] = {}

    def segment(self, frames: Sequence[Frame]) -> list[Instances]:
        keys = [(f.source_id, f.index, f.image.shape) for f in frames]
        new = [f for f, key in zip(frames, keys, strict=True) if key not in self.kept]
        for frame, instances in zip(new, self.segmenter.segment(new) if new else [], strict=True):
            self.kept[(frame.source_id, frame.index, frame.image.shape)] = instances
        return [self.kept[key] for key in keys]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(SHARED / "models" / "yolov8n-seg-int8dq.pt"))
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--eval-root", default=str(SHARED / "eval"))
    args = parser.parse_args()
    quiet_ultralytics()
    root = Path(args.eval_root)
    model = {"weights": args.weights, "device": "cpu", "imgsz": args.imgsz}
    segmenter = None
    for label, tracker in PARTS.items():
        config = runner.evaluation_config(load_config(None, {"model": model, "tracker": tracker}))
        segmenter = segmenter or KeptResults(UltralyticsSegmenter(config.model, features=True))
        davis = runner.evaluate_davis(davis_sequences(root / "davis2016", None), config, segmenter, "box", None)
        sot = runner.evaluate_sot(sot_targets(root / "sot", None), config, segmenter, None)
        per_seq = " ".join(f"{name} {v['J&F']:.3f}" for name, v in davis["sequences"].items())
        per_target = " ".join(f"{name} {v['AUC']:.3f}" for name, v in sot["targets"].items())
        print(f"{label}: DAVIS mean J&F {davis['mean']['J&F']:.3f} ({per_seq})", flush=True)
        mean_auc = np.mean([v["AUC"] for v in sot["targets"].values()])
        print(f"{' ' * len(label)}  SOT mean AUC {mean_auc:.3f} ({per_target})", flush=True)


if __name__ == "__main__":
    main()
