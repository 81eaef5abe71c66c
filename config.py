"""Run configuration: one pydantic model, read from YAML and overridden by command-line options.

Unknown keys and bad values raise ConfigError with a one-line message naming the key.
`configs/default.yaml` documents every key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

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
    conf: Fraction01 = 0.4
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


class PromptConfig(_Section):
    source: str | None = None  # the source id the prompt is for; None: every source
    frame: int = Field(0, ge=0)
    box: tuple[float, float, float, float] | None = None
    points: list[tuple[float, float] | tuple[float, float, int]] = []
    text: str | None = None

    @field_validator("box")
    @classmethod
    def _ordered(cls, v: tuple[float, float, float, float] | None):
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

    @model_validator(mode="after")
    def _source_needs_a_prompt(self) -> "PromptConfig":
        if self.source is not None and self.box is None and not self.points and not self.text:
            raise ValueError(f"prompt.source {self.source!r} is set but there is no box or point to apply to it")
        return self

    @field_validator("text")
    @classmethod
    def _no_text_yet(cls, v: str | None) -> str | None:
        if v:
            raise ValueError("text prompts are not supported in this version: use a box or points")
        return v


class TrackerConfig(_Section):
    min_iou: float = Field(0.3, gt=0.0, le=1.0)
    max_age: int = Field(30, ge=0)
    target_max_age: int | None = Field(None, ge=0)


class OutputConfig(_Section):
    dir: str = "runs/fastsam-stream"
    video: bool = True
    masks: Literal["target", "all", "none"] = "target"
    quiet: bool = False


class Config(_Section):
    sources: list[SourceEntry] = []
    source: SourceConfig = SourceConfig()
    model: ModelConfig = ModelConfig()
    batch: BatchConfig = BatchConfig()
    prompt: PromptConfig = PromptConfig()
    tracker: TrackerConfig = TrackerConfig()
    output: OutputConfig = OutputConfig()

    @field_validator("sources", mode="before")
    @classmethod
    def _entries(cls, v: Any) -> Any:
        """A bare string is one source; each string entry is a path with the default id."""
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list):
            return [{"path": e} if isinstance(e, str) else e for e in v]
        return v


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        if key == "source.path":
            return "unknown config key 'source.path': sources are listed under 'sources' (a list of paths, URLs or {id, path})"
        return f"unknown config key {key!r}"
    message = first["msg"].removeprefix("Value error, ")
    if first["loc"][0] == "sources":  # a source's value may be a URL with a password: never echo it
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


def config_path(name_or_path: str | Path) -> Path:
    """A YAML path, or the name of a bundled config (`default`, `monitoring`, `tracking`, `road`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"config {name_or_path} is a folder; give a YAML file")
    bundled = CONFIG_DIR / f"{name_or_path}.yaml"
    if len(path.parts) == 1 and bundled.is_file():
        return bundled
    names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"no such config file: {name_or_path} (bundled configs: {names})")


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


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Config from a YAML file (or defaults), with `overrides` (nested dicts) on top."""
    data = read_yaml(config_path(path)) if path is not None else {}
    try:
        return Config.model_validate(_merge(data, overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
