"""The Sink protocol: something that takes every FrameResult and is closed once at the end."""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

from ..core import FrameResult


@runtime_checkable
class Sink(Protocol):
    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None:
        """Finalise the output. Called exactly once, also after errors and Ctrl-C."""
        ...


class CallbackSink:
    """A plain callable used as a sink."""

    def __init__(self, callback: Callable[[FrameResult], object]) -> None:
        self.callback = callback

    def write(self, result: FrameResult) -> None:
        self.callback(result)

    def close(self) -> None:
        pass


def as_sink(obj: Sink | Callable[[FrameResult], object]) -> Sink:
    if isinstance(obj, Sink):
        return obj
    if callable(obj):
        return CallbackSink(obj)
    raise TypeError(f"a sink needs write() and close(), or must be callable; got {type(obj).__name__}")
