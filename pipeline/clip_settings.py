"""Settings of CLIP text scoring.

They live apart from pipeline/clip.py so that reading a config never imports open_clip (it is
only imported when a text prompt needs it).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..settings import Settings

CropMode = Literal["masked", "box"]


class ClipSettings(Settings):
    """CLIP for text prompts (open_clip): config section `clip`."""

    enabled: bool | None = Field(
        None, description="load CLIP: true also for text sent while running (control); default: when a prompt has text"
    )
    model: str = Field("ViT-B-32", min_length=1, description="open_clip model for text prompts")
    weights: str | None = Field(
        "openai",
        min_length=1,
        description="open_clip pretrained tag (fetched online) or a local checkpoint path; null: random weights",
    )
    # "masked" blanks what lies outside the instance's mask, so the crop of a large instance does
    # not score for a smaller object inside its box.
    crop: CropMode = Field(
        "masked", description="crop around each instance: background blanked (masked) or the plain box"
    )
    device: str | None = Field(None, description="cpu or cuda:N (default: the segmenter's device)")
    half: bool | None = Field(None, description="fp16 (default: on CUDA only)")
