"""One image file of an image folder, decoded, or a one-line reason why it cannot be used.

A JPEG or PNG is checked for its structure before it is decoded: a JPEG must reach its end
marker (EOI, FF D9) through its segments and scans, a PNG its IEND chunk. A file cut off while
being written or copied is refused without being decoded (libjpeg would otherwise fill the
missing part in grey and return it as a picture). What the structure cannot show, damage inside
a JPEG's compressed data, libjpeg reports while decoding: it prints a warning such as
"Corrupt JPEG data: premature end of data segment" on the process's stderr and returns a
partial picture. So decoding runs with the process's stderr (file descriptor 2) held back:
libjpeg's and libpng's lines become the reason in our message instead of stray lines on the
terminal, and whatever else is written to stderr in that moment (another thread's log line) is
passed on unchanged right after. One decode at a time holds stderr back (a lock), which costs
nothing next to the network's time per frame.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

JPEG_START = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# After a scan's compressed data, the next marker: 0xFF then a code that is not stuffing (00),
# a restart marker (D0-D7, which sit inside the data) or fill (another FF).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}  # markers without a length field (TEM, SOI, RSTn)
_EOI, _SOS = 0xD9, 0xDA
# What libjpeg (its warnings, jerror.h JWRN_*) and libpng write on stderr, and which of it is damage.
_DECODER_LINE = re.compile(
    r"^(Corrupt JPEG data|Premature end of JPEG file|Inconsistent progression sequence|Invalid SOS parameters"
    r"|Warning: (unknown JFIF|thumbnail image)|Unknown Adobe color transform|Application transferred too many"
    r"|libpng (error|warning))"
)
_DAMAGE_LINE = re.compile(r"^(Corrupt JPEG data|Premature end of JPEG file|Inconsistent progression|libpng error)")


class BadImage(Exception):  # noqa: N818 - a reason, not a program error: FolderSource turns it into a SourceError
    """An image file that cannot be used as a frame; the message says why, without the file's name."""


