"""The base of every settings class: one frozen pydantic model per section.

A setting's default, bounds and help text are written once, in its `Field`. The runtime objects
(segmenter, batcher, sources, trackers, CLIP) take these models directly, `config.py` nests them
into the YAML layout, and the command line's help reads the same descriptions and defaults.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Fraction01 = Annotated[float, Field(ge=0.0, le=1.0)]
"""A float in [0, 1]."""


class Settings(BaseModel):
    """A frozen section of settings: unknown keys are refused, values are checked on construction."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def default_of(section: type[BaseModel], name: str) -> Any:
    """The default of setting `name` of `section`, as written in its Field.

    Args:
        section: A settings class.
        name: One of its field names.

    Returns:
        The default value (a factory's product when the field has a default factory).
    """
    field = section.model_fields[name]
    return field.get_default(call_default_factory=True)


def help_of(section: type[BaseModel], name: str) -> str:
    """The help text of setting `name`: its description, then its default.

    Args:
        section: A settings class.
        name: One of its field names.

    Returns:
        e.g. "network input size, a multiple of 32 (default 640)".
    """
    field = section.model_fields[name]
    description = field.description or name.replace("_", " ")
    default = default_of(section, name)
    if default is None or isinstance(default, BaseModel):
        return description
    shown = str(default).lower() if isinstance(default, bool) else default
    return f"{description} (default {shown})"
