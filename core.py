"""The small typed values that flow through the pipeline.

Frame, Instances, Prompt, Track, FrameResult, and SourceEvent (a live source connecting, losing
its stream, coming back, giving up).

Named `core` rather than `types` on purpose: a top-level file called `types.py` shadows the standard
library's `types` module for any Python started from the repository root.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Protocol

import numpy as np

from .errors import PromptError

Box = tuple[float, float, float, float]


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded picture. `image` is H×W×3 uint8 in **BGR** order (OpenCV's and ultralytics' convention).

    `pts` is the presentation time in seconds from the container (index / fps for image folders);
    `captured_at` is `time.monotonic()` when the source produced it, for latency measurements.
    """

    image: np.ndarray
    source_id: str
    index: int
    pts: float
    captured_at: float

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            got = getattr(img, "shape", type(img).__name__)
            raise ValueError(f"Frame.image must be an H×W×3 uint8 array, got {got}")
        if self.index < 0:
            raise ValueError(f"Frame.index must be >= 0, got {self.index}")

    @property
    def height(self) -> int:
        """The image's height in pixels."""
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        """The image's width in pixels."""
        return int(self.image.shape[1])


class LazyMasks(Protocol):
    """Masks that are only turned into full-resolution pixels when someone asks (see pipeline/masks.py)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: np.ndarray) -> LazyMasks: ...

    def render(self) -> np.ndarray:
        """All masks as a k×H×W bool array at source resolution."""
        ...


class LazyEmbeddings(Protocol):
    """Appearance descriptors computed only for the rows someone asks about (see pipeline/embeddings.py)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: np.ndarray) -> LazyEmbeddings: ...

    def compute(self) -> np.ndarray:
        """All rows' descriptors as a k×D float32 array of unit (or zero) vectors."""
        ...


@dataclass(frozen=True, eq=False)
class DenseMasks:
    """Masks already at full resolution (tests, mask prompts, models that return pixels)."""

    data: np.ndarray  # N×H×W bool

    def __post_init__(self) -> None:
        if self.data.ndim != 3:
            raise ValueError(f"DenseMasks needs an N×H×W array, got shape {self.data.shape}")
        object.__setattr__(self, "data", self.data.astype(bool, copy=False))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: np.ndarray) -> DenseMasks:
        return DenseMasks(self.data[index])

    def render(self) -> np.ndarray:
        """All masks as an N×H×W bool array: already rendered, so the data itself."""
        return self.data


def _as_index(index: int | slice | Sequence[int] | np.ndarray) -> np.ndarray | slice:
    if isinstance(index, (int, np.integer)):
        return np.array([index])
    if isinstance(index, slice):
        return index
    array = np.asarray(index)
    return array if array.dtype == bool else array.astype(np.intp, copy=False)


