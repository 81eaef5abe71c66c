"""Changing targets while a pipeline runs (Pipeline.add_prompt / drop_targets), the logic only.

A fake segmenter (one box in the middle of each frame) on real clips. What must hold: a change
sent while running never ends the run and is never lost without a trace, a command is queued on
all its sources or none, and the queue is bounded. (tests/test_control.py drives the same API
over HTTP and stdin with the real model.)
"""

from __future__ import annotations

import pytest
from fakes import Events, FixedBox

import fastsam_stream as fs
from fastsam_stream.core import EventKind
from fastsam_stream.errors import PromptError
from fastsam_stream.pipeline.runner import MAX_PENDING_COMMANDS

BOX = [40.0, 30.0, 130.0, 110.0]  # inside carphone's 176x144 frames


class BrokenScorer:
    def similarities(self, image, instances, rows, text):
        raise RuntimeError("CLIP fell over")


def _pipeline(videos, *sink, frames: int | None = None, **kwargs) -> fs.Pipeline:
    source = fs.FileSource(videos / "carphone_pristine.mp4")
    return fs.Pipeline(source, FixedBox(BOX), sinks=list(sink), **kwargs)


def test_a_prompt_that_fails_while_running_is_an_event_and_the_run_goes_on(videos):
    events = Events()
    pipeline = _pipeline(videos, events, text_scorer=BrokenScorer())
    pipeline.add_prompt(fs.Prompt(text="a phone", frame=5))
    results = list(pipeline)
    assert len(results) == 120
    [failed] = [e for e in events.events if e.kind is EventKind.PROMPT_FAILED]
    assert failed.next_frame == 5 and "RuntimeError: CLIP fell over" in failed.message


def test_changes_left_waiting_when_the_source_ends_are_reported(videos):
    events = Events()
    pipeline = _pipeline(videos, events)
    pipeline.add_prompt(fs.Prompt(boxes=[BOX], frame=500))  # past the clip's 120 frames
    list(pipeline)
    [failed] = [e for e in events.events if e.kind is EventKind.PROMPT_FAILED]
    assert failed.next_frame == 120 and "the source ended before frame 500" in failed.message


def test_dropping_ids_that_are_not_targets_is_reported_not_applied(videos):
    events = Events()
    pipeline = _pipeline(videos, events, prompt=fs.Prompt(boxes=[BOX]))
    pipeline.drop_targets([99], frame=10)
    results = list(pipeline)
    assert all(r.target is not None for r in results)  # target 1 untouched
    [failed] = [e for e in events.events if e.kind is EventKind.PROMPT_FAILED]
    assert failed.next_frame == 10 and "no such target" in failed.message
    with pytest.raises(PromptError, match="no target ids given"):
        _pipeline(videos).drop_targets([])


def test_ids_are_per_source_so_dropping_ids_needs_the_source(videos):
    sources = [fs.FileSource(videos / "carphone_pristine.mp4", source_id=name) for name in ("a", "b")]
    pipeline = fs.Pipeline(sources, FixedBox(BOX))
    with pytest.raises(PromptError, match="name the source"):
        pipeline.drop_targets([1])
    pipeline.drop_targets([1], source_id="a")  # accepted
    with pytest.raises(PromptError, match="no source 'c'"):
        pipeline.drop_targets([1], source_id="c")


def test_a_full_queue_refuses_a_command_on_every_source_or_none(videos):
    sources = [fs.FileSource(videos / "carphone_pristine.mp4", source_id=name) for name in ("a", "b")]
    pipeline = fs.Pipeline(sources, FixedBox(BOX))
    for frame in range(MAX_PENDING_COMMANDS):
        pipeline.add_prompt(fs.Prompt(boxes=[BOX], frame=frame, source_id="a"))
    with pytest.raises(PromptError, match="already waiting for a"):
        pipeline.add_prompt(fs.Prompt(boxes=[BOX]))  # every source: a is full, so b must not get it either
    lane_b = pipeline._lanes["b"]
    lane_b.check_room()  # b still has room: nothing was queued on it
    assert not lane_b.pending and not lane_b._inbox
