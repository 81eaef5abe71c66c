"""Trackers: keep identities across frames by matching this frame's instances to live tracks.

Every tracker follows the `Tracker` protocol and registers itself by name with its settings class
(trackers/registry.py): `make_tracker(settings)` builds the one `settings.kind` names.
"""

from .base import Tracker, TrackerSettings
from .bytetrack import ByteTracker, ByteTrackerSettings
from .iou_tracker import IoUTracker, IoUTrackerSettings
from .matching import box_iou, linear_assignment
from .registry import (
    DEFAULT_TRACKER,
    make_tracker,
    register,
    settings_class,
    settings_classes,
    settings_union,
    tracker_class,
    tracker_names,
)

__all__ = [
    "DEFAULT_TRACKER",
    "ByteTracker",
    "ByteTrackerSettings",
    "IoUTracker",
    "IoUTrackerSettings",
    "Tracker",
    "TrackerSettings",
    "box_iou",
    "linear_assignment",
    "make_tracker",
    "register",
    "settings_class",
    "settings_classes",
    "settings_union",
    "tracker_class",
    "tracker_names",
]