class Instances:
    """One frame's segmentation as parallel arrays, like supervision's `Detections`.

    `boxes` are N×4 xyxy in source pixels, `scores` N, `class_ids` N or None. Masks stay lazy: ask
    `masks()` for the rows you need and only those are assembled at source resolution. So do
    appearance descriptors (`embeddings()`), when the segmenter was asked for them.
    """

    __slots__ = ("boxes", "scores", "class_ids", "image_shape", "_masks", "_embeddings")

    def __init__(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        image_shape: tuple[int, int],
        class_ids: np.ndarray | None = None,
        masks: LazyMasks | None = None,
        embeddings: LazyEmbeddings | None = None,
    ) -> None:
        boxes = np.asarray(boxes, dtype=np.float32)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        scores = np.asarray(scores, dtype=np.float32)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"Instances.boxes must be N×4, got shape {boxes.shape}")
        n = len(boxes)
        if scores.shape != (n,):
            raise ValueError(f"Instances.scores must have shape ({n},), got {scores.shape}")
        if class_ids is not None:
            class_ids = np.asarray(class_ids, dtype=np.int64)
            if class_ids.shape != (n,):
                raise ValueError(f"Instances.class_ids must have shape ({n},), got {class_ids.shape}")
        if masks is not None and len(masks) != n:
            raise ValueError(f"Instances has {n} boxes but {len(masks)} masks")
        if embeddings is not None and len(embeddings) != n:
            raise ValueError(f"Instances has {n} boxes but {len(embeddings)} embeddings")
        if len(image_shape) != 2 or min(image_shape) <= 0:
            raise ValueError(f"Instances.image_shape must be (height, width), got {image_shape}")
        self.boxes = boxes
        self.scores = scores
        self.class_ids = class_ids
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self._masks = masks
        self._embeddings = embeddings

    @classmethod
    def empty(cls, image_shape: tuple[int, int]) -> Instances:
        """No instances on a frame of `image_shape` (height, width): what a frame with nothing found gets."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), image_shape)

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> Instances:
        idx = _as_index(index)
        return Instances(
            self.boxes[idx],
            self.scores[idx],
            self.image_shape,
            None if self.class_ids is None else self.class_ids[idx],
            None if self._masks is None else self._masks[idx],
            None if self._embeddings is None else self._embeddings[idx],
        )

    @property
    def has_masks(self) -> bool:
        """Whether these instances carry masks (`masks()` raises ValueError when not)."""
        return self._masks is not None

    @property
    def has_embeddings(self) -> bool:
        """Whether these instances carry appearance descriptors (`embeddings()` raises ValueError when not)."""
        return self._embeddings is not None

    def embeddings(self, index: int | slice | Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """k×D unit appearance descriptors for the rows in `index` (all rows when None), computed now.

        Args:
            index: The rows.

        Returns:
            k×D float32; cosine similarity is their dot product.

        Raises:
            ValueError: These instances carry none.
        """
        if self._embeddings is None:
            raise ValueError("these instances carry no embeddings")
        chosen = self._embeddings if index is None else self._embeddings[_as_index(index)]
        return chosen.compute()

    @property
    def areas(self) -> np.ndarray:
        """Box areas (no mask needed)."""
        return (self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])

    def masks(self, index: int | slice | Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """k×H×W bool masks at source resolution for the rows in `index` (all rows when None)."""
        if self._masks is None:
            raise ValueError("these instances carry no masks")
        chosen = self._masks if index is None else self._masks[_as_index(index)]
        if len(chosen) == 0:
            return np.zeros((0, *self.image_shape), dtype=bool)
        return chosen.render()


@dataclass(frozen=True)
class Prompt:
    """What the user means, on frame `frame` of a source (None: every source).

    - `points` K×2 with `labels` K (1 foreground, 0 background): the instances holding a
      foreground point and no background point, merged into one target;
    - `boxes` M×4 xyxy: each box picks the instance with the highest mask IoU, one target each;
    - `text`: the instance CLIP finds most similar (`top_k` of them, or every one at least
      `min_similarity`), one target each;
    - `mask` H×W bool (frame size): the instance with the highest mask IoU.
    Text picks the most similar instance; `top_k` the k most similar; `min_similarity` alone,
    every instance at least that similar (with `top_k` too: the k most similar of those).
    Combinations FastSAM's semantics allow: background points with boxes or text (they remove the
    instances holding them), and text with one box (only instances mostly inside it are scored).
    Coordinates are source pixels, checked against the frame when the prompt is applied
    (`pipeline/prompts.py`), because the size is only known then.
    """

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))  # K×2 (x, y)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # K: 1 foreground, 0 background
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # M×4 xyxy
    text: str | None = None
    mask: np.ndarray | None = None  # H×W bool
    frame: int = 0
    source_id: str | None = None  # None: every source
    top_k: int | None = None  # text: the k most similar become targets; None: 1, or all with min_similarity
    min_similarity: float | None = None  # text: only instances at least this similar (cosine)

    def __post_init__(self) -> None:
        points = _rows(self.points, 2, "points")
        boxes = _rows(self.boxes, 4, "boxes")
        raw_labels = np.asarray(self.labels).reshape(-1)
        bad = sorted({float(v) for v in raw_labels.tolist()} - {0.0, 1.0})
        if bad:
            raise PromptError(f"point labels must be 1 (foreground) or 0 (background), got {bad[0]:g}")
        labels = raw_labels.astype(np.int64)
        if len(points) != len(labels):
            raise PromptError(f"Prompt has {len(points)} points but {len(labels)} labels")
        if np.any(boxes[:, 2] <= boxes[:, 0]) or np.any(boxes[:, 3] <= boxes[:, 1]):
            raise PromptError("a prompt box must have x1 < x2 and y1 < y2")
        if self.frame < 0:
            raise PromptError(f"prompt frame must be >= 0, got {self.frame}")
        if self.text is not None and not self.text.strip():
            raise PromptError("a text prompt must not be empty")
        if self.top_k is not None and self.top_k < 1:
            raise PromptError(f"top_k must be >= 1, got {self.top_k}")
        if not self.text and (self.top_k is not None or self.min_similarity is not None):
            raise PromptError("top_k and min_similarity choose among a text prompt's matches: give text too")
        if not (np.isfinite(points).all() and np.isfinite(boxes).all()):
            raise PromptError("prompt points and boxes must be finite numbers")
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "boxes", boxes)
        if self.mask is not None:
            mask = np.asarray(self.mask)
            if mask.ndim != 2:
                raise PromptError(f"a mask prompt must be an H×W array, got shape {mask.shape}")
            if not mask.any():
                raise PromptError("the mask prompt is empty (no nonzero pixel)")
            object.__setattr__(self, "mask", mask.astype(bool, copy=False))
        self._check_combination(labels)

    def _check_combination(self, labels: np.ndarray) -> None:
        has_fg = bool(np.any(labels == 1))
        if self.mask is not None and (len(self.points) or len(self.boxes) or self.text):
            raise PromptError("a mask prompt stands alone: give a mask, or points/boxes/text")
        if (len(self.boxes) or self.text) and has_fg:
            raise PromptError("boxes and text combine with background points (label 0) only, not foreground points")
        if self.text and len(self.boxes) > 1:
            raise PromptError("a text prompt can be restricted to one box, not several")
        if len(self.points) and not has_fg and not len(self.boxes) and not self.text:
            raise PromptError("point prompts need at least one foreground point (label 1)")

    @property
    def is_empty(self) -> bool:
        """True when the prompt gives no points, boxes, text or mask, so it selects nothing."""
        return len(self.points) == 0 and len(self.boxes) == 0 and not self.text and self.mask is None

    def describe(self) -> str:
        """A short human-readable summary for events and logs, e.g. `2 boxes`, `text "a dog"`."""
        parts = []
        if self.text:
            parts.append(f"text {self.text!r}")
        if len(self.boxes):
            parts.append(f"{len(self.boxes)} box{'es' if len(self.boxes) > 1 else ''}")
        if len(self.points):
            parts.append(f"{len(self.points)} point{'s' if len(self.points) > 1 else ''}")
        if self.mask is not None:
            parts.append("mask")
        return " + ".join(parts) or "nothing"


def _rows(values: object, width: int, what: str) -> np.ndarray:
    """A K×width float array; a flat list of exactly `width` numbers is one row."""
    array = np.asarray(values, np.float32)
    if array.size == 0:
        return array.reshape(0, width)
    if array.ndim == 1 and array.shape[0] == width:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != width:
        raise PromptError(f"prompt {what} must be K×{width}, got shape {array.shape}")
    return array


class TrackState(enum.StrEnum):
    """Where a track stands after a frame; its value is what tracks.jsonl writes as `state`."""

    TRACKED = "tracked"  # matched this frame
    LOST = "lost"  # not matched this frame, still kept
    REMOVED = "removed"  # lost for longer than its max age


@dataclass(frozen=True)
class Track:
    """A snapshot of one track after a frame.

    `row` is the row of this frame's Instances it matched (None when lost), so a sink can ask for
    exactly that mask.
    """

    id: int
    box: Box
    score: float
    state: TrackState
    age: int  # frames since the track was born
    frames_lost: int
    is_target: bool
    row: int | None
    parts: tuple[int, ...] = ()  # other rows that make up the object with row this frame


@dataclass(frozen=True)
class TargetChange:
    """What a tracker does to its targets on one frame.

    It stops following some (or all), then makes the tracks matched to `add_rows` targets (a track
    already followed keeps its id).
    """

    add_rows: tuple[int, ...] = ()
    drop_ids: frozenset[int] = frozenset()
    drop_all: bool = False
    # For an added row, the other rows that make up the same object with it (a prompt's merged
    # selection): a tracker may follow their union.
    parts: Mapping[int, tuple[int, ...]] = field(default_factory=dict)

    @classmethod
    def only(cls, *rows: int) -> TargetChange:
        """These rows' tracks become the targets, and no other track is one."""
        return cls(add_rows=tuple(rows), drop_all=True)

    def then(self, later: TargetChange) -> TargetChange:
        """This change followed by `later` on the same frame."""
        if later.drop_all:
            return later
        return TargetChange(
            self.add_rows + later.add_rows, self.drop_ids | later.drop_ids, self.drop_all, {**self.parts, **later.parts}
        )


