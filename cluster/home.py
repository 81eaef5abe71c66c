"""What the driver writes for one stream of a cluster run: tracks.jsonl, events.jsonl and mot.txt.

The same files, lines and guarantees as in one process (sinks/jsonl.py, sinks/mot.py): each line
whole or not at all, written as it comes home.
"""

from __future__ import annotations

from pathlib import Path

from ..sinks.jsonl import JsonLines
from ..sinks.lines import LineFile
from .records import FrameRecord


class HomeFiles:
    """A stream's files on the driver, each created with its first line.

    Args:
        folder: The stream's output folder.
        mot: Also write mot.txt.
    """

    def __init__(self, folder: Path, mot: bool) -> None:
        self.folder = folder
        self.tracks = JsonLines(folder / "tracks.jsonl")
        self.events = JsonLines(folder / "events.jsonl")
        self.mot = LineFile(folder / "mot.txt") if mot else None
        self.closed = False

    def frame(self, record: FrameRecord) -> None:
        """Write one frame's tracks.jsonl line (and its mot.txt lines)."""
        self.tracks.write(record.record)
        if self.mot is not None:
            if not self.mot.opened:  # on the first frame, even one with nothing tracked
                self.mot.open()
            if record.mot:
                self.mot.append("".join(line + "\n" for line in record.mot))

    def event(self, record: dict) -> None:
        """Write one events.jsonl line."""
        self.events.write(record)

    @property
    def paths(self) -> list[Path]:
        """The files written so far."""
        files = [self.tracks.path, self.events.path, *([self.mot.path] if self.mot else [])]
        return [path for path in files if path.exists()]

    def close(self) -> None:
        """Sync and close every file (once); the first failure is raised after all are closed."""
        if self.closed:
            return
        self.closed = True
        errors = []
        for closing in (self.tracks, self.events, *([self.mot] if self.mot else [])):
            try:
                closing.close()
            except Exception as exc:  # noqa: BLE001 - every file gets closed before we report
                errors.append(exc)
        if errors:
            raise errors[0]
