"""What targets look like to the network, and how that enters their matching and re-acquisition.

With `appearance: features`, each target keeps a gallery of the segmenter's own descriptors
(trackers/gallery.py, pipeline/embeddings.py). They enter the tracker in three places, as in
BoT-SORT, but by default only for targets (the objects a user asked to follow; every track with
`appearance_for: all`) and only for the instances that could match one, so a frame pays for a
handful of descriptors, not for every instance:

- association: an instance's appearance gates and refines its IoU cost with a target. It costs
  `appearance_weight` per unit of similarity it falls short of what the target usually scores
  against itself (`Gallery.usual`), and it never matches when it falls `appearance_gate` short.
  Relative to the target's own usual similarity, because what a descriptor's cosine means differs
  from one object to the next: look-alike joggers score 0.95 against each other, and 0.98 each
  against themselves;
- re-acquisition: a lost target takes back a candidate only if it falls no more than
  `reacquire_margin` short of its usual similarity, and of those, the one whose colours *and*
  descriptor fit best. Both, because each fails where the other holds: colour cannot tell players
  in one kit apart (nor anything in a grey video), and on ../shared/eval the descriptor of one
  jogger is 0.95 similar to her look-alike neighbour in another colour, where colour tells them
  apart at once;
- the gallery's update: each frame a target is matched, its descriptor joins the running mean;
  views where it is whole, confident and apart from other instances become exemplars.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...core import Instances
from ..gallery import Gallery
from ..matching import box_iou, share_inside
from . import reacquire
from .reacquire import seen_whole
from .settings import ByteTrackerSettings
from .track import KalmanTrack

APART_IOU = 0.1  # an exemplar's view overlaps no other instance more than this: nothing else is in it


class FrameLooks:
    """One frame's descriptors, computed once per row and only for the rows asked about.

    Args:
        instances: The frame's instances, with embeddings.
    """

    def __init__(self, instances: Instances) -> None:
        self.instances = instances
        self._by_row: dict[int, np.ndarray] = {}

    def of(self, rows: Sequence[int]) -> np.ndarray:
        """The rows' unit descriptors, K×D (computed now for the rows not asked about before)."""
        missing = sorted({int(r) for r in rows} - self._by_row.keys())
        if missing:
            for row, vector in zip(missing, self.instances.embeddings(missing), strict=True):
                self._by_row[row] = vector
        if not len(rows):
            return np.zeros((0, 0), np.float32)
        return np.stack([self._by_row[int(r)] for r in rows])


def frame_looks(instances: Instances, settings: ByteTrackerSettings) -> FrameLooks | None:
    """This frame's descriptors, when the settings ask for them and the segmenter gave them; else None (colour)."""
    if settings.appearance != "features" or not instances.has_embeddings:
        return None
    return FrameLooks(instances)


def ready(track: KalmanTrack) -> bool:
    """Whether the track knows what it usually looks like (two views seen): before that, position alone decides."""
    return track.gallery is not None and track.gallery.usual is not None


def association_cost(
    tracks: Sequence[KalmanTrack],
    rows: np.ndarray,
    iou: np.ndarray,
    min_iou: float,
    looks: FrameLooks,
    settings: ByteTrackerSettings,
) -> np.ndarray:
    """The appearance term added to 1 − IoU for each (track, row) that could match (IoU ≥ min_iou).

    Args:
        tracks: The tracks of the round (rows of `iou`).
        rows: The candidate rows (columns of `iou`).
        iou: Their box IoU, tracks × rows.
        min_iou: The round's least IoU: pairs under it cannot match, so need no descriptor.
        looks: This frame's descriptors.
        settings: appearance_weight and appearance_gate.

    Returns:
        Tracks × rows; 0 where appearance does not apply, inf where it forbids the match.
    """
    extra = np.zeros_like(iou)
    candidates = [np.flatnonzero(iou[t] >= min_iou) if ready(track) else [] for t, track in enumerate(tracks)]
    looks.of(rows[np.unique(np.concatenate([[], *candidates]).astype(int))])  # every descriptor needed, at once
    for t, track in enumerate(tracks):
        near = candidates[t]
        if len(near) == 0:
            continue
        shortfall = _shortfall(track, looks.of(rows[near]))
        extra[t, near] = np.where(
            shortfall > settings.appearance_gate, np.inf, settings.appearance_weight * np.maximum(shortfall, 0.0)
        )
    return extra


