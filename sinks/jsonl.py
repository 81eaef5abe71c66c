"""tracks.jsonl: one JSON object per source frame, in order, flushed as it goes.

    {"source": str, "frame": int, "pts": float,
     "tracks": [{"id": int, "target": bool, "state": "tracked"|"lost", "box": [x1, y1, x2, y2],
                 "score": float, "mask": {"size": [h, w], "counts": str}}]}

`mask` is COCO RLE (pycocotools' compressed string) at source resolution. It is written for the
target whenever the target is found, and for every tracked instance with masks="all"; a lost
track has no mask. Tracks listed: every track matched this frame, and the target while lost.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, TextIO

import numpy as np
from pycocotools import mask as mask_utils

from ..core import FrameResult, Track, TrackState

MaskPolicy = Literal["target", "all", "none"]


def encode_rle(mask: np.ndarray) -> dict:
    """H×W bool → {"size": [h, w], "counts": str} (COCO compressed RLE)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def _listed(track: Track) -> bool:
    return track.state is TrackState.TRACKED or (track.is_target and track.state is TrackState.LOST)


class JsonlSink:
    def __init__(self, path: str | Path, masks: MaskPolicy = "target") -> None:
        self.path = Path(path)
        self.masks = masks
        self._file: TextIO | None = None  # opened on the first frame: a run that fails to start leaves nothing

    def record(self, result: FrameResult) -> dict:
        frame = result.frame
        return {
            "source": frame.source_id,
            "frame": frame.index,
            "pts": round(float(frame.pts), 6),
            "tracks": [self._track(result, t) for t in result.tracks if _listed(t)],
        }

    def _track(self, result: FrameResult, track: Track) -> dict:
        entry = {
            "id": track.id,
            "target": track.is_target,
            "state": track.state.value,
            "box": [round(v, 2) for v in track.box],
            "score": round(track.score, 4),
        }
        wants_mask = self.masks == "all" or (self.masks == "target" and track.is_target)
        if wants_mask and track.state is TrackState.TRACKED:
            mask = result.mask_of(track)
            if mask is not None:
                entry["mask"] = encode_rle(mask)
        return entry

    def write(self, result: FrameResult) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")
        self._file.write(json.dumps(self.record(result), separators=(",", ":")) + "\n")
        self._file.flush()  # a crash or Ctrl-C keeps every frame written so far

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
