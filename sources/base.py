"""The Source protocol (anything that yields Frames) and the drop policies the pipeline applies to it."""

from __future__ import annotations

import enum
import os
import re
import stat
from collections.abc import Iterator
from fractions import Fraction
from typing import Protocol, runtime_checkable

from ..core import Frame, SourceEvent
from .redact import redact_url


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


SOURCE_KINDS = "a video file, an image folder, a stream URL or a camera"
_NOT_REGULAR = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device, not a V4L2 camera"),
    (stat.S_ISBLK, "a block device"),
)


def missing_path_reason(text: str) -> str:
    """Why `text`, which is neither a folder nor a regular file, cannot be a source, in one line.

    Args:
        text: The path as the user gave it (shown redacted: a mistyped URL may hold a password).

    Returns:
        "no such file or folder: X", "X is not a regular file (a FIFO): give ...", "X is a broken
        symbolic link (to Y)", or what the system says about it.
    """
    shown = redact_url(text)
    try:
        mode = os.stat(text).st_mode
    except FileNotFoundError:
        if os.path.islink(text):
            return f"{shown} is a broken symbolic link (to {redact_url(os.readlink(text))}): it points at nothing"
        return f"no such file or folder: {shown}"
    except OSError as exc:  # a folder on the way that may not be searched, a name too long, a loop of links
        return f"cannot look at {shown}: {exc.strerror or exc}"
    kind = next((name for test, name in _NOT_REGULAR if test(mode)), "an unusual kind of file")
    return f"{shown} is not a regular file ({kind}): give {SOURCE_KINDS}"
