"""Typed errors. Each carries a one-line message meant for the user; the CLI prints it and exits non-zero."""

from __future__ import annotations


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


class PromptError(FastSAMStreamError, ValueError):
    """A prompt is malformed, does not fit the frame it applies to, or selects nothing."""


class ModelError(FastSAMStreamError):
    """The segmentation model cannot be loaded or run (missing weights, wrong task, bad device)."""


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
