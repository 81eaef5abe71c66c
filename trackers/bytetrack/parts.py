"""Target step (a), parts: a target the segmenter cut into pieces is the union of those pieces.

A rider and the bike, a dancer's legs and torso: the target is the union of the instances that
complete it inside its predicted box.

ByteTrack matches one detection to one track; a prompted object that comes out as two or four
instances would then be half followed and half started as new tracks. Here the pieces lying
(mostly) inside the target's predicted box join it while they make the union fit that box better
(trackers.matching.complete_within), and once it is split, every other piece inside the union is
a piece of it too.
"""

from __future__ import annotations

import numpy as np

from ..matching import box_iou, complete_within, share_inside, union_box

FILLS_ITS_BOX = 0.7  # a matched instance this close to its predicted box is whole: it needs no parts
# An instance this close to another (non-target) track's predicted box is that track's object, not
# a part: after a target and a neighbour merged and parted, the neighbour goes back to its own track.
CLAIMED_IOU = 0.5


def fills_its_box(boxes: np.ndarray, row: int | None, predicted: np.ndarray) -> bool:
    """Whether the matched instance alone is the whole target (so no parts are looked for).

    Args:
        boxes: This frame's instance boxes, xyxy.
        row: The row the target matched, or None.
        predicted: The target's predicted box.

    Returns:
        True when `row` matched and its box has IoU ≥ FILLS_ITS_BOX with the prediction.
    """
    return row is not None and box_iou(boxes[row], predicted)[0, 0] >= FILLS_ITS_BOX


def claimed(row: int, boxes: np.ndarray, others: np.ndarray) -> bool:
    """Whether instance `row` lies where another track predicts its object.

    Args:
        row: A row of `boxes`.
        boxes: This frame's instance boxes, xyxy.
        others: The predicted boxes of the tracks that are not targets (K×4, K may be 0).

    Returns:
        True when its IoU with one of them is at least CLAIMED_IOU.
    """
    return len(others) > 0 and bool(box_iou(boxes[row], others).max() >= CLAIMED_IOU)


def take_parts(
    predicted: np.ndarray, boxes: np.ndarray, row: int | None, free: list[int], part_inside: float, min_iou: float
) -> tuple[int | None, tuple[int, ...]]:
    """The rows that make up the target in its predicted box this frame.

    With a matched row, the free instances that complete it join it. Without one (no single piece
    matched: the object split), the pieces alone may make the target, if their union matches the
    prediction as well as one instance would have to (`min_iou`).

    Args:
        predicted: The target's predicted box.
        boxes: This frame's instance boxes, xyxy.
        row: The row the target matched, or None.
        free: Rows no track holds yet (and no other track claims).
        part_inside: Share of a part's box that must lie in the box it completes.
        min_iou: The least IoU of the pieces' union with the prediction, when no row matched.

    Returns:
        (main row or None, the other rows of the object; () when whole or not found).
    """
    parts = complete_within(boxes, [] if row is None else [row], predicted, free, part_inside)
    if row is None:
        fits = parts and box_iou(union_box(boxes[parts]), predicted)[0, 0] >= min_iou
        row, parts = (parts[0], parts[1:]) if fits else (None, [])
    if parts:  # split: every other piece inside the object's box is a piece of it too, not a new object
        whole = union_box(boxes[[row, *parts]])
        rest = [r for r in free if r != row and r not in parts]
        if rest:
            inside = share_inside(boxes[rest], whole)
            parts += [r for r, share in zip(rest, inside, strict=True) if share >= part_inside]
    return row, tuple(parts)
