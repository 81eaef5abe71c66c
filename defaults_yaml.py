"""`configs/default.yaml`, written from the settings classes.

Every key appears with its default and its description as a comment, so the file cannot drift
from the code (tests/test_config.py compares them; `fastsam-stream config > FILE` prints it).
"""

from __future__ import annotations

import textwrap
import typing
from types import UnionType

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .config import Config

HEADER = """\
# fastsam-stream: every setting, with its default. Command-line options override these.
# Use:  fastsam-stream run SOURCE --config configs/default.yaml   (or --config default)
# Written by `fastsam-stream config` from the settings' own descriptions: edit those, not this file.
"""
COMMENT_COLUMN = 28
WIDTH = 118


def _scalar(value: object) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def _first_line(model: type[BaseModel]) -> str:
    """The class docstring's first line, without the section name it ends with."""
    first = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
    return first.split(": config section")[0].rstrip(".")


def _line(indent: int, key: str, value: str, comment: str) -> list[str]:
    head = f"{' ' * indent}{key}:{' ' + value if value else ''}"
    if not comment:
        return [head]
    column = max(COMMENT_COLUMN, len(head) + 2)
    wrapped = textwrap.wrap(comment, WIDTH - column - 2) or [""]
    lines = [f"{head:<{column}}# {wrapped[0]}"]
    lines += [f"{'':<{column}}#   {more}" for more in wrapped[1:]]
    return lines


def _section(model: BaseModel, indent: int) -> list[str]:
    lines: list[str] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            lines += _line(indent, name, "", _first_line(type(value)))
            lines += _section(value, indent + 2)
        else:
            dumped = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
            if isinstance(dumped, list) and dumped and isinstance(dumped[0], BaseModel):
                dumped = [v.model_dump(mode="json") for v in dumped]
            lines += _line(indent, name, _scalar(dumped), field.description or "")
    return lines


def _item_models(annotation: object) -> list[type[BaseModel]]:
    """The settings classes a list field's items can be (a discriminated union gives several)."""
    if typing.get_origin(annotation) is not list:
        return []
    (item,) = typing.get_args(annotation)
    if typing.get_origin(item) is typing.Annotated:
        item = typing.get_args(item)[0]
    members = typing.get_args(item) if typing.get_origin(item) in (typing.Union, UnionType) else (item,)
    return [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]


def _example(model: type[BaseModel], indent: int) -> list[str]:
    """One list item's keys as YAML comments: a documented example of an entry, never loaded."""
    lines: list[str] = []
    fields = sorted(model.model_fields.items(), key=lambda item: item[0] != "kind")  # a union's tag first
    for k, (name, field) in enumerate(fields):
        lead = "- " if k == 0 else "  "
        nested = field.annotation if isinstance(field.annotation, type) else None
        if nested is not None and issubclass(nested, BaseModel):
            lines += _line(indent, f"{lead}{name}", "", _first_line(nested))
            lines += _example_fields(nested, indent + 4)
            continue
        default = field.default
        value = "<required>" if default is PydanticUndefined else _scalar(default)
        lines += _line(indent, f"{lead}{name}", value, field.description or "")
    return ["#" + line[1:] if line.startswith(" ") else "# " + line for line in lines]


def _example_fields(model: type[BaseModel], indent: int) -> list[str]:
    lines: list[str] = []
    for name, field in model.model_fields.items():
        default = field.default
        value = "<required>" if default is PydanticUndefined else _scalar(default)
        lines += _line(indent, name, value, field.description or "")
    return lines


def default_yaml() -> str:
    """The documented default config.

    Returns:
        YAML text whose values load as `Config()`, one comment per key.
    """
    config = Config()
    blocks = []
    for name in Config.model_fields:
        value = getattr(config, name)
        if isinstance(value, BaseModel):
            blocks.append("\n".join(_line(0, name, "", _first_line(type(value))) + _section(value, 2)))
        else:
            field = Config.model_fields[name]
            lines = _line(0, name, _scalar(value), field.description or "")
            for model in _item_models(field.annotation):  # what an entry holds, as a commented example
                lines += _example(model, 2)
            blocks.append("\n".join(lines))
    return HEADER + "\n" + "\n\n".join(blocks) + "\n"
