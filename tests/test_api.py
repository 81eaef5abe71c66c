"""The Python API: a few lines build a pipeline; results can be iterated or sent to callbacks."""

from __future__ import annotations

import numpy as np
import pytest

import fastsam_stream as fs


def test_build_iterate_and_break_early(segmenter, videos, tmp_path):
    config = fs.load_config(
        overrides={
            "sources": [str(videos / "vtest.avi")],
            "prompt": {"box": [642, 241, 683, 321]},
            "output": {"dir": str(tmp_path)},
        }
    )
    pipeline = fs.build_pipeline(config, segmenter=segmenter)
    seen = []
    for result in pipeline:
        seen.append(result)
        if result.frame.index == 9:
            break  # leaving the loop closes the sinks
    assert [r.frame.index for r in seen] == list(range(10))
    assert seen[0].target is not None and seen[0].target.is_target
    mask = seen[0].target_mask
    assert mask.shape == (576, 768) and mask.dtype == bool and mask.any()
    lines = (tmp_path / "tracks.jsonl").read_text().splitlines()
    assert len(lines) == 10
    assert pipeline.summary.frames == 10


def test_callback_sinks_replace_file_outputs(segmenter, davis, tmp_path):
    got: list[fs.FrameResult] = []
    source = fs.FolderSource(davis / "JPEGImages/480p/camel")
    source.files, source.frame_count = source.files[:5], 5
    config = fs.load_config(overrides={"output": {"dir": str(tmp_path)}, "prompt": {"points": [[400, 200]]}})
    summary = fs.build_pipeline(config, source=source, segmenter=segmenter, sinks=[got.append]).run()
    assert summary.frames == 5 and len(got) == 5
    assert not (tmp_path / "tracks.jsonl").exists()  # only the callback was asked for
    assert got[0].target is not None
    assert summary.frames_with_target == sum(r.target_found for r in got)


def test_pipeline_with_a_hand_made_segmenter(tmp_path, videos):
    """Collaborators are passed in: a fake segmenter exercises the frame path without a model."""

    class OneBox:
        def segment(self, frames):
            return [fs.Instances(np.array([[10, 10, 50, 50]]), np.array([0.9]), f.image.shape[:2]) for f in frames]

    source = fs.FileSource(videos / "carphone_pristine.mp4")
    results = list(fs.Pipeline(source, OneBox()))
    assert len(results) == 120
    assert {r.tracks[0].id for r in results} == {1}


def test_a_prompt_on_a_later_frame_seeds_the_target_there(segmenter, videos):
    source = fs.FileSource(videos / "vtest.avi")
    prompt = fs.Prompt(boxes=[[642, 241, 683, 321]], frame=3)
    results = []
    for result in fs.Pipeline(source, segmenter, prompt=prompt):
        results.append(result)
        if len(results) == 6:
            break
    assert [r.target for r in results[:3]] == [None, None, None]
    assert all(not r.target_found for r in results[:3])
    assert results[3].target is not None and results[3].target_found
    assert results[5].target.id == results[3].target.id


class _Counting:
    """A fake segmenter: one box per frame, or a failure after `fail_after` frames."""

    def __init__(self, fail_after=None, error=None, short=False):
        self.seen, self.fail_after, self.error, self.short = 0, fail_after, error, short

    def segment(self, frames):
        self.seen += len(frames)
        if self.fail_after is not None and self.seen > self.fail_after:
            raise self.error
        out = [fs.Instances(np.array([[10, 10, 50, 50]]), np.array([0.9]), f.image.shape[:2]) for f in frames]
        return out[:1] if self.short else out


class _RecordingSink:
    def __init__(self):
        self.frames, self.closed = 0, 0

    def write(self, result):
        self.frames += 1

    def close(self):
        self.closed += 1


def test_a_worker_thread_failure_of_any_kind_reaches_the_caller(videos):
    sink = _RecordingSink()
    pipeline = fs.Pipeline(fs.FileSource(videos / "vtest.avi"), _Counting(10, SystemExit(3)), sinks=[sink])
    with pytest.raises(SystemExit) as caught:
        pipeline.run()
    assert caught.value.code == 3
    assert sink.closed == 1 and 1 <= sink.frames <= 10


def test_a_segmenter_that_returns_too_few_results_is_an_error(videos):
    pipeline = fs.Pipeline(
        fs.FileSource(videos / "carphone_pristine.mp4"),
        _Counting(short=True),
        batch=fs.BatchSettings(max_batch=4, max_wait_ms=50),
    )
    with pytest.raises(RuntimeError, match="results for"):
        pipeline.run()


def test_stop_ends_the_run_cleanly_and_close_is_idempotent(videos):
    sink = _RecordingSink()
    pipeline = fs.Pipeline(fs.FileSource(videos / "vtest.avi"), _Counting(), sinks=[sink])
    with pipeline:
        for result in pipeline:
            if result.frame.index == 4:
                pipeline.stop()  # e.g. from a signal handler: this frame is the last
    assert sink.frames == 5 and sink.closed == 1
    assert pipeline.summary.interrupted and pipeline.summary.frames == 5
    pipeline.close()
    assert sink.closed == 1


def test_close_finalises_an_abandoned_iteration_and_a_pipeline_runs_once(videos):
    sink = _RecordingSink()
    pipeline = fs.Pipeline(fs.FileSource(videos / "vtest.avi"), _Counting(), sinks=[sink])
    iterator = iter(pipeline)
    next(iterator)
    pipeline.close()
    assert sink.closed == 1
    with pytest.raises(RuntimeError, match="runs once"):
        pipeline.run()


def test_leaving_the_loop_without_close_still_exits_cleanly(weights, videos, tmp_path):
    """A script that breaks out of the loop and ends: the run is closed at exit.

    So no thread dies inside torch or FFmpeg (which aborts the interpreter) and the sinks are finalised.
    """
    import subprocess
    import sys

    script = tmp_path / "script.py"
    script.write_text(
        "import fastsam_stream as fs\n"
        f"config = fs.load_config(overrides={{'sources': [{str(videos / 'vtest.avi')!r}],\n"
        f"    'model': {{'weights': {str(weights)!r}, 'device': 'cpu', 'imgsz': 320}},\n"
        f"    'output': {{'dir': {str(tmp_path / 'out')!r}}}}})\n"
        "for n, result in enumerate(fs.build_pipeline(config), 1):\n"
        "    if n == 5:\n"
        "        break\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "terminate called" not in done.stderr
    import av

    with av.open(str(tmp_path / "out" / "annotated.mp4")) as video:  # finalised at exit
        assert sum(1 for _ in video.decode(video=0)) >= 5