def read_image(path: Path) -> np.ndarray:
    """The image at `path` as H×W×3 uint8 BGR, checked to be whole.

    Args:
        path: A JPEG or PNG file (another format OpenCV decodes is taken as it decodes).

    Returns:
        The decoded image (what `cv2.imread(path, cv2.IMREAD_COLOR)` returns for a sound file).

    Raises:
        BadImage: The file cannot be read, is empty, is cut off, is not an image, or its decoder
            reported damage; the message is the reason.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadImage(str(exc.strerror or exc)) from None
    problem = structure_problem(data)
    if problem:
        raise BadImage(problem)
    with held_back_stderr() as lines:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    damage = [line for line in lines if _DAMAGE_LINE.match(line)]
    for line in lines:
        if line not in damage:
            log.debug("%s: %s", path, line)
    if damage:
        raise BadImage(f"it is damaged (the decoder says: {damage[0]})")
    if image is None:
        kind = "JPEG" if data.startswith(JPEG_START) else "PNG" if data.startswith(PNG_SIGNATURE) else None
        if kind is None:
            raise BadImage(f"it is not a JPEG or PNG image (its first bytes are {data[:8].hex(' ')})")
        raise BadImage(f"it is not a {kind} image that can be decoded")
    return image


def structure_problem(data: bytes) -> str | None:
    """Why a file cannot be a whole JPEG or PNG, or None (also for other formats: the decoder judges those).

    Args:
        data: The file's bytes.

    Returns:
        The reason ("it is empty (0 bytes)", "it is cut off (...)"), or None.
    """
    if not data:
        return "it is empty (0 bytes)"
    if data.startswith(JPEG_START):
        return _jpeg_problem(data)
    if data.startswith(PNG_SIGNATURE):
        return _png_problem(data)
    return None


_END = {"JPEG": "marker FF D9", "PNG": "chunk IEND"}


def _cut(kind: str, size: int, where: str) -> str:
    return f"it is cut off (its {size} bytes end {where}, before the {kind} end {_END[kind]})"


def _jpeg_problem(data: bytes) -> str | None:
    """Walk a JPEG's markers from SOI to EOI; what follows EOI (a vendor's trailer) does not matter.

    The segments before the first scan are walked; then a file that ends with EOI is whole, and
    any other is walked on through its scans (a trailer after EOI, or a file cut off).
    """
    size, pos = len(data), 2
    while True:
        if pos + 2 > size:
            return _cut("JPEG", size, "between segments")
        if data[pos] != 0xFF:
            return f"it is damaged (no JPEG marker at byte {pos})"
        code = data[pos + 1]
        if code == 0xFF:  # fill before a marker
            pos += 1
        elif code == _EOI:
            return None
        elif code in _STANDALONE:
            pos += 2
        else:
            if pos + 4 > size:
                return _cut("JPEG", size, "inside a segment header")
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            if length < 2:
                return f"it is damaged (a JPEG segment at byte {pos} has length {length})"
            pos += 2 + length
            if pos > size:
                return _cut("JPEG", size, "inside a segment")
            if code == _SOS:  # the compressed data runs to the next marker
                if data.endswith(b"\xff\xd9"):
                    return None  # the usual end: scanning the data for its markers would find this EOI
                found = _NEXT_MARKER.search(data, pos)
                if found is None:
                    return _cut("JPEG", size, "inside the compressed picture data")
                pos = found.start()


def _png_problem(data: bytes) -> str | None:
    """Walk a PNG's chunks to IEND (lengths only; libpng checks the CRCs while decoding)."""
    size, pos = len(data), len(PNG_SIGNATURE)
    while pos + 12 <= size:
        end = pos + 12 + int.from_bytes(data[pos : pos + 4], "big")
        if end > size:
            break
        if data[pos + 4 : pos + 8] == b"IEND":
            return None
        pos = end
    chunk = data[pos + 4 : pos + 8].decode("latin-1") if pos + 8 <= size else ""
    return _cut("PNG", size, f"inside chunk {chunk}" if chunk.isalpha() else "between chunks")


_stderr_lock = threading.Lock()
_stderr_sink: int | None = None  # an unlinked temporary file, made on first use


def _sink() -> int | None:
    global _stderr_sink
    if _stderr_sink is None:
        try:
            handle, name = tempfile.mkstemp(prefix="fastsam-stream-stderr-")
        except OSError:
            return None
        os.unlink(name)
        _stderr_sink = handle
    return _stderr_sink


@contextmanager
def held_back_stderr() -> Iterator[list[str]]:
    """Collect what C libraries print on stderr (fd 2) inside the block, instead of showing it.

    Lines that libjpeg or libpng wrote land in the yielded list (after the block); anything else
    written to fd 2 meanwhile (another thread's output) is written to the real stderr after the
    block. Blocks run one at a time. Where fd 2 cannot be diverted, the block runs as it is and the
    list stays empty.

    Yields:
        The decoder's lines, filled in when the block ends.
    """
    lines: list[str] = []
    with _stderr_lock:
        sink = _sink()
        try:
            saved = os.dup(2) if sink is not None else None
        except OSError:
            saved = None
        if sink is None or saved is None:
            yield lines
            return
        os.ftruncate(sink, 0)
        os.lseek(sink, 0, os.SEEK_SET)
        os.dup2(sink, 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            written = os.lseek(sink, 0, os.SEEK_CUR)
            os.lseek(sink, 0, os.SEEK_SET)
            others = []
            for line in _read_all(sink, written).splitlines(keepends=True):
                text = line.decode("utf-8", "replace").strip()
                if _DECODER_LINE.match(text):
                    lines.append(text)
                else:
                    others.append(line)
            if others:
                _write_all(2, b"".join(others))


def _read_all(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left > 0:
        chunk = os.read(fd, left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:
        pass  # stderr is gone: nothing to pass it on to
