"""MOTChallenge results files: one line per tracked track per frame, each frame's lines written whole as it goes.

    frame,id,bb_left,bb_top,bb_width,bb_height,conf,-1,-1,-1

The MOTChallenge convention (motchallenge.net/instructions): frame numbers, ids and boxes are
1-based, so `frame` is the frame index + 1 and bb_left/bb_top are the track's x1/y1 + 1 (a box
from the left edge of the image starts at 1, as in the ground truth). Only tracks matched on
the frame (state "tracked") are written: a lost track's box is a guess, which MOT scores would
count as a false positive. One file holds one sequence, so a MotSink takes one source's results.
A frame's lines are written whole or not at all (lines.LineFile): a full disk ends the file at the
frame before and raises a DiskFullError.
"""

from __future__ import annotations

from pathlib import Path

from ..core import FrameResult, Track, TrackState
from .lines import LineFile


def mot_line(frame_index: int, track: Track) -> str:
    """The MOTChallenge line of one track on the frame with 0-based index `frame_index`."""
    x1, y1, x2, y2 = (float(v) for v in track.box)
    return (
        f"{frame_index + 1},{track.id},{x1 + 1:.2f},{y1 + 1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},"
        f"{float(track.score):.4f},-1,-1,-1"
    )


def mot_lines(result: FrameResult) -> list[str]:
    """The MOTChallenge lines of one frame: one per track matched on it (lost tracks are left out)."""
    return [mot_line(result.frame.index, t) for t in result.tracks if t.state is TrackState.TRACKED]


class MotSink:
    """Writes `path` (opened on the first frame, so a run that fails to start leaves nothing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = LineFile(self.path)
        self._source_id: str | None = None

    def lines(self, result: FrameResult) -> list[str]:
        """The MOTChallenge lines of one frame (`mot_lines`)."""
        return mot_lines(result)

    def write(self, result: FrameResult) -> None:
        """Append one frame's lines, all of them (or none, when the write fails), straight to the file.

        Args:
            result: The frame's result; every result must come from the same source.

        Raises:
            ValueError: The result is from another source than the first one written.
            DiskFullError: The disk is full: the file ends at the frame before (and says so).
            OutputError: The file cannot be created, or another write failure.
        """
        source_id = result.frame.source_id
        if self._source_id is None:
            self._source_id = source_id
        elif source_id != self._source_id:  # frame numbers of two sources would collide in one file
            raise ValueError(
                f"a MotSink holds one source ({self._source_id}), got a frame of {source_id}: give each source its own"
            )
        if not self._file.opened:  # on the first frame, even one with nothing tracked: the file says so
            self._file.open()
        text = "".join(line + "\n" for line in self.lines(result))
        if text:
            self._file.append(text)

    def close(self) -> None:
        """Sync and close the file (nothing was created when no frame came).

        Raises:
            OutputError: Only a failure the disk reports this late (DiskFullError when it is full).
        """
        self._file.close()