@dataclass(frozen=True, eq=False)
class FrameResult:
    """Everything the pipeline knows about one frame, handed to sinks and to Python callers."""

    frame: Frame
    instances: Instances
    tracks: tuple[Track, ...]
    # For each target found this frame, by track id: the rows of `instances` that make up its
    # mask (a point prompt's merged selection on its prompt frame, the matched row afterwards).
    target_rows: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    # Frames of this source dropped (live sources keep only the newest) since its previous result.
    dropped_before: int = 0
    # The configured zones and lines of its source as they stand after this frame (zones/).
    places: tuple[PlaceState, ...] = ()

    @property
    def targets(self) -> tuple[Track, ...]:
        """Every target track (tracked or lost), in id order."""
        return tuple(sorted((t for t in self.tracks if t.is_target), key=lambda t: t.id))

    @property
    def target(self) -> Track | None:
        """The first target (by id): for single-target runs, the target."""
        targets = self.targets
        return targets[0] if targets else None

    @property
    def target_found(self) -> bool:
        """Whether any target was matched on this frame (a lost target does not count)."""
        return bool(self.target_rows)

    @cached_property
    def target_mask(self) -> np.ndarray | None:
        """H×W bool union of every target found this frame, at source resolution; None when none is."""
        if not self.target_rows:
            return None
        rows = sorted({r for rows in self.target_rows.values() for r in rows})
        return self.instances.masks(rows).any(axis=0)

    def mask_of(self, track: Track) -> np.ndarray | None:
        """The track's mask this frame (a target's is its whole selection), or None when not matched."""
        rows = self.target_rows.get(track.id) if track.is_target else None
        if rows:
            return self.instances.masks(list(rows)).any(axis=0)
        if track.row is None:
            return None
        return self.instances.masks(track.row)[0]


