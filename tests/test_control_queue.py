"""The queue of target changes (issue #12, "nothing lost silently"): a full queue, superseded changes, stopping.

A change sent while the pipeline runs either applies or becomes a prompt_failed event saying why:
- a full queue (MAX_PENDING_COMMANDS waiting) still takes a drop or a replace, which supersede the
  changes that would apply on their frame before them (each a prompt_failed event);
- changes still waiting when the run stops (stop(), Ctrl-C, leaving the loop) or the source ends
  are prompt_failed events, written before the sinks are closed.

Real clips and real sinks (events.jsonl); the segmenter is a fake that finds one box per frame,
since which object is chosen does not matter here. Commands are queued before the run or from a
sink while a frame is handled, so where each lands does not depend on timing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from commands_http import post_command
from fakes import Events, FixedBox

import fastsam_stream as fs
from fastsam_stream.errors import PromptError
from fastsam_stream.pipeline.control import ControlServer
from fastsam_stream.pipeline.runner import MAX_PENDING_CLEARING, MAX_PENDING_COMMANDS
from fastsam_stream.sinks import EventLogSink

CLIP = "carphone_pristine.mp4"  # 176x144, 120 frames
BOX = [40.0, 30.0, 130.0, 110.0]
HANG_S = 300  # only stops a hang


class At:
    """A sink that runs `action(pipeline)` while frame `index` is handled (the pipeline's own thread)."""

    def __init__(self, actions: dict[int, object]) -> None:
        self.actions = actions
        self.pipeline: fs.Pipeline | None = None

    def write(self, result) -> None:
        action = self.actions.get(result.frame.index)
        if action is not None:
            action(self.pipeline)

    def close(self) -> None:
        pass


def _pipeline(videos: Path, *sinks, **kwargs) -> fs.Pipeline:
    pipeline = fs.Pipeline(fs.FileSource(videos / CLIP), FixedBox(BOX), sinks=list(sinks), **kwargs)
    for sink in sinks:
        if isinstance(sink, At):
            sink.pipeline = pipeline
    return pipeline


def _add(frame: int, **kwargs) -> fs.Prompt:
    return fs.Prompt(boxes=[BOX], frame=frame, **kwargs)


# --- a full queue ---------------------------------------------------------------------------------


def test_a_full_queue_still_takes_a_drop_and_a_replace_over_http(videos):
    events = Events()
    pipeline = _pipeline(videos, events, prompt=fs.Prompt(boxes=[BOX]))
    with ControlServer(pipeline, port=0, read_timeout_s=5) as server:
        for _ in range(MAX_PENDING_COMMANDS - 1):  # the prompt given at start waits for frame 0 too
            assert post_command(server.url, {"op": "add", "box": BOX, "frame": 100})[0] == 202
        status, body = post_command(server.url, {"op": "add", "box": BOX, "frame": 100})
        assert status == 400 and f"{MAX_PENDING_COMMANDS} changes are already waiting" in body["error"], body
        assert "drop or a replace" in body["error"], body
        assert post_command(server.url, {"op": "drop", "ids": [1], "frame": 10})[0] == 202
        assert post_command(server.url, {"op": "drop", "frame": 20})[0] == 202
        assert post_command(server.url, {"op": "replace", "box": BOX, "frame": 30})[0] == 202
        results = list(pipeline)
    assert len(results) == 120
    # Nothing superseded (each applies on a frame of its own), nothing lost: every change is an event.
    assert [(e.next_frame, e.added, e.dropped) for e in events.changed()] == [
        (0, (1,), ()),
        (10, (), (1,)),
        (20, (), ()),  # nothing left to drop: still a change, applied
        (30, (1,), ()),  # the same object, still tracked: it keeps its id
        (100, (), ()),  # the adds select the target already followed
    ]
    assert not events.failed()


def test_a_drop_of_every_target_supersedes_the_changes_waiting_for_its_frame(videos):
    events = Events()
    pipeline = _pipeline(videos, events)
    for _ in range(MAX_PENDING_COMMANDS - 2):
        pipeline.add_prompt(_add(10))
    pipeline.add_prompt(_add(5))  # applies earlier: not moot
    pipeline.drop_targets([7], frame=10)
    with pytest.raises(PromptError, match="already waiting"):
        pipeline.add_prompt(_add(20))
    pipeline.drop_targets(frame=10)  # taken though the queue is full: 63 changes for frame 10 are moot
    pipeline.add_prompt(_add(20))  # and there is room again
    list(pipeline)
    superseded = [e for e in events.failed() if "superseded" in e.message]
    assert len(superseded) == MAX_PENDING_COMMANDS - 1
    assert all(e.next_frame == 0 for e in superseded)  # reported on the first frame after it happened
    assert {e.message.split(":")[0] for e in superseded} == {"added 1 box", "dropped targets 7"}
    assert all(
        "superseded by a later change for the same frame (dropped every target)" in e.message for e in superseded
    )
    assert [(e.next_frame, e.added, e.dropped) for e in events.changed()] == [
        (5, (1,), ()),
        (10, (), (1,)),
        (20, (1,), ()),  # the same object, still tracked: it keeps its id
    ]
    assert len(events.failed()) == len(superseded)  # nothing else failed


def test_a_replace_supersedes_what_waits_for_its_frame_but_not_later_changes(videos):
    events = Events()

    def queue(pipeline: fs.Pipeline) -> None:  # on frame 40: the changes below all wait for frame 41 or later
        pipeline.add_prompt(_add(0))
        pipeline.drop_targets([1])
        pipeline.add_prompt(_add(45))
        pipeline.add_prompt(fs.Prompt(boxes=[[0, 0, 20, 20]]), replace=True)  # also the next frame: 41

    pipeline = _pipeline(videos, events, At({40: queue}), prompt=fs.Prompt(boxes=[BOX]))
    list(pipeline)
    superseded = [e for e in events.failed() if "superseded" in e.message]
    assert [(e.next_frame, e.message.split(":")[0]) for e in superseded] == [
        (41, "added 1 box"),
        (41, "dropped targets 1"),
    ]
    # The replace's box selects nothing: a prompt_failed of its own, the targets stay as they were.
    [own] = [e for e in events.failed() if "superseded" not in e.message]
    assert own.next_frame == 41 and own.message.startswith("replaced every target with 1 box: no instance")
    assert [(e.next_frame, e.added, e.dropped) for e in events.changed()] == [(0, (1,), ()), (45, (), ())]


def test_a_flood_of_drops_is_bounded_too_and_a_command_for_every_source_is_all_or_none(videos):
    sources = [fs.FileSource(videos / CLIP, source_id=name) for name in ("a", "b")]
    pipeline = fs.Pipeline(sources, FixedBox(BOX))
    try:
        for frame in range(MAX_PENDING_CLEARING):  # each on a frame of its own: none supersedes another
            pipeline.drop_targets(frame=1000 + frame, source_id="a")
        with pytest.raises(PromptError, match=f"{MAX_PENDING_CLEARING} changes are already waiting for a"):
            pipeline.drop_targets(frame=5000)  # every source: a is full, so b must not get it either
        lane_b = pipeline._lanes["b"]
        assert not lane_b.pending and not lane_b._inbox
        pipeline.drop_targets(frame=1000, source_id="a")  # supersedes the one for frame 1000: taken
    finally:
        for source in sources:
            source.close()


# --- stopping with changes waiting ------------------------------------------------------------------


def _stop_at(index: int):
    return At({index: lambda pipeline: pipeline.stop()})


def test_changes_waiting_when_the_run_is_stopped_are_events_before_the_sinks_close(videos, tmp_path):
    events = Events()
    log = EventLogSink(tmp_path / "events.jsonl")
    pipeline = _pipeline(videos, events, log, _stop_at(10), prompt=fs.Prompt(boxes=[BOX], frame=100))
    pipeline.add_prompt(_add(90))
    pipeline.drop_targets(frame=95)
    summary = pipeline.run()  # no error: the prompt given at start was not reached because of the stop
    assert summary.interrupted and summary.frames == 11
    assert not events.after_close, events.after_close
    written = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["event"], e["next_frame"], e["message"]) for e in written] == [
        ("prompt_failed", 11, "added 1 box: the run was stopped before frame 100"),
        ("prompt_failed", 11, "added 1 box: the run was stopped before frame 90"),
        ("prompt_failed", 11, "dropped every target: the run was stopped before frame 95"),
    ]
    with pytest.raises(PromptError, match="the run was stopped"):
        pipeline.add_prompt(_add(200))


