"""The bytetrack tracker: ByteTrack, and beside it the steps for prompted targets.

tracker.py runs ByteTrack's loop (Zhang et al. 2022, Algorithm 1) with association.py's two rounds;
targets.py holds the target steps: (a) parts (parts.py), (b) re-acquisition by colour
(reacquire.py), (c) one object one target.
"""

from .settings import ByteTrackerSettings
from .tracker import ByteTracker

__all__ = ["ByteTracker", "ByteTrackerSettings"]
