"""The Source protocol (anything that yields Frames) and the drop policies the pipeline applies to it."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from fractions import Fraction
from typing import Protocol, runtime_checkable

from ..core import Frame, SourceEvent


class DropPolicy(enum.StrEnum):
    """What a source's bounded buffer does when the segmenter is behind."""

    BLOCK = "block"  # the reader waits: no frame is lost (files, image folders)
    DROP_OLDEST = "drop_oldest"  # the oldest waiting frame goes: latency stays bounded (live streams)

    @classmethod
    def for_source(cls, source: Source, configured: DropPolicy | str | None = None) -> DropPolicy:
        """The configured policy, or the natural one: live sources drop, others wait."""
        if configured not in (None, "auto"):
            return cls(configured)
        return cls.DROP_OLDEST if source.is_live else cls.BLOCK


@runtime_checkable
class Source(Protocol):
    """Anything that yields Frames: a file, an image folder, a stream, a camera, or your own class.

    A class is a Source by having these attributes and methods; it need not inherit from this.
    """

    source_id: str  # names the source in outputs and logs; safe as a folder name
    fps: Fraction  # nominal frame rate (what an annotated video is written at)
    frame_count: int | None  # None when unknown (live streams, some containers)
    is_live: bool  # live sources may drop frames to stay current; file sources never do

    def frames(self) -> Iterator[Frame | SourceEvent]:
        """Decoded frames in order, with SourceEvents between them where the source's state changes.

        Only live sources yield events.

        Raises:
            SourceError: The input cannot be read.
        """
        ...

    def close(self) -> None:
        """Release the source.

        A live source must accept this from another thread while `frames()` runs: it is how its
        reader is told to stop (at once between reconnect attempts, when the read in progress
        returns otherwise).
        """
        ...


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_id(text: str, fallback: str = "source") -> str:
    """A source id usable as a folder name: letters, digits, '.', '_' and '-'."""
    cleaned = re.sub(r"-{2,}", "-", _UNSAFE.sub("-", text)).strip("-.")
    return cleaned or fallback
