"""fastsam-stream: real-time video segmentation and tracking on FastSAM.

from fastsam_stream import load_config, build_pipeline
pipeline = build_pipeline(load_config(overrides={"sources": ["clip.mp4"], ...}))
for result in pipeline:            # one FrameResult per frame, after the sinks have it
    result.target, result.target_mask
"""

from .assemble import build_pipeline, prompts_from
from .config import Config, load_config
from .core import (
    DenseMasks,
    EventKind,
    Frame,
    FrameResult,
    Instances,
    Prompt,
    SourceEvent,
    TargetChange,
    Track,
    TrackState,
)
from .errors import (
    ConfigError,
    FastSAMStreamError,
    ModelError,
    OutputError,
    PromptError,
    SourceConnectionError,
    SourceError,
)
from .pipeline import (
    BatchSettings,
    Pipeline,
    RunSummary,
    Segmenter,
    SegmenterSettings,
    SourceSummary,
    StagedSegmenter,
    UltralyticsSegmenter,
)
from .pipeline.control import ControlServer, StdinControl
from .sinks import EventLogSink, EventSink, JsonlSink, MotSink, Sink, VideoSink
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
from .trackers import (
    ByteTracker,
    ByteTrackerSettings,
    IoUTracker,
    IoUTrackerSettings,
    Tracker,
    make_tracker,
    tracker_names,
)

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
    "EventSink",
    "FastSAMStreamError",
    "FileSource",
    "FolderSource",
    "Frame",
    "FrameResult",
    "Instances",
    "IoUTracker",
    "IoUTrackerSettings",
    "JsonlSink",
    "ModelError",
    "MotSink",
    "OutputError",
    "Pipeline",
    "Prompt",
    "PromptError",
    "ReconnectPolicy",
    "RunSummary",
    "Segmenter",
    "SegmenterSettings",
    "SourceConnectionError",
    "SourceError",
    "SourceEvent",
    "SourceSummary",
    "StagedSegmenter",
    "StreamSettings",
    "Sink",
    "StdinControl",
    "StreamSource",
    "TargetChange",
    "Track",
    "TrackState",
    "Tracker",
    "UltralyticsSegmenter",
    "VideoSink",
    "build_pipeline",
    "load_config",
    "make_tracker",
    "open_source",
    "prompts_from",
    "tracker_names",
]
