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
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pydantic import ValidationError

from .alerts import make_alert
from .config import Config, PromptConfig, SourceEntry, one_line
from .core import FrameResult, Prompt
from .errors import ConfigError, OutputError, PromptError, StreamConflictError, error_reason
from .pipeline import BatchSettings, Pipeline, UltralyticsSegmenter
from .pipeline.places import PlaceStage
from .pipeline.prompts import TextScorer, check_source, read_mask
from .pipeline.segmenter import resolve_device
from .service.core import OpenedStream
from .sinks import EventLogSink, JsonlSink, MotSink, Sink, VideoSink
from .sinks.rotating import SEGMENT_GLOBS, rotating_sinks
from .sinks.snapshots import SnapshotWriter
from .sources import Source, StreamSettings, default_id, open_source
from .trackers import Tracker, make_tracker
from .zones.monitor import ZoneMonitor
from .zones.settings import LineSettings, ZoneSettings, check_places

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


def source_specs(config: Config, allow_none: bool = False) -> list[tuple[str, str]]:
    """(spec, id) for every configured source; ids are unique (a repeated default id gets -2, -3, ...).

    No source is a ConfigError, unless `allow_none` (a service, which streams can join later).
    """
    if not config.sources and not allow_none:
        raise ConfigError("no source given: pass SOURCE on the command line or list them under 'sources' in the config")
    entries = config.sources
    explicit = [e.id for e in entries if e.id]
    if len(set(explicit)) != len(explicit):
        raise ConfigError(f"source ids must be unique, got {explicit}")
    taken, specs = list(explicit), []
    for entry in entries:
        source_id = entry.id
        if source_id is None:
            source_id = unique_id(default_id(entry.path), taken)
            taken.append(source_id)
        specs.append((entry.path, source_id))
    return specs


def open_sources(config: Config, allow_none: bool = False) -> list[Source]:
    """Open every source now (closing those already open if one fails); none only with `allow_none`."""
    opened: list[Source] = []
    specs = source_specs(config, allow_none)
    check_prompt_sources(config, [source_id for _, source_id in specs])  # before anything connects
    try:
        for spec, source_id in specs:
            opened.append(open_configured(config, spec, source_id))
    except BaseException:
        for source in opened:
            source.close()
        raise
    return opened


def open_configured(config: Config, spec: str, source_id: str) -> Source:
    """Open one source with the config's `source` settings (folder rate, streams, cameras, bad images).

    Raises:
        SourceError: Nothing to open at `spec`.
        SourceConnectionError: A stream or camera cannot be opened.
    """
    s = config.source
    return open_source(
        spec,
        source_id=source_id,
        folder_fps=s.fps,
        stream=stream_settings(config),
        camera_size=s.camera_size,
        camera_fps=s.camera_fps,
        skip_bad_images=s.skip_bad_images,
    )


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
    found = _outputs_in(root)
    for sub in root.iterdir():
        if sub.is_dir():
            found += _outputs_in(sub)
    return sorted(found)


def _outputs_in(folder: Path) -> list[Path]:
    """The output files of a run directly in `folder`: the fixed names, and rotated segments."""
    found = [folder / name for name in OUTPUT_FILES if (folder / name).exists()]
    return found + [path for pattern in SEGMENT_GLOBS for path in folder.glob(pattern)]


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


def stream_folder(config: Config, source: Source, several: bool) -> Path:
    """A source's output folder: `output.dir`, or `output.dir/<id>` when there are several (or serving)."""
    out = Path(config.output.dir)
    return out / source.source_id if several else out


def places_of(config: Config, source_id: str) -> tuple[list[ZoneSettings], list[LineSettings]]:
    """The zones and lines that apply to a source: those for every source, and those naming it."""
    zones = [z for z in config.zones if z.source in (None, source_id)]
    lines = [line for line in config.lines if line.source in (None, source_id)]
    return zones, lines


def place_stage(config: Config, source: Source, folder: Path | None) -> PlaceStage | None:
    """A source's zones and lines, with event snapshots in `folder/snapshots/` (folder None: none).

    None when no zone or line applies to it.
    """
    zones, lines = places_of(config, source.source_id)
    if not zones and not lines:
        return None
    return PlaceStage(ZoneMonitor(source.source_id, zones, lines), SnapshotWriter(folder) if folder else None)


