"""The `fastsam-stream` command as a user runs it: real clip in, tracks.jsonl and annotated.mp4 out.

Bad input gives one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import re
import subprocess

import av
import pytest

from fastsam_stream.sinks.jsonl import decode_rle

CARPHONE_PERSON = "28,16,176,143"  # the driver in carphone_pristine.mp4, frame 0


def _run(cli, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*cli, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def carphone_run(cli, weights, videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("carphone")
    done = _run(
        cli,
        "run",
        str(videos / "carphone_pristine.mp4"),
        "--weights",
        str(weights),
        "--device",
        "cpu",
        "--box",
        CARPHONE_PERSON,
        "--out",
        str(out),
    )
    return done, out


def test_run_writes_one_jsonl_line_per_frame_in_order(carphone_run):
    done, out = carphone_run
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(120))
    assert all(r["source"] == "carphone_pristine" for r in lines)
    pts = [r["pts"] for r in lines]
    assert pts == sorted(pts) and pts[30] == pytest.approx(30 * 1001 / 30000, abs=1e-3)
    targets = [[t for t in r["tracks"] if t["target"]] for r in lines]
    assert all(len(t) == 1 for t in targets)  # the target is listed on every frame, found or lost
    assert len({t[0]["id"] for t in targets}) == 1
    found = [t[0] for t in targets if t[0]["state"] == "tracked"]
    assert len(found) >= 110
    mask = decode_rle(found[0]["mask"])
    assert mask.shape == (144, 176) and mask.sum() > 0.2 * 144 * 176  # the driver fills much of the frame
    assert re.fullmatch(
        rf"done: 120 frames in [\d.]+ s \([\d.]+ frames/s\), target found in {len(found)}/120 frames -> "
        rf"{re.escape(str(out / 'tracks.jsonl'))}, {re.escape(str(out / 'annotated.mp4'))}\n",
        done.stdout,
    ), done.stdout


def test_annotated_video_is_playable_with_the_source_rate_and_frame_count(carphone_run):
    _, out = carphone_run
    with av.open(str(out / "annotated.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.average_rate == pytest.approx(30000 / 1001, rel=1e-3)
        frames = list(container.decode(stream))
    assert len(frames) == 120
    assert (frames[0].width, frames[0].height) == (176, 144)


def test_image_folder_source_and_a_point_prompt(cli, weights, davis, tmp_path):
    done = _run(
        cli,
        "run",
        str(davis / "JPEGImages/480p/car-roundabout"),
        "--weights",
        str(weights),
        "--point",
        "470,230,1",
        "--no-video",
        "--quiet",
        "--out",
        str(tmp_path),
        "--imgsz",
        "320",
    )
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "tracks.jsonl").read_text().splitlines()
    assert len(lines) == len(list((davis / "JPEGImages/480p/car-roundabout").glob("*.jpg")))
    assert not (tmp_path / "annotated.mp4").exists()
    first = json.loads(lines[0])
    assert any(t["target"] and "mask" in t for t in first["tracks"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "/nonexistent/clip.mp4"], "no such file or folder"),
        (["run", "{not_a_video}"], "cannot read"),
        (["run", "{empty_dir}"], "no JPEG or PNG images"),
        (["run", "{clip}", "--box", "200,0,5000,100"], "outside the 176x144 frame"),
        (["run", "{clip}", "--box", "1,2,3"], "expected 4"),
        (["run", "{clip}", "--point", "10,10,2"], "point labels must be 1"),
        (["run", "{clip}", "--weights", "/nonexistent/FastSAM-s.pt"], "weights file not found"),
        (["run", "{clip}", "--weights", "FastSAM-s.pt"], "pass --weights"),
        (["run", "{clip}", "--config", "{bad_key_config}"], "unknown config key 'model.imgsize'"),
        (["run", "{clip}", "--imgsz", "100"], "multiple of 32"),
        (["run", "{clip}", "--prompt-frame", "500", "--box", "1,1,20,20"], "past the end"),
        (["run", "{clip}", "--device", "tpu"], "device"),
        (["run", "{clip}", "--out", "{a_file}"], "cannot create output folder"),
        (["run", "{clip}", "--weights", "{onnx}"], "in ONNX Runtime"),
        (
            ["run", "{clip}", "--weights", "{tflite}"],
            "a PyTorch checkpoint (*.pt), an ONNX export (*.onnx) or an OpenVINO export",
        ),
        (["run", "{clip}", "--config", "{empty_dir}"], "is a folder"),
        (["run", "/dev/video97"], "no such camera: /dev/video97"),
        (["run", "97"], "no such camera: /dev/video97"),
        (["run", "ftp://user:pw@example.com/x.mp4"], "unsupported stream URL ftp://user:***@example.com/x.mp4"),
        (["run", "lavfi:no_such_filter"], "cannot open lavfi:no_such_filter"),
        (["run", "{clip}", "--camera-size", "big"], "--camera-size: String should match pattern"),
        (
            ["run", "{clip}", "{clip}", "--prompt-source", "nope", "--box", "1,1,20,20"],
            "the prompt is for source 'nope'",
        ),
        (
            ["run", "{clip}", "--reconnect-attempts", "-1"],
            "--reconnect-attempts: Input should be greater than or equal to 0",
        ),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(cli, weights, videos, tmp_path, args, message):
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("this is text, not a video\n")
    (tmp_path / "empty").mkdir()
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("model:\n  imgsize: 640\n")
    (tmp_path / "a_file").write_text("")
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "model.tflite").write_bytes(b"tflite")
    names = {
        "not_a_video": str(not_a_video),
        "empty_dir": str(tmp_path / "empty"),
        "clip": str(videos / "carphone_pristine.mp4"),
        "bad_key_config": str(bad_config),
        "a_file": str(tmp_path / "a_file"),
        "onnx": str(tmp_path / "model.onnx"),
        "tflite": str(tmp_path / "model.tflite"),
    }
    argv = [a.format(**names) for a in args]
    for flag, value in {"--weights": str(weights), "--device": "cpu"}.items():
        if flag not in argv:
            argv += [flag, value]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    done = _run(cli, *argv, "--quiet")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("fastsam-stream: error: ") and message in errors[0], errors[0]


def test_help_lists_the_run_options(cli):
    done = _run(cli, "run", "--help")
    assert done.returncode == 0
    for option in ("--weights", "--device", "--imgsz", "--box", "--point", "--prompt-frame", "--out", "--no-video"):
        assert option in done.stdout


def test_no_progress_bar_when_not_a_terminal(carphone_run):
    done, _ = carphone_run
    assert done.stderr == ""


def test_progress_bar_on_a_terminal(cli, weights, davis, tmp_path):
    """Stderr on a pseudo-terminal: the bar shows frames done / total."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100×24 terminal
    source = davis / "JPEGImages/480p/camel"
    total = len(list(source.glob("*.jpg")))
    process = subprocess.Popen(
        [
            *cli,
            "run",
            str(source),
            "--weights",
            str(weights),
            "--device",
            "cpu",
            "--imgsz",
            "320",
            "--no-video",
            "--out",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=child,
        text=True,
    )
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(parent, 4096)
        except OSError:  # the pty closes when the process exits
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=300)
    os.close(parent)
    assert process.returncode == 0
    assert f"{total}/{total}" in b"".join(chunks).decode(errors="replace")


