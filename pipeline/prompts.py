"""The prompt stage: pick, among one frame's instances, the object the user means.

Selection follows the FastSAM paper (and its reference code):
- box: the instance whose mask has the highest IoU with the box region;
- points: instances whose mask contains a foreground point, minus those containing a background
  point; what remains is merged into one target.
Text prompts (CLIP) are a later addition; `Prompt.text` is where they will come in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import Instances, Prompt
from ..errors import PromptError


@dataclass(frozen=True)
class Selection:
    """Rows of the frame's Instances that form the target; `track_row` is the one the tracker follows."""

    rows: tuple[int, ...]
    track_row: int


def check_fits(prompt: Prompt, height: int, width: int) -> None:
    """PromptError when a point or box lies outside a height×width frame."""
    for x, y in prompt.points:
        if not (0 <= x < width and 0 <= y < height):
            raise PromptError(f"point {x:g},{y:g} lies outside the {width}x{height} frame")
    for x1, y1, x2, y2 in prompt.boxes:
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise PromptError(f"box {x1:g},{y1:g},{x2:g},{y2:g} lies outside the {width}x{height} frame")


def _rows_overlapping(instances: Instances, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    b = instances.boxes
    return np.flatnonzero((b[:, 0] < x2) & (b[:, 2] > x1) & (b[:, 1] < y2) & (b[:, 3] > y1))


_CHUNK = 16  # candidate masks rendered at once: bounds memory at 16×H×W on the prompt frame


def _chunks(rows: np.ndarray):
    for start in range(0, len(rows), _CHUNK):
        yield rows[start : start + _CHUNK]


def select_by_box(instances: Instances, box: np.ndarray) -> int | None:
    """Row of the instance whose mask best overlaps the box (IoU of mask and box region), or None."""
    x1, y1, x2, y2 = box
    c1, r1, c2, r2 = int(np.floor(x1)), int(np.floor(y1)), int(np.ceil(x2)), int(np.ceil(y2))
    best_row, best_iou = None, 0.0
    for rows in _chunks(_rows_overlapping(instances, x1, y1, x2, y2)):
        masks = instances.masks(rows)
        inside = masks[:, r1:r2, c1:c2].sum(axis=(1, 2))
        union = (r2 - r1) * (c2 - c1) + masks.sum(axis=(1, 2)) - inside
        iou = inside / np.maximum(union, 1)
        if iou.max() > best_iou:
            best_row, best_iou = int(rows[int(np.argmax(iou))]), float(iou.max())
    return best_row


def select_by_points(instances: Instances, points: np.ndarray, labels: np.ndarray) -> tuple[int, ...]:
    """Rows whose masks contain a foreground point and no background point."""
    xs, ys = points[:, 0], points[:, 1]
    chosen: list[int] = []
    for rows in _chunks(_rows_overlapping(instances, xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)):
        hits = instances.masks(rows)[:, ys.astype(int), xs.astype(int)]  # rows × points
        keep = hits[:, labels == 1].any(axis=1) & ~hits[:, labels == 0].any(axis=1)
        chosen.extend(int(r) for r in rows[keep])
    return tuple(chosen)


def select(prompt: Prompt, instances: Instances) -> Selection:
    """The target chosen by `prompt` among `instances`; PromptError when nothing fits."""
    height, width = instances.image_shape
    check_fits(prompt, height, width)
    if prompt.text:
        raise PromptError("text prompts are not supported yet: use a box or points")
    if len(prompt.boxes):
        if len(prompt.boxes) > 1 or len(prompt.points):
            raise PromptError("give one box, or points, not several boxes or a box with points")
        row = select_by_box(instances, prompt.boxes[0])
        if row is None:
            raise PromptError(f"no instance overlaps the box on frame {prompt.frame}")
        return Selection((row,), row)
    if not np.any(prompt.labels == 1):
        raise PromptError("point prompts need at least one foreground point (label 1)")
    rows = select_by_points(instances, prompt.points, prompt.labels)
    if not rows:
        raise PromptError(f"no instance contains the foreground point(s) on frame {prompt.frame}")
    # FastSAM merges every selected instance into one mask; a video target has to be one instance
    # from the next frame on, so the tracker follows the largest of them.
    areas = instances.masks(list(rows)).sum(axis=(1, 2))
    return Selection(rows, rows[int(np.argmax(areas))])
