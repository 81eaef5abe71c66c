"""fastsam-stream: real-time video segmentation and tracking on FastSAM.

from fastsam_stream import load_config, build_pipeline
pipeline = build_pipeline(load_config(overrides={"sources": ["clip.mp4"], ...}))
for result in pipeline:            # one FrameResult per frame, after the sinks have it
    result.target, result.target_mask

The public names are imported on first use (PEP 562), so that importing the package, which the
`fastsam-stream` command does before it can catch Ctrl-C, does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Where each public name lives.
_EXPORTS = {
    ".assemble": ("build_pipeline", "prompts_from"),
    ".config": ("Config", "load_config"),
    ".core": (
        "DenseMasks",
        "EventKind",
        "Frame",
        "FrameResult",
        "Instances",
        "Prompt",
        "SourceEvent",
        "TargetChange",
        "Track",
        "TrackState",
    ),
    ".errors": (
        "ConfigError",
        "DiskFullError",
        "FastSAMStreamError",
        "ModelError",
        "OutputError",
        "PromptError",
        "SourceConnectionError",
        "SourceError",
        "TornLineError",
    ),
    ".pipeline": (
        "BatchSettings",
        "Pipeline",
        "RunSummary",
        "Segmenter",
        "SegmenterSettings",
        "SourceSummary",
        "StagedSegmenter",
        "UltralyticsSegmenter",
    ),
    ".pipeline.control": ("ControlServer", "StdinControl"),
    ".sinks": ("EventLogSink", "EventSink", "JsonlSink", "MotSink", "Sink", "VideoSink", "read_jsonl"),
    ".sources": (
        "CameraSource",
        "DropPolicy",
        "FileSource",
        "FolderSource",
        "ReconnectPolicy",
        "StreamSettings",
        "StreamSource",
        "open_source",
    ),
    ".trackers": (
        "ByteTracker",
        "ByteTrackerSettings",
        "IoUTracker",
        "IoUTrackerSettings",
        "Tracker",
        "make_tracker",
        "tracker_names",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
