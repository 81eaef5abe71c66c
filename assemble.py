"""Turn a Config into a Pipeline: open the sources, load the model, make the trackers and the sinks.

Sources are opened and output folders made before the model is loaded, so a bad path, an
unreachable stream or a missing camera fails in a moment, not after seconds of loading weights.

Output layout: with one source, DIR/tracks.jsonl, DIR/annotated.mp4 and (live sources)
DIR/events.jsonl; with several, the same files in DIR/<source id>/ for each.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from .config import Config
from .core import FrameResult, Prompt
from .errors import ConfigError, OutputError, error_reason
from .pipeline import BatchSettings, Pipeline, UltralyticsSegmenter
from .pipeline.prompts import TextScorer, check_source, read_mask
from .pipeline.segmenter import resolve_device
from .sinks import EventLogSink, JsonlSink, MotSink, Sink, VideoSink
from .sources import Source, StreamSettings, default_id, open_source
from .trackers import Tracker, make_tracker

log = logging.getLogger(__name__)


def prompts_from(config: Config) -> list[Prompt]:
    """Every configured prompt (`prompt` and `prompts`), with mask images read."""
    return [p.to_prompt(read_mask(p.mask) if p.mask else None) for p in config.all_prompts]


def load_text_scorer(config: Config) -> TextScorer | None:
    """CLIP for text prompts, on the segmenter's device, when the config needs it (else None)."""
    if not config.needs_clip:
        return None
    from .pipeline.clip import load_clip  # open_clip is only imported when asked for

    return load_clip(config.clip, resolve_device(config.model.device))


def tracker_factory(config: Config) -> Callable[[], Tracker]:
    """A new tracker per source, of the configured kind and settings (trackers/registry.py)."""
    return partial(make_tracker, config.tracker)


def stream_settings(config: Config) -> StreamSettings:
    """The connection settings of the config's `source` section."""
    return StreamSettings(**config.source.model_dump(include=set(StreamSettings.model_fields)))


def source_specs(config: Config) -> list[tuple[str, str]]:
    """(spec, id) for every configured source; ids are unique (a repeated default id gets -2, -3, ...)."""
    if not config.sources:
        raise ConfigError("no source given: pass SOURCE on the command line or list them under 'sources' in the config")
    entries = config.sources
    explicit = [e.id for e in entries if e.id]
    if len(set(explicit)) != len(explicit):
        raise ConfigError(f"source ids must be unique, got {explicit}")
    taken, specs = set(explicit), []
    for entry in entries:
        source_id = entry.id
        if source_id is None:
            base = source_id = default_id(entry.path)
            n = 1
            while source_id in taken:
                n += 1
                source_id = f"{base}-{n}"
            taken.add(source_id)
        specs.append((entry.path, source_id))
    return specs


def open_sources(config: Config) -> list[Source]:
    """Open every source now (closing those already open if one fails)."""
    opened: list[Source] = []
    s = config.source
    specs = source_specs(config)
    check_prompt_sources(config, [source_id for _, source_id in specs])  # before anything connects
    try:
        for spec, source_id in specs:
            opened.append(
                open_source(
                    spec,
                    source_id=source_id,
                    folder_fps=s.fps,
                    stream=stream_settings(config),
                    camera_size=s.camera_size,
                    camera_fps=s.camera_fps,
                    skip_bad_images=s.skip_bad_images,
                )
            )
    except BaseException:
        for source in opened:
            source.close()
        raise
    return opened


def check_prompt_sources(config: Config, source_ids: list[str]) -> None:
    """Refuse a prompt that names a source the run does not have, before any source connects.

    Args:
        config: The run's configuration; all of its prompts are checked.
        source_ids: The ids the run's sources will have.

    Raises:
        PromptError: A prompt's `source` is not among `source_ids`.
    """
    for prompt in config.all_prompts:
        check_source(prompt.source, source_ids)


# What a run writes into its folder (with several sources, into one subfolder per source).
OUTPUT_FILES = ("tracks.jsonl", "annotated.mp4", "events.jsonl", "mot.txt")
# Below this much free space a run does not start: its first line or video packet would fail.
MIN_FREE_BYTES = 16 << 20
# Below this much it starts with a warning: about ten minutes of annotated 1080p video.
LOW_FREE_BYTES = 1 << 30


