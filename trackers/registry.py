"""Trackers by name: each tracker module registers its class with its settings class.

The rest of the project (the config's `tracker` section, `--tracker NAME`, the assembly) asks here,
so a new tracker needs no if/else anywhere:

    @register("iou", IoUTrackerSettings)
    class IoUTracker: ...

    make_tracker(IoUTrackerSettings(max_age=5))  # an IoUTracker

A tracker class takes its settings object as its one constructor argument; its settings class is a
`TrackerSettings` whose `kind` is `Literal[name]` with that default, which lets a config tell the
trackers' sections apart (a pydantic discriminated union on `kind`, see `settings_union`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar, Union, get_args

from pydantic import Discriminator, Tag

from .base import Tracker, TrackerSettings

DEFAULT_TRACKER = "bytetrack"
"""The tracker a config without a `tracker.kind` gets."""

_TRACKERS: dict[str, tuple[type, type[TrackerSettings]]] = {}  # name → (tracker class, settings class)

T = TypeVar("T")


def register(name: str, settings: type[TrackerSettings]) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a tracker class known as `name`, configured by `settings`.

    Args:
        name: The tracker's name (`tracker.kind` in a config, `--tracker NAME`).
        settings: Its settings class; its `kind` field must default to `name`.

    Returns:
        The decorator, which returns the class unchanged.

    Raises:
        ValueError: The name is taken by another class, or `settings.kind` does not default to it.
    """
    kind = settings.model_fields["kind"]
    if kind.default != name or get_args(kind.annotation) != (name,):
        raise ValueError(f"{settings.__name__}.kind must be Literal[{name!r}] = {name!r} to register it as {name!r}")

    def add(cls: type[T]) -> type[T]:
        known = _TRACKERS.get(name)
        same = known is not None and (known[0].__module__, known[0].__qualname__) == (cls.__module__, cls.__qualname__)
        if known is not None and not same:  # (a reloaded module registers its class again: fine)
            raise ValueError(f"tracker name {name!r} is already taken by {known[0].__qualname__}")
        _TRACKERS[name] = (cls, settings)
        return cls

    return add


def tracker_names() -> tuple[str, ...]:
    """Every registered tracker name, in registration order."""
    return tuple(_TRACKERS)


def settings_class(name: str) -> type[TrackerSettings]:
    """The settings class of tracker `name`.

    Raises:
        ValueError: No tracker has that name.
    """
    return _entry(name)[1]


def tracker_class(name: str) -> type[Tracker]:
    """The tracker class registered as `name`.

    Raises:
        ValueError: No tracker has that name.
    """
    return _entry(name)[0]


def settings_classes() -> tuple[type[TrackerSettings], ...]:
    """Every registered settings class, in registration order (the members of a config's union)."""
    return tuple(settings for _, settings in _TRACKERS.values())


def settings_union() -> Any:
    """The type of a config's `tracker` section: any registered settings class, told apart by `kind`.

    A section without `kind` is the default tracker's (DEFAULT_TRACKER), so `tracker: {max_age: 5}`
    configures bytetrack.

    Returns:
        An `Annotated[Union[...], Discriminator]` for a pydantic field.
    """
    members = tuple(Annotated[settings, Tag(name)] for name, (_, settings) in _TRACKERS.items())
    return Annotated[Union[members], Discriminator(_kind_of)]  # noqa: UP007 - a Union of a runtime tuple


def make_tracker(settings: TrackerSettings) -> Tracker:
    """A new tracker of the kind `settings` names, configured by them.

    Args:
        settings: An instance of a registered settings class.

    Returns:
        `tracker_class(settings.kind)(settings)`.

    Raises:
        ValueError: No tracker has that kind, or `settings` are another tracker's class.
    """
    cls, expected = _entry(settings.kind)
    if not isinstance(settings, expected):
        raise ValueError(f"tracker {settings.kind!r} takes {expected.__name__}, not {type(settings).__name__}")
    return cls(settings)


def _entry(name: str) -> tuple[type, type[TrackerSettings]]:
    try:
        return _TRACKERS[name]
    except KeyError:
        raise ValueError(f"no tracker named {name!r}; known: {', '.join(_TRACKERS)}") from None


def _kind_of(value: Any) -> str:
    """The discriminator of a `tracker` section: a dict's `kind` (default: DEFAULT_TRACKER), or a model's."""
    if isinstance(value, dict):
        return value.get("kind", DEFAULT_TRACKER)
    return value.kind if isinstance(value, TrackerSettings) else DEFAULT_TRACKER
