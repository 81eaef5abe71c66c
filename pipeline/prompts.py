"""The prompt stage: pick, among one frame's instances, the object(s) the user means.

Selection follows the FastSAM paper (and its reference code) where it has an answer:
- box: the instance whose mask has the highest IoU with the box region; several boxes give
  several targets;
- points: instances whose mask contains a foreground point, minus those containing a background
  point; what remains is merged into one target;
- text: each candidate's crop is scored against the text by CLIP (a `TextScorer`, see
  pipeline/clip.py); the most similar instance is the target (or the `top_k` most similar, or
  every one at least `min_similarity` similar).
Added here: a mask prompt (highest mask IoU, as video-object-segmentation benchmarks seed an
object), background points that veto candidates of a box or text prompt, and text restricted to
a box (only instances mostly inside it are scored).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ..core import Instances, Prompt
from ..errors import PromptError
from ..sources.redact import redact_url
from ..trackers.matching import complete_within, share_inside

log = logging.getLogger(__name__)

# Text restricted to a box scores the instances with at least this share of their box inside it.
INSIDE_BOX_SHARE = 0.5
# A box prompt's target takes the parts with at least this share of their box inside the box.
PART_INSIDE_BOX = 0.8


class TextScorer(Protocol):
    """What a text prompt needs: a score of each candidate instance against the text (pipeline/clip.py's CLIP scorer).

    A protocol, so this module never imports CLIP; tests and other models can stand in for it.
    """

    def similarities(self, image: np.ndarray, instances: Instances, rows: Sequence[int], text: str) -> np.ndarray:
        """Cosine similarity of `text` with each of `rows` (frame `image`, BGR), in the order of `rows`."""
        ...


@dataclass(frozen=True)
class Selection:
    """One target: rows of the frame's Instances that form it; `track_row` is the one the tracker follows."""

    rows: tuple[int, ...]
    track_row: int


def read_mask(path: str | Path) -> np.ndarray:
    """A mask prompt from an image file (PNG, JPEG, ...).

    Nonzero pixels, in any colour channel, are the object (an alpha channel is ignored: an opaque
    black background is still background).

    Args:
        path: The image file.

    Returns:
        H×W bool, the image's size.

    Raises:
        PromptError: The file is missing, is not an image, or has no nonzero pixel.
    """
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if Path(path).is_file() else None
    if image is None:
        raise PromptError(f"cannot read mask image {path}: not found or not an image")
    mask = image[..., :3].any(axis=2) if image.ndim == 3 else image > 0
    if not mask.any():
        raise PromptError(f"mask image {path} is empty (every pixel is 0)")
    return mask


def check_source(source_id: str | None, source_ids: Sequence[str]) -> None:
    """PromptError when a prompt names a source that is not among `source_ids` (None: every source)."""
    if source_id is not None and source_id not in source_ids:
        raise PromptError(
            f"the prompt is for source {redact_url(source_id)!r}, but the sources are {', '.join(source_ids)}"
        )


def check_fits(prompt: Prompt, height: int, width: int) -> None:
    """PromptError when a point, box or mask does not fit a height×width frame (a box partly inside does)."""
    fit_to_frame(prompt, height, width)


def fit_to_frame(prompt: Prompt, height: int, width: int) -> tuple[Prompt, tuple[str, ...]]:
    """The prompt made to fit a height×width frame, and a note for each box that had to be clipped.

    A box reaching past the frame's edge (a client counting the last pixel inclusively, a box
    dragged off the picture) is clipped to the frame: what the user drew inside the frame is
    what they mean. A point names one pixel, so one outside the frame names none.

    Args:
        prompt: The prompt, in source pixels.
        height: The frame's height.
        width: The frame's width.

    Returns:
        The prompt (itself when nothing changed) and one line per clipped box, e.g. "box 0,0,177,145
        reaches past the 176x144 frame: clipped to 0,0,176,144".

    Raises:
        PromptError: A point outside the frame, a box with nothing inside it, or a mask of another size.
    """
    for x, y in prompt.points:
        if not (0 <= x < width and 0 <= y < height):
            raise PromptError(f"point {x:g},{y:g} lies outside the {width}x{height} frame")
    if prompt.mask is not None and prompt.mask.shape != (height, width):
        mh, mw = prompt.mask.shape
        raise PromptError(f"the mask prompt is {mw}x{mh} but the frame is {width}x{height}")
    if not len(prompt.boxes):
        return prompt, ()
    clipped = np.clip(prompt.boxes, 0, [width, height, width, height]).astype(np.float32)
    notes = []
    for box, inside in zip(prompt.boxes, clipped, strict=True):
        shown = ",".join(f"{v:g}" for v in box)
        if inside[2] <= inside[0] or inside[3] <= inside[1]:
            raise PromptError(f"box {shown} lies outside the {width}x{height} frame: no part of it is inside")
        if not np.array_equal(box, inside):
            notes.append(
                f"box {shown} reaches past the {width}x{height} frame: clipped to {','.join(f'{v:g}' for v in inside)}"
            )
    if not notes:
        return prompt, ()
    return replace(prompt, boxes=clipped), tuple(notes)


def _rows_overlapping(instances: Instances, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    b = instances.boxes
    return np.flatnonzero((b[:, 0] < x2) & (b[:, 2] > x1) & (b[:, 1] < y2) & (b[:, 3] > y1))


_CHUNK = 16  # candidate masks rendered at once: bounds memory at 16×H×W on the prompt frame


def _chunks(rows: np.ndarray):
    for start in range(0, len(rows), _CHUNK):
        yield rows[start : start + _CHUNK]


def _best_iou(instances: Instances, rows: np.ndarray, region: np.ndarray, r1: int, c1: int) -> tuple[int | None, float]:
    """Row (of `rows`) whose mask has the highest IoU with `region`, a bool array placed at (r1, c1)."""
    r2, c2 = r1 + region.shape[0], c1 + region.shape[1]
    area = int(region.sum())
    best_row, best_iou = None, 0.0
    for chunk in _chunks(rows):
        masks = instances.masks(chunk)
        inside = (masks[:, r1:r2, c1:c2] & region).sum(axis=(1, 2))
        iou = inside / np.maximum(area + masks.sum(axis=(1, 2)) - inside, 1)
        if iou.max() > best_iou:
            best_row, best_iou = int(chunk[int(np.argmax(iou))]), float(iou.max())
    return best_row, best_iou


def select_by_box(instances: Instances, box: np.ndarray, candidates: np.ndarray | None = None) -> int | None:
    """Row of the instance whose mask best overlaps the box (IoU of mask and box region), or None."""
    x1, y1, x2, y2 = box
    c1, r1, c2, r2 = int(np.floor(x1)), int(np.floor(y1)), int(np.ceil(x2)), int(np.ceil(y2))
    rows = _restrict(_rows_overlapping(instances, x1, y1, x2, y2), candidates)
    return _best_iou(instances, rows, np.ones((r2 - r1, c2 - c1), bool), r1, c1)[0]


def select_by_mask(instances: Instances, mask: np.ndarray) -> int | None:
    """Row of the instance whose mask has the highest IoU with `mask` (frame-sized bool), or None."""
    ys, xs = np.nonzero(mask)
    r1, r2, c1, c2 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    rows = _rows_overlapping(instances, c1, r1, c2, r2)
    return _best_iou(instances, rows, mask[r1:r2, c1:c2], r1, c1)[0]


def rows_holding(instances: Instances, points: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Rows × points bool: which of `rows` (all when None) have a mask holding each point."""
    rows = np.arange(len(instances)) if rows is None else rows
    hits = np.zeros((len(rows), len(points)), bool)
    if len(points) == 0 or len(rows) == 0:
        return hits
    xs, ys = points[:, 0].astype(int), points[:, 1].astype(int)
    boxes = instances.boxes[rows]
    near = (
        (boxes[:, None, 0] <= xs + 1)
        & (boxes[:, None, 2] >= xs)
        & (boxes[:, None, 1] <= ys + 1)
        & (boxes[:, None, 3] >= ys)
    )
    candidates = np.flatnonzero(near.any(axis=1))  # positions in `rows` whose box is near a point
    for chunk in _chunks(candidates):
        hits[chunk] = instances.masks(rows[chunk])[:, ys, xs]
    return hits


def select_by_points(instances: Instances, points: np.ndarray, labels: np.ndarray) -> tuple[int, ...]:
    """Rows whose masks contain a foreground point and no background point."""
    hits = rows_holding(instances, points)
    keep = hits[:, labels == 1].any(axis=1) & ~hits[:, labels == 0].any(axis=1)
    return tuple(int(r) for r in np.flatnonzero(keep))


def rows_inside(instances: Instances, box: np.ndarray, share: float = INSIDE_BOX_SHARE) -> np.ndarray:
    """Rows with at least `share` of their box's area inside `box`."""
    return np.flatnonzero(share_inside(instances.boxes, box) >= share)


def pick_by_similarity(similarities: np.ndarray, top_k: int | None, min_similarity: float | None) -> list[int]:
    """Positions of the chosen scores, best first.

    They are the `top_k` highest (default 1), or with `min_similarity` every one at least that
    similar (at most `top_k` when given).
    """
    order = np.argsort(-similarities, kind="stable")
    if min_similarity is not None:
        order = order[similarities[order] >= min_similarity]
    limit = top_k if top_k is not None else (len(order) if min_similarity is not None else 1)
    return [int(i) for i in order[:limit]]


def _restrict(rows: np.ndarray, candidates: np.ndarray | None) -> np.ndarray:
    return rows if candidates is None else np.intersect1d(rows, candidates)


def select(
    prompt: Prompt, instances: Instances, image: np.ndarray | None = None, scorer: TextScorer | None = None
) -> tuple[Selection, ...]:
    """The targets chosen by `prompt` among `instances`, one Selection each.

    Args:
        prompt: The prompt; a mask prompt wins over the rest, then text or boxes, then points.
        instances: The prompt frame's instances.
        image: The frame (H×W×3 BGR); text prompts need it.
        scorer: Scores crops against a text; text prompts need it.

    Returns:
        One Selection per target.

    Raises:
        PromptError: Nothing fits, the prompt does not fit the frame (a box partly outside is
            clipped to it, with a warning logged: see fit_to_frame), or a text prompt lacks the
            image or the scorer.
    """
    height, width = instances.image_shape
    prompt, clipped = fit_to_frame(prompt, height, width)
    for note in clipped:
        log.warning("%s", note)
    if prompt.mask is not None:
        row = select_by_mask(instances, prompt.mask)
        if row is None:
            raise PromptError(f"no instance overlaps the mask prompt on frame {prompt.frame}")
        return (Selection((row,), row),)
    if prompt.text or len(prompt.boxes):
        # Background points veto the instances holding them (FastSAM's label 0, applied to candidates).
        vetoed = (
            rows_holding(instances, prompt.points).any(axis=1) if len(prompt.points) else np.zeros(len(instances), bool)
        )
        candidates = np.flatnonzero(~vetoed)
        if prompt.text:
            return _select_by_text(prompt, instances, candidates, image, scorer)
        return _select_by_boxes(prompt, instances, candidates)
    rows = select_by_points(instances, prompt.points, prompt.labels)
    if not rows:
        raise PromptError(f"no instance contains the foreground point(s) on frame {prompt.frame}")
    # FastSAM merges every selected instance into one mask: one target. Trackers follow the largest
    # (`track_row`); those that keep parts (bytetrack) keep the others with it while they fit.
    areas = instances.masks(list(rows)).sum(axis=(1, 2))
    return (Selection(rows, rows[int(np.argmax(areas))]),)


def _select_by_boxes(prompt: Prompt, instances: Instances, candidates: np.ndarray) -> tuple[Selection, ...]:
    chosen: list[int] = []
    for i, box in enumerate(prompt.boxes):
        row = select_by_box(instances, box, candidates)
        label = f"box {i + 1} ({', '.join(f'{v:g}' for v in box)})" if len(prompt.boxes) > 1 else "the box"
        if row is None:
            raise PromptError(f"no instance overlaps {label} on frame {prompt.frame}")
        if row in chosen:
            raise PromptError(
                f"{label} selects the same instance as box {chosen.index(row) + 1}: give each object its own box"
            )
        chosen.append(row)
    # An object the segmenter cut into parts (a rider and the bike) fills the box only with all of
    # them: the parts lying inside the box that make the union fit it better join the target.
    others = [r for r in candidates.tolist() if r not in chosen]
    return tuple(
        Selection((row, *complete_within(instances.boxes, [row], box, others, PART_INSIDE_BOX)), row)
        for row, box in zip(chosen, prompt.boxes, strict=True)  # one chosen row per box, or PromptError above
    )


def _select_by_text(
    prompt: Prompt, instances: Instances, candidates: np.ndarray, image: np.ndarray | None, scorer: TextScorer | None
) -> tuple[Selection, ...]:
    if scorer is None or image is None:
        raise PromptError("text prompts need CLIP: load it with the pipeline (clip settings / --clip-weights)")
    if len(prompt.boxes):
        candidates = np.intersect1d(candidates, rows_inside(instances, prompt.boxes[0]))
    if len(candidates) == 0:
        raise PromptError(f"no instance to score against {prompt.text!r} on frame {prompt.frame}")
    similarities = np.asarray(scorer.similarities(image, instances, candidates.tolist(), prompt.text), np.float32)
    picked = pick_by_similarity(similarities, prompt.top_k, prompt.min_similarity)
    if not picked:
        raise PromptError(
            f"no instance is at least {prompt.min_similarity:g} similar to {prompt.text!r} on frame {prompt.frame} "
            f"(best {similarities.max():.3f})"
        )
    return tuple(Selection((int(candidates[i]),), int(candidates[i])) for i in picked)
