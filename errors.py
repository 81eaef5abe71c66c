"""Typed errors. Each carries a one-line message meant for the user; the CLI prints it and exits non-zero."""

from __future__ import annotations

import errno
from pathlib import Path

EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: the outputs are complete up to the frame in hand
EXIT_GAVE_UP = 3  # a live source ran out of reconnect attempts (its outputs are complete up to then)


class FastSAMStreamError(Exception):
    """Base class: anything the user can fix (bad input, missing weights, wrong config)."""

    exit_code = 1


class ConfigError(FastSAMStreamError):
    """A setting is unknown, missing or out of range (from YAML or the command line)."""

    exit_code = 2


class SourceError(FastSAMStreamError):
    """A source cannot be opened or read: missing file, not a video, empty image folder."""


class SourceConnectionError(SourceError):
    """A network or device source could not be reached."""


class OutputError(FastSAMStreamError):
    """An output folder or file cannot be written."""


class DiskFullError(OutputError):
    """An output stopped for want of space (ENOSPC, or EDQUOT: a quota); what it holds before that is whole."""


class TornLineError(OutputError):
    """A JSON-lines output ends in a line cut off part way: the run was killed while writing it."""


class PromptError(FastSAMStreamError, ValueError):
    """A prompt is malformed, does not fit the frame it applies to, or selects nothing."""


class ModelError(FastSAMStreamError):
    """The segmentation model cannot be loaded or run (missing weights, wrong task, bad device)."""


class UnknownStreamError(FastSAMStreamError, KeyError):
    """A request names a stream the service does not have (HTTP 404)."""

    def __str__(self) -> str:  # KeyError's own quotes the message
        return str(self.args[0]) if self.args else ""


class StreamConflictError(FastSAMStreamError):
    """A stream cannot be added: its id is taken, or this run takes no new sources (HTTP 409)."""


class ClusterError(FastSAMStreamError):
    """A Ray cluster run cannot start or go on: Ray missing, the cluster unreachable or too small, every worker lost."""


class ServiceStartingError(FastSAMStreamError):
    """The service is not ready for this request yet: the model is loading (HTTP 503)."""


def error_reason(exc: BaseException) -> str:
    """The short reason in an error from PyAV/FFmpeg or the OS, for one-line messages.

    Args:
        exc: The error.

    Returns:
        Its strerror when it has one (OSError, av.FFmpegError), else its text or type name.
    """
    if isinstance(exc, EOFError):
        return "end of stream"
    # OSError and PyAV's FFmpegError (not an OSError) both carry the short reason as `strerror`.
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})  # no room left: on the disk, or in the user's quota


def write_error(path: str | Path, exc: BaseException, kept: str) -> OutputError:
    """The one-line error for a write to an output that failed part way.

    Args:
        path: The output file.
        exc: The error from the OS or from PyAV/FFmpeg (both carry `errno` and `strerror`).
        kept: What the file still holds, whole, said after a semicolon: "the 120 lines before are complete".

    Returns:
        A DiskFullError ("cannot write PATH: disk full (No space left on device); KEPT") when the
        disk or the quota is full, else an OutputError with the reason (an I/O error, ...).
    """
    reason = error_reason(exc)
    if getattr(exc, "errno", None) in DISK_FULL_ERRNOS:
        return DiskFullError(f"cannot write {path}: disk full ({reason}); {kept}")
    return OutputError(f"cannot write {path}: {reason}; {kept}")
