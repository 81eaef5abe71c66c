"""Trackers: keep identities across frames by matching this frame's instances to live tracks."""

from .byte_tracker import ByteTracker, ByteTrackerSettings
from .iou_tracker import IoUTracker, Tracker
from .matching import box_iou, linear_assignment

__all__ = ["ByteTracker", "ByteTrackerSettings", "IoUTracker", "Tracker", "box_iou", "linear_assignment"]