def prepare_output_dir(path: Path) -> Path:
    """Create the output folder now, so that a bad --out fails before the model loads.

    Args:
        path: The folder.

    Returns:
        The folder, created.

    Raises:
        OutputError: It cannot be created or written, or its disk is full.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {path}: {error_reason(exc)}") from None
    if not os.access(path, os.W_OK):
        raise OutputError(f"output folder {path} is not writable")
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        raise OutputError(f"output folder {path}: disk full ({free / 2**20:.1f} MiB free); free some space first")
    if free < LOW_FREE_BYTES:
        log.warning("output folder %s has only %.0f MiB free: a long run may fill it", path, free / 2**20)
    return path


def earlier_outputs(root: Path) -> list[Path]:
    """This project's output files already in `root` or in its subfolders (one per source).

    Args:
        root: An output folder.

    Returns:
        The files found, sorted.
    """
    if not root.is_dir():
        return []
    found = [root / name for name in OUTPUT_FILES if (root / name).exists()]
    for sub in root.iterdir():
        if sub.is_dir():
            found += [sub / name for name in OUTPUT_FILES if (sub / name).exists()]
    return sorted(found)


def claim_output_dir(root: Path, overwrite: bool) -> None:
    """One run, one folder: refuse a folder holding an earlier run's outputs, unless `overwrite`.

    With `overwrite`, those files (and only those) are removed first, so the run's outputs are never
    mixed with another's.

    Args:
        root: The run's output folder.
        overwrite: Replace an earlier run's outputs.

    Raises:
        OutputError: The folder holds outputs and `overwrite` is false, or they cannot be removed.
    """
    found = earlier_outputs(root)
    if not found:
        return
    if not overwrite:
        names = ", ".join(str(p.relative_to(root)) for p in found[:4]) + (", ..." if len(found) > 4 else "")
        raise OutputError(
            f"output folder {root} already holds a run's outputs ({names}): choose another --out, "
            "or pass --overwrite (output.overwrite: true) to replace them"
        )
    for path in found:
        try:
            path.unlink()
        except OSError as exc:
            raise OutputError(f"cannot remove {path} to overwrite it: {error_reason(exc)}") from None
    log.info("removed %d output files of an earlier run in %s", len(found), root)


def default_sinks(config: Config, source: Source, several: bool = False) -> list[Sink]:
    """The file outputs of one source, in a folder made now.

    tracks.jsonl always; annotated.mp4 and mot.txt when the config asks for them; events.jsonl for
    live sources, or when the control interface is on (its prompts change targets, which are events).
    """
    out = Path(config.output.dir)
    out = prepare_output_dir(out / source.source_id if several else out)
    sinks: list[Sink] = [JsonlSink(out / "tracks.jsonl", masks=config.output.masks)]
    if config.output.video:
        sinks.append(VideoSink(out / "annotated.mp4", fps=source.fps))
    if config.output.mot:
        sinks.append(MotSink(out / "mot.txt"))
    if source.is_live or config.control.port is not None or config.control.stdin:
        sinks.append(EventLogSink(out / "events.jsonl"))
    return sinks


def build_pipeline(
    config: Config,
    *,
    source: Source | Sequence[Source] | None = None,
    segmenter: UltralyticsSegmenter | None = None,
    sinks: Sequence[Sink | Callable[[FrameResult], object]] | None = None,
    text_scorer: TextScorer | None = None,
) -> Pipeline:
    """A ready Pipeline. Pass `sinks=[...]` to replace the file outputs (e.g. with a callback).

    Prompts and CLIP are checked before the segmenter loads: a missing mask image or CLIP
    weights that cannot be had fail in a moment.
    """
    if sinks is None:  # before anything connects: a reused folder fails at once
        claim_output_dir(Path(config.output.dir), config.output.overwrite)
    if source is None:
        sources = open_sources(config)
    else:
        sources = [source] if isinstance(source, Source) else list(source)
    try:
        prompts = prompts_from(config)
        text_scorer = text_scorer or load_text_scorer(config)
        outputs = (
            {} if sinks is not None else {s.source_id: default_sinks(config, s, len(sources) > 1) for s in sources}
        )
        segmenter = segmenter or UltralyticsSegmenter(config.model)
        return Pipeline(
            sources,
            segmenter,
            prompt=prompts,
            text_scorer=text_scorer,
            tracker=tracker_factory(config),
            sinks=sinks or (),
            sinks_for=(lambda s: outputs[s.source_id]) if outputs else None,
            batch=BatchSettings(**config.batch.model_dump(), buffer_size=config.source.buffer_size),
            drop_policy=config.source.drop_policy,
        )
    except BaseException:
        if source is None:
            for s in sources:
                s.close()
        raise
