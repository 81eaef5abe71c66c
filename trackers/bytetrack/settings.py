"""The bytetrack tracker's settings: ByteTrack's own, then those of the steps for prompted targets.

ByteTrack adds two score thresholds and a second IoU threshold to what every tracker has; the
target steps add parts, appearance (network features or colour) and re-acquisition; camera motion
moves every prediction.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ...settings import Fraction01
from ..base import TrackerSettings
from ..camera_motion import IDLE_AFTER


class ByteTrackerSettings(TrackerSettings):
    """The default tracker, bytetrack: ByteTrack with camera motion; for targets, parts, appearance, re-acquisition.

    min_iou, max_age and target_max_age are every tracker's (TrackerSettings).
    """

    kind: Literal["bytetrack"] = Field(
        "bytetrack",
        description="bytetrack: ByteTrack's two rounds on Kalman-predicted boxes, with parts and re-acquisition "
        "for targets",
    )
    # ByteTrack
    low_min_iou: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="round 2: a track and a low-score instance match above this IoU "
        "(stricter than min_iou: low-score instances are less sure)",
    )
    high_score: Fraction01 = Field(
        0.4, description="round 1 takes instances scoring at least this; only they start new tracks"
    )
    low_score: Fraction01 = Field(
        0.1, description="round 2 takes instances scoring at least this (and under high_score); lower ones are ignored"
    )
    match_masks: bool = Field(
        False, description="fuse mask IoU into the matching cost (renders candidate masks at 1/4 size)"
    )
    # Targets
    merge_parts: bool = Field(
        True, description="a target is the union of the instances that complete it in its predicted box"
    )
    part_inside: Fraction01 = Field(0.8, description="share of a part's box that must lie in the target's box")
    reacquire: bool = Field(True, description="a lost target looks for itself by colour near its predicted box")
    search_radius: float = Field(
        1.0, ge=0.0, description="re-acquisition search radius, in target box diagonals from the predicted centre"
    )
    search_growth: float = Field(
        0.1, ge=0.0, description="diagonals the search radius grows by per frame the target is lost"
    )
    max_search_radius: float = Field(3.0, ge=0.0, description="the search radius grows up to this many diagonals")
    min_appearance: Fraction01 = Field(
        0.6, description="colour similarity (1 − Bhattacharyya distance) a re-acquired instance needs"
    )
    # Appearance (looks.py)
    appearance: Literal["features", "colour"] = Field(
        "features",
        description="what a target looks like: the segmenter's own features pooled under its mask (a gallery "
        "that gates and refines its matches and re-acquires it), or its colour histogram (re-acquisition only); "
        "features fall back to colour with a segmenter that gives none",
    )
    appearance_for: Literal["targets", "all"] = Field(
        "targets",
        description="which tracks keep a gallery and match by appearance: the prompted targets (a few descriptors "
        "a frame), or every track (BoT-SORT's way: a descriptor per candidate of every track)",
    )
    appearance_weight: float = Field(
        4.0, ge=0.0, description="matching cost per unit of similarity an instance falls short of the target's usual"
    )
    appearance_gate: float = Field(
        0.15, gt=0.0, le=2.0, description="an instance this far short of the target's usual similarity never matches it"
    )
    reacquire_margin: float = Field(
        0.05,
        ge=0.0,
        le=2.0,
        description="a lost target takes back an instance at most this far short of its usual similarity",
    )

    # Camera motion
    camera_motion: bool = Field(
        True,
        description="estimate how the camera moved since the last frame (sparse optical flow + RANSAC, as "
        "BoT-SORT's GMC) and move every track's prediction by it; a still camera costs the estimate only",
    )
    camera_motion_width: int = Field(
        256, ge=16, le=1920, description="frames are shrunk to this width for the camera-motion estimate"
    )
    camera_motion_idle_every: int = Field(
        4,
        ge=1,
        le=30,
        description=f"once {IDLE_AFTER} estimates in a row found a still camera, estimate only every N "
        "frames until one finds motion: a fixed camera costs about 1/N of the estimate, a camera that starts "
        "to move is compensated from its Nth frame of motion at the latest; 1: every frame",
    )

    @property
    def wants_embeddings(self) -> bool:
        """Whether the segmenter should give appearance descriptors (TrackerSettings.wants_embeddings)."""
        return self.appearance == "features"

    @model_validator(mode="after")
    def _scores_ordered(self) -> ByteTrackerSettings:
        if self.low_score > self.high_score:
            raise ValueError(f"low_score {self.low_score:g} must not exceed high_score {self.high_score:g}")
        return self
