"""The Source protocol: anything that yields Frames, plus what the pipeline needs to know about it."""

from __future__ import annotations

from fractions import Fraction
from typing import Iterator, Protocol, runtime_checkable

from ..core import Frame


@runtime_checkable
class Source(Protocol):
    source_id: str
    fps: Fraction  # nominal frame rate (what an annotated video is written at)
    frame_count: int | None  # None when unknown (live streams, some containers)
    is_live: bool  # live sources may drop frames to stay current; file sources never do

    def frames(self) -> Iterator[Frame]:
        """Decoded frames in order. Raises SourceError on unreadable input."""
        ...

    def close(self) -> None: ...
