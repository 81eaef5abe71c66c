"""Sinks: where FrameResults go (tracks.jsonl, annotated video, or any callable)."""

from .base import CallbackSink, EventSink, FileSink, Sink, as_sink
from .jsonl import EventLogSink, JsonlSink, decode_rle, encode_rle
from .mot import MotSink
from .video import VideoSink, annotate

__all__ = [
    "CallbackSink",
    "EventLogSink",
    "EventSink",
    "FileSink",
    "JsonlSink",
    "MotSink",
    "Sink",
    "VideoSink",
    "annotate",
    "as_sink",
    "decode_rle",
    "encode_rle",
]
