"""The top-level layout of an MP4/MOV file (ISO base media), to say why FFmpeg cannot read one.

An MP4 keeps its index, the `moov` box, either before its media data (`mdat`; a file written
with `-movflags faststart`, or a fragmented one) or after it, where most cameras and recorders
write it when they stop. A recording cut off before that (a full card, a crash, a copy that did
not finish) has media data and no index: FFmpeg can only say "Invalid data found when processing
input". Walking the box headers (a few bytes each, never the data) tells that case, and a cut
index, apart from a file that is not an MP4 at all.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# Boxes an MP4/MOV file can start with: what tells it from other formats.
_FIRST = {b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"}
REPAIR = "rebuild the index with a repair tool such as untrunc and an intact recording from the same camera"


@dataclass(frozen=True)
class Box:
    """One top-level box: its four-letter type, where it starts and how long its header says it is."""

    kind: str
    start: int
    size: int | None  # None: "to the end of the file" (size 0, a recording that was never finished)


@dataclass(frozen=True)
class Layout:
    """The top-level boxes of a file, and the one the file ends inside, if it is cut off."""

    boxes: tuple[Box, ...]
    file_size: int
    cut: Box | None  # the box that runs past the end of the file

    def first(self, kind: str) -> Box | None:
        """The first box of type `kind`, or None."""
        return next((box for box in self.boxes if box.kind == kind), None)

    @property
    def media_before_index(self) -> bool:
        """Whether media data (`mdat`) comes before the index (`moov`, or none yet), as most recorders write it."""
        mdat, moov = self.first("mdat"), self.first("moov")
        return mdat is not None and (moov is None or mdat.start < moov.start)

    def cut_note(self) -> str | None:
        """Where the file ends, when it ends inside a box: "it ends 300000 bytes into its 586528-byte 'mdat' box"."""
        if self.cut is None:
            return None
        into = self.file_size - self.cut.start
        return f"it ends {into} bytes into its {self.cut.size}-byte '{self.cut.kind}' box"


def read_layout(stream: BinaryIO, size: int) -> Layout | None:
    """The top-level boxes of the first `size` bytes of `stream`, or None when they do not look like an MP4/MOV.

    Args:
        stream: The file, or its first bytes (io.BytesIO); it is read at box headers only.
        size: How many bytes it has.

    Returns:
        The layout, or None.
    """
    boxes: list[Box] = []
    cut = None
    pos = 0
    while pos + 8 <= size:
        stream.seek(pos)
        header = stream.read(16)
        length, kind = int.from_bytes(header[:4], "big"), header[4:8]
        if not all(0x20 <= c <= 0x7E for c in kind) or (not boxes and kind not in _FIRST):
            break
        header_size = 8
        if length == 1:  # a 64-bit size follows the type
            if len(header) < 16:
                break
            length, header_size = int.from_bytes(header[8:16], "big"), 16
        box = Box(kind.decode("ascii"), pos, length or None)
        if length and length < header_size:
            break  # not a box header: damage, or not an MP4
        boxes.append(box)
        if not length:  # size 0: the box runs to the end of the file
            break
        if pos + length > size:
            cut = box
            break
        pos += length
    if not boxes:
        return None
    return Layout(tuple(boxes), size, cut)


def file_layout(path: Path) -> Layout | None:
    """The layout of the file at `path`, or None (not an MP4/MOV, or unreadable)."""
    try:
        with path.open("rb") as stream:
            return read_layout(stream, path.stat().st_size)
    except OSError:
        return None


def head_layout(head: bytes) -> Layout | None:
    """The layout as far as a file's first bytes show it (the last box is then usually "cut")."""
    return read_layout(io.BytesIO(head), len(head))


def unreadable_reason(layout: Layout | None) -> str | None:
    """Why an MP4/MOV's frames cannot be found, saying what to do; None when its layout does not explain it.

    Args:
        layout: The file's layout (None: not an MP4/MOV).

    Returns:
        A clause to follow "cannot read X as a video: ", or None.
    """
    if layout is None:
        return None
    moov = layout.first("moov")
    if moov is None and (layout.first("mdat") is None or layout.first("meta") is not None):
        return None  # no media data, or a HEIF/AVIF image (indexed by its 'meta' box): not ours to explain
    if moov is None:
        if layout.cut is not None:
            how = f"the file is cut off ({layout.cut_note()})"
        else:
            how = "the recording was never finished"
        return (
            f"it has no index (MP4 'moov' box): {how}, and a recorder writes the index last, so the "
            f"frames cannot be found; get a complete copy, or {REPAIR}"
        )
    if layout.cut is moov:
        return f"its index (MP4 'moov' box) is cut off ({layout.cut_note()}); get a complete copy"
    return None
