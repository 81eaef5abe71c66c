"""A source's zones and lines in its lane: the monitor's states on each result, each event with its snapshot.

The lane calls a `PlaceStage` after the tracker, before the sinks: the result it hands on carries
the zones' and lines' states (tracks.jsonl writes their counts, annotate() draws them), and the
events go to the source's event sinks (events.jsonl, the alert outputs, the viewer).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from ..core import FrameResult, PlaceState, ZoneEvent
from ..sinks.snapshots import SnapshotWriter


class PlaceMonitor(Protocol):
    """What decides where tracks are: zones.monitor.ZoneMonitor is the real one."""

    def update(self, result: FrameResult) -> tuple[tuple[PlaceState, ...], list[ZoneEvent]]:
        """The places' states after this frame, and the events it brought (without snapshots)."""
        ...


class PlaceStage:
    """One source's places: states onto its results, events with snapshots.

    Args:
        monitor: The source's zone monitor.
        snapshots: Where event snapshots go (None: events carry none).
    """

    def __init__(self, monitor: PlaceMonitor, snapshots: SnapshotWriter | None = None) -> None:
        self.monitor = monitor
        self.snapshots = snapshots

    def __call__(self, result: FrameResult) -> tuple[FrameResult, list[ZoneEvent]]:
        """The result with its places, and the frame's zone events (each with its snapshot's path)."""
        places, events = self.monitor.update(result)
        result = dataclasses.replace(result, places=places)
        if self.snapshots is not None and events:
            events = [dataclasses.replace(e, snapshot=self.snapshots.save(result, e)) for e in events]
        return result, events

    def close(self) -> None:
        """Write the snapshots still queued."""
        if self.snapshots is not None:
            self.snapshots.close()
