"""Box IoU and the Hungarian assignment (lap.lapjv) that every tracker here builds on."""

from __future__ import annotations

import lap
import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: (N×4, M×4) → N×M. Degenerate boxes have IoU 0 with everything."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def linear_assignment(cost: np.ndarray, cost_limit: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Minimum-cost matching of rows to columns, ignoring pairs that cost more than `cost_limit`.

    Returns (matches as (row, col) pairs, unmatched rows, unmatched cols).
    """
    rows, cols = cost.shape
    if rows == 0 or cols == 0:  # lapjv rejects empty matrices
        return [], list(range(rows)), list(range(cols))
    _, row_to_col, col_to_row = lap.lapjv(cost, extend_cost=True, cost_limit=cost_limit)
    matches = [(r, int(c)) for r, c in enumerate(row_to_col) if c >= 0]
    unmatched_rows = [r for r, c in enumerate(row_to_col) if c < 0]
    unmatched_cols = [c for c, r in enumerate(col_to_row) if r < 0]
    return matches, unmatched_rows, unmatched_cols


def union_box(boxes: np.ndarray) -> np.ndarray:
    """The smallest xyxy box holding every row of `boxes` (K×4, K ≥ 1)."""
    return np.concatenate([boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)])


def share_inside(boxes: np.ndarray, region: np.ndarray) -> np.ndarray:
    """For each xyxy box, the fraction of its area inside `region` (a degenerate box counts as outside)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(boxes[:, 2], region[2]) - np.maximum(boxes[:, 0], region[0]), 0, None)
    h = np.clip(np.minimum(boxes[:, 3], region[3]) - np.maximum(boxes[:, 1], region[1]), 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.divide(w * h, area, out=np.zeros(len(boxes)), where=area > 0)


def complete_within(
    boxes: np.ndarray,
    base: list[int],
    region: np.ndarray,
    candidates: list[int],
    inside: float = 0.8,
    min_gain: float = 0.02,
) -> list[int]:
    """Rows of `candidates` that, added to the `base` rows, make their union box fit `region` better.

    An object that the segmenter cuts into parts (a rider and the bike, a dancer's legs and
    torso) is the union of instances lying (mostly) inside the object's box. Greedy: the
    candidate that raises the union's IoU with `region` most is taken, while that gain is at
    least `min_gain`; only candidates with `inside` of their area in `region` are considered, so
    a neighbour reaching into the box is never taken (it would also enlarge the union past it).
    With no base rows, the candidate that best fits alone starts the union.
    """
    pool = [c for c in candidates if c not in base]
    if pool:
        pool = [c for c, share in zip(pool, share_inside(boxes[pool], region), strict=True) if share >= inside]
    chosen = list(base)
    best = float(box_iou(union_box(boxes[chosen]), region)[0, 0]) if chosen else 0.0
    while pool:
        gains = [float(box_iou(union_box(boxes[chosen + [c]]), region)[0, 0]) for c in pool]
        i = int(np.argmax(gains))
        if gains[i] - best < min_gain:
            break
        best = gains[i]
        chosen.append(pool.pop(i))
    return chosen[len(base) :]
