"""Bad zone, line and alert configs through the command line: one line, exit 2, before the model loads."""

from __future__ import annotations

import subprocess

import pytest
import yaml

HANG_S = 120  # only stops a hang: these end before the model loads


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"zones": [{"name": "z", "polygon": [[0, 0], [10, 0]]}]}, "a polygon needs at least 3 points, got 2"),
        ({"zones": [{"name": "z", "polygon": [[0, 0], [10, 10], [10, 0], [0, 10]]}]}, "edges cross"),
        ({"lines": [{"name": "l", "points": [[0, 0]]}]}, "a line needs exactly 2 points, got 1"),
        (
            {"zones": [{"name": "z", "polygon": [[0, 0], [10, 0], [10, 10]], "source": "cam9"}]},
            "unknown source 'cam9'",
        ),
        (
            {
                "zones": [{"name": "a", "polygon": [[0, 0], [10, 0], [10, 10]]}],
                "lines": [{"name": "a", "points": [[0, 0], [5, 5]]}],
            },
            "'a'",
        ),
        ({"alerts": [{"kind": "webhook", "url": "ftp://u:pa55word@host/x"}]}, "http:// or https://"),
        (
            {
                "zones": [{"name": "dock#1", "polygon": [[0, 0], [10, 0], [10, 10]]}],
                "alerts": [{"kind": "mqtt", "host": "127.0.0.1", "topic": "cams/{zone}"}],
            },
            "cannot go into an MQTT topic",
        ),
        (
            {"alerts": [{"kind": "webhook", "url": "http://127.0.0.1:9/x", "secret_env": "NO_SUCH_VAR_X"}]},
            "NO_SUCH_VAR_X",
        ),
    ],
)
def test_a_bad_zone_line_or_alert_config_is_one_line_and_exit_2(cli, weights, videos, tmp_path, config, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [*cli, "run", str(videos / "carphone_pristine.mp4"), "--config", str(path), "--weights", str(weights)],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert message in line
    assert "pa55word" not in line  # a URL's password is never echoed
