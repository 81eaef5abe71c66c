"""Frame sources, and `open_source`, which picks one from what the user typed.

video file, image folder              → FileSource, FolderSource   (never drop a frame)
rtsp:// rtsps:// rtmp:// http(s):// srt:// udp:// tcp:// rtp://  → StreamSource   (live)
/dev/videoN, or a bare camera index N → CameraSource (V4L2)         (live)
lavfi:GRAPH (e.g. lavfi:testsrc=size=640x480:rate=30,realtime) → CameraSource (FFmpeg virtual device)
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from ..errors import SourceError
from .base import DropPolicy, Source, missing_path_reason, safe_id
from .file import FileSource
from .folder import FolderSource
from .live import STREAM_SCHEMES, CameraSource, LiveSource, ReconnectPolicy, SourceState, StreamSettings, StreamSource
from .redact import MASK, redact_url

_CAMERA_DEVICE = re.compile(r"^(/dev/video(\d+)|(\d+))$")
_V4L2_MAJOR = 81  # the character-device major number of video4linux devices


def is_stream_url(spec: str) -> bool:
    """Whether `spec` is a URL with a stream scheme StreamSource opens (rtsp, http(s), srt, ...)."""
    scheme, sep, _ = spec.partition("://")
    return bool(sep) and scheme.lower() in STREAM_SCHEMES


def default_id(spec: str) -> str:
    """The id a source gets when none is given: file stem, folder name, host and path, or device name."""
    if is_stream_url(spec):
        # From the redacted URL, without its scheme and user: no credential can end up in a folder name.
        address = redact_url(spec).split("://", 1)[1].rpartition("@")[2]
        return safe_id(address.replace(MASK, ""), "stream")
    if spec.startswith("lavfi:"):
        return safe_id("lavfi-" + re.split(r"[=,:]", spec[len("lavfi:") :], maxsplit=1)[0], "lavfi")
    camera = _CAMERA_DEVICE.match(spec)
    if camera:
        return f"video{camera.group(2) or camera.group(3)}"
    path = Path(spec)
    return safe_id(path.resolve().name if path.is_dir() else path.stem, "source")


def open_source(
    spec: str | Path,
    *,
    source_id: str | None = None,
    folder_fps: float = 30.0,
    stream: StreamSettings | None = None,
    camera_size: str | None = None,
    camera_fps: float | None = None,
    skip_bad_images: bool = False,
) -> Source:
    """A source for a file, folder, stream URL or camera; a clear SourceError for anything else.

    Args:
        spec: What the user typed (see the module docstring for what is recognised).
        source_id: The name in outputs and logs; default: default_id(spec).
        folder_fps: The frame rate of an image folder.
        stream: How streams and cameras connect and reconnect; default: StreamSettings().
        camera_size: A V4L2 camera's capture size, e.g. "1280x720" (default: the device's).
        camera_fps: A V4L2 camera's capture rate (default: the device's).
        skip_bad_images: In an image folder, skip damaged or unreadable images with a warning
            (counted in FolderSource.skipped) instead of stopping at the first one.

    Returns:
        The opened source (live ones are connected already).

    Raises:
        SourceError: Nothing to open at `spec`, or a path that is not a regular file or a folder
            (a FIFO, a socket, a device that is not a camera); messages never hold a URL's credentials.
        SourceConnectionError: A stream or camera cannot be opened.
    """
    stream = stream if stream is not None else StreamSettings()
    text = str(spec)
    source_id = source_id or default_id(text)
    if is_stream_url(text):
        return StreamSource(text, source_id, stream)
    if text.startswith("lavfi:"):
        return CameraSource(text[len("lavfi:") :], source_id, format="lavfi", settings=stream)
    camera = _CAMERA_DEVICE.match(text)
    if camera and (camera.group(2) or not Path(text).exists()):  # a file called "0" is still a file
        device = camera.group(1) if camera.group(2) else f"/dev/video{camera.group(3)}"
        if not Path(device).exists():
            raise SourceError(f"no such camera: {device}")
        return CameraSource(device, source_id, size=camera_size, fps=camera_fps, settings=stream)
    path = Path(text)
    if path.is_dir():
        return FolderSource(path, fps=folder_fps, source_id=source_id, skip_bad_images=skip_bad_images)
    if path.is_file():
        return FileSource(path, source_id=source_id)
    if _is_v4l2_device(text):  # a camera by another name, e.g. /dev/v4l/by-id/usb-...-video-index0
        return CameraSource(text, source_id, size=camera_size, fps=camera_fps, settings=stream)
    if "://" in text and not path.exists():
        raise SourceError(f"unsupported stream URL {redact_url(text)} (schemes: {', '.join(STREAM_SCHEMES)})")
    raise SourceError(missing_path_reason(text))  # redacted: a mistyped URL may still hold a password


def _is_v4l2_device(text: str) -> bool:
    """Whether `text` is a video4linux character device (symbolic links followed)."""
    try:
        st = os.stat(text)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == _V4L2_MAJOR


__all__ = [
    "CameraSource",
    "DropPolicy",
    "FileSource",
    "FolderSource",
    "LiveSource",
    "ReconnectPolicy",
    "Source",
    "SourceState",
    "StreamSettings",
    "StreamSource",
    "default_id",
    "is_stream_url",
    "open_source",
    "redact_url",
]
