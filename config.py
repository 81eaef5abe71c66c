"""Run configuration: one pydantic model, read from YAML and overridden by command-line options.

Unknown keys and bad values raise ConfigError with a one-line message naming the key.
`configs/default.yaml` documents every key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from .alerts.settings import AlertSettings
from .cluster.settings import ClusterSettings
from .core import Prompt
from .errors import ConfigError, PromptError
from .pipeline.batcher import DEFAULT_BUFFER_SIZE, BatchConfig, BufferSize
from .pipeline.clip_settings import ClipSettings
from .pipeline.segmenter import SegmenterSettings
from .settings import Settings
from .sources.live import StreamSettings
from .trackers import ByteTrackerSettings, settings_union, tracker_names
from .zones.settings import LineSettings, ZoneSettings

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TRACKER_DIR = CONFIG_DIR / "trackers"


class SourceEntry(Settings):
    """One source, named: `{id: front, path: rtsp://...}`."""

    path: str = Field(min_length=1, description="video file, image folder, stream URL, camera or lavfi:GRAPH")
    id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]*$",  # used as a folder name
        description="the source's id: its output folder, and what prompts and commands name",
    )


class SourceConfig(StreamSettings):
    """Settings shared by every source: config section `source`.

    The connection keys are StreamSettings' (sources/live.py); these are the rest.
    """

    fps: float = Field(30.0, ge=0.01, le=1000, description="frame rate of image folders (videos use their container's)")
    drop_policy: Literal["auto", "block", "drop_oldest"] = Field(
        "auto", description="when the segmenter is behind: drop_oldest (the live default) or block (the file default)"
    )
    buffer_size: BufferSize = DEFAULT_BUFFER_SIZE
    camera_size: str | None = Field(
        None, pattern=r"^[1-9][0-9]*x[1-9][0-9]*$", description="V4L2 capture size WIDTHxHEIGHT (default: the camera's)"
    )
    skip_bad_images: bool = Field(
        False,
        description="image folders: skip a damaged or unreadable image with a warning (and count it) "
        "instead of stopping the run",
    )
    camera_fps: float | None = Field(None, gt=0, le=1000, description="V4L2 capture frame rate (default: the camera's)")


Box = tuple[float, float, float, float]


class PromptConfig(Settings):
    """One prompt: config section `prompt`, and each entry of `prompts`.

    The rules for combining its parts are Prompt's (core.py): a PromptConfig is checked by making one.
    """

    source: str | None = Field(None, description="id of the source the prompt is for (default: every source)")
    frame: int = Field(
        0, ge=0, description="frame the prompt applies to (live sources: the first frame kept at or after it)"
    )
    box: Box | None = Field(
        None, description="[x1, y1, x2, y2] in source pixels: the instance with the highest mask IoU"
    )
    boxes: list[Box] = Field([], description="several boxes, [[x1, y1, x2, y2], ...]: one target each")
    points: list[tuple[float, float] | tuple[float, float, int]] = Field(
        [], description="[[x, y, label], ...]; label 1 foreground (the default), 0 background"
    )
    text: str | None = Field(None, description='words, e.g. "a black dog": CLIP picks the most similar instance')
    top_k: int | None = Field(None, ge=1, description="text: the K most similar instances become targets (default 1)")
    min_similarity: float | None = Field(
        None, ge=-1.0, le=1.0, description="text: only instances at least this similar (cosine)"
    )
    mask: str | None = Field(
        None, min_length=1, description="a mask image of the prompt frame's size whose nonzero pixels are the object"
    )

    @property
    def all_boxes(self) -> list[Box]:
        """`box` and `boxes` together."""
        return ([self.box] if self.box is not None else []) + list(self.boxes)

    @property
    def is_empty(self) -> bool:
        """Nothing to select with."""
        return (
            not self.all_boxes
            and not self.points
            and self.text is None
            and self.mask is None
            and self.top_k is None
            and self.min_similarity is None
        )

    @model_validator(mode="after")
    def _source_needs_a_prompt(self) -> PromptConfig:
        if self.is_empty and self.source is not None:
            raise ValueError("prompt.source is set but there is no box, point, text or mask to apply to it")
        return self

    @model_validator(mode="after")
    def _a_valid_prompt(self) -> PromptConfig:
        if self.is_empty:
            return self
        placeholder = np.ones((1, 1), bool) if self.mask is not None else None  # the image is read later
        try:
            self.to_prompt(placeholder)
        except PromptError as exc:
            raise ValueError(str(exc)) from None
        return self

    def to_prompt(self, mask: np.ndarray | None = None) -> Prompt:
        """The Prompt this describes; `mask` is the mask image, read by the caller."""
        return Prompt(
            points=np.array([p[:2] for p in self.points], np.float32).reshape(-1, 2),
            labels=np.array([p[2] if len(p) == 3 else 1 for p in self.points], np.int64),
            boxes=np.array(self.all_boxes, np.float32).reshape(-1, 4),
            text=self.text,
            mask=mask,
            frame=self.frame,
            source_id=self.source,
            top_k=self.top_k,
            min_similarity=self.min_similarity,
        )


class ControlConfig(Settings):
    """Re-prompting a running pipeline (pipeline/control.py): config section `control`."""

    port: int | None = Field(
        None, ge=0, le=65535, description="re-prompt while running: JSON commands over HTTP on 127.0.0.1:PORT (0: any)"
    )
    stdin: bool = Field(False, description="re-prompt while running: JSON commands on standard input, one per line")


class RetentionConfig(Settings):
    """How long rotated segments are kept (`output.retention`); the oldest are deleted first."""

    max_age_hours: float | None = Field(None, gt=0, description="delete segments that started longer ago than this")
    max_total_mb: float | None = Field(
        None, gt=0, description="delete the oldest segments while a stream's segments take more than this"
    )


class OutputConfig(Settings):
    """What a run writes: config section `output`."""

    dir: str = Field(
        "runs/fastsam-stream", description="output folder; with several sources, one folder per source inside it"
    )
    overwrite: bool = Field(
        False, description="replace an earlier run's outputs in dir (without it, a folder holding them is refused)"
    )
    video: bool = Field(True, description="write annotated.mp4")
    masks: Literal["target", "all", "none"] = Field("target", description="which tracks get RLE masks in tracks.jsonl")
    mot: bool = Field(False, description="also write mot.txt: every tracked instance in MOTChallenge format")
    quiet: bool = Field(False, description="no progress bar (it is also off when stderr is not a terminal)")
    segment_minutes: float | None = Field(
        None,
        gt=0,
        description="start new output files every this many minutes: tracks-<UTC start>.jsonl and "
        "annotated-<UTC start>.mp4, each complete on its own (none: one file per stream for the whole run)",
    )
    retention: RetentionConfig = RetentionConfig()

    @field_validator("dir")
    @classmethod
    def _a_folder(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("give a folder: an empty name would write into the working folder")
        return v


class ServeConfig(Settings):
    """`fastsam-stream serve`: the HTTP service (service/): config section `serve`."""

    host: str = Field(
        "127.0.0.1", min_length=1, description="the interface to listen on; other than loopback needs a token"
    )
    port: int = Field(8000, ge=0, le=65535, description="the port to listen on (0: any free port)")
    token: SecretStr | None = Field(
        None,
        description="the token every request needs (Authorization: Bearer, or the viewer's login cookie); "
        "FASTSAM_STREAM_TOKEN sets it too",
    )
    metrics_open: bool = Field(
        False, description="serve /metrics without the token (for a scraper on a trusted network)"
    )
    cors_origins: list[str] = Field(
        [], description="origins allowed to call the API from their pages (none by default)"
    )
    max_body_kb: int = Field(64, ge=1, le=65536, description="the largest request body taken, in KiB")
    read_timeout_s: float = Field(
        10.0, gt=0, description="a request whose headers or body take longer than this is answered 408"
    )


class Config(Settings):
    """A whole run's settings: the sections of a config YAML."""

    sources: list[SourceEntry] = Field(
        [],
        description="what to read; SOURCE arguments set it. Each entry is a string or {id: NAME, path: SPEC}: "
        "video file, image folder, rtsp:// rtsps:// rtmp:// http(s):// (HLS too) srt:// udp://, /dev/videoN or N "
        "(V4L2 camera), lavfi:GRAPH (FFmpeg virtual camera)",
    )
    source: SourceConfig = SourceConfig()
    model: SegmenterSettings = SegmenterSettings()
    batch: BatchConfig = BatchConfig()
    prompt: PromptConfig = PromptConfig()
    prompts: list[PromptConfig] = Field(
        [], description="more prompts with the keys of prompt (other frames, sources or objects)"
    )
    clip: ClipSettings = ClipSettings()
    control: ControlConfig = ControlConfig()
    serve: ServeConfig = ServeConfig()
    cluster: ClusterSettings = ClusterSettings()
    # Any registered tracker's settings, told apart by `kind` (trackers/registry.py).
    tracker: settings_union() = ByteTrackerSettings()  # type: ignore[valid-type]
    output: OutputConfig = OutputConfig()
    zones: list[ZoneSettings] = Field(
        [], description="areas that matter (zones/): events when tracks enter, leave, stay or stand still in them"
    )
    lines: list[LineSettings] = Field([], description="lines whose crossings are counted and reported, by direction")
    alerts: list[AlertSettings] = Field(
        [],
        description="where zone and line events are sent as they happen: webhook (kind: webhook) or MQTT (kind: mqtt)",
    )

    @property
    def all_prompts(self) -> list[PromptConfig]:
        """`prompt` and `prompts`, without the empty ones."""
        return [p for p in [self.prompt, *self.prompts] if not p.is_empty]

    @property
    def needs_clip(self) -> bool:
        """CLIP is loaded: asked for, or (by default) because a prompt has text."""
        return self.clip.enabled if self.clip.enabled is not None else any(p.text for p in self.all_prompts)

    @field_validator("sources", mode="before")
    @classmethod
    def _entries(cls, v: Any) -> Any:
        """A bare string is one source; each string entry is a path with the default id."""
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list):
            return [{"path": e} if isinstance(e, str) else e for e in v]
        return v


