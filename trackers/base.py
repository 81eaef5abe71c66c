"""What every tracker is: the `Tracker` protocol the pipeline calls, and the settings all trackers share.

A tracker keeps identities across the frames of one source: each frame it matches the frame's
instances to its live tracks, applies the frame's target change (a prompt), and reports every
track as a frozen `Track`. Trackers register themselves by name (trackers/registry.py), so the
`--tracker NAME` option and a new tracker need no code besides the tracker's own module.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import Field

from ..core import Instances, TargetChange, Track
from ..settings import Settings


class TrackerSettings(Settings):
    """The settings every tracker has.

    Each tracker's settings class adds its own and narrows `kind` to `Literal[<its name>]`, so a
    config tells the trackers' sections apart by `kind`.
    """

    kind: str = Field(description="which tracker, by its registered name (--tracker NAME)")
    min_iou: float = Field(0.3, gt=0.0, le=1.0, description="a track and an instance match above this box IoU")
    max_age: int = Field(30, ge=0, description="frames a lost track is kept")
    target_max_age: int | None = Field(
        None, ge=0, description="frames a lost target is kept; null: never removed (it gets its id back on return)"
    )

    @property
    def wants_embeddings(self) -> bool:
        """Whether this tracker uses the segmenter's appearance descriptors (`Instances.embeddings`).

        The pipeline then asks the segmenter for them; a tracker that does not costs nothing.
        """
        return False


@runtime_checkable
class Tracker(Protocol):
    """Everything the pipeline asks of a tracker (one tracker per source).

    `isinstance(x, Tracker)` tells a tracker (it has both methods) from a factory of trackers.
    """

    def update(
        self, instances: Instances, targets: TargetChange | None = None, image: np.ndarray | None = None
    ) -> tuple[Track, ...]:
        """Match this frame's instances to the tracks, then apply `targets`.

        Args:
            instances: This frame's instances (boxes, scores, masks).
            targets: The frame's target change, if any: drop targets, then make the tracks matched
                to `targets.add_rows` targets. On this frame an added target is reported as the rows
                the change names for it: `row` the added row, `parts` the other rows of
                `targets.parts[row]` (none when the change names none).
            image: The frame (BGR), for trackers that look at pixels; None: boxes only.

        Returns:
            Every live track after this frame, and each removed one once, on the frame it goes.
        """
        ...

    def rescale(self, sx: float, sy: float) -> None:
        """Move every track to new frame coordinates (a stream that came back at another size).

        Args:
            sx: New width over old width.
            sy: New height over old height.
        """
        ...


def selected_parts(change: TargetChange, row: int) -> tuple[int, ...]:
    """The rows besides `row` that the change says make up one object with the added `row`.

    Args:
        change: The frame's target change.
        row: One of `change.add_rows`.

    Returns:
        `change.parts[row]` without `row` itself, in its order; () when the change names none.
    """
    return tuple(p for p in change.parts.get(row, ()) if p != row)
