"""The control interface (issue #5): a running pipeline on a real clip is re-prompted mid-run.

tracks.jsonl / events.jsonl show the change from the requested frame on.

Everything is real: the carphone clip, the stand-in model, HTTP on 127.0.0.1 through urllib, and
the installed console script in a subprocess. Nothing sleeps or measures time. In-process, the
commands are posted from a sink, i.e. from the pipeline's own thread while it handles frame N: the
server has queued the command when the reply comes, and frame N+1 is only looked at after every
sink has had frame N, so a command without a frame applies on frame N+1 exactly. The command line
reads the clip from a server in the test that holds back the frame a command names until the
command is known to be queued (see "the command line" below): no outcome depends on the speed of
the machine.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

import av
import numpy as np
import pytest

import fastsam_stream as fs
from fastsam_stream.errors import PromptError
from fastsam_stream.pipeline.control import ControlServer, parse_command
from fastsam_stream.sinks import EventLogSink, JsonlSink, decode_rle
from fastsam_stream.sources import default_id

CLIP = "carphone_pristine.mp4"  # 176x144, 120 frames
SOURCE = "carphone_pristine"
PERSON = [28, 16, 176, 143]  # the driver on frame 0: target id 1
# The hand holding the phone, in front of the driver: at --imgsz 320 the model finds it on every
# frame around [66..76, 94..103, 109..125, 111..122] (a box prompt picks the best mask IoU).
HAND = "66,96,120,122"
CHANGE_FRAME = 30  # the in-process commands are posted while this frame is handled
APPLIED_FRAME = CHANGE_FRAME + 1


# --- helpers -------------------------------------------------------------------------------------


def _http(method: str, url: str, body: object = None) -> tuple[int, str]:
    """(status, body text) of one request; status 0 when no reply came.

    A failure is recorded, not raised, so a failing request inside the pipeline's thread does not
    end the run the other checks need.
    """
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:  # a safety net, never reached when it works
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError) as exc:
        return 0, f"no reply: {exc!r}"


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _targets(line: dict) -> set[int]:
    return {t["id"] for t in line["tracks"] if t["target"]}


def _listed(line: dict, track_id: int) -> dict | None:
    return next((t for t in line["tracks"] if t["id"] == track_id), None)


def _changes(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event"] in ("targets_changed", "prompt_failed")]


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union)


def _second_object(result: fs.FrameResult) -> list[float]:
    """The box of this frame's most confident instance that is not the target and hardly overlaps it.

    On carphone: the hand with the phone. A box prompt on it selects that instance.
    """
    target_rows = {r for rows in result.target_rows.values() for r in rows}
    target_box = result.instances.boxes[min(target_rows)]
    rows = [
        r
        for r in np.argsort(-result.instances.scores)
        if r not in target_rows and _box_iou(result.instances.boxes[r], target_box) < 0.5
    ]
    assert rows, f"frame {result.frame.index} has no second object: {result.instances.boxes.tolist()}"
    return [round(float(v), 1) for v in result.instances.boxes[rows[0]]]


@dataclass
class _Run:
    """What an in-process run left: its outputs, and what the server answered along the way."""

    lines: list[dict]
    events: list[dict]
    replies: dict[str, tuple[int, str]] = field(default_factory=dict)
    second_box: list[float] | None = None

    def reply(self, name: str) -> tuple[int, dict]:
        status, text = self.replies[name]
        assert status != 0, f"{name}: {text}"
        assert "\n" not in text.strip(), f"{name}: the reply is not one line: {text!r}"
        return status, json.loads(text)


def _run_scripted(
    segmenter, videos: Path, out: Path, script: Callable[[fs.FrameResult, ControlServer, _Run], None], stop_at: int
) -> _Run:
    """Run the clip with the person as target and a control server.

    `script` is called in the pipeline's thread on every frame. The run stops after frame
    `stop_at` (the rest adds nothing).
    """
    run = _Run([], [])

    def sink(result: fs.FrameResult) -> None:  # `server` is bound below, before the first frame
        script(result, server, run)
        if result.frame.index == stop_at:
            pipeline.stop()

    pipeline = fs.Pipeline(
        fs.FileSource(videos / CLIP),
        segmenter,
        prompt=fs.Prompt(boxes=[PERSON]),
        sinks=[JsonlSink(out / "tracks.jsonl"), EventLogSink(out / "events.jsonl"), sink],
    )
    with ControlServer(pipeline, port=0) as server:
        pipeline.run()
    run.lines, run.events = _read_jsonl(out / "tracks.jsonl"), _read_jsonl(out / "events.jsonl")
    return run


# --- commands, parsed ----------------------------------------------------------------------------

BAD_COMMANDS = {
    "invalid JSON": b'{"op": "add", "box": [1, 2',
    "not an object": b"[1, 2, 3]",
    "empty body": b"",
    "unknown op": {"op": "move", "box": [1, 2, 30, 40]},
    "unknown key": {"op": "add", "box": [1, 2, 30, 40], "colour": "red"},
    "drop with a box": {"op": "drop", "box": [1, 2, 30, 40]},
    "add without a prompt": {"op": "add"},
    "replace without a prompt": {"op": "replace", "frame": 3},
    "ids with add": {"op": "add", "box": [1, 2, 30, 40], "ids": [1]},
    "box corners swapped": {"op": "add", "box": [30, 40, 1, 2]},
    "negative frame": {"op": "drop", "frame": -1},
}


@pytest.mark.parametrize("name", BAD_COMMANDS)
def test_a_bad_command_is_a_one_line_prompt_error(name):
    body = BAD_COMMANDS[name]
    with pytest.raises(PromptError) as caught:
        parse_command(body if isinstance(body, bytes) else json.dumps(body))
    message = str(caught.value)
    assert message.startswith("bad command: ") and "\n" not in message, message


def test_good_commands_parse():
    add = parse_command('{"op": "add", "box": [1, 2, 30, 40], "frame": 7, "source": "cam"}')
    assert (add.op, add.all_boxes, add.frame, add.source) == ("add", [(1, 2, 30, 40)], 7, "cam")
    assert parse_command('{"op": "drop", "ids": [3, 4]}').ids == [3, 4]
    assert parse_command('{"op": "drop"}').ids is None


def test_a_drop_for_one_source_parses():
    """The module docstring: a command applies to its source, or with none to every source; drop too."""
    drop = parse_command('{"op": "drop", "ids": [3], "source": "cam"}')
    assert (drop.op, drop.ids, drop.source) == ("drop", [3], "cam")


# --- in-process: add, a command for a later frame, drop, bad commands, GET /targets ------------


def _add_script(result: fs.FrameResult, server: ControlServer, run: _Run) -> None:
    commands, index = server.url + "/commands", result.frame.index
    if index == 10:
        for name, body in BAD_COMMANDS.items():
            run.replies[name] = _http("POST", commands, body)
        run.replies["unknown source"] = _http("POST", commands, {"op": "add", "box": [1, 2, 30, 40], "source": "nope"})
        run.replies["drop on an unknown source"] = _http("POST", commands, {"op": "drop", "source": "nope"})
        run.replies["text without CLIP"] = _http("POST", commands, {"op": "add", "text": "a phone"})
        run.replies["POST elsewhere"] = _http("POST", server.url + "/prompts", {"op": "drop"})
        run.replies["GET elsewhere"] = _http("GET", server.url + "/")
        run.replies["targets at 10"] = _http("GET", server.url + "/targets")
    elif index == 20:  # the frame size is only known when applied: queued, then a prompt_failed event
        run.replies["outside the frame"] = _http("POST", commands, {"op": "add", "box": [180, 100, 300, 200]})
    elif index == CHANGE_FRAME:
        run.second_box = _second_object(result)
        run.replies["add"] = _http("POST", commands, {"op": "add", "box": run.second_box})
        run.replies["drop 1 at 60"] = _http("POST", commands, {"op": "drop", "ids": [1], "frame": 60})
        run.replies["targets at 30"] = _http("GET", server.url + "/targets")  # the add is queued, not applied
    elif index == 40:
        run.replies["targets at 40"] = _http("GET", server.url + "/targets")
    elif index == 64:
        run.replies["targets at 64"] = _http("GET", server.url + "/targets")
        run.replies["drop all"] = _http("POST", commands, {"op": "drop"})
    elif index == 66:
        run.replies["targets at 66"] = _http("GET", server.url + "/targets")


@pytest.fixture(scope="module")
def add_run(segmenter, videos, tmp_path_factory) -> _Run:
    return _run_scripted(segmenter, videos, tmp_path_factory.mktemp("add"), _add_script, stop_at=68)


def _new_target(run: _Run) -> int:
    """The id of the target added on frame 31 (the other one is the person, id 1)."""
    added = _targets(run.lines[APPLIED_FRAME]) - {1}
    assert len(added) == 1, run.lines[APPLIED_FRAME]
    return added.pop()


def test_the_run_has_every_frame_up_to_the_stop(add_run):
    assert [line["frame"] for line in add_run.lines] == list(range(69))


def test_before_the_command_only_the_original_target(add_run):
    assert add_run.reply("add")[0] == 202
    assert all(_targets(line) == {1} for line in add_run.lines[: CHANGE_FRAME + 1])


def test_an_added_target_is_followed_from_the_next_frame_with_a_new_id(add_run):
    new = _new_target(add_run)
    assert new != 1
    first = _listed(add_run.lines[APPLIED_FRAME], new)
    assert first["state"] == "tracked" and decode_rle(first["mask"]).any()  # selected on this very frame
    box = np.array(first["box"])
    assert _box_iou(box, np.array(add_run.second_box)) > 0.5, (first["box"], add_run.second_box)
    later = add_run.lines[APPLIED_FRAME:65]  # until the drop of every target
    assert all(new in _targets(line) for line in later)
    for line in later:  # a target found has its mask; a lost one is listed without
        entry = _listed(line, new)
        assert ("mask" in entry) == (entry["state"] == "tracked"), line["frame"]
    assert all(_targets(line) == {1, new} for line in add_run.lines[APPLIED_FRAME:60])


def test_a_command_for_a_later_frame_applies_on_that_frame(add_run):
    assert add_run.reply("drop 1 at 60")[0] == 202
    assert all(1 in _targets(line) for line in add_run.lines[:60])
    assert all(1 not in _targets(line) for line in add_run.lines[60:])
    assert _targets(add_run.lines[60]) == {_new_target(add_run)}


def test_after_dropping_every_target_none_remains(add_run):
    assert add_run.reply("drop all")[0] == 202
    assert _targets(add_run.lines[64]) == {_new_target(add_run)}
    assert all(_targets(line) == set() for line in add_run.lines[65:])
    assert all(not any(t["target"] for t in line["tracks"]) for line in add_run.lines[65:])


def test_get_targets_lists_the_current_ids(add_run):
    new = _new_target(add_run)
    expected = {
        "targets at 10": [1],
        "targets at 30": [1],
        "targets at 40": sorted([1, new]),
        "targets at 64": [new],
        "targets at 66": [],
    }
    for name, ids in expected.items():
        assert add_run.reply(name) == (200, {SOURCE: ids}), name


def test_events_place_each_change_on_its_frame(add_run):
    got = [(e["event"], e["next_frame"]) for e in _changes(add_run.events)]
    assert got == [
        ("targets_changed", 0),
        ("prompt_failed", 21),
        ("targets_changed", 31),
        ("targets_changed", 60),
        ("targets_changed", 65),
    ]
    assert all(e["source"] == SOURCE for e in add_run.events)


def test_events_name_the_ids_added_and_dropped(add_run):
    new = _new_target(add_run)
    changed = [e for e in add_run.events if e["event"] == "targets_changed"]
    assert [(e["added"], e["dropped"]) for e in changed] == [([1], []), ([new], []), ([], [1]), ([], [new])], changed


@pytest.mark.parametrize("name", [*BAD_COMMANDS, "unknown source", "drop on an unknown source"])
def test_a_bad_command_answers_400_with_one_line(add_run, name):
    status, body = add_run.reply(name)
    assert status == 400 and set(body) == {"error"}, body
    assert body["error"] and "\n" not in body["error"]


def test_text_without_clip_answers_400_naming_clip(add_run):
    status, body = add_run.reply("text without CLIP")
    assert status == 400 and "CLIP" in body["error"], body


def test_other_paths_answer_404(add_run):
    assert add_run.reply("POST elsewhere")[0] == 404
    assert add_run.reply("GET elsewhere")[0] == 404


def test_bad_commands_change_nothing(add_run):
    # posted on frame 10: frame 11 and on are as if they never came, and no event is written for them
    assert all(_targets(line) == {1} for line in add_run.lines[10 : CHANGE_FRAME + 1])
    assert not [e for e in _changes(add_run.events) if 0 < e["next_frame"] <= 20]


def test_a_box_outside_the_frame_is_queued_then_fails_without_ending_the_run(add_run):
    assert add_run.reply("outside the frame")[0] == 202
    failed = [e for e in add_run.events if e["event"] == "prompt_failed"]
    assert len(failed) == 1 and failed[0]["next_frame"] == 21
    assert "outside the 176x144 frame" in failed[0]["message"], failed[0]
    assert all(_targets(line) == {1} for line in add_run.lines[21 : CHANGE_FRAME + 1])


# --- in-process: replace -------------------------------------------------------------------------


def _replace_script(result: fs.FrameResult, server: ControlServer, run: _Run) -> None:
    if result.frame.index == CHANGE_FRAME:
        run.second_box = _second_object(result)
        run.replies["replace"] = _http("POST", server.url + "/commands", {"op": "replace", "box": run.second_box})
    elif result.frame.index == APPLIED_FRAME:
        run.replies["targets at 31"] = _http("GET", server.url + "/targets")


@pytest.fixture(scope="module")
def replace_run(segmenter, videos, tmp_path_factory) -> _Run:
    return _run_scripted(segmenter, videos, tmp_path_factory.mktemp("replace"), _replace_script, stop_at=36)


def test_replace_makes_the_new_object_the_only_target_from_the_next_frame(replace_run):
    run = replace_run
    assert run.reply("replace")[0] == 202
    assert all(_targets(line) == {1} for line in run.lines[: CHANGE_FRAME + 1])
    new = _targets(run.lines[APPLIED_FRAME])
    assert len(new) == 1 and 1 not in new, run.lines[APPLIED_FRAME]
    (new_id,) = new
    first = _listed(run.lines[APPLIED_FRAME], new_id)
    assert first["state"] == "tracked" and "mask" in first
    assert _box_iou(np.array(first["box"]), np.array(run.second_box)) > 0.5
    for line in run.lines[APPLIED_FRAME:]:
        assert _targets(line) == {new_id}, line["frame"]
        old = _listed(line, 1)
        assert old is None or not old["target"]  # the driver may still be tracked, as any object
    assert run.reply("targets at 31") == (200, {SOURCE: [new_id]})


def test_replace_is_one_event_adding_the_new_id_and_dropping_the_old(replace_run):
    new_id = next(iter(_targets(replace_run.lines[APPLIED_FRAME])))
    changed = [e for e in _changes(replace_run.events) if e["next_frame"] > 0]
    assert [(e["event"], e["next_frame"]) for e in changed] == [("targets_changed", APPLIED_FRAME)]
    assert (changed[0]["added"], changed[0]["dropped"]) == ([new_id], [1]), changed[0]


# --- the command line ----------------------------------------------------------------------------
#
# The run reads the clip over HTTP from a server in this test that holds back the bytes of the
# frame a command names until the test knows the command is queued: the run cannot reach that
# frame earlier, however fast the machine, and a slow machine only waits longer. The clip is the
# same packets as CLIP, remuxed with its index first (a file served for progressive download), so
# the decoded frames are CLIP's; its container knows its duration, so the run reads it as a
# recording: every frame, in order, and the end of the file is the end of the run.

HANG_S = 300  # only stops a hang: a run of the clip takes seconds even on a slow, busy machine


@dataclass(frozen=True)
class _Served:
    """CLIP as the server sends it: the bytes, and where each frame's packet starts."""

    data: bytes
    packets: list[tuple[int, int]]  # (frame index in display order, byte offset of its packet)

    def bytes_before(self, frame: int) -> int:
        """Where the first packet of `frame` or a later frame starts.

        The bytes before it hold only packets of earlier frames (B-frames put a packet ahead of
        frames shown before it), so a reader given only those cannot decode `frame`.
        """
        return min(offset for index, offset in self.packets if index >= frame)


