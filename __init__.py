"""fastsam-stream: real-time video segmentation and tracking on FastSAM.

    from fastsam_stream import load_config, build_pipeline
    pipeline = build_pipeline(load_config(overrides={"source": {"path": "clip.mp4"}, ...}))
    for result in pipeline:            # one FrameResult per frame, after the sinks have it
        result.target, result.target_mask
"""

from .assemble import build_pipeline, prompt_from
from .config import Config, load_config
from .core import DenseMasks, Frame, FrameResult, Instances, Prompt, Track, TrackState
from .errors import (
    ConfigError,
    FastSAMStreamError,
    ModelError,
    OutputError,
    PromptError,
    SourceConnectionError,
    SourceError,
)
from .pipeline import BatchSettings, Pipeline, RunSummary, SegmenterSettings, UltralyticsSegmenter
from .sinks import JsonlSink, VideoSink
from .sources import FileSource, FolderSource, open_source
from .trackers import IoUTracker

__version__ = "0.1.0"

__all__ = [
    "BatchSettings",
    "Config",
    "ConfigError",
    "DenseMasks",
    "FastSAMStreamError",
    "FileSource",
    "FolderSource",
    "Frame",
    "FrameResult",
    "Instances",
    "IoUTracker",
    "JsonlSink",
    "ModelError",
    "OutputError",
    "Pipeline",
    "Prompt",
    "PromptError",
    "RunSummary",
    "SegmenterSettings",
    "SourceConnectionError",
    "SourceError",
    "Track",
    "TrackState",
    "UltralyticsSegmenter",
    "VideoSink",
    "build_pipeline",
    "load_config",
    "open_source",
    "prompt_from",
]