def alert_outputs(config: Config) -> list[Sink]:
    """The configured alert outputs (webhook, MQTT), each with its own thread; closed with the pipeline.

    Raises:
        ConfigError: An MQTT topic takes `{zone}` and a zone's or line's name holds a wildcard (+, #),
            which no broker publishes to.
    """
    names = [p.name for p in [*config.zones, *config.lines]]
    for settings in config.alerts:
        if getattr(settings, "topic", None) and "{zone}" in settings.topic:
            bad = [n for n in names if "+" in n or "#" in n]
            if bad:
                raise ConfigError(f"zone or line name {bad[0]!r} cannot go into an MQTT topic: it holds + or #")
    made: list[Sink] = []
    try:
        for settings in config.alerts:
            made.append(make_alert(settings))
    except BaseException:
        for output in made:
            output.close()
        raise
    return made


def default_sinks(config: Config, source: Source, several: bool = False, serving: bool = False) -> list[Sink]:
    """The file outputs of one source, in a folder made now.

    tracks.jsonl always; annotated.mp4 and mot.txt when the config asks for them; events.jsonl for
    live sources, or when the control interface is on (its prompts change targets, which are
    events), or when serving, or with zones or lines (their events). With `output.segment_minutes`,
    tracks and video rotate (sinks/rotating.py): tracks-<UTC start>.jsonl and
    annotated-<UTC start>.mp4 per segment.
    """
    out = prepare_output_dir(stream_folder(config, source, several))
    o = config.output
    if o.segment_minutes is not None:  # tracks, video and mot.txt as asked, rotating together
        sinks: list[Sink] = rotating_sinks(out, o, fps=source.fps)
    else:
        sinks = [JsonlSink(out / "tracks.jsonl", masks=o.masks)]
        if o.video:
            sinks.append(VideoSink(out / "annotated.mp4", fps=source.fps))
        if o.mot:
            sinks.append(MotSink(out / "mot.txt"))
    control = config.control.port is not None or config.control.stdin
    if serving or source.is_live or control or any(places_of(config, source.source_id)):
        sinks.append(EventLogSink(out / "events.jsonl"))
    return sinks


def unique_id(base: str, taken: Sequence[str]) -> str:
    """`base`, or `base-2`, `base-3`, ... : the first not in `taken`."""
    source_id, n = base, 1
    while source_id in taken:
        n += 1
        source_id = f"{base}-{n}"
    return source_id


@dataclass(frozen=True)
class StreamRequest:
    """A service's request for a new stream, checked (StreamFactory.request)."""

    path: str
    source_id: str
    prompts: list[Prompt]
    folder: Path


class StreamFactory:
    """Opens the streams a running service adds (`POST /api/streams`) with the config's settings.

    Each gets its own folder `output.dir/<id>/`; an id whose folder holds an earlier stream's
    outputs is refused (unless `output.overwrite`, or rotation, whose names never clash).

    Args:
        config: The service's configuration.
    """

    def __init__(self, config: Config) -> None:
        self.config = config

    def request(self, path: str, stream_id: str | None, prompt: dict | None, taken: Sequence[str]) -> StreamRequest:
        """A request checked: its id chosen, its prompt read, its folder free.

        Raises:
            ConfigError, PromptError: A bad path, id or prompt.
            StreamConflictError: Its folder holds an earlier stream's outputs.
        """
        try:
            entry = SourceEntry(path=path, id=stream_id)
        except ValidationError as exc:
            raise ConfigError(f"bad stream: {one_line(exc)}") from None
        source_id = entry.id or unique_id(default_id(entry.path), taken)
        prompts = []
        if prompt:
            try:
                given = PromptConfig.model_validate({**prompt, "source": prompt.get("source") or source_id})
            except ValidationError as exc:
                raise PromptError(f"bad prompt: {one_line(exc)}") from None
            if given.source != source_id:
                raise PromptError(f"the prompt names source {given.source!r}, not the new stream {source_id!r}")
            if not given.is_empty:
                prompts.append(given.to_prompt(read_mask(given.mask) if given.mask else None))
        folder, o = Path(self.config.output.dir) / source_id, self.config.output
        # rotated names never clash: a stream added again continues its folder
        if o.segment_minutes is None and not o.overwrite and earlier_outputs(folder):
            raise StreamConflictError(
                f"{folder} holds the outputs of an earlier stream {source_id!r}: choose another id "
                "(or serve with output.overwrite, or output.segment_minutes, whose names never clash)"
            )
        return StreamRequest(entry.path, source_id, prompts, folder)

    def open(self, request: StreamRequest) -> Source:
        """Open a request's source with the config's settings.

        Raises:
            SourceError: Nothing to open there.
        """
        return open_configured(self.config, request.path, request.source_id)

    def __call__(self, path: str, stream_id: str | None, prompt: dict | None, taken: Sequence[str]) -> OpenedStream:
        """Open the source and its outputs (see service.core.StreamOpener)."""
        request = self.request(path, stream_id, prompt, taken)
        source = self.open(request)
        try:
            if (
                self.config.output.segment_minutes is None
            ):  # only once the source opened: a mistyped path deletes nothing
                claim_output_dir(request.folder, self.config.output.overwrite)
            sinks = default_sinks(self.config, source, several=True, serving=True)
            places = place_stage(self.config, source, request.folder)
        except BaseException:
            source.close()
            raise
        return OpenedStream(source, sinks, request.prompts, places)


