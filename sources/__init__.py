"""Frame sources. `open_source` picks one from what the user typed."""

from __future__ import annotations

from pathlib import Path

from ..errors import SourceError
from .base import Source
from .file import FileSource
from .folder import FolderSource


def open_source(spec: str | Path, *, folder_fps: float = 30.0) -> Source:
    """A folder of images or a video file; a clear SourceError for anything else."""
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path, fps=folder_fps)
    if path.is_file():
        return FileSource(path)
    raise SourceError(f"no such file or folder: {spec}")


__all__ = ["FileSource", "FolderSource", "Source", "open_source"]
