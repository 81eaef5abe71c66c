"""Config: YAML + overrides, strict keys, one-line errors, bundled configs, and default.yaml in sync."""

from __future__ import annotations

import pytest
import yaml
from pydantic import BaseModel

from fastsam_stream.config import CONFIG_DIR, Config, load_config
from fastsam_stream.defaults_yaml import default_yaml
from fastsam_stream.errors import ConfigError


def test_default_yaml_is_written_from_the_settings_and_loads_as_the_defaults():
    """configs/default.yaml is generated (`fastsam-stream config`).

    Every default and description lives in one place, the settings' Fields.
    """
    text = (CONFIG_DIR / "default.yaml").read_text()
    assert text == default_yaml(), "configs/default.yaml is stale: run `fastsam-stream config > configs/default.yaml`"
    assert yaml.safe_load(text) == Config().model_dump(mode="json")
    assert load_config("default") == Config()


def _keys(model: BaseModel, prefix: str = "") -> list[str]:
    keys = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        keys += _keys(value, f"{prefix}{name}.") if isinstance(value, BaseModel) else [f"{prefix}{name}"]
    return keys


def test_every_setting_has_a_description():
    undocumented = []
    for key in _keys(Config()):
        *sections, name = key.split(".")
        section = Config()
        for part in sections:
            section = getattr(section, part)
        if not type(section).model_fields[name].description:
            undocumented.append(key)
    assert undocumented == []


@pytest.mark.parametrize(
    ("flag", "key"),
    [
        ("--imgsz", "model.imgsz"),
        ("--conf", "model.conf"),
        ("--read-timeout", "source.read_timeout_s"),
        ("--reconnect-attempts", "source.reconnect.max_attempts"),
        ("--drop-policy", "source.drop_policy"),
        ("--clip-weights", "clip.weights"),
        ("--out", "output.dir"),
        ("--prompt-frame", "prompt.frame"),
    ],
)
def test_command_line_help_is_the_settings_description_and_default(flag, key):
    from fastsam_stream.commands import parser
    from fastsam_stream.settings import help_of

    run = parser()._subparsers._group_actions[0].choices["run"]
    action = next(a for a in run._actions if flag in a.option_strings)
    *sections, name = key.split(".")
    model: type[BaseModel] = Config
    for section in sections:
        model = model.model_fields[section].annotation
    assert action.help.replace("%%", "%") == help_of(model, name)
    assert action.default is None  # an option not given leaves the config's value alone


@pytest.mark.parametrize("name", ["default", "monitoring", "tracking", "road"])
def test_bundled_configs_load_by_name(name):
    assert isinstance(load_config(name), Config)


def test_overrides_win_over_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  imgsz: 320\n  conf: 0.3\ntracker:\n  max_age: 5\n")
    config = load_config(path, {"model": {"imgsz": 640}})
    assert (config.model.imgsz, config.model.conf, config.tracker.max_age) == (640, 0.3, 5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model:\n  imgsize: 640\n", "unknown config key 'model.imgsize'"),
        ("modle:\n  imgsz: 640\n", "unknown config key 'modle'"),
        ("model:\n  conf: 1.5\n", "'model.conf'"),
        ("model:\n  imgsz: 500\n", "multiple of 32"),
        ("prompt:\n  box: [10, 10, 5, 50]\n", "x1 < x2"),
        ("prompt:\n  points: [[10, 10, 3]]\n", "must be 1 (foreground) or 0 (background)"),
        ("prompt:\n  text: '  '\n", "a text prompt must not be empty"),
        ("prompt:\n  text: a dog\n  points: [[1, 2]]\n", "background points (label 0) only"),
        ("prompts:\n  - {mask: m.png, box: [1, 1, 5, 5]}\n", "'prompts.0': a mask prompt stands alone"),
        ("prompt:\n  text: a dog\n  top_k: 0\n", "'prompt.top_k'"),
        ("clip:\n  crop: square\n", "'clip.crop'"),
        ("prompt:\n  box: [.nan, 0, 5, 5]\n", "'prompt.box.0'"),
        ("prompt:\n  top_k: 3\n", "give text too"),
        ("control:\n  port: 70000\n", "'control.port'"),
        ("output:\n  masks: some\n", "'output.masks'"),
        ("- just\n- a list\n", "mapping"),
        ("model: [unclosed\n", "not valid YAML"),
        ("source:\n  path: a.mp4\n", "sources are listed under 'sources'"),
        ("sources:\n  - {path: a.mp4, id: ../up}\n", "'sources.0.id'"),
        ("sources:\n  - {id: cam}\n", "'sources.0.path': Field required"),
        ("source:\n  drop_policy: newest\n", "'source.drop_policy'"),
        ("prompt:\n  source: cam\n", "no box, point, text or mask to apply to it"),
        ("source:\n  reconnect:\n    multiplier: 0.5\n", "'source.reconnect.multiplier'"),
    ],
)
def test_bad_configs_are_one_line_config_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_missing_config_names_the_bundled_ones():
    with pytest.raises(ConfigError, match="bundled configs: default, monitoring, road, tracking"):
        load_config("nonexistent")


def test_sources_are_strings_or_named_entries(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sources:\n  - a.mp4\n  - {id: front, path: rtsp://cam/1}\n")
    config = load_config(path)
    assert [(e.path, e.id) for e in config.sources] == [("a.mp4", None), ("rtsp://cam/1", "front")]
    assert [(e.path, e.id) for e in load_config(overrides={"sources": "b.mp4"}).sources] == [("b.mp4", None)]


def test_bundled_tracker_configs_load_by_name_and_bytetrack_is_the_default():
    from fastsam_stream.config import TRACKER_DIR

    assert sorted(p.stem for p in TRACKER_DIR.glob("*.yaml")) == ["bytetrack", "iou"]
    assert load_config(tracker="bytetrack").tracker == Config().tracker  # the file documents the defaults
    assert load_config(tracker="iou").tracker.kind == "iou"


def test_tracker_files_hold_one_tracker_section(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("tracker:\n  kind: iou\n  max_age: 7\n")
    config = load_config(overrides={"tracker": {"max_age": 9}}, tracker=mine)
    assert (config.tracker.kind, config.tracker.max_age) == ("iou", 9)  # command-line options still win
    mine.write_text("tracker:\n  kind: iou\nmodel:\n  imgsz: 320\n")
    with pytest.raises(ConfigError, match="must hold one section, 'tracker'"):
        load_config(tracker=mine)
    with pytest.raises(ConfigError, match="bundled tracker configs: bytetrack, iou"):
        load_config(tracker="sort")
    mine.write_text("tracker:\n  low_score: 0.6\n  high_score: 0.5\n")
    with pytest.raises(ConfigError, match="low_score 0.6 must not exceed high_score 0.5"):
        load_config(tracker=mine)


@pytest.mark.parametrize(
    "prompt", [{"source": "rtsp://admin:s3cret@cam/x"}, {"source": "rtsp://admin:s3cret@cam/x", "box": [3, 3, 1, 1]}]
)
def test_prompt_errors_never_echo_a_source_url_with_its_password(prompt):
    with pytest.raises(ConfigError) as caught:
        load_config(overrides={"prompt": prompt})
    assert "s3cret" not in str(caught.value)
