"""One live track of the bytetrack tracker (ByteTrack's STrack).

Its Kalman filter, when it was last seen, and what a target carries besides: its colour or its
gallery of network descriptors, its parts this frame, its size when last seen whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..gallery import Gallery
from ..kalman import BoxKalman
from .reacquire import APPEARANCE_EVERY


@dataclass
class KalmanTrack:
    """A track's state between frames; `box` is the Kalman estimate (predicted, until it is matched)."""

    id: int
    kalman: BoxKalman
    score: float
    born: int
    last_seen: int
    is_target: bool = False
    colour: np.ndarray | None = None  # targets: running colour histogram
    colour_at: int = -APPEARANCE_EVERY  # frame of the last colour update (this default: due at once)
    gallery: Gallery | None = None  # targets with appearance features: what the network sees of them
    parts: tuple[int, ...] = ()  # this frame: rows besides the matched one that make up the object
    size: np.ndarray | None = None  # (w, h) when last seen whole, away from the frame's edges
    measured: np.ndarray | None = field(default=None, repr=False)  # this frame's box, when matched

    @property
    def box(self) -> np.ndarray:
        """The current estimate, xyxy."""
        return self.kalman.box
