"""ByteTrack's association (Zhang et al. 2022, Algorithm 1, lines 4-17).

Split the detections by score, match the confident ones to the tracks, then the low-score ones to
the tracks still unmatched that were seen last frame.

The second round is what ByteTrack adds to SORT: an occluded or blurred object often survives as
a low-score detection, which a single threshold would throw away with the background clutter. Only
tracks seen last frame take part in it (as in ByteTrack's code): a low-score box near a track lost
for a while is more likely clutter than the object.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import numpy as np

from ...core import Instances
from ..matching import box_iou, linear_assignment
from .settings import ByteTrackerSettings
from .track import KalmanTrack

FORBIDDEN = 1e6  # a cost no match takes (lapjv wants finite costs)
# (tracks, candidate rows, their IoU, the round's min_iou) → tracks × rows added to 1 − IoU (inf: never).
ExtraCost = Callable[[Sequence[KalmanTrack], np.ndarray, np.ndarray, float], np.ndarray]


def split_by_score(
    instances: Instances, taken: Collection[int], settings: ByteTrackerSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 1, lines 4-8: split the free rows into confident and low-score ones.

    Confident: at least `high_score`; low-score: in [low_score, high_score). Rows under `low_score`
    are in neither: they are background.

    Args:
        instances: This frame's instances.
        taken: Rows already held (by targets, which associate first).
        settings: The score thresholds.

    Returns:
        (high rows, low rows), ascending.
    """
    scores = instances.scores
    free = np.array([r not in taken for r in range(len(instances))], bool)
    high = np.flatnonzero(free & (scores >= settings.high_score))
    low = np.flatnonzero(free & (scores >= settings.low_score) & (scores < settings.high_score))
    return high, low


def associate(
    tracks: Sequence[KalmanTrack],
    instances: Instances,
    taken: Collection[int],
    settings: ByteTrackerSettings,
    frame: int,
    extra_cost: ExtraCost | None = None,
) -> dict[int, int]:
    """Algorithm 1, lines 12-17: the first association round, then the second.

    The first matches the confident instances (above `min_iou`), the second the low-score ones
    (above `low_min_iou`) to the tracks still unmatched that were seen on the frame before `frame`.

    Args:
        tracks: The tracks to match, their Kalman boxes already predicted to this frame.
        instances: This frame's instances.
        taken: Rows no track here may take.
        settings: Thresholds, and whether mask IoU joins the cost.
        frame: This frame's index (a track seen last frame has `last_seen == frame - 1`).
        extra_cost: Adds to both rounds' costs (targets' appearance, looks.py); None: IoU alone.

    Returns:
        Track id → row, for the tracks matched.
    """
    high, low = split_by_score(instances, taken, settings)
    matched = match_round(tracks, instances, high, settings.min_iou, settings.match_masks, extra_cost)
    recent = [t for t in tracks if t.id not in matched and t.last_seen == frame - 1]
    matched.update(match_round(recent, instances, low, settings.low_min_iou, settings.match_masks, extra_cost))
    return matched


def match_round(
    tracks: Sequence[KalmanTrack],
    instances: Instances,
    rows: np.ndarray,
    min_iou: float,
    match_masks: bool = False,
    extra_cost: ExtraCost | None = None,
) -> dict[int, int]:
    """One round: the Hungarian assignment on 1 − IoU of the predicted boxes and the `rows`' boxes.

    Pairs under `min_iou` are left unmatched.

    Args:
        tracks: The tracks to match.
        instances: This frame's instances.
        rows: The candidate rows.
        min_iou: The least IoU of a match.
        match_masks: Average box IoU with mask IoU (the predicted box standing for the track's mask).
        extra_cost: A term added to 1 − IoU (appearance); pairs it makes cost over 1 − min_iou stay unmatched.

    Returns:
        Track id → row, for the tracks matched.
    """
    if not tracks or len(rows) == 0:
        return {}
    iou = box_iou(np.array([t.box for t in tracks]), instances.boxes[rows])
    if match_masks and instances.has_masks:
        iou = (iou + mask_iou(tracks, instances, rows, iou)) / 2
    cost = 1.0 - iou
    if extra_cost is not None:
        cost = np.minimum(cost + extra_cost(tracks, rows, iou, min_iou), FORBIDDEN)
    pairs, _, _ = linear_assignment(cost, cost_limit=1.0 - min_iou)
    return {tracks[t].id: int(rows[r]) for t, r in pairs}


def mask_iou(tracks: Sequence[KalmanTrack], instances: Instances, rows: np.ndarray, box_iou_: np.ndarray) -> np.ndarray:
    """Mask IoU of each track's predicted box region with each candidate's mask, at 1/4 resolution.

    The track has no mask of its own here, so its predicted box stands for it: the cost then
    prefers the instance that fills the box over one that merely overlaps it. Candidates that
    overlap no track's box are not rendered (their mask IoU is 0 anyway).

    Args:
        tracks: The tracks (rows of the result).
        instances: This frame's instances.
        rows: The candidate rows (columns of the result).
        box_iou_: Their box IoU, tracks × rows.

    Returns:
        Tracks × rows mask IoU.
    """
    out = np.zeros_like(box_iou_)
    candidates = np.flatnonzero(box_iou_.max(axis=0) > 0)
    if len(candidates) == 0:
        return out
    masks = instances.masks(rows[candidates])[:, ::4, ::4]
    h, w = masks.shape[1:]
    for t, track in enumerate(tracks):
        region = np.zeros((h, w), bool)
        x1, y1, x2, y2 = (track.box / 4).round().astype(int)
        region[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = True
        inter = (masks & region).sum(axis=(1, 2))
        union = masks.sum(axis=(1, 2)) + region.sum() - inter
        out[t, candidates] = inter / np.maximum(union, 1)
    return out
