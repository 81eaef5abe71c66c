"""The sink protocols, and `as_sink` for plain callables.

What takes every FrameResult (`Sink`), what also takes its sources' events (`EventSink`), and what
writes a file (`FileSink`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..core import FrameResult, SourceEvent, ZoneEvent


@runtime_checkable
class Sink(Protocol):
    """Takes every FrameResult of its sources, in order, and is closed once at the end."""

    def write(self, result: FrameResult) -> None:
        """Take one frame's result.

        Args:
            result: The frame, its instances and its tracks.
        """
        ...

    def close(self) -> None:
        """Finalise the output. Called exactly once, also after errors and Ctrl-C."""
        ...


@runtime_checkable
class EventSink(Sink, Protocol):
    """A sink that also takes its sources' events, in order with the frames.

    The events: connected, lost, targets changed, ... (core.EventKind), and, with zones or lines
    configured, what tracks do in them (core.ZoneEvent).
    """

    def on_event(self, event: SourceEvent | ZoneEvent) -> None:
        """Take one event.

        Args:
            event: What happened, on which source and frame.
        """
        ...


@runtime_checkable
class FileSink(Sink, Protocol):
    """A sink that writes one file: the run's summary names it."""

    path: Path


class CallbackSink:
    """A plain callable used as a sink.

    Args:
        callback: Called with every FrameResult.
    """

    def __init__(self, callback: Callable[[FrameResult], object]) -> None:
        self.callback = callback

    def write(self, result: FrameResult) -> None:
        """Call the callback."""
        self.callback(result)

    def close(self) -> None:
        """Nothing to finalise."""


def as_sink(obj: Sink | Callable[[FrameResult], object]) -> Sink:
    """A Sink for a Sink or a plain callable.

    Args:
        obj: A Sink, or a callable taking a FrameResult.

    Returns:
        The sink itself, or a CallbackSink around the callable.

    Raises:
        TypeError: Neither.
    """
    if isinstance(obj, Sink):
        return obj
    if callable(obj):
        return CallbackSink(obj)
    raise TypeError(f"a sink needs write() and close(), or must be callable; got {type(obj).__name__}")