def passes_gate(track: KalmanTrack, row: int, looks: FrameLooks, settings: ByteTrackerSettings) -> bool:
    """Whether instance `row` may be the target by appearance (always, while the target's gallery is not ready)."""
    return not ready(track) or float(_shortfall(track, looks.of([row]))[0]) <= settings.appearance_gate


def _shortfall(track: KalmanTrack, descriptors: np.ndarray) -> np.ndarray:
    """How far each descriptor falls short of the target's usual similarity (≤ 0: as alike as usual).

    A zero descriptor (a mask too thin to cover one feature cell: a far, small object) says
    nothing about the instance: it is taken as alike as usual, so position and colour decide.
    """
    shortfall = track.gallery.usual - track.gallery.similarity(descriptors)
    return np.where(np.abs(descriptors).sum(axis=1) > 0, shortfall, 0.0)


def best_look(
    track: KalmanTrack,
    instances: Instances,
    rows: list[int],
    looks: FrameLooks,
    image: np.ndarray | None,
    settings: ByteTrackerSettings,
) -> int | None:
    """Re-acquisition: of the `rows` near the lost target, the one that looks most like it, if any looks enough like it.

    A candidate must be within `reacquire_margin` of the target's usual similarity and, when both
    have colours, at least `min_appearance` similar in colour. The best then has the highest colour
    similarity less `appearance_weight` × its shortfall (the descriptor alone without colours).

    Args:
        track: A lost target with a ready gallery.
        instances: This frame's instances.
        rows: The free rows near where it should be (reacquire.candidates).
        looks: This frame's descriptors.
        image: The frame (BGR) for colours, or None.
        settings: reacquire_margin, min_appearance, appearance_weight.

    Returns:
        The row, or None.
    """
    if not rows:
        return None
    shortfall = _shortfall(track, looks.of(rows))
    best, best_score = None, -np.inf
    for row, short in zip(rows, shortfall, strict=True):
        if short > settings.reacquire_margin:
            continue
        colour = reacquire.colour_similarity(track, instances, row, image)
        if colour is not None and colour < settings.min_appearance:
            continue
        score = (colour or 0.0) - settings.appearance_weight * float(short)
        if score > best_score:
            best, best_score = row, score
    return best


def remember(
    track: KalmanTrack, instances: Instances, row: int, looks: FrameLooks, settings: ByteTrackerSettings
) -> None:
    """A matched target's view joins its gallery; a clean one (whole, confident, alone) as an exemplar.

    Args:
        track: A target matched this frame (its `measured` box and `parts` set).
        instances: This frame's instances.
        row: Its main row.
        looks: This frame's descriptors.
        settings: high_score (a confident view).
    """
    if track.gallery is None:
        track.gallery = Gallery()
    track.gallery.add(looks.of([row])[0], exemplar=_clean_view(track, instances, row, settings))


def _clean_view(track: KalmanTrack, instances: Instances, row: int, settings: ByteTrackerSettings) -> bool:
    """Whether the target is seen whole, confident and apart from other objects (cheapest tests first)."""
    boxes = instances.boxes
    if track.parts or float(instances.scores[row]) < settings.high_score:
        return False
    if not seen_whole(boxes[row], instances.image_shape):
        return False
    others = np.delete(boxes, row, axis=0)
    # Instances lying inside the target are pieces of it (FastSAM segments a shirt inside its person).
    others = others[share_inside(others, boxes[row]) < settings.part_inside]
    return len(others) == 0 or bool(box_iou(boxes[row], others).max() <= APART_IOU)
