"""The small typed values that flow through the pipeline: Frame, Instances, Prompt, Track, FrameResult,
and SourceEvent (a live source connecting, losing its stream, coming back, giving up).

Named `core` rather than `types` on purpose: a top-level file called `types.py` shadows the standard
library's `types` module for any Python started from the repository root.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol, Sequence

import numpy as np

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
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


class LazyMasks(Protocol):
    """Masks that are only turned into full-resolution pixels when someone asks (see pipeline/masks.py)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: np.ndarray) -> "LazyMasks": ...

    def render(self) -> np.ndarray:
        """All masks as a k×H×W bool array at source resolution."""
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

    def __getitem__(self, index: np.ndarray) -> "DenseMasks":
        return DenseMasks(self.data[index])

    def render(self) -> np.ndarray:
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
    `masks()` for the rows you need and only those are assembled at source resolution.
    """

    __slots__ = ("boxes", "scores", "class_ids", "image_shape", "_masks")

    def __init__(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        image_shape: tuple[int, int],
        class_ids: np.ndarray | None = None,
        masks: LazyMasks | None = None,
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
        if len(image_shape) != 2 or min(image_shape) <= 0:
            raise ValueError(f"Instances.image_shape must be (height, width), got {image_shape}")
        self.boxes = boxes
        self.scores = scores
        self.class_ids = class_ids
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self._masks = masks

    @classmethod
    def empty(cls, image_shape: tuple[int, int]) -> "Instances":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), image_shape)

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> "Instances":
        idx = _as_index(index)
        return Instances(
            self.boxes[idx],
            self.scores[idx],
            self.image_shape,
            None if self.class_ids is None else self.class_ids[idx],
            None if self._masks is None else self._masks[idx],
        )

    @property
    def has_masks(self) -> bool:
        return self._masks is not None

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
    """What the user means, on frame `frame` of a source: foreground/background points, boxes or text.

    Coordinates are source pixels. It is checked against the frame's size when it is applied
    (`pipeline/prompts.py`), because the size is only known then.
    """

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))  # K×2 (x, y)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # K: 1 foreground, 0 background
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # M×4 xyxy
    text: str | None = None
    frame: int = 0
    source_id: str | None = None  # None: every source

    def __post_init__(self) -> None:
        points = _rows(self.points, 2, "points")
        boxes = _rows(self.boxes, 4, "boxes")
        raw_labels = np.asarray(self.labels).reshape(-1)
        bad = sorted({float(v) for v in raw_labels.tolist()} - {0.0, 1.0})
        if bad:
            raise ValueError(f"point labels must be 1 (foreground) or 0 (background), got {bad[0]:g}")
        labels = raw_labels.astype(np.int64)
        if len(points) != len(labels):
            raise ValueError(f"Prompt has {len(points)} points but {len(labels)} labels")
        if np.any(boxes[:, 2] <= boxes[:, 0]) or np.any(boxes[:, 3] <= boxes[:, 1]):
            raise ValueError("a prompt box must have x1 < x2 and y1 < y2")
        if self.frame < 0:
            raise ValueError(f"prompt frame must be >= 0, got {self.frame}")
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "boxes", boxes)

    @property
    def is_empty(self) -> bool:
        return len(self.points) == 0 and len(self.boxes) == 0 and not self.text


def _rows(values: object, width: int, what: str) -> np.ndarray:
    """A K×width float array; a flat list of exactly `width` numbers is one row."""
    array = np.asarray(values, np.float32)
    if array.size == 0:
        return array.reshape(0, width)
    if array.ndim == 1 and array.shape[0] == width:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"prompt {what} must be K×{width}, got shape {array.shape}")
    return array


class TrackState(str, enum.Enum):
    TRACKED = "tracked"  # matched this frame
    LOST = "lost"  # not matched this frame, still kept
    REMOVED = "removed"  # lost for longer than its max age


@dataclass(frozen=True)
class Track:
    """A snapshot of one track after a frame. `instance_index` is the row of this frame's Instances
    it matched (None when lost), so a sink can ask for exactly that mask."""

    id: int
    box: Box
    score: float
    state: TrackState
    age: int  # frames since the track was born
    frames_lost: int
    is_target: bool
    instance_index: int | None


@dataclass(frozen=True, eq=False)
class FrameResult:
    """Everything the pipeline knows about one frame, handed to sinks and to Python callers."""

    frame: Frame
    instances: Instances
    tracks: tuple[Track, ...]
    # Rows of `instances` that make up the target's mask on this frame: the prompt's merged
    # selection on the prompt frame, the target track's matched row afterwards.
    target_rows: tuple[int, ...] = ()
    # Frames of this source dropped (live sources keep only the newest) since its previous result.
    dropped_before: int = 0

    @property
    def target(self) -> Track | None:
        return next((t for t in self.tracks if t.is_target), None)

    @property
    def target_found(self) -> bool:
        return bool(self.target_rows)

    @cached_property
    def target_mask(self) -> np.ndarray | None:
        """H×W bool mask of the target at source resolution, or None when it is not found this frame."""
        if not self.target_rows:
            return None
        return self.instances.masks(list(self.target_rows)).any(axis=0)

    def mask_of(self, track: Track) -> np.ndarray | None:
        if track.is_target:
            return self.target_mask
        if track.instance_index is None:
            return None
        return self.instances.masks(track.instance_index)[0]


class EventKind(str, enum.Enum):
    CONNECTED = "connected"  # a live source opened its stream for the first time
    LOST = "lost"  # the stream ended or failed; the source is reconnecting
    RECONNECTED = "reconnected"  # the stream is back (its size or rate may have changed)
    GAVE_UP = "gave_up"  # reconnecting ran out of attempts; the source has ended
    RESIZED = "resized"  # frames arrive at a new size; tracks were rescaled to it


@dataclass(frozen=True)
class SourceEvent:
    """A change in a source's state, handed to sinks (`on_event`) and the log in stream order.

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