@pytest.fixture(scope="module")
def served(videos, tmp_path_factory) -> _Served:
    path = tmp_path_factory.mktemp("served") / CLIP
    with av.open(str(videos / CLIP)) as src, av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        in_stream = src.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        for packet in src.demux(in_stream):
            if packet.dts is not None:  # not the demuxer's flush packet
                packet.stream = out_stream
                out.mux(packet)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frame_ticks = 1 / (stream.average_rate * stream.time_base)  # pts units per frame
        packets = [(round(p.pts / frame_ticks), p.pos) for p in container.demux(stream) if p.dts is not None]
    assert sorted(index for index, _ in packets) == list(range(120)), packets
    return _Served(path.read_bytes(), packets)


class _GatedServer:
    """Serves `clip` on 127.0.0.1; each reply stops before frame `gate`'s packets until `release()`."""

    def __init__(self, clip: _Served, gate: int) -> None:
        self.requests: list[str] = []
        self._released = threading.Event()
        held = clip.bytes_before(gate)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                owner.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(clip.data)))
                self.end_headers()
                try:
                    self.wfile.write(clip.data[:held])
                    owner._released.wait(HANG_S)
                    self.wfile.write(clip.data[held:])
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the run ended early (a failure the test reports); nothing to serve

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/{CLIP}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def release(self) -> None:
        self._released.set()

    def __enter__(self) -> _GatedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()  # never leave a reply waiting
        self._server.shutdown()
        self._server.server_close()


