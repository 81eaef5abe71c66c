"""Image folders (sorted JPEG/PNG files): how DAVIS, OTB and MOT sequences are stored."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import cv2

from ..core import Frame
from ..errors import SourceError
from .base import safe_id

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def _natural_key(path: Path) -> list[int | str]:
    """img2.jpg before img10.jpg, as a person would sort them."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


class FolderSource:
    """A folder of JPEG/PNG images as one video, in natural name order (img2 before img10).

    Not live, so by default the pipeline waits for it instead of dropping frames (DropPolicy.BLOCK).
    Frame i gets pts i / fps, since images carry no timestamps.

    Args:
        path: The image folder.
        fps: The frame rate the images are taken to have.
        source_id: The name in outputs and logs; default: the folder's name.

    Raises:
        SourceError: No such folder, no image in it, or a frame rate that is not positive.
    """

    is_live = False

    def __init__(self, path: str | Path, fps: float = 30.0, source_id: str | None = None) -> None:
        self.path = Path(path)
        self.source_id = source_id or safe_id(self.path.resolve().name, "images")
        if not self.path.is_dir():
            raise SourceError(f"no such image folder: {self.path}")
        self.files = sorted(
            (p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=_natural_key
        )
        if not self.files:
            raise SourceError(f"no JPEG or PNG images in {self.path}")
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        if self.fps <= 0:
            raise SourceError(f"image folder frame rate must be positive, got {fps}")
        self.frame_count = len(self.files)

    def frames(self) -> Iterator[Frame]:
        """Every image in order, read when its turn comes.

        Raises:
            SourceError: An image cannot be read.
        """
        for index, file in enumerate(self.files):
            image = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if image is None:
                raise SourceError(f"cannot read image {file}")
            yield Frame(image, self.source_id, index, index / float(self.fps), time.monotonic())

    def close(self) -> None:
        """Nothing to release: each image is read and closed in turn."""
