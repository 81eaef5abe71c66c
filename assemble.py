"""Turn a Config into a Pipeline: open the source, load the model, make the tracker and the sinks.

The source is opened and the output folder made before the model is loaded, so a bad path
fails in a moment, not after seconds of loading weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .config import Config
from .core import FrameResult, Prompt
from .errors import ConfigError, OutputError
from .pipeline import BatchSettings, Pipeline, SegmenterSettings, UltralyticsSegmenter
from .sinks import JsonlSink, Sink, VideoSink
from .sources import Source, open_source
from .trackers import IoUTracker


def prompt_from(config: Config) -> Prompt | None:
    p = config.prompt
    if p.box is None and not p.points and not p.text:
        return None
    points = np.array([pt[:2] for pt in p.points], np.float32).reshape(-1, 2)
    labels = np.array([pt[2] if len(pt) == 3 else 1 for pt in p.points], np.int64)
    boxes = np.array([p.box], np.float32) if p.box is not None else np.zeros((0, 4), np.float32)
    return Prompt(points=points, labels=labels, boxes=boxes, text=p.text, frame=p.frame)


def segmenter_settings(config: Config) -> SegmenterSettings:
    return SegmenterSettings(**config.model.model_dump())


def prepare_output_dir(path: Path) -> Path:
    """Create the output folder now, so that a bad --out fails before the model loads."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK):
        raise OutputError(f"output folder {path} is not writable")
    return path


def default_sinks(config: Config, source: Source) -> list[Sink]:
    out = prepare_output_dir(Path(config.output.dir))
    sinks: list[Sink] = [JsonlSink(out / "tracks.jsonl", masks=config.output.masks)]
    if config.output.video:
        sinks.append(VideoSink(out / "annotated.mp4", fps=source.fps))
    return sinks


def build_pipeline(
    config: Config,
    *,
    source: Source | None = None,
    segmenter: UltralyticsSegmenter | None = None,
    sinks: Sequence[Sink | Callable[[FrameResult], object]] | None = None,
) -> Pipeline:
    """A ready Pipeline. Pass `sinks=[...]` to replace the file outputs (e.g. with a callback)."""
    if source is None:
        if not config.source.path:
            raise ConfigError("no source given: pass SOURCE on the command line or source.path in the config")
        source = open_source(config.source.path, folder_fps=config.source.fps)
    prompt = prompt_from(config)
    chosen_sinks = default_sinks(config, source) if sinks is None else sinks
    segmenter = segmenter or UltralyticsSegmenter(segmenter_settings(config))
    t = config.tracker
    return Pipeline(
        source,
        segmenter,
        prompt=prompt,
        tracker=IoUTracker(t.min_iou, t.max_age, t.target_max_age),
        sinks=chosen_sinks,
        batch=BatchSettings(**config.batch.model_dump()),
    )