def test_debug_shows_the_traceback(cli, tmp_path):
    done = _run(cli, "run", str(tmp_path / "missing.mp4"), "--debug")
    assert done.returncode != 0 and "Traceback" in done.stderr and "SourceError" in done.stderr


def test_track_everything_writes_a_mot_file_matching_tracks_jsonl(cli, weights, davis, tmp_path):
    frames = davis.parent / "mot/MOT17-mini/train/MOT17-02-FRCNN/img1"
    done = _run(
        cli,
        "run",
        str(frames),
        "--weights",
        str(weights),
        "--device",
        "cpu",
        "--mot",
        "--masks",
        "all",
        "--no-video",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split(",") for line in (tmp_path / "mot.txt").read_text().splitlines()]
    assert rows and all(len(r) == 10 and r[7:] == ["-1", "-1", "-1"] for r in rows)
    records = [json.loads(line) for line in (tmp_path / "tracks.jsonl").read_text().splitlines()]
    expected = {(r["frame"] + 1, t["id"]) for r in records for t in r["tracks"] if t["state"] == "tracked"}
    assert {(int(r[0]), int(r[1])) for r in rows} == expected  # 1-based frames, the same ids
    assert len({int(r[1]) for r in rows}) >= 5  # every instance gets its own id, no prompt needed
    for r in rows:  # 1-based boxes (MOTChallenge): x = x1 + 1
        frame, track_id, x, y = int(r[0]), int(r[1]), float(r[2]), float(r[3])
        [box] = [t["box"] for t in records[frame - 1]["tracks"] if t["id"] == track_id]
        assert (x, y) == pytest.approx((box[0] + 1, box[1] + 1), abs=0.01)
    assert all("mask" in t for r in records for t in r["tracks"] if t["state"] == "tracked")
