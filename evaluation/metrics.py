"""The scores, as the benchmarks' own toolkits define them.

Pure functions on arrays; no I/O but the TrackEval call, which reads MOTChallenge files.

DAVIS (davis-matlab `f_boundary.m`, fperazzi/davis `f_boundary.py`, davis2017-evaluation `metrics.py`):
- J, region similarity: mask IoU; two empty masks score 1.
- F, boundary F-measure: boundary maps by `seg2bmap` (a pixel is boundary when it differs from
  its right, bottom or bottom-right neighbour); each map dilated by a disk of radius
  ceil(bound_th × image diagonal) (8 px at 854×480); precision = share of predicted boundary
  pixels within the disk of a ground-truth one, recall the other way; F = 2PR/(P+R). No
  boundary in either: 1; in only one of them: 0.
  No thinning, as in every DAVIS toolkit (`bwmorph(…,'thin',inf)` belongs to the BSDS boundary
  benchmark, not to DAVIS). Checked once on the six sequences in ../shared with this pipeline's
  predictions: MATLAB's thinning would remove 25-33% of the seg2bmap pixels (its staircases
  are 4-connected) but move a sequence's F by at most 0.007 (one frame's by at most 0.026).
  The disk is DAVIS's, x² + y² ≤ r² (197 pixels at r = 8); OpenCV's MORPH_ELLIPSE of that size
  is another, wider shape (213 pixels), which would move a sequence's F by up to 0.004.
- Per sequence: the mean over every frame but the first and the last, as the DAVIS toolkits
  average (`[1:-1]`: the first frame is given; a sequence of 2 frames keeps its second).
  J&F = (J + F) / 2.

SOT (OTB, and pysot's `toolkit/utils/statistics.py`):
- IoU of x,y,w,h boxes as continuous rectangles. OTB's MATLAB code counts 1-based inclusive
  pixels (right = x + w − 1, then + 1), which gives the same intersection; centre offsets do
  not depend on the convention either, as long as both boxes share it.
- success(t) = share of frames with IoU > t (strictly: IoU 0 fails at t = 0), t in 0, 0.05, … 1
  (pysot's np.arange(0, 1.05, 0.05)); AUC = the mean of the 21 values (so at most 20/21).
- precision(d) = share of frames whose centre error is ≤ d px; the reported value is d = 20.
- Frames whose ground truth is invalid (w or h ≤ 0, or NaN) are left out of both numerator and
  denominator. OTB and pysot keep them in the denominator instead (failures for success,
  successes for precision, a known quirk); the sequences in ../shared have none.

MOTChallenge: HOTA (mean over the 19 localisation thresholds), DetA, AssA, MOTA, MOTP, IDF1,
IDSW… computed by TrackEval itself (`trackeval`, the [eval] extra), not re-implemented here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from ..errors import FastSAMStreamError

DAVIS_BOUND_TH = 0.008
SUCCESS_THRESHOLDS = np.linspace(0.0, 1.0, 21)
PRECISION_PX = 20.0


def _mask_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred) != 0, np.asarray(gt) != 0
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"masks must be two H×W arrays of one size, got {pred.shape} and {gt.shape}")
    return pred, gt


def region_similarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """DAVIS J: |pred ∩ gt| / |pred ∪ gt|; 1.0 when both are empty."""
    pred, gt = _mask_pair(pred, gt)
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else np.count_nonzero(pred & gt) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """seg2bmap: pixels that differ from their right, bottom or bottom-right neighbour.

    Outside the image counts as background, except that the last row and column compare along the
    edge only.
    """
    seg = np.asarray(mask) != 0
    right, below, diagonal = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    below[:-1, :] = seg[1:, :]
    diagonal[:-1, :-1] = seg[1:, 1:]
    edges = (seg ^ right) | (seg ^ below) | (seg ^ diagonal)
    edges[-1, :] = seg[-1, :] ^ right[-1, :]
    edges[:, -1] = seg[:, -1] ^ below[:, -1]
    edges[-1, -1] = False
    return edges


def boundary_tolerance(shape: tuple[int, int], bound_th: float = DAVIS_BOUND_TH) -> int:
    """The matching distance in pixels: bound_th × the image diagonal rounded up (bound_th ≥ 1: pixels)."""
    return math.ceil(bound_th) if bound_th >= 1 else math.ceil(bound_th * math.hypot(*shape))


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def boundary_f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float = DAVIS_BOUND_TH) -> float:
    """DAVIS F (see the module docstring)."""
    pred, gt = _mask_pair(pred, gt)
    pred_edges, gt_edges = boundary_map(pred), boundary_map(gt)
    n_pred, n_gt = np.count_nonzero(pred_edges), np.count_nonzero(gt_edges)
    if n_pred == 0 or n_gt == 0:
        return 1.0 if n_pred == n_gt else 0.0
    disk = _disk(boundary_tolerance(gt.shape, bound_th))
    near_pred = cv2.dilate(pred_edges.astype(np.uint8), disk) > 0
    near_gt = cv2.dilate(gt_edges.astype(np.uint8), disk) > 0
    precision = np.count_nonzero(pred_edges & near_gt) / n_pred
    recall = np.count_nonzero(gt_edges & near_pred) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def davis_frames_scored(values: Sequence[float]) -> np.ndarray:
    """The per-frame values a DAVIS sequence score averages: all but the first and the last."""
    values = np.asarray(values, np.float64)
    return values[1:-1] if len(values) > 2 else values[1:]


def davis_sequence_scores(j: Sequence[float], f: Sequence[float]) -> dict[str, float]:
    """{"J", "F", "J&F"} of one sequence from its per-frame J and F (NaN with fewer than 2 frames)."""
    j_kept, f_kept = davis_frames_scored(j), davis_frames_scored(f)
    mean_j = float(j_kept.mean()) if len(j_kept) else math.nan
    mean_f = float(f_kept.mean()) if len(f_kept) else math.nan
    return {"J": mean_j, "F": mean_f, "J&F": (mean_j + mean_f) / 2}


def _boxes(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be N×4 x,y,w,h, got shape {boxes.shape}")
    return boxes


def valid_boxes(gt_xywh: np.ndarray) -> np.ndarray:
    """Which ground-truth boxes count: finite, with w > 0 and h > 0."""
    gt = _boxes(gt_xywh)
    return np.isfinite(gt).all(axis=1) & (gt[:, 2] > 0) & (gt[:, 3] > 0)


def box_iou_xywh(a_xywh: np.ndarray, b_xywh: np.ndarray) -> np.ndarray:
    """Row-wise IoU of two N×4 x,y,w,h arrays (0 where the union is empty or a box is NaN)."""
    a, b = _boxes(a_xywh), _boxes(b_xywh)
    if a.shape != b.shape:
        raise ValueError(f"box arrays differ in length: {len(a)} and {len(b)}")
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
        h = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
        inter = np.clip(w, 0, None) * np.clip(h, 0, None)
        union = (
            np.clip(a[:, 2], 0, None) * np.clip(a[:, 3], 0, None)
            + np.clip(b[:, 2], 0, None) * np.clip(b[:, 3], 0, None)
            - inter
        )
        iou = np.where(union > 0, inter / union, 0.0)
    return np.nan_to_num(np.clip(iou, 0.0, 1.0), nan=0.0)


def center_errors(pred_xywh: np.ndarray, gt_xywh: np.ndarray) -> np.ndarray:
    """Distance between box centres per frame, in pixels.

    NaN where the ground truth is invalid, inf where the prediction is NaN.
    """
    pred, gt = _boxes(pred_xywh), _boxes(gt_xywh)
    if pred.shape != gt.shape:
        raise ValueError(f"box arrays differ in length: {len(pred)} and {len(gt)}")
    offset = (pred[:, :2] + pred[:, 2:] / 2) - (gt[:, :2] + gt[:, 2:] / 2)
    errors = np.nan_to_num(np.hypot(offset[:, 0], offset[:, 1]), nan=np.inf)
    return np.where(valid_boxes(gt), errors, np.nan)


def success_curve(
    pred_xywh: np.ndarray, gt_xywh: np.ndarray, thresholds: np.ndarray = SUCCESS_THRESHOLDS
) -> np.ndarray:
    """For each threshold t, the share of valid frames with IoU > t (NaN when no frame is valid)."""
    valid = valid_boxes(gt_xywh)
    iou = box_iou_xywh(pred_xywh, gt_xywh)[valid]
    thresholds = np.asarray(thresholds, np.float64)
    if not len(iou):
        return np.full(len(thresholds), np.nan)
    return (iou[None, :] > thresholds[:, None]).mean(axis=1)


def success_auc(pred_xywh: np.ndarray, gt_xywh: np.ndarray, thresholds: np.ndarray = SUCCESS_THRESHOLDS) -> float:
    """Area under the success curve: the mean of its values."""
    return float(success_curve(pred_xywh, gt_xywh, thresholds).mean())


def precision_at(pred_xywh: np.ndarray, gt_xywh: np.ndarray, pixels: float = PRECISION_PX) -> float:
    """Share of valid frames whose centre error is at most `pixels` (NaN when no frame is valid)."""
    errors = center_errors(pred_xywh, gt_xywh)
    errors = errors[~np.isnan(errors)]
    return float((errors <= pixels).mean()) if len(errors) else math.nan


MOT_FIELDS = {  # report name: (TrackEval metric, field)
    "HOTA": ("HOTA", "HOTA"),
    "DetA": ("HOTA", "DetA"),
    "AssA": ("HOTA", "AssA"),
    "LocA": ("HOTA", "LocA"),
    "MOTA": ("CLEAR", "MOTA"),
    "MOTP": ("CLEAR", "MOTP"),
    "IDSW": ("CLEAR", "IDSW"),
    "FP": ("CLEAR", "CLR_FP"),
    "FN": ("CLEAR", "CLR_FN"),
    "TP": ("CLEAR", "CLR_TP"),
    "IDF1": ("Identity", "IDF1"),
    "IDP": ("Identity", "IDP"),
    "IDR": ("Identity", "IDR"),
}


def require_trackeval():
    """The trackeval module, or a one-line error naming the extra that installs it."""
    try:
        import trackeval
    except ImportError:
        raise FastSAMStreamError("MOT metrics need TrackEval: install fastsam-stream with its [eval] extra") from None
    return trackeval


def benchmark_of(names: Sequence[str]) -> str:
    """TrackEval's benchmark name, which decides the distractor classes (MOT20 has one more)."""
    return "MOT20" if names and all(n.startswith("MOT20") for n in names) else "MOT17"