def _interrupt(pipeline: fs.Pipeline) -> None:
    raise KeyboardInterrupt  # what Ctrl-C is in a Python caller's loop


@pytest.mark.parametrize("how", ["ctrl-c", "leaving the loop"])
def test_changes_waiting_when_the_loop_is_left_are_events_too(videos, how):
    events = Events()
    pipeline = _pipeline(videos, events, At({10: _interrupt} if how == "ctrl-c" else {}))
    pipeline.add_prompt(_add(90))
    if how == "ctrl-c":
        with pytest.raises(KeyboardInterrupt):
            list(pipeline)
    else:
        for result in pipeline:
            if result.frame.index == 10:
                pipeline.close()
                break
    assert not events.after_close
    [failed] = events.failed()
    assert (failed.next_frame, failed.message) == (11, "added 1 box: the run was stopped before frame 90")
    assert pipeline.summary.interrupted


def test_ctrl_c_on_the_command_line_writes_the_waiting_changes_to_events_jsonl(cli, weights, tmp_path):
    """A live source never ends by itself: the run only ends on Ctrl-C, with a change still waiting."""
    out = tmp_path / "out"
    commands = tmp_path / "commands.jsonl"
    commands.write_text(json.dumps({"op": "add", "box": [10, 10, 50, 50], "frame": 10**9}) + "\n" + "{bad\n")
    args = [
        *cli,
        "run",
        "lavfi:testsrc2=size=176x144:rate=30",
        "--weights",
        str(weights),
        "--device",
        "cpu",
        "--imgsz",
        "320",
        "--out",
        str(out),
        "--no-video",
        "--control-stdin",
    ]
    with commands.open() as stdin:
        proc = subprocess.Popen(args, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            lines: list[str] = []
            warned = threading.Event()

            def read() -> None:
                for line in proc.stderr:
                    lines.append(line)
                    if "bad command" in line:  # the line before it is queued: the reader takes them in order
                        warned.set()

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            assert warned.wait(HANG_S), "".join(lines)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=HANG_S)
            reader.join(HANG_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
    stderr = "".join(lines)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    [failed] = [e for e in events if e["event"] == "prompt_failed"]
    assert failed["message"] == f"added 1 box: the run was stopped before frame {10**9}", failed
    assert sum("the run was stopped before frame" in line for line in stderr.splitlines()) == 1, stderr
