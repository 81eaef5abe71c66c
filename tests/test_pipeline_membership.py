"""Sources joining and leaving a running Pipeline (`keep_running`), and what it says of each stream.

The sources decode real clips and a real lavfi camera; a fake segmenter (one box per frame) keeps
these unit tests of the membership logic fast. The service tests (test_serve.py) run the real
model through `fastsam-stream serve`.
"""

from __future__ import annotations

import threading
import time

import pytest
from fakes import Middle

from fastsam_stream.errors import PromptError, StreamConflictError, UnknownStreamError
from fastsam_stream.pipeline import Pipeline
from fastsam_stream.pipeline.status import StreamState
from fastsam_stream.sinks import JsonlSink
from fastsam_stream.sinks.jsonl import read_jsonl
from fastsam_stream.sources import open_source

HANG_S = 60.0  # bound on waits that take well under a second: they only stop a hang
CARPHONE_FRAMES = 120
CAMERA = "lavfi:testsrc2=size=160x120:rate=25,realtime"


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + HANG_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _status(pipeline: Pipeline, stream_id: str):
    return next((s for s in pipeline.streams() if s.id == stream_id), None)


@pytest.fixture
def service():
    """A keep_running pipeline with no source, run in a thread; stopped at the end."""
    pipeline = Pipeline([], Middle(), keep_running=True)
    done = threading.Event()
    errors: list[BaseException] = []

    def drive() -> None:
        try:
            pipeline.run()
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)
        done.set()

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    yield pipeline
    pipeline.stop()
    assert done.wait(HANG_S), "the pipeline did not stop"
    assert not errors


def test_a_pipeline_without_sources_needs_keep_running():
    with pytest.raises(ValueError, match="at least one source"):
        Pipeline([], Middle())


def test_a_file_joining_a_running_pipeline_runs_to_its_end_and_its_outputs_are_final(service, videos, tmp_path):
    source = open_source(videos / "carphone_pristine.mp4", source_id="clip")
    service.add_source(source, [JsonlSink(tmp_path / "tracks.jsonl")])
    _wait_for(lambda: _status(service, "clip").state is StreamState.ENDED, "the clip to end")
    status = _status(service, "clip")
    assert status.frames == CARPHONE_FRAMES and status.dropped == 0
    # Final while the service goes on: every line whole, one per frame.
    lines = read_jsonl(tmp_path / "tracks.jsonl")
    assert [line["frame"] for line in lines] == list(range(CARPHONE_FRAMES))


def test_a_live_source_leaves_mid_run_with_its_outputs_final_and_its_id_free_again(service, tmp_path):
    service.add_source(open_source(CAMERA, source_id="cam"), [JsonlSink(tmp_path / "a.jsonl")])
    _wait_for(lambda: _status(service, "cam").frames >= 5, "five frames of the camera")
    status = _status(service, "cam")
    assert status.state is StreamState.STREAMING and status.is_live
    assert status.fps > 0 and status.latency_p50_ms is not None and status.latency_p99_ms >= status.latency_p50_ms
    summary = service.remove_source("cam", timeout_s=HANG_S)
    assert _status(service, "cam") is None
    lines = read_jsonl(tmp_path / "a.jsonl")
    assert len(lines) == summary.frames >= 5
    # The id can be used again at once, by a new source with outputs of its own.
    service.add_source(open_source(CAMERA, source_id="cam"), [JsonlSink(tmp_path / "b.jsonl")])
    _wait_for(lambda: _status(service, "cam").frames >= 2, "frames of the camera added again")
    service.remove_source("cam", timeout_s=HANG_S)
    assert len(read_jsonl(tmp_path / "b.jsonl")) >= 2


def test_one_source_ending_leaves_the_other_streaming(service, videos):
    service.add_source(open_source(CAMERA, source_id="cam"))
    service.add_source(open_source(videos / "carphone_pristine.mp4", source_id="clip"))
    _wait_for(lambda: _status(service, "clip").state is StreamState.ENDED, "the clip to end")
    before = _status(service, "cam").frames
    _wait_for(lambda: _status(service, "cam").frames > before + 3, "the camera to go on")
    assert _status(service, "cam").state is StreamState.STREAMING
    metrics = service.metrics()
    assert {s.id for s in metrics.streams} == {"cam", "clip"}
    assert metrics.latency.count == sum(s.frames for s in service.streams()) or metrics.latency.count > 0
    assert metrics.batch_size.count > 0 and set(metrics.queue_depth) == {"intake", "prepared", "results"}


def test_a_taken_id_or_an_unknown_stream_is_refused(service, videos):
    service.add_source(open_source(CAMERA, source_id="cam"))
    with pytest.raises(StreamConflictError, match="already running"):
        service.add_source(open_source(videos / "carphone_pristine.mp4", source_id="cam"))
    with pytest.raises(UnknownStreamError, match="no stream 'nope'"):
        service.remove_source("nope")


def test_a_run_that_has_started_takes_no_new_source(videos):
    pipeline = Pipeline(open_source(videos / "carphone_pristine.mp4", source_id="a"), Middle())
    results = iter(pipeline)
    next(results)
    with pytest.raises(StreamConflictError, match="keep_running"):
        pipeline.add_source(open_source(videos / "carphone_pristine.mp4", source_id="b"))
    pipeline.close()


class FailsAfter:
    """A sink whose write fails from its `n`-th frame on (a disk that fills, a bug)."""

    def __init__(self, n: int) -> None:
        self.n, self.written, self.closed = n, 0, False

    def write(self, result) -> None:
        if self.written >= self.n:
            raise OSError("no space left on device")
        self.written += 1

    def close(self) -> None:
        self.closed = True


def test_a_failing_sink_ends_only_its_own_stream_in_a_service(service, videos):
    failing = FailsAfter(3)
    service.add_source(open_source(CAMERA, source_id="cam"))
    service.add_source(open_source(videos / "carphone_pristine.mp4", source_id="clip"), [failing])
    _wait_for(lambda: _status(service, "clip").state is StreamState.ENDED, "the failing stream to end")
    status = _status(service, "clip")
    # Segmented: the 3 written and the one whose write failed; nothing after it.
    assert "no space left" in status.error and failing.written == 3 and status.frames == 4
    assert failing.closed  # its outputs are finalised as it leaves
    before = _status(service, "cam").frames
    _wait_for(lambda: _status(service, "cam").frames > before + 3, "the camera to go on")


def test_removing_a_source_that_ended_in_a_run_closes_its_outputs_at_once(videos, tmp_path):
    short = JsonlSink(tmp_path / "short.jsonl")
    pipeline = Pipeline(
        [open_source(CAMERA, source_id="cam"), open_source(videos / "carphone_pristine.mp4", source_id="clip")],
        Middle(),
        sinks_for=lambda s: [short] if s.source_id == "clip" else [],
    )
    results = iter(pipeline)
    for _ in results:
        if _status(pipeline, "clip").state is StreamState.ENDED:
            break
    summary = pipeline.remove_source("clip", timeout_s=HANG_S)  # no frame of it will come to close it
    assert summary.frames == CARPHONE_FRAMES
    assert len(read_jsonl(tmp_path / "short.jsonl")) == CARPHONE_FRAMES
    assert [s.id for s in pipeline.streams()] == ["cam"]
    pipeline.close()


def test_dropping_ids_with_no_stream_is_a_prompt_error(service):
    with pytest.raises(PromptError, match="no stream"):
        service.drop_targets([1])
