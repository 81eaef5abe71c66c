"""annotated.mp4: every source frame, with the target's mask and box drawn, H.264 through PyAV.

Same frame count and timestamps as the source (so the same frame rate, variable or not). The
file is finalised (encoder flushed, trailer written) in `close()`, which the pipeline calls on
every exit path, Ctrl-C included.

It is a fragmented MP4 (a `moov` without samples first, then a `moof`+`mdat` fragment for every
second of video, each written whole as soon as it is complete), so a run that is killed (SIGKILL, power
loss) leaves a file that plays up to its last complete fragment: it lacks at most the last
`frames_at_risk` frames given to the sink (one second of video, plus the encoder's look-ahead,
plus the frame in hand). On a full disk the file is cut back to its last complete fragment, so
what is there plays, and a DiskFullError says how many frames that is.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
from fractions import Fraction
from pathlib import Path

import av
import cv2

from ..core import FrameResult
from ..errors import OutputError, error_reason, write_error
from .draw import annotate
from .lines import plural

log = logging.getLogger(__name__)

# Frames keep their source timestamps (variable frame rates included) at 90 kHz, MPEG's clock.
TIME_BASE = Fraction(1, 90_000)
# Fragmented MP4: a moov without samples, then one moof+mdat per fragment, each at most FRAGMENT_S of
# video (and a new one at every keyframe). delay_moov writes the moov with the first fragment, so it
# has the edit list that puts the first frame at time 0 despite the B-frames' delay (negative_cts_offsets
# does not, for every stream); flush_packets writes each fragment out as soon as it is complete.
FRAGMENT_S = 1.0
MP4_OPTIONS = {
    "movflags": "frag_keyframe+empty_moov+delay_moov+default_base_moof",
    "frag_duration": str(round(FRAGMENT_S * 1_000_000)),  # microseconds
    "flush_packets": "1",
}
FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}
# x264 holds this many frames before the first packet comes out: its rc-lookahead (10, preset
# veryfast's own, pinned here) plus one. With slice threads it does not grow with the core count
# (frame threads would add one frame per thread).
X264_LOOKAHEAD = 10
ENCODER_DELAY_FRAMES = X264_LOOKAHEAD + 1


class _OutputFile:
    """The file under the muxer (PyAV writes through it): it keeps count of what is written, and the first failure.

    The muxer only ever sees an error from it (PyAV's own file handling can let a failed final
    write go unreported); the sink reads `error` to know for certain.
    """

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
        self.pos = 0
        self.size = 0
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        view = memoryview(data)
        try:
            while view:
                written = os.pwrite(self.fd, view, self.pos)
                if written <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self.pos += written
                self.size = max(self.size, self.pos)
                view = view[written:]
        except OSError as exc:
            self.error = exc
            raise
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self.pos = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence] + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def release(self, keep: int | None) -> None:
        """Sync and close it; `keep`: cut it back to that many bytes instead of syncing (None: keep it all)."""
        if self.fd < 0:
            return
        try:
            if keep is not None:
                os.ftruncate(self.fd, keep)
            else:
                os.fsync(self.fd)
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Close it as it is (closing twice is harmless)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class VideoSink:
    """Writes annotated.mp4 (see the module docstring), opened on the first frame at that frame's size.

    Args:
        path: The video file to write: .mp4 or .m4v (fragmented MP4), or .mov (the same in QuickTime's box).
        fps: The source's nominal frame rate, the stream's declared rate; each frame keeps its own
            timestamp.
        codec: The FFmpeg encoder.
        crf: The encoder's constant rate factor: lower is better quality and a bigger file.

    Raises:
        ValueError: `path` has another suffix.
    """

    def __init__(self, path: str | Path, fps: Fraction, codec: str = "libx264", crf: int = 23) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in FORMATS:
            raise ValueError(f"{self.path}: annotated video is fragmented MP4; name it .mp4, .m4v or .mov")
        self.fps = Fraction(fps)
        self.codec = codec
        self.crf = crf
        self.frames_written = 0  # frames given to the encoder
        self.frames_complete = 0  # frames in complete fragments on disk: what plays if the run is killed now
        self._file: _OutputFile | None = None
        self._container: av.container.OutputContainer | None = None
        self._stream = None
        self._shape: tuple[int, int] | None = None  # (height, width) as encoded: even, as yuv420p needs
        self._first_pts: float | None = None
        self._last_ticks: int | None = None
        self._packets = 0  # packets handed to the muxer
        self._complete_size = 0  # bytes of the file up to the end of its last complete fragment
        self._failed: OutputError | None = None  # raised once; the file is then cut back at close()
        self._closed = False

    @property
    def frames_at_risk(self) -> int:
        """At most how many of the frames given to this sink a kill (SIGKILL, power loss) loses.

        The frames of the fragment not yet complete (one second of video at the nominal rate),
        those still in the encoder (ENCODER_DELAY_FRAMES with libx264) and the frame in hand. A
        kill in the very middle of writing a fragment loses that fragment too.
        """
        delay = ENCODER_DELAY_FRAMES if self.codec == "libx264" else 0
        return math.ceil(self.fps * Fraction(FRAGMENT_S)) + delay + 1

    def _open(self, height: int, width: int) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            file = _OutputFile(self.path)
        except OSError as exc:
            raise write_error(self.path, exc, "nothing was written") from None
        try:
            container = av.open(
                file, mode="w", format=FORMATS[self.path.suffix.lower()], container_options=dict(MP4_OPTIONS)
            )
            stream = container.add_stream(self.codec, rate=self.fps)
            self._shape = (height + height % 2, width + width % 2)
            stream.height, stream.width = self._shape
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = TIME_BASE
            options = {"crf": str(self.crf), "preset": "veryfast"}
            if self.codec == "libx264":
                # Slice threads (PyAV's default, pinned) keep the encoder's delay at its look-ahead on any machine.
                stream.codec_context.thread_type = "SLICE"
                options["rc-lookahead"] = str(X264_LOOKAHEAD)
            stream.options = options
        except (OSError, av.FFmpegError) as exc:
            file.abandon()
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise OutputError(f"cannot write {self.path}: {error_reason(exc)}") from None
        self._file, self._container, self._stream = file, container, stream

    def _ticks(self, pts: float) -> int:
        """The source's own timestamp in TIME_BASE units, kept strictly increasing for the muxer."""
        if self._first_pts is None:
            self._first_pts = pts
        ticks = round((pts - self._first_pts) / TIME_BASE)
        if self._last_ticks is not None and ticks <= self._last_ticks:
            ticks = self._last_ticks + 1
        self._last_ticks = ticks
        return ticks

    def _mux(self, packets: list[av.Packet]) -> None:
        """Hand packets to the muxer, keeping count of the complete fragments on disk.

        The muxer holds a fragment in memory and writes it whole (flush_packets) when a packet
        starts the next one; so whenever the file grows, every packet before this one is in it.
        """
        for packet in packets:
            self._container.mux(packet)
            if self._file.size != self._complete_size:
                self._complete_size = self._file.size
                self.frames_complete = self._packets
            self._packets += 1

    def _failure(self, exc: BaseException) -> OutputError:
        """The one-line error for a failure of the encoder, the muxer or the disk."""
        cause = self._file.error or exc
        kept = "nothing playable was written"
        if self.frames_complete:
            kept = f"its first {plural(self.frames_complete, 'frame')} play{'s' if self.frames_complete == 1 else ''}"
        return write_error(self.path, cause, kept)

    def write(self, result: FrameResult) -> None:
        """Draw one frame (see annotate) and encode it at its source timestamp.

        Args:
            result: The frame's result.

        Raises:
            DiskFullError: The disk is full: the file is cut back to its last complete fragment
                when the sink is closed (the error says how many frames play); every later write
                raises the same error.
            OutputError: The file cannot be created, or another write failure, the same way.
            ValueError: The sink was closed.
        """
        if self._failed is not None:
            raise self._failed
        if self._closed:  # opening the file again would empty it
            raise ValueError(f"{self.path} is closed")
        image = annotate(result)
        if self._container is None:
            self._open(*image.shape[:2])
        height, width = self._shape
        h, w = image.shape[:2]
        if (h, w) != (height, width):
            # Odd sizes are padded by one pixel; a frame of another size (a stream that changed
            # resolution) is scaled to the size the file was opened with.
            if 0 <= height - h <= 1 and 0 <= width - w <= 1:
                image = cv2.copyMakeBorder(image, 0, height - h, 0, width - w, cv2.BORDER_REPLICATE)
            else:
                image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = self._ticks(result.frame.pts)
        frame.time_base = TIME_BASE
        try:
            self._mux(self._stream.encode(frame))
        except (OSError, av.FFmpegError) as exc:
            self._failed = self._failure(exc)
            raise self._failed from None
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and write the last fragment, so the file plays; nothing to do when no frame came.

        After a failure (here or in `write`) the file is cut back to its last complete fragment, and
        removed when that holds no frame. The error is raised once: here, unless `write` raised it.

        Raises:
            DiskFullError: The disk filled up while finishing the file.
            OutputError: Another failure while finishing it.
        """
        self._closed = True
        if self._container is None:
            return
        raised_before = self._failed is not None
        try:
            self._finish()
        finally:
            self._file.abandon()  # already closed unless finishing failed unexpectedly
            self._container, self._stream, self._file = None, None, None
        if self._failed is not None and not raised_before:
            raise self._failed

    def _finish(self) -> None:
        """close(): flush the encoder, write the trailer, then sync the file, or cut it back after a failure."""
        try:
            if self._failed is None:
                self._mux(self._stream.encode(None))
        except (OSError, av.FFmpegError) as exc:
            self._failed = self._failure(exc)
        try:
            self._container.close()  # the trailer: the last fragment (and an index of the fragments)
        except (OSError, av.FFmpegError) as exc:
            self._failed = self._failed or self._failure(exc)
        if self._failed is None and self._file.error is not None:  # a failed write PyAV did not report
            self._failed = self._failure(self._file.error)
        if self._failed is None:
            self.frames_complete = self._packets
        try:
            self._file.release(keep=None if self._failed is None else self._complete_size)
        except OSError as exc:
            if self._failed is None:
                self._failed = write_error(self.path, exc, "its last frames may be missing")
            else:
                log.debug("cannot cut %s back to its last complete fragment: %s", self.path, exc)
        if self._failed is not None and self.frames_complete == 0:  # nothing in it plays: leave no such file
            with contextlib.suppress(OSError):
                self.path.unlink()
