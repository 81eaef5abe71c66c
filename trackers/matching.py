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
