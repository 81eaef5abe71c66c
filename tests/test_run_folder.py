"""One run, one folder; config sections validated whole; Ctrl-C at start-up: each as a user meets it.

Every case runs the installed command on a real clip and checks the one line it prints, its exit
status, and what is left on disk.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

HANG_S = 120  # only stops a hang


def _run(cli, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*cli, *args], capture_output=True, text=True, timeout=300)


def _one_error(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def clip_args(weights, videos) -> list[str]:
    return [
        "run",
        str(videos / "carphone_pristine.mp4"),
        "--weights",
        str(weights),
        "--device",
        "cpu",
        "--imgsz",
        "160",
        "--quiet",
        "--box",
        "28,16,176,143",
    ]


def test_a_second_run_into_the_same_folder_is_refused_and_the_first_is_untouched(cli, clip_args, tmp_path):
    first = _run(cli, *clip_args, "--mot", "--out", str(tmp_path))
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"tracks.jsonl", "annotated.mp4", "mot.txt"}

    again = _run(cli, *clip_args, "--no-video", "--out", str(tmp_path))
    assert again.returncode != 0
    error = _one_error(again)
    assert error.startswith("fastsam-stream: error: output folder") and "--overwrite" in error
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written, nothing removed


def test_overwrite_replaces_every_output_of_the_earlier_run(cli, clip_args, tmp_path):
    assert _run(cli, *clip_args, "--mot", "--out", str(tmp_path)).returncode == 0
    (tmp_path / "notes.txt").write_text("mine")  # not an output: left alone

    done = _run(cli, *clip_args, "--no-video", "--overwrite", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    # The first run's video and MOT file are gone, not left beside the second run's tracks.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "tracks.jsonl"]
    assert len((tmp_path / "tracks.jsonl").read_text().splitlines()) == 120
    assert "annotated.mp4" not in done.stdout and "tracks.jsonl" in done.stdout  # the summary names what exists


def test_a_folder_with_a_several_source_run_is_refused_too(cli, clip_args, videos, tmp_path):
    (tmp_path / "cam1").mkdir()
    (tmp_path / "cam1" / "events.jsonl").write_text("{}\n")
    done = _run(cli, *clip_args, "--out", str(tmp_path))
    assert done.returncode != 0 and "cam1/events.jsonl" in _one_error(done)


@pytest.mark.parametrize(
    ("yaml_text", "option", "key"),
    [("model: 5\n", "--weights", "'model'"), ("output: [1, 2]\n", "--out", "'output'")],
)
def test_a_bad_config_section_is_refused_whatever_the_command_line_says(
    cli, clip_args, tmp_path, yaml_text, option, key
):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    done = _run(cli, *clip_args, "--config", str(config), option, str(tmp_path / "x"))
    assert done.returncode == 2
    assert key in _one_error(done)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--out", "", "--out: give a folder"),
        ("--point", "nan,50", "--point: Input should be a finite number"),
        ("--conf", "1.5", "--conf: Input should be less than or equal to 1"),
    ],
)
def test_options_are_named_as_the_user_typed_them(cli, clip_args, tmp_path, option, value, message):
    done = _run(cli, *clip_args, option, value)
    assert done.returncode == 2
    assert message in _one_error(done)


def _torch_is_loading(pid: int) -> bool:
    """The process has started importing torch: its library is mapped (read from /proc, not timed)."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupt_during_start_up_is_one_line_and_exit_130(cli, clip_args, tmp_path, signum):
    """The signal is sent as soon as torch starts loading.

    On a 2-core CPU that is seconds before the model is loaded; on a faster machine it may land
    later in start-up, or in the run, where the outcome must be the same.
    """
    process = subprocess.Popen(
        [*cli, *clip_args, "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    end = time.monotonic() + HANG_S
    while not _torch_is_loading(process.pid) and process.poll() is None and time.monotonic() < end:
        time.sleep(0.005)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=HANG_S)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(("fastsam-stream: interrupted", "done:")), stderr
    for path in tmp_path.glob("*.jsonl"):  # whatever was written is whole
        for line in path.read_text().splitlines():
            json.loads(line)