class PlaceKind(enum.StrEnum):
    """A place is a zone (a polygon) or a line."""

    ZONE = "zone"
    LINE = "line"


@dataclass(frozen=True)
class PlaceState:
    """A zone or a line of one source after one frame: where it lies now, and who is in it or crossed it.

    Attributes:
        name: The zone's or line's name from the config.
        kind: Zone or line.
        points: N×2 float32 vertices (a line: its 2 end points) in this frame's pixels.
        ids: Zones: the track ids inside it now, in order.
        crossed_in: Lines: crossings so far towards its left side (on screen, looking from its first point to
            its second): supervision's LineZone "in"; zones: 0.
        crossed_out: Lines: crossings the other way so far.
    """

    name: str
    kind: PlaceKind
    points: np.ndarray
    ids: tuple[int, ...] = ()
    crossed_in: int = 0
    crossed_out: int = 0

    @property
    def count(self) -> int:
        """Tracks inside the zone now."""
        return len(self.ids)


class ZoneEventKind(enum.StrEnum):
    """What a ZoneEvent reports; its value is what events.jsonl and the alert outputs write as `event`."""

    ZONE_ENTER = "zone_enter"  # a track's trigger point (or enough of its mask) came into a zone
    ZONE_LEAVE = "zone_leave"  # ... went out of it, or the track left the frame or was removed while inside
    ZONE_DWELL = "zone_dwell"  # a track has been inside a zone for its dwell_s
    LINE_CROSS = "line_cross"  # a track's trigger point crossed a line (direction "in" or "out")
    OBSTACLE = "obstacle"  # a track has stood still inside a zone for its stationary_s