def first_problem(error: ValidationError) -> tuple[str, str]:
    """The key and the message of a validation error's first problem.

    Args:
        error: pydantic's error for a Config (or a section of one).

    Returns:
        (dotted key, "" for the whole value; the message, ending with the bad value unless the
        value may be a URL with a password: sources, prompts and alerts are never echoed).
    """
    first = error.errors()[0]
    loc = list(first["loc"])
    if loc[:1] == ["tracker"] and len(loc) > 1 and loc[1] in tracker_names():  # the union's tag, not a key
        del loc[1]
    if loc[:1] == ["alerts"] and len(loc) > 2 and loc[2] in ("webhook", "mqtt"):  # alerts.0.webhook.url
        del loc[2]
    key = ".".join(str(p) for p in loc)
    message = first["msg"].removeprefix("Value error, ")
    secret = loc[:1] in (["sources"], ["prompt"], ["prompts"], ["alerts"]) or "token" in loc  # URL passwords, tokens
    if not key or secret:
        return key, message
    return key, f"{message} (got {first.get('input')!r})"


def one_line(error: ValidationError) -> str:
    """The first problem of a validation error as one line naming its key (never echoing a source).

    Args:
        error: pydantic's error for a Config.

    Returns:
        e.g. "config key 'model.conf': Input should be less than or equal to 1 (got 1.5)".
    """
    key, message = first_problem(error)
    if not key:  # the whole value: not JSON, not a mapping, or a rule across its keys
        return message
    if error.errors()[0]["type"] == "extra_forbidden":
        if key == "source.path":
            return (
                "unknown config key 'source.path': "
                "sources are listed under 'sources' (a list of paths, URLs or {id, path})"
            )
        return f"unknown config key {key!r}"
    return f"config key {key!r}: {message}"


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def bundled_names(what: str = "config") -> list[str]:
    """Names of the bundled YAML files: configs (`default`, ...) or trackers (`bytetrack`, ...).

    Args:
        what: "config" or "tracker".

    Returns:
        Their names, sorted, without the .yaml suffix.
    """
    folder = TRACKER_DIR if what == "tracker" else CONFIG_DIR
    return sorted(p.stem for p in folder.glob("*.yaml"))


