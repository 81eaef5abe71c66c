"""Nothing is downloaded or pip-installed at run time.

A whole run with every socket and every `pip` subprocess made to fail still succeeds, and asked
for neither.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

GUARD = r"""
import json, socket, subprocess, sys
attempts = []

def refuse(name):
    def refused(*args, **kwargs):
        attempts.append(name)
        raise OSError(f"{name} refused by the offline test")
    return refused

socket.socket.connect = refuse("socket.connect")
socket.getaddrinfo = refuse("socket.getaddrinfo")
socket.create_connection = refuse("socket.create_connection")
_popen_init = subprocess.Popen.__init__
def watched(self, args, *rest, **kwargs):
    if "pip" in str(args):
        attempts.append(f"subprocess: {args}")
        raise OSError("pip refused by the offline test")
    return _popen_init(self, args, *rest, **kwargs)
subprocess.Popen.__init__ = watched

from fastsam_stream.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "attempts": attempts}))
"""


def _guarded(argv: list[str], cwd) -> dict:
    # No YOLO_* variables: the project itself must switch ultralytics to offline mode.
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    env["XDG_CACHE_HOME"] = str(cwd / "cache")
    done = subprocess.run(
        [sys.executable, "-c", GUARD, *argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_run_makes_no_network_or_pip_attempt(weights, videos, tmp_path):
    report = _guarded(
        [
            "run",
            str(videos / "carphone_pristine.mp4"),
            "--weights",
            str(weights),
            "--device",
            "cpu",
            "--imgsz",
            "320",
            "--box",
            "28,16,176,143",
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ],
        tmp_path,
    )
    assert report == {"code": 0, "attempts": []}
    assert len((tmp_path / "out" / "tracks.jsonl").read_text().splitlines()) == 120


def test_default_weights_offline_fail_with_advice_not_a_hang(tmp_path, videos):
    report = _guarded(
        ["run", str(videos / "carphone_pristine.mp4"), "--device", "cpu", "--quiet", "--out", str(tmp_path / "out")],
        tmp_path,
    )
    assert report["code"] == 1
    assert all("subprocess" not in a for a in report["attempts"])  # no pip, only the refused download


def test_openvino_and_int8_exports_and_a_run_on_them_make_no_network_or_pip_attempt(weights, videos, tmp_path):
    """The OpenVINO and int8 export paths, and a run on their model, stay offline.

    ultralytics' OpenVINO export checks its requirements (and would pip-install them), and NNCF
    and OpenVINO carry telemetry: with the project's own settings, none reaches for the network.
    """
    checkpoint = tmp_path / weights.name
    checkpoint.write_bytes(weights.read_bytes())
    int8 = tmp_path / "int8_openvino_model"
    export = ["export", "--weights", str(checkpoint), "--format", "openvino", "--int8"]
    calibrate = ["--calibrate", str(videos / "tree.avi"), "--calibration-frames", "4", "--out", str(int8)]
    assert _guarded([*export, *calibrate], tmp_path) == {"code": 0, "attempts": []}
    run = ["run", str(videos / "carphone_pristine.mp4"), "--weights", str(int8), "--imgsz", "320"]
    options = ["--box", "28,16,176,143", "--out", str(tmp_path / "out"), "--quiet"]
    assert _guarded([*run, *options], tmp_path) == {"code": 0, "attempts": []}
    assert len((tmp_path / "out" / "tracks.jsonl").read_text().splitlines()) == 120
