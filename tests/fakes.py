"""Fakes for unit tests of logic: segmenters that answer at once with one known instance, and an event recorder.

Never for the claim that a feature works: those tests run the real model (conftest.py's `segmenter`).
Importable from tests as ``fakes`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import numpy as np

from fastsam_stream.core import DenseMasks, EventKind, Frame, Instances, SourceEvent


class Middle:
    """A segmenter with one instance in the middle of every frame, whatever its size: the middle half of each side."""

    def segment(self, frames: list[Frame]) -> list[Instances]:
        out = []
        for f in frames:
            h, w = f.height, f.width
            mask = np.zeros((1, h, w), bool)
            mask[0, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = True
            box = np.array([[w // 4, h // 4, 3 * w // 4, 3 * h // 4]], np.float32)
            out.append(Instances(box, np.array([0.9]), (h, w), masks=DenseMasks(mask)))
        return out


class FixedBox:
    """A segmenter with one instance at the same box in every frame (which must fit in the frames).

    Args:
        box: [x1, y1, x2, y2] in whole pixels.
    """

    def __init__(self, box: list[float]) -> None:
        self.box = box

    def segment(self, frames: list[Frame]) -> list[Instances]:
        x1, y1, x2, y2 = (int(v) for v in self.box)
        out = []
        for f in frames:
            mask = np.zeros((1, f.height, f.width), bool)
            mask[0, y1:y2, x1:x2] = True
            out.append(Instances(np.array([self.box]), np.array([0.9]), (f.height, f.width), masks=DenseMasks(mask)))
        return out


class Events:
    """An event sink that records every event, and any that came after it was closed."""

    def __init__(self) -> None:
        self.events: list[SourceEvent] = []
        self.closed = False
        self.after_close: list[SourceEvent] = []

    def write(self, result) -> None:
        pass

    def on_event(self, event: SourceEvent) -> None:
        (self.after_close if self.closed else self.events).append(event)

    def close(self) -> None:
        self.closed = True

    def failed(self) -> list[SourceEvent]:
        return [e for e in self.events if e.kind is EventKind.PROMPT_FAILED]

    def changed(self) -> list[SourceEvent]:
        return [e for e in self.events if e.kind is EventKind.TARGETS_CHANGED]
