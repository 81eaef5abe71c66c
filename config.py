"""Run configuration: one pydantic model, read from YAML and overridden by command-line options.

Unknown keys and bad values raise ConfigError with a one-line message naming the key.
`configs/default.yaml` documents every key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .core import Prompt
from .errors import ConfigError, PromptError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TRACKER_DIR = CONFIG_DIR / "trackers"

Fraction01 = Annotated[float, Field(ge=0.0, le=1.0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceEntry(_Section):
    """One source, named: `{id: front, path: rtsp://...}`."""

    path: str = Field(min_length=1)
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")  # used as a folder name


class ReconnectConfig(_Section):
    max_attempts: int | None = Field(None, ge=0)
    initial_delay_s: float = Field(0.5, ge=0)
    max_delay_s: float = Field(30.0, ge=0)
    multiplier: float = Field(2.0, ge=1.0)
    jitter: Fraction01 = 0.25
    stable_after_s: float = Field(5.0, ge=0)


class SourceConfig(_Section):
    fps: float = Field(30.0, ge=0.01, le=1000, description="frame rate of image folders (videos use their own)")
    drop_policy: Literal["auto", "block", "drop_oldest"] = "auto"
    buffer_size: int = Field(4, ge=1, le=1000)
    transport: Literal["tcp", "udp"] = "tcp"
    live: bool | None = None
    open_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(5.0, gt=0)
    camera_size: str | None = Field(None, pattern=r"^[1-9][0-9]*x[1-9][0-9]*$")
    camera_fps: float | None = Field(None, gt=0, le=1000)
    reconnect: ReconnectConfig = ReconnectConfig()


class ModelConfig(_Section):
    weights: str = "FastSAM-s.pt"
    device: str | None = None
    imgsz: int = Field(640, ge=32, le=4096)
    conf: Fraction01 = 0.1  # low: the tracker's second round wants the unsure instances too
    iou: Fraction01 = 0.7
    max_det: int = Field(300, ge=1)
    agnostic_nms: bool = True
    half: bool = False
    threads: int | None = Field(None, ge=1)

    @field_validator("imgsz")
    @classmethod
    def _stride_multiple(cls, v: int) -> int:
        if v % 32:
            raise ValueError(f"must be a multiple of 32 (the network's stride), e.g. {v + (-v) % 32}")
        return v


class BatchConfig(_Section):
    max_batch: int = Field(4, ge=1, le=256)
    max_wait_ms: float = Field(5.0, ge=0)
    queue_size: int = Field(8, ge=1)


Box = tuple[float, float, float, float]


class PromptConfig(_Section):
    """One prompt. The rules for combining its parts are Prompt's (core.py), checked here too."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    source: str | None = None  # the source id the prompt is for; None: every source
    frame: int = Field(0, ge=0)
    box: Box | None = None  # one box
    boxes: list[Box] = []  # several boxes: one target each
    points: list[tuple[float, float] | tuple[float, float, int]] = []
    text: str | None = None
    top_k: int | None = Field(None, ge=1)
    min_similarity: float | None = Field(None, ge=-1.0, le=1.0)
    mask: str | None = Field(None, min_length=1)  # a mask image's path (nonzero pixels: the object)

    @field_validator("box")
    @classmethod
    def _ordered(cls, v: Box | None):
        if v is not None and (v[2] <= v[0] or v[3] <= v[1]):
            raise ValueError("needs x1 < x2 and y1 < y2")
        return v

    @field_validator("points")
    @classmethod
    def _labels(cls, v: list[tuple]) -> list[tuple]:
        for point in v:
            if len(point) == 3 and point[2] not in (0, 1):
                raise ValueError(f"label {point[2]} of point {point[0]:g},{point[1]:g} must be 1 (fg) or 0 (bg)")
        return v

    @property
    def all_boxes(self) -> list[Box]:
        return ([self.box] if self.box is not None else []) + list(self.boxes)

    @property
    def is_empty(self) -> bool:
        return (not self.all_boxes and not self.points and self.text is None and self.mask is None
                and self.top_k is None and self.min_similarity is None)

    @model_validator(mode="after")
    def _source_needs_a_prompt(self) -> "PromptConfig":
        if self.is_empty and self.source is not None:
            raise ValueError("prompt.source is set but there is no box, point, text or mask to apply to it")
        return self

    @model_validator(mode="after")
    def _a_valid_prompt(self) -> "PromptConfig":
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


