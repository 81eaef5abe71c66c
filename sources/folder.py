"""Image folders (sorted JPEG/PNG files): how DAVIS, OTB and MOT sequences are stored."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

from ..core import Frame
from ..errors import SourceError
from .base import safe_id
from .images import BadImage, read_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
SKIP_HINT = "set source.skip_bad_images: true to skip damaged images"
log = logging.getLogger(__name__)


def _natural_key(path: Path) -> list[int | str]:
    """img2.jpg before img10.jpg, as a person would sort them."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


class FolderSource:
    """A folder of JPEG/PNG images as one video, in natural name order (img2 before img10).

    Not live, so by default the pipeline waits for it instead of dropping frames (DropPolicy.BLOCK).
    Frame i is the folder's i-th image, with pts i / fps, since images carry no timestamps.

    Each image is checked before it is used (sources/images.py): an empty file, one that is not an
    image, one cut off before its end marker, or one whose decoder reports damage is never a frame.
    By default such an image stops the source with a SourceError naming the file; with
    `skip_bad_images` it is skipped with a warning and counted in `skipped`, and its index is left
    out (as a dropped frame's is), so every frame keeps the index of its own file.

    Args:
        path: The image folder.
        fps: The frame rate the images are taken to have.
        source_id: The name in outputs and logs; default: the folder's name.
        skip_bad_images: Skip damaged or unreadable images (warning for each) instead of stopping.

    Raises:
        SourceError: No such folder, no image in it, or a frame rate that is not positive.
    """

    is_live = False

    def __init__(
        self, path: str | Path, fps: float = 30.0, source_id: str | None = None, *, skip_bad_images: bool = False
    ) -> None:
        self.path = Path(path)
        self.source_id = source_id or safe_id(self.path.resolve().name, "images")
        self.skip_bad_images = skip_bad_images
        self.skipped = 0  # images skipped so far (only with skip_bad_images)
        self.skipped_files: list[Path] = []  # which, in order
        if not self.path.is_dir():
            raise SourceError(
                f"{self.path} is not a folder" if self.path.exists() else f"no such image folder: {self.path}"
            )
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
        """Every sound image in order, read when its turn comes.

        Raises:
            SourceError: An image is damaged or cannot be read (without skip_bad_images), or no
                image in the folder could be used.
        """
        produced = 0
        for index, file in enumerate(self.files):
            try:
                image = read_image(file)
            except BadImage as exc:
                if not self.skip_bad_images:
                    raise SourceError(
                        f"cannot read image {file}: {exc}; remove or replace it, or {SKIP_HINT}"
                    ) from None
                self.skipped += 1
                self.skipped_files.append(file)
                log.warning("%s: skipped image %s: %s", self.source_id, file, exc)
                continue
            produced += 1
            yield Frame(image, self.source_id, index, index / float(self.fps), time.monotonic())
        if self.skipped:
            log.warning(
                "%s: skipped %d of the %d images in %s (damaged or unreadable)",
                self.source_id,
                self.skipped,
                len(self.files),
                self.path,
            )
        if self.skipped and not produced:
            raise SourceError(f"no usable image in {self.path}: all {len(self.files)} are damaged or unreadable")

    def close(self) -> None:
        """Nothing to release: each image is read and closed in turn."""