def build_pipeline(
    config: Config,
    *,
    source: Source | Sequence[Source] | None = None,
    segmenter: UltralyticsSegmenter | None = None,
    sinks: Sequence[Sink | Callable[[FrameResult], object]] | None = None,
    text_scorer: TextScorer | None = None,
    shared_sinks: Sequence[Sink] = (),
    serving: bool = False,
) -> Pipeline:
    """A ready Pipeline. Pass `sinks=[...]` to replace the file outputs (e.g. with a callback).

    Prompts and CLIP are checked before the segmenter loads: a missing mask image or CLIP
    weights that cannot be had fail in a moment. `shared_sinks` get every source's results
    besides the file outputs (the service's frame hub). `serving`: a service's pipeline, which
    runs until stopped, with no source or with sources joining and leaving, each in its own
    folder.
    """
    if sinks is None and not (serving and config.output.segment_minutes is not None):
        # before anything connects: a reused folder fails at once (rotated names never clash)
        claim_output_dir(Path(config.output.dir), config.output.overwrite)
    # Names must differ; a run's places must name its sources (a service's may name one added later).
    ids = None if serving else [source_id for _, source_id in source_specs(config, allow_none=True)]
    check_places(config.zones, config.lines, ids)
    if source is None:
        sources = open_sources(config, allow_none=serving)
    else:
        sources = [source] if isinstance(source, Source) else list(source)
    made: list[Sink | PlaceStage] = []  # closed if the pipeline is not made: no thread or file left behind
    try:
        prompts = prompts_from(config)
        text_scorer = text_scorer or load_text_scorer(config)
        several = serving or len(sources) > 1
        outputs = (
            {} if sinks is not None else {s.source_id: default_sinks(config, s, several, serving) for s in sources}
        )
        places = {  # event snapshots beside the file outputs; none when the caller replaces them
            s.source_id: place_stage(config, s, stream_folder(config, s, several) if sinks is None else None)
            for s in sources
        }
        made += [k for ks in outputs.values() for k in ks] + [p for p in places.values() if p is not None]
        alerts = alert_outputs(config)
        made += alerts
        segmenter = segmenter or UltralyticsSegmenter(config.model, features=config.tracker.wants_embeddings)
        return Pipeline(
            sources,
            segmenter,
            prompt=prompts,
            text_scorer=text_scorer,
            tracker=tracker_factory(config),
            sinks=[*(sinks or ()), *shared_sinks, *alerts],
            sinks_for=(lambda s: outputs[s.source_id]) if outputs else None,
            batch=BatchSettings(**config.batch.model_dump(), buffer_size=config.source.buffer_size),
            drop_policy=config.source.drop_policy,
            keep_running=serving,
            places_for=lambda s: places[s.source_id],
        )
    except BaseException:
        for closing in [*made, *(sources if source is None else [])]:
            try:
                closing.close()
            except Exception as exc:  # noqa: BLE001 - the error on its way out matters more
                log.debug("closing %s failed: %s", type(closing).__name__, exc)
        raise
