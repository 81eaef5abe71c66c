"""Sinks: where FrameResults go (tracks.jsonl, annotated video, or any callable)."""

from .base import CallbackSink, EventSink, FileSink, Sink, as_sink
from .draw import annotate
from .jsonl import EventLogSink, JsonlSink, TornLineWarning, decode_rle, encode_rle, read_jsonl
from .lines import LineFile
from .mot import MotSink
from .video import VideoSink

__all__ = [
    "CallbackSink",
    "EventLogSink",
    "EventSink",
    "FileSink",
    "JsonlSink",
    "LineFile",
    "MotSink",
    "Sink",
    "TornLineWarning",
    "VideoSink",
    "annotate",
    "as_sink",
    "decode_rle",
    "encode_rle",
    "read_jsonl",
]