def config_path(name_or_path: str | Path, folder: Path = CONFIG_DIR, what: str = "config") -> Path:
    """A YAML path, or the name of a bundled one in `folder` (configs: `default`, `monitoring`, ...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"{what} {name_or_path} is a folder; give a YAML file")
    bundled = folder / f"{name_or_path}.yaml"
    if len(path.parts) == 1 and bundled.is_file():
        return bundled
    names = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
    raise ConfigError(f"no such {what} file: {name_or_path} (bundled {what}s: {names})")


def tracker_section(name_or_path: str | Path) -> dict[str, Any]:
    """The `tracker` section of a tracker YAML (bundled: configs/trackers/NAME.yaml).

    Args:
        name_or_path: A YAML file holding one section, `tracker`, or a bundled tracker's name.

    Returns:
        The section, as read.
    """
    data = read_yaml(config_path(name_or_path, TRACKER_DIR, "tracker config"))
    if set(data) != {"tracker"}:
        raise ConfigError(f"tracker config {name_or_path} must hold one section, 'tracker'")
    return data["tracker"]


def read_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML config file as a mapping of sections (an empty file is an empty mapping).

    Args:
        path: The YAML file.

    Returns:
        Its top-level mapping, not yet validated.

    Raises:
        ConfigError: The file cannot be read, is not valid YAML (the message gives the line), or
            is not a mapping.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"config {path} is not valid YAML{line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of sections (source, model, ...)")
    return data


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None, tracker: str | Path | None = None
) -> Config:
    """The run's settings: a YAML file (or the defaults), a tracker YAML, then command-line overrides.

    Each file is validated whole before anything is put on top of it, so a bad section is an error
    whatever the command line says. A tracker YAML replaces the `tracker` section (another
    tracker's keys would not fit); `overrides` are merged key by key.

    Args:
        path: A config YAML, or the name of a bundled one (`default`, `monitoring`, ...).
        overrides: Nested dicts, e.g. {"model": {"imgsz": 320}}.
        tracker: A tracker YAML, or the name of a bundled one (`bytetrack`, `iou`).

    Returns:
        The validated Config.

    Raises:
        ConfigError: One line naming the first bad key.
    """
    data = read_yaml(config_path(path)) if path is not None else {}
    try:
        Config.model_validate(data)
        if tracker is not None:
            data = {**data, "tracker": tracker_section(tracker)}
            Config.model_validate({"tracker": data["tracker"]})
        return Config.model_validate(_merge(data, overrides or {}))
    except ValidationError as exc:
        raise ConfigError(one_line(exc)) from None
