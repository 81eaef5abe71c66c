"""A text output written in whole lines: each append is on disk entirely, or not at all.

tracks.jsonl, events.jsonl and mot.txt are written through `LineFile`. A line is never left cut
off by a failed write: each append is one `os.write` of whole lines (a loop only when the kernel
takes part of it, which on a regular file means the disk is full), and when a write fails the file
is cut back to where the append began. On a full disk the append raises a DiskFullError saying
how many lines before it are complete. A kill (SIGKILL, power loss) in the middle of a write can
still leave a cut-off last line: `read_jsonl` in jsonl.py reports it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path

from ..errors import OutputError, write_error

log = logging.getLogger(__name__)

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)


def plural(count: int, what: str) -> str:
    """'1 line', '2 lines': a count and its noun for one-line messages."""
    return f"{count} {what}{'' if count == 1 else 's'}"


class LineFile:
    """An output file of lines, created (emptied) by `open()` and appended to in whole lines.

    Args:
        path: The file; its folder is made when it is opened.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lines = 0  # whole lines in the file
        self.size = 0  # its length in bytes: where the next append begins
        self._fd: int | None = None
        self._failed: OutputError | None = None
        self._closed = False

    @property
    def opened(self) -> bool:
        """Whether `open()` has been called (the file exists unless a failure removed it)."""
        return self._fd is not None or self._failed is not None

    def open(self) -> None:
        """Create the file (emptying one that exists), and its folder.

        Raises:
            DiskFullError: The disk is full.
            OutputError: The folder or the file cannot be made.
            ValueError: It was closed: opening it again would empty it.
        """
        if self._closed:  # opening again would empty the file
            raise ValueError(f"{self.path} is closed")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, _FLAGS, 0o666)
        except OSError as exc:
            raise write_error(self.path, exc, "nothing was written") from None

    def append(self, text: str) -> None:
        """Add whole lines to the file: all of `text`, or (when the write fails) none of it.

        Args:
            text: One or more lines, each ending in a newline.

        Raises:
            DiskFullError: The disk is full: the file ends at the line before, and every later
                append raises the same error (a gap in the lines would go unnoticed).
            OutputError: Another write failure (an I/O error, ...), the same way.
            ValueError: `text` does not end in a newline, or the file was closed.
        """
        if self._failed is not None:
            raise self._failed
        if not text.endswith("\n"):
            raise ValueError("LineFile.append takes whole lines, each ending in a newline")
        if self._fd is None:
            self.open()
        data = text.encode("utf-8")
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                if written <= 0:  # not seen on Linux: a full disk fails the next call instead
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[written:]
        except OSError as exc:
            raise self._fail(exc) from None
        except BaseException:  # Ctrl-C between two parts of one line: take the part back, then go on out
            self._cut_back()
            raise
        self.size += len(data)
        self.lines += text.count("\n")

    def _fail(self, exc: OSError) -> OutputError:
        """Cut the file back to its whole lines and remember, and return, the one-line error."""
        self._cut_back()
        kept = "nothing was written"
        if self.lines:
            kept = f"the {plural(self.lines, 'line')} before {'is' if self.lines == 1 else 'are'} complete"
        self._failed = write_error(self.path, exc, kept)
        if self.size == 0:  # nothing whole in it: leave no empty file that looks like a run's output
            self._close_fd()
            with contextlib.suppress(OSError):
                self.path.unlink()
        return self._failed

    def _cut_back(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self.size)
        except OSError as exc:  # then a reader finds a cut-off last line, and says so
            log.debug("cannot cut %s back to %d bytes: %s", self.path, self.size, exc)

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        """Sync the file to disk and close it; closing twice is harmless.

        Raises:
            DiskFullError: A file system that reports a full disk only now (NFS, some FUSE ones)
                did; never raised again for a failure an append already raised.
            OutputError: The same for another failure.
        """
        fd = self._fd
        self._closed = True
        if fd is None:
            return
        try:
            if self._failed is None:
                os.fsync(fd)  # surfaces write errors that some file systems report late
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # not a file that can be synced (a pipe, /dev/stdout): nothing to report
                return
            self._failed = write_error(self.path, exc, "its last lines may be missing")
            raise self._failed from None
        finally:
            self._close_fd()
