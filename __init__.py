"""fastsam-stream: real-time video segmentation and tracking on FastSAM.

    from fastsam_stream import load_config, build_pipeline
    pipeline = build_pipeline(load_config(overrides={"sources": ["clip.mp4"], ...}))
    for result in pipeline:            # one FrameResult per frame, after the sinks have it
        result.target, result.target_mask
"""

from .assemble import build_pipeline, prompts_from
from .config import Config, load_config
from .core import DenseMasks, EventKind, Frame, FrameResult, Instances, Prompt, SourceEvent, TargetChange, Track, TrackState
from .errors import (
    ConfigError,
    FastSAMStreamError,
    ModelError,
    OutputError,
    PromptError,
    SourceConnectionError,
    SourceError,
)
from .pipeline import BatchSettings, Pipeline, RunSummary, SegmenterSettings, SourceSummary, UltralyticsSegmenter
from .pipeline.control import ControlServer, StdinControl
from .sinks import EventLogSink, JsonlSink, MotSink, VideoSink
from .sources import (
    CameraSource,
    DropPolicy,
    FileSource,
    FolderSource,
    ReconnectPolicy,
    StreamSettings,
    StreamSource,
    open_source,
)
from .trackers import ByteTracker, ByteTrackerSettings, IoUTracker

__version__ = "0.1.0"

__all__ = [
    "BatchSettings",
    "ByteTracker",
    "ByteTrackerSettings",
    "CameraSource",
    "Config",
    "ConfigError",
    "ControlServer",
    "DenseMasks",
    "DropPolicy",
    "EventKind",
    "EventLogSink",
    "FastSAMStreamError",
    "FileSource",
    "FolderSource",
    "Frame",
    "FrameResult",
    "Instances",
    "IoUTracker",
    "JsonlSink",
    "ModelError",
    "MotSink",
    "OutputError",
    "Pipeline",
    "Prompt",
    "PromptError",
    "ReconnectPolicy",
    "RunSummary",
    "SegmenterSettings",
    "SourceConnectionError",
    "SourceError",
    "SourceEvent",
    "SourceSummary",
    "StreamSettings",
    "StdinControl",
    "StreamSource",
    "TargetChange",
    "Track",
    "TrackState",
    "UltralyticsSegmenter",
    "VideoSink",
    "build_pipeline",
    "load_config",
    "open_source",
    "prompts_from",
]
