"""Trackers by name (trackers/registry.py), the Tracker protocol, and the trackers' settings classes.

The settings classes are the one place a tracker setting's default, bounds and help text are written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from fastsam_stream.settings import help_of
from fastsam_stream.trackers import (
    DEFAULT_TRACKER,
    ByteTracker,
    ByteTrackerSettings,
    IoUTracker,
    IoUTrackerSettings,
    Tracker,
    TrackerSettings,
    make_tracker,
    register,
    settings_class,
    settings_classes,
    settings_union,
    tracker_class,
    tracker_names,
)


def test_both_trackers_are_registered_by_name():
    assert {"bytetrack", "iou"} <= set(tracker_names())
    assert DEFAULT_TRACKER == "bytetrack"
    assert tracker_class("bytetrack") is ByteTracker and settings_class("bytetrack") is ByteTrackerSettings
    assert tracker_class("iou") is IoUTracker and settings_class("iou") is IoUTrackerSettings
    assert {ByteTrackerSettings, IoUTrackerSettings} <= set(settings_classes())


def test_make_tracker_builds_the_kind_the_settings_name():
    tracker = make_tracker(IoUTrackerSettings(max_age=5))
    assert isinstance(tracker, IoUTracker) and tracker.settings.max_age == 5
    tracker = make_tracker(ByteTrackerSettings(reacquire=False))
    assert isinstance(tracker, ByteTracker) and not tracker.settings.reacquire


def test_unknown_names_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="bytetrack"):
        settings_class("sort")
    with pytest.raises(ValueError, match="no tracker named"):
        tracker_class("sort")


def test_register_wants_settings_whose_kind_is_the_name():
    class Wrong(TrackerSettings):
        kind: Literal["other"] = "other"

    with pytest.raises(ValueError, match="Literal"):
        register("mine", Wrong)
    with pytest.raises(ValueError, match="already taken"):
        register("iou", IoUTrackerSettings)(type("Impostor", (), {}))


@pytest.mark.parametrize("tracker", [ByteTracker(), IoUTracker()], ids=["bytetrack", "iou"])
def test_every_tracker_follows_the_protocol(tracker):
    assert isinstance(tracker, Tracker)
    tracker.rescale(2.0, 0.5)  # no tracks yet: nothing to move, but the method is there


class _Config(BaseModel):
    tracker: settings_union() = ByteTrackerSettings()


def test_settings_union_tells_the_sections_apart_by_kind():
    assert isinstance(_Config().tracker, ByteTrackerSettings)
    assert _Config(tracker={"kind": "iou", "max_age": 3}).tracker == IoUTrackerSettings(max_age=3)
    assert _Config(tracker={"max_age": 3}).tracker == ByteTrackerSettings(max_age=3)  # no kind: the default
    with pytest.raises(ValidationError):
        _Config(tracker={"kind": "iou", "reacquire": False})  # a bytetrack setting in an iou section
    with pytest.raises(ValidationError):
        _Config(tracker={"kind": "sort"})


def test_shared_settings_are_written_once():
    for name in ("min_iou", "max_age", "target_max_age"):
        for cls in (ByteTrackerSettings, IoUTrackerSettings):
            assert repr(cls.model_fields[name]) == repr(TrackerSettings.model_fields[name])


@pytest.mark.parametrize("cls", [ByteTrackerSettings, IoUTrackerSettings])
def test_every_setting_has_its_help_text(cls):
    for name, field in cls.model_fields.items():
        assert field.description, f"{cls.__name__}.{name} has no description"
    assert help_of(cls, "max_age").endswith("(default 30)")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"part_inside": 1.5},
        {"min_appearance": -0.1},
        {"search_radius": -1.0},
        {"search_growth": -0.1},
        {"max_search_radius": -1.0},
        {"low_min_iou": 1.5},
        {"min_iou": float("nan")},
        {"unknown": 1},
    ],
)
def test_bytetrack_settings_reject_bad_values(kwargs):
    with pytest.raises(ValidationError):
        ByteTrackerSettings(**kwargs)


def test_settings_are_frozen():
    with pytest.raises(ValidationError):
        ByteTrackerSettings().max_age = 3  # type: ignore[misc]


def test_bundled_tracker_yamls_hold_the_defaults():
    folder = Path(__file__).resolve().parents[1] / "configs" / "trackers"
    for name in tracker_names():
        section = yaml.safe_load((folder / f"{name}.yaml").read_text())["tracker"]
        assert settings_class(name).model_validate(section) == settings_class(name)(), name