class _Cli:
    """The console script in a subprocess, its stderr read line by line in a thread.

    The test can wait for a line while the run goes on; `finish()` waits for the end and returns
    (stdout, all of stderr).
    """

    def __init__(self, args: list[str], stdin: IO[str] | int = subprocess.DEVNULL) -> None:
        self.process = subprocess.Popen(args, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._lines: list[str] = []
        self._ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, text: str) -> str | None:
        """The first stderr line containing `text`; None if stderr ends (the run is over) without one."""

        def found() -> str | None:
            return next((line for line in self._lines if text in line), None)

        with self._changed:
            self._changed.wait_for(lambda: found() is not None or self._ended, timeout=HANG_S)
            return found()

    @property
    def stderr(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def finish(self) -> tuple[str, str]:
        self.process.wait(timeout=HANG_S)  # stdout is one line: its pipe cannot fill and block the run
        stdout = self.process.stdout.read()
        self._reader.join(timeout=HANG_S)
        return stdout, self.stderr

    def __enter__(self) -> _Cli:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


def _cli_args(cli: list[str], weights: Path, source: str, out: Path, *extra: str) -> list[str]:
    return [
        *cli,
        "run",
        source,
        "--read-timeout",  # the server holds the stream while the test waits: only a hang may time out
        str(HANG_S),
        "--weights",
        str(weights),
        "--device",
        "cpu",
        "--imgsz",
        "320",
        "--box",
        ",".join(map(str, PERSON)),
        "--out",
        str(out),
        "--no-video",
        "--quiet",
        *extra,
    ]


def _added_from(lines: list[dict], frame: int) -> int:
    """The one target id that is new on `frame` (it must not be one before)."""
    new = _targets(lines[frame]) - _targets(lines[frame - 1])
    assert len(new) == 1, (lines[frame - 1]["tracks"], lines[frame]["tracks"])
    return new.pop()


def _lines_written(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def test_cli_stdin_commands_apply_on_their_frames(cli, weights, served, tmp_path):
    out = tmp_path / "out"
    commands = tmp_path / "commands.jsonl"
    commands.write_text(
        "\n".join(
            [
                json.dumps({"op": "add", "box": [float(v) for v in HAND.split(",")], "frame": 40}),
                json.dumps({"op": "drop", "ids": [1], "frame": 80}),
                '{"op": "add", "box": [1, 2',  # malformed: a warning, and the run goes on
            ]
        )
        + "\n"
    )
    # The commands are in stdin before the run starts, and the reader takes them in order, so the
    # warning for the third means the first two are queued. Until the test sees it, the server
    # holds frame 40 back: both commands are queued before their frames, whatever the speed.
    with (
        _GatedServer(served, gate=40) as server,
        commands.open() as stdin,
        _Cli(_cli_args(cli, weights, server.url, out, "--control-stdin"), stdin=stdin) as run,
    ):
        warning = run.wait_for("bad command")
        written = _lines_written(out / "tracks.jsonl")
        server.release()
        stdout, stderr = run.finish()
    assert warning is not None, stderr
    assert written <= 40, f"frame 40 was held back, yet {written} lines were written"
    assert run.process.returncode == 0, stderr
    assert stdout.startswith("done: 120 frames") and "Traceback" not in stderr, stderr
    warnings = [line for line in stderr.splitlines() if line.strip()]
    assert warnings == [warning.rstrip("\n")], stderr
    assert server.requests == [f"/{CLIP}"]  # read once, as a recording: no reconnect replayed a frame

    lines = _read_jsonl(out / "tracks.jsonl")
    assert [line["frame"] for line in lines] == list(range(120))
    assert all(_targets(line) == {1} for line in lines[:40])
    hand = _added_from(lines, 40)
    assert all(hand in _targets(line) for line in lines[40:])
    assert "mask" in _listed(lines[40], hand)
    assert all(_targets(line) == {1, hand} for line in lines[40:80])
    assert all(_targets(line) == {hand} for line in lines[80:])

    events = _read_jsonl(out / "events.jsonl")
    assert [(e["event"], e["next_frame"]) for e in _changes(events)] == [
        ("targets_changed", 0),
        ("targets_changed", 40),
        ("targets_changed", 80),
    ]
    changed = _changes(events)
    assert [(e["added"], e["dropped"]) for e in changed] == [([1], []), ([hand], []), ([], [1])], changed


def test_cli_control_port_replaces_the_target_on_the_requested_frame(cli, weights, served, tmp_path):
    out = tmp_path / "out"
    with (
        _GatedServer(served, gate=60) as server,
        _Cli(_cli_args(cli, weights, server.url, out, "--control-port", "0")) as run,
    ):
        line = run.wait_for("control: POST JSON commands to ")
        assert line is not None, run.stderr
        url = line.split(" to ", 1)[1].split()[0].removesuffix("/commands")
        assert url.startswith("http://127.0.0.1:"), line
        # The server holds frame 60 back until the reply to the command has come: it is queued
        # before frame 60, whatever the speed.
        replace = _http(
            "POST", url + "/commands", {"op": "replace", "box": [float(v) for v in HAND.split(",")], "frame": 60}
        )
        targets = _http("GET", url + "/targets")
        written = _lines_written(out / "tracks.jsonl")
        server.release()
        stdout, stderr = run.finish()
    assert run.process.returncode == 0, stderr
    assert replace[0] == 202, replace
    assert written <= 60, f"frame 60 was held back, yet {written} lines were written"
    source = default_id(server.url)
    assert targets[0] == 200, targets
    assert set(json.loads(targets[1])) == {source} and set(json.loads(targets[1])[source]) <= {1}, targets
    assert stdout.startswith("done: 120 frames") and "Traceback" not in stderr, stderr

    lines = _read_jsonl(out / "tracks.jsonl")
    assert [line["frame"] for line in lines] == list(range(120))
    assert all(_targets(line) == {1} for line in lines[:60])
    hand = _added_from(lines, 60)
    assert hand != 1 and "mask" in _listed(lines[60], hand)
    assert all(_targets(line) == {hand} for line in lines[60:])
    events = _changes(_read_jsonl(out / "events.jsonl"))
    assert [(e["event"], e["next_frame"]) for e in events] == [("targets_changed", 0), ("targets_changed", 60)]
    assert (events[1]["added"], events[1]["dropped"]) == ([hand], [1]), events[1]


def test_cli_control_port_already_taken_is_one_line(cli, weights, videos, tmp_path):
    with socket.socket() as taken:  # listening, so the port is really in use (not just bound)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            _cli_args(cli, weights, str(videos / CLIP), tmp_path / "out", "--control-port", str(port)),
            capture_output=True,
            text=True,
            timeout=HANG_S,
        )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("fastsam-stream: error: cannot listen on 127.0.0.1:") and f":{port}" in errors[0], (
        errors[0]
    )
    assert not (tmp_path / "out" / "tracks.jsonl").exists()  # it stopped before the first frame
