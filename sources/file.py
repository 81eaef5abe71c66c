"""Video files through PyAV: any container and codec FFmpeg reads, pts taken from the stream."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av

from ..core import Frame
from ..errors import SourceError, error_reason
from .base import missing_path_reason, safe_id
from .mp4 import file_layout, unreadable_reason

_DEFAULT_FPS = Fraction(30)
log = logging.getLogger(__name__)


class FileSource:
    """A video file, opened now so that a missing or unreadable file fails before the model loads.

    Not live, so by default the pipeline waits for it instead of dropping frames (DropPolicy.BLOCK).
    `fps` is the stream's average (else guessed) rate, 30 when it has neither; `frame_count` is the
    container's count, or None. A file that ends early (cut off while being written or copied) is
    read as far as it goes, with a warning; an MP4 cut off before its index was written cannot be
    read at all, and the error says so.

    Args:
        path: The video file.
        source_id: The name in outputs and logs; default: the file's stem.

    Raises:
        SourceError: No such file (or not a regular one), not a video FFmpeg reads (an MP4 without
            its index says so), or no video stream in it.
    """

    is_live = False

    def __init__(self, path: str | Path, source_id: str | None = None) -> None:
        self.path = Path(path)
        self.source_id = source_id or safe_id(self.path.stem, "video")
        if not self.path.is_file():
            raise SourceError(missing_path_reason(str(self.path)))
        try:
            self._container = av.open(str(self.path), mode="r")
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            why = unreadable_reason(file_layout(self.path)) or error_reason(exc)
            raise SourceError(f"cannot read {self.path} as a video: {why}") from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{self.path} has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"  # frame- and slice-threaded decoding where the codec allows
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = Fraction(rate) if rate else _DEFAULT_FPS
        self.frame_count = self._stream.frames or None

    def frames(self) -> Iterator[Frame]:
        """Every decoded frame in order, its pts from the stream (index / fps where a frame has none).

        Raises:
            SourceError: Decoding fails, or the file holds no decodable frame.
        """
        stream, base = self._stream, self._stream.time_base
        index = 0
        try:
            for decoded in self._container.decode(stream):
                pts = float(decoded.pts * base) if decoded.pts is not None and base else index / float(self.fps)
                image = decoded.to_ndarray(format="bgr24")
                yield Frame(image, self.source_id, index, pts, time.monotonic())
                index += 1
        except av.FFmpegError as exc:
            raise SourceError(f"decoding {self.path} failed at frame {index}: {error_reason(exc)}") from None
        if index == 0:
            why = unreadable_reason(file_layout(self.path))
            raise SourceError(f"{self.path} contains no decodable video frames" + (f": {why}" if why else ""))
        layout = file_layout(self.path) if not self.frame_count or index < self.frame_count else None
        cut = layout.cut_note() if layout is not None else None
        if self.frame_count and index < self.frame_count:
            log.warning(
                "%s: decoded %d of the %d frames its container announces (%s)",
                self.path,
                index,
                self.frame_count,
                f"the file is cut off: {cut}" if cut else "truncated, or a stream that skips frames",
            )
        elif cut:
            log.warning("%s: decoded %d frames, then the file ends: it is cut off (%s)", self.path, index, cut)

    def close(self) -> None:
        """Close the container."""
        self._container.close()