class ClipConfig(_Section):
    """CLIP for text prompts (open_clip)."""

    enabled: bool | None = None  # None: load CLIP when a prompt has text; true: also for text sent later (control)
    model: str = Field("ViT-B-32", min_length=1)  # an open_clip model name
    weights: str = Field("openai", min_length=1)  # an open_clip pretrained tag (downloaded online) or a local checkpoint
    crop: Literal["masked", "box"] = "masked"  # crop around each instance: background blanked, or the plain box


class ControlConfig(_Section):
    """Re-prompting a running pipeline (pipeline/control.py)."""

    port: int | None = Field(None, ge=0, le=65535)  # HTTP on 127.0.0.1; 0: any free port (printed)
    stdin: bool = False  # JSON commands, one per line, on standard input


class TrackerConfig(_Section):
    """The tracker: `bytetrack` (trackers/byte_tracker.py) or the plain `iou` one. The bundled
    configs/trackers/*.yaml each hold one such section (`--tracker NAME`)."""

    kind: Literal["bytetrack", "iou"] = "bytetrack"
    min_iou: float = Field(0.3, gt=0.0, le=1.0)
    low_min_iou: float = Field(0.5, gt=0.0, le=1.0)
    high_score: Fraction01 = 0.4
    low_score: Fraction01 = 0.1
    max_age: int = Field(30, ge=0)
    target_max_age: int | None = Field(None, ge=0)
    match_masks: bool = False
    merge_parts: bool = True
    part_inside: Fraction01 = 0.8
    reacquire: bool = True
    search_radius: float = Field(1.0, ge=0)
    search_growth: float = Field(0.1, ge=0)
    max_search_radius: float = Field(3.0, ge=0)
    min_appearance: Fraction01 = 0.6

    @model_validator(mode="after")
    def _scores_ordered(self) -> "TrackerConfig":
        if self.low_score > self.high_score:
            raise ValueError(f"low_score {self.low_score:g} must not exceed high_score {self.high_score:g}")
        return self


class OutputConfig(_Section):
    dir: str = "runs/fastsam-stream"
    video: bool = True
    masks: Literal["target", "all", "none"] = "target"
    mot: bool = False  # also write mot.txt (MOTChallenge: every tracked instance, stable ids)
    quiet: bool = False


class Config(_Section):
    sources: list[SourceEntry] = []
    source: SourceConfig = SourceConfig()
    model: ModelConfig = ModelConfig()
    batch: BatchConfig = BatchConfig()
    prompt: PromptConfig = PromptConfig()
    prompts: list[PromptConfig] = []  # more prompts, e.g. for other sources or frames
    clip: ClipConfig = ClipConfig()
    control: ControlConfig = ControlConfig()
    tracker: TrackerConfig = TrackerConfig()
    output: OutputConfig = OutputConfig()

    @property
    def all_prompts(self) -> list[PromptConfig]:
        """`prompt` and `prompts`, without the empty ones."""
        return [p for p in [self.prompt, *self.prompts] if not p.is_empty]

    @property
    def needs_clip(self) -> bool:
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


def one_line(error: ValidationError) -> str:
    """The first problem of a validation error as one line naming its key (never echoing a source)."""
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if not key:  # the whole value: not JSON, not a mapping, or a rule across its keys
        return message
    if first["type"] == "extra_forbidden":
        if key == "source.path":
            return "unknown config key 'source.path': sources are listed under 'sources' (a list of paths, URLs or {id, path})"
        return f"unknown config key {key!r}"
    if first["loc"][0] in ("sources", "prompt", "prompts"):
        # a source (also a prompt's `source`) may be a URL with a password: never echo the value
        return f"config key {key!r}: {message}"
    return f"config key {key!r}: {message} (got {first.get('input')!r})"


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


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


def tracker_overrides(name_or_path: str | Path) -> dict[str, Any]:
    """The `tracker` section of a tracker YAML (bundled: configs/trackers/NAME.yaml), as overrides."""
    data = read_yaml(config_path(name_or_path, TRACKER_DIR, "tracker config"))
    if set(data) != {"tracker"}:
        raise ConfigError(f"tracker config {name_or_path} must hold one section, 'tracker'")
    return {"tracker": data["tracker"]}


def read_yaml(path: Path) -> dict[str, Any]:
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
    """Config from a YAML file (or defaults), with a tracker YAML's section (`tracker`: a file or a
    bundled name) and then `overrides` (nested dicts) on top."""
    data = read_yaml(config_path(path)) if path is not None else {}
    if tracker is not None:
        data = _merge(data, tracker_overrides(tracker))
    try:
        return Config.model_validate(_merge(data, overrides or {}))
    except ValidationError as exc:
        raise ConfigError(one_line(exc)) from None
