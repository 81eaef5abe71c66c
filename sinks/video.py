"""annotated.mp4: every source frame, with the target's mask and box drawn, H.264 through PyAV.

Same frame count and timestamps as the source (so the same frame rate, variable or not). The
file is finalised (encoder flushed, trailer written) in `close()`, which the pipeline calls on
every exit path, Ctrl-C included.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from ..core import FrameResult, TrackState
from ..errors import OutputError, error_reason

# BGR. Each target gets its colour from its id (id 1: amber), so several targets stay apart.
TARGET_COLOURS = (
    (0, 200, 255),
    (255, 120, 0),
    (80, 220, 60),
    (220, 60, 220),
    (60, 60, 255),
    (255, 255, 0),
    (0, 128, 255),
    (160, 80, 255),
)
OTHER_COLOUR = (200, 200, 200)
MASK_ALPHA = 0.45
# Frames keep their source timestamps (variable frame rates included) at 90 kHz, MPEG's clock.
TIME_BASE = Fraction(1, 90_000)


def target_colour(track_id: int) -> tuple[int, int, int]:
    """A target's colour, fixed by its id so it stays the same over the whole video."""
    return TARGET_COLOURS[(track_id - 1) % len(TARGET_COLOURS)]


def annotate(result: FrameResult) -> np.ndarray:
    """A copy of the frame with each target's mask and every matched track's box and id drawn."""
    image = result.frame.image.copy()
    for target in result.targets:
        mask = result.mask_of(target) if target.id in result.target_rows else None
        if mask is not None:
            tint = np.array(target_colour(target.id), np.float32)
            image[mask] = (image[mask] * (1 - MASK_ALPHA) + tint * MASK_ALPHA).astype(np.uint8)
    for track in result.tracks:
        if track.state is TrackState.REMOVED or (track.state is TrackState.LOST and not track.is_target):
            continue
        colour = target_colour(track.id) if track.is_target else OTHER_COLOUR
        x1, y1, x2, y2 = (int(round(v)) for v in track.box)
        dashed = track.state is TrackState.LOST
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 1 if dashed else 2, cv2.LINE_AA)
        label = f"{track.id}{' target' if track.is_target else ''}{' (lost)' if dashed else ''}"
        cv2.putText(image, label, (x1 + 2, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return image


class VideoSink:
    """Writes annotated.mp4 (see the module docstring), opened on the first frame at that frame's size.

    Args:
        path: The video file to write.
        fps: The source's nominal frame rate, the stream's declared rate; each frame keeps its own
            timestamp.
        codec: The FFmpeg encoder.
        crf: The encoder's constant rate factor: lower is better quality and a bigger file.
    """

    def __init__(self, path: str | Path, fps: Fraction, codec: str = "libx264", crf: int = 23) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps)
        self.codec = codec
        self.crf = crf
        self.frames_written = 0
        self._container: av.container.OutputContainer | None = None
        self._stream = None
        self._shape: tuple[int, int] | None = None  # (height, width) as encoded: even, as yuv420p needs
        self._first_pts: float | None = None
        self._last_ticks: int | None = None

    def _open(self, height: int, width: int) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            container = av.open(str(self.path), mode="w")
        except (OSError, av.FFmpegError) as exc:
            raise OutputError(f"cannot write {self.path}: {error_reason(exc)}") from None
        try:
            stream = container.add_stream(self.codec, rate=self.fps)
            self._shape = (height + height % 2, width + width % 2)
            stream.height, stream.width = self._shape
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = TIME_BASE
            stream.options = {"crf": str(self.crf), "preset": "veryfast"}
        except BaseException:
            container.close()
            raise
        self._container, self._stream = container, stream

    def _ticks(self, pts: float) -> int:
        """The source's own timestamp in TIME_BASE units, kept strictly increasing for the muxer."""
        if self._first_pts is None:
            self._first_pts = pts
        ticks = round((pts - self._first_pts) / TIME_BASE)
        if self._last_ticks is not None and ticks <= self._last_ticks:
            ticks = self._last_ticks + 1
        self._last_ticks = ticks
        return ticks

    def write(self, result: FrameResult) -> None:
        """Draw one frame (see annotate) and encode it at its source timestamp.

        Args:
            result: The frame's result.

        Raises:
            OutputError: The file cannot be created.
        """
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
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and write the trailer, so the file plays; nothing to do when no frame came."""
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            for packet in self._stream.encode(None):
                container.mux(packet)
        finally:
            container.close()
