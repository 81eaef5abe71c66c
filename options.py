"""Command-line options made from the settings.

An option that sets a config key is added with that key as its argparse `dest` (e.g. `--conf`
stores into "model.conf"), its help is the setting's description and default (settings.help_of),
and its choices are the setting's Literal values: nothing about a setting is written a second
time here. `given_settings(args)` turns the options a user gave into config overrides.
"""

from __future__ import annotations

import argparse
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from .config import Config, bundled_names
from .settings import help_of


def setting_of(key: str) -> tuple[type[BaseModel], str]:
    """The settings class that owns a dotted config key, and the field's name in it.

    Args:
        key: e.g. "source.reconnect.max_attempts".

    Returns:
        e.g. (ReconnectPolicy, "max_attempts").
    """
    *sections, name = key.split(".")
    model: type[BaseModel] = Config
    for section in sections:
        model = model.model_fields[section].annotation
    return model, name


def setting_option(parser: argparse.ArgumentParser, flag: str, key: str, **kwargs: Any) -> None:
    """Add option `flag` for config key `key`; an option not given leaves the config's value alone.

    Args:
        parser: The (sub)command's parser.
        flag: e.g. "--imgsz".
        key: The dotted config key it sets, e.g. "model.imgsz".
        **kwargs: More of argparse's add_argument (type, metavar, ...); action="store_true" makes a
            flag that sets the key true.
    """
    section, name = setting_of(key)
    if kwargs.get("action") == "store_true":  # a flag: its default is not giving it
        kwargs.update(action="store_const", const=True)
        text = section.model_fields[name].description or name
    else:
        text = help_of(section, name)
        choices = literal_choices(section, name)
        if choices:
            kwargs.setdefault("choices", choices)
    parser.add_argument(flag, dest=key, default=None, help=text.replace("%", "%%"), **kwargs)  # help is %-formatted


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


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Nested config overrides from every option that sets a config key and was given.

    Args:
        args: Parsed options whose dests are dotted config keys (see setting_option).

    Returns:
        e.g. {"model": {"imgsz": 320}}.
    """
    overrides: dict[str, Any] = {}
    for key, value in vars(args).items():
        if "." not in key or value is None:
            continue
        *sections, name = key.split(".")
        section = overrides
        for part in sections:
            section = section.setdefault(part, {})
        section[name] = value
    return overrides


def option_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Which option sets which config key, for messages in the command line's words.

    Args:
        parser: A (sub)command's parser.

    Returns:
        Dotted config key → the option's flag, e.g. {"model.conf": "--conf"}.
    """
    return {a.dest: a.option_strings[0] for a in parser._actions if "." in a.dest and a.option_strings}


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
    setting_option(parser, "--weights", "model.weights")
    setting_option(parser, "--device", "model.device")
    setting_option(parser, "--imgsz", "model.imgsz", type=int)