def mot_scores(gt_folder: Path, tracker_folder: Path, frames: Mapping[str, int]) -> dict[str, dict[str, float]]:
    """TrackEval's HOTA, CLEAR and Identity metrics for MOTChallenge pedestrian tracking.

    Ground truth: `gt_folder/<seq>/gt/gt.txt`; results: `tracker_folder/data/<seq>.txt` (the
    MOTChallenge 10-field format); `frames`: each sequence's frame count. Returns one dict of
    MOT_FIELDS per sequence, and TrackEval's combination over all of them under "COMBINED"
    (HOTA and IDF1 over the pooled counts, not a mean of the per-sequence values).
    """
    trackeval = require_trackeval()
    dataset = trackeval.datasets.MotChallenge2DBox(
        {
            "GT_FOLDER": str(gt_folder),
            "TRACKERS_FOLDER": str(Path(tracker_folder).parent),
            "TRACKERS_TO_EVAL": [Path(tracker_folder).name],
            "TRACKER_SUB_FOLDER": "data",
            "SEQ_INFO": dict(frames),
            "SKIP_SPLIT_FOL": True,
            "BENCHMARK": benchmark_of(list(frames)),
            "PRINT_CONFIG": False,
        }
    )
    metrics = [
        trackeval.metrics.HOTA({"PRINT_CONFIG": False}),
        trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
        trackeval.metrics.Identity({"PRINT_CONFIG": False}),
    ]
    names = [m.get_name() for m in metrics]
    tracker = Path(tracker_folder).name
    try:
        raw = {
            seq: trackeval.eval.eval_sequence(seq, dataset, tracker, ["pedestrian"], metrics, names)["pedestrian"]
            for seq in frames
        }
    except trackeval.utils.TrackEvalException as exc:
        raise FastSAMStreamError(f"TrackEval: {str(exc).strip().splitlines()[0]}") from None
    combined = {
        name: metric.combine_sequences({seq: res[name] for seq, res in raw.items()})
        for metric, name in zip(metrics, names, strict=True)
    }
    scores = {seq: _mot_fields(res) for seq, res in raw.items()}
    scores["COMBINED"] = _mot_fields(combined)
    return scores


def _mot_fields(result: Mapping[str, Mapping[str, object]]) -> dict[str, float]:
    """The report's fields from one TrackEval result; HOTA-family arrays are averaged over their alphas."""
    return {key: float(np.mean(result[metric][field])) for key, (metric, field) in MOT_FIELDS.items()}
