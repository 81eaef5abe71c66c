"""Command-line options made from the settings.

Each option's help is its setting's description and default (settings.help_of), so neither is
written a second time here.
"""

from __future__ import annotations

import argparse
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from .config import bundled_names
from .pipeline.segmenter import SegmenterSettings
from .settings import help_of


def setting_option(
    parser: argparse.ArgumentParser, flag: str, section: type[BaseModel], name: str, **kwargs: Any
) -> None:
    """Add option `flag` for setting `section.name`; unset, it leaves the config's value alone.

    Args:
        parser: The (sub)command's parser.
        flag: e.g. "--imgsz".
        section: The settings class that owns the setting.
        name: The setting's field name.
        **kwargs: More of argparse's add_argument (type, choices, metavar, ...).
    """
    if kwargs.get("action") == "store_true":  # a flag: its default is not giving it
        text = section.model_fields[name].description or name
    else:
        text = help_of(section, name)
        choices = literal_choices(section, name)
        if choices:
            kwargs.setdefault("choices", choices)
    parser.add_argument(flag, help=text.replace("%", "%%"), **kwargs)  # argparse formats help with %


def literal_choices(section: type[BaseModel], name: str) -> list[str]:
    """The values a Literal setting takes (empty for any other kind of setting).

    Args:
        section: The settings class.
        name: The setting's field name.

    Returns:
        e.g. ["tcp", "udp"].
    """
    annotation = section.model_fields[name].annotation
    return list(get_args(annotation)) if get_origin(annotation) is Literal else []


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """--config and --tracker, which name YAML files or bundled ones."""
    parser.add_argument("--config", help=f"YAML config file, or a bundled one: {', '.join(bundled_names('config'))}")
    parser.add_argument(
        "--tracker",
        help="tracker settings: a YAML file with a 'tracker' section, or a bundled one: "
        + ", ".join(bundled_names("tracker")),
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The model options shared by `run` and `eval`."""
    setting_option(parser, "--weights", SegmenterSettings, "weights")
    setting_option(parser, "--device", SegmenterSettings, "device")
    setting_option(parser, "--imgsz", SegmenterSettings, "imgsz", type=int)
