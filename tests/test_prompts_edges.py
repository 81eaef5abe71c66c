"""Prompts at the frame's edge (issue #12): a box reaching past the frame is clipped to it, with a warning.

A box partly outside the frame (a client counting the last pixel inclusively, a box dragged off
the picture) selects what it covers inside the frame, with a logged warning, and for a command
the note in its event; only a box with nothing inside the frame is refused. A point names one
pixel, so a point outside the frame is still refused.

Real parts: carphone's first frame segmented by the stand-in model, where the driver's box
touches the frame's right edge; the running pipeline and the command line for the events and
the console.
"""

from __future__ import annotations

import json
import logging
import subprocess

import numpy as np
import pytest
from commands_http import post_command

import fastsam_stream as fs
from fastsam_stream.core import Frame, Prompt
from fastsam_stream.errors import PromptError
from fastsam_stream.pipeline.control import ControlServer
from fastsam_stream.pipeline.prompts import fit_to_frame, select
from fastsam_stream.sinks import EventLogSink

CLIP = "carphone_pristine.mp4"  # 176x144
SOURCE = "carphone_pristine"
PERSON = [28.0, 16.0, 176.0, 143.0]  # the driver on frame 0, up to the right edge
PAST = [28.0, 16.0, 177.0, 145.0]  # the same, one pixel past the right and bottom edges
HANG_S = 300  # only stops a hang


@pytest.fixture(scope="module")
def first(segmenter, videos) -> tuple[Frame, fs.Instances]:
    source = fs.FileSource(videos / CLIP)
    try:
        frame = next(f for f in source.frames() if isinstance(f, Frame))
    finally:
        source.close()
    [instances] = segmenter.segment([frame])
    return frame, instances


def test_a_box_one_pixel_past_the_edge_selects_the_object_inside(first, caplog):
    frame, instances = first
    [inside] = select(Prompt(boxes=[PERSON]), instances)
    with caplog.at_level(logging.WARNING):
        [past] = select(Prompt(boxes=[PAST]), instances)
    assert past == inside
    box = instances.boxes[past.track_row]
    assert box[0] < 40 and box[2] > 170, box  # the driver, not a part of him
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning == "box 28,16,177,145 reaches past the 176x144 frame: clipped to 28,16,176,144"


@pytest.mark.parametrize(
    ("box", "clipped"),
    [
        ([-1, -1, 100, 100], [0, 0, 100, 100]),
        ([150, 10, 1000, 50], [150, 10, 176, 50]),
        ([-50, -50, 500, 500], [0, 0, 176, 144]),
    ],
)
def test_a_box_partly_outside_is_clipped_to_the_frame(box, clipped):
    prompt, notes = fit_to_frame(Prompt(boxes=[box, [10, 10, 20, 20]], frame=3), 144, 176)
    assert prompt.boxes.tolist() == [clipped, [10, 10, 20, 20]]
    assert prompt.frame == 3 and len(notes) == 1 and "clipped to " + ",".join(map(str, clipped)) in notes[0]


def test_a_box_inside_is_left_alone():
    prompt = Prompt(boxes=[PERSON], points=[[5, 5]], labels=[0])
    assert fit_to_frame(prompt, 144, 176) == (prompt, ())


@pytest.mark.parametrize(
    "prompt",
    [
        Prompt(boxes=[[176, 0, 300, 100]]),  # starts at the right edge: nothing inside
        Prompt(boxes=[[-40, 10, 0, 50]]),
        Prompt(boxes=[[10, 144, 50, 200]]),
        Prompt(boxes=[[10, 10, 50, 50], [200, 10, 250, 50]]),  # one of two
        Prompt(points=[[176, 10]], labels=[1]),  # a point names one pixel: x 176 is not one of 0..175
        Prompt(points=[[10, -0.5]], labels=[1]),
        Prompt(boxes=[[10, 10, 50, 50]], points=[[10, 144]], labels=[0]),
    ],
)
def test_nothing_inside_the_frame_is_refused(first, prompt):
    _, instances = first
    with pytest.raises(PromptError, match="outside the 176x144 frame"):
        select(prompt, instances)


def test_commands_at_the_edge_say_what_happened_in_their_events(segmenter, videos, tmp_path, caplog):
    """Posted while frame 2 is handled: the clipped replace applies on frame 3, the box outside fails on frame 6."""
    replies: list[int] = []

    def script(result: fs.FrameResult) -> None:
        if result.frame.index == 2:
            replies.append(post_command(server.url, {"op": "replace", "box": PAST})[0])
            replies.append(post_command(server.url, {"op": "add", "box": [180, 0, 300, 100], "frame": 6})[0])
        if result.frame.index == 8:
            pipeline.stop()

    pipeline = fs.Pipeline(
        fs.FileSource(videos / CLIP), segmenter, sinks=[EventLogSink(tmp_path / "events.jsonl"), script]
    )
    with caplog.at_level(logging.WARNING), ControlServer(pipeline, port=0, read_timeout_s=5) as server:
        pipeline.run()
    assert replies == [202, 202]
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["event"], e["next_frame"]) for e in events] == [("targets_changed", 3), ("prompt_failed", 6)]
    changed, failed = events
    assert changed["added"] == [1] and changed["message"] == (
        "replaced every target with 1 box (box 28,16,177,145 reaches past the 176x144 frame: clipped to 28,16,176,144)"
    )
    assert failed["message"] == "added 1 box: box 180,0,300,100 lies outside the 176x144 frame: no part of it is inside"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{SOURCE}: frame 3: box 28,16,177,145 reaches past the 176x144 frame: clipped to 28,16,176,144",
        f"{SOURCE}: prompt_failed ({failed['message']})",
    ]


def test_the_command_line_takes_a_box_past_the_edge_with_one_warning(cli, weights, videos, tmp_path):
    done = subprocess.run(
        [
            *cli,
            "run",
            str(videos / CLIP),
            "--weights",
            str(weights),
            "--device",
            "cpu",
            "--imgsz",
            "320",
            "--box",
            ",".join(f"{v:g}" for v in PAST),
            "--out",
            str(tmp_path),
            "--no-video",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("done: 120 frames"), done.stdout
    lines = done.stderr.splitlines()
    assert lines == [
        f"WARNING fastsam_stream.pipeline.lane: {SOURCE}: frame 0: "
        "box 28,16,177,145 reaches past the 176x144 frame: clipped to 28,16,176,144"
    ], done.stderr
    first = json.loads((tmp_path / "tracks.jsonl").read_text().splitlines()[0])
    [target] = [t for t in first["tracks"] if t["target"]]
    assert np.allclose(target["box"], PERSON, atol=3), target