@dataclass(frozen=True)
class ZoneEvent:
    """Something a track did in a zone or at a line, on one frame of one source.

    Attributes:
        source_id: The source.
        kind: What happened.
        place: The zone's or line's name.
        place_kind: Zone or line.
        track_id: The track (ids are per source).
        frame: The frame's index.
        pts: The frame's presentation time in seconds.
        at: Wall-clock time.time() when it was seen.
        box: The track's box on that frame, [x1, y1, x2, y2] in source pixels.
        direction: Lines: "in" or "out"; else None.
        snapshot: The annotated frame's JPEG, relative to the source's output folder (None: none saved).
    """

    source_id: str
    kind: ZoneEventKind
    place: str
    place_kind: PlaceKind
    track_id: int
    frame: int
    pts: float
    at: float
    box: tuple[float, float, float, float]
    direction: str | None = None
    snapshot: str | None = None

    @property
    def event_id(self) -> str:
        """Unique per source and run, the same on every retry: a receiver deduplicates on it."""
        return f"{self.source_id}:{self.frame}:{self.kind.value}:{self.place}:{self.track_id}"

    def to_json(self) -> dict:
        """The event as events.jsonl and the alert outputs write it."""
        return {
            "id": self.event_id,
            "source": self.source_id,
            "event": self.kind.value,
            self.place_kind.value: self.place,
            "track": self.track_id,
            "frame": self.frame,
            "pts": round(self.pts, 3),
            "time": datetime.fromtimestamp(self.at, UTC).isoformat(timespec="milliseconds"),
            "box": [round(float(v), 1) for v in self.box],
            "direction": self.direction,
            "snapshot": self.snapshot,
        }


class EventKind(enum.StrEnum):
    """What a SourceEvent reports; its value is what events.jsonl writes as `event`."""

    CONNECTED = "connected"  # a live source opened its stream for the first time
    LOST = "lost"  # the stream ended or failed; the source is reconnecting
    RECONNECTED = "reconnected"  # the stream is back (its size or rate may have changed)
    GAVE_UP = "gave_up"  # reconnecting ran out of attempts; the source has ended
    RESIZED = "resized"  # frames arrive at a new size; tracks were rescaled to it
    TARGETS_CHANGED = "targets_changed"  # a prompt (at start or from the control interface) added or dropped targets
    PROMPT_FAILED = "prompt_failed"  # a prompt from the control interface selected nothing; targets unchanged
    MOVED = "moved"  # on a Ray cluster (cluster/): the stream went to another worker, its targets re-seeded


@dataclass(frozen=True)
class SourceEvent:
    """A change in a source's state or its targets, handed to sinks (`on_event`) and the log in stream order.

    `next_frame` is the index the source's next frame will carry, so an event can be placed
    between frames. `message` never holds credentials (sources redact their URLs).
    """

    source_id: str
    kind: EventKind
    next_frame: int
    at: float  # wall-clock time.time(), for logs and events.jsonl
    attempt: int = 0  # reconnect attempts made (lost: 0; reconnected/gave_up: how many it took)
    message: str = ""
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    outage_s: float | None = None  # reconnected: seconds without frames
    added: tuple[int, ...] = ()  # targets_changed: track ids that became targets
    dropped: tuple[int, ...] = ()  # targets_changed: track ids that stopped being targets

    def describe(self) -> str:
        """One human-readable line, for logs."""
        parts = [f"{self.source_id}: {self.kind.value}"]
        if self.width and self.height:
            parts.append(f"{self.width}x{self.height}" + (f" at {self.fps:g} fps" if self.fps else ""))
        if self.attempt:
            parts.append(f"after {self.attempt} attempt{'s' if self.attempt > 1 else ''}")
        if self.outage_s is not None:
            parts.append(f"{self.outage_s:.1f} s without frames")
        if self.message:
            parts.append(f"({self.message})")
        return " ".join(parts)
