"""Several sources in one Pipeline: shared batches, everything after segmentation per source.

A fake segmenter (one box per frame, placed relative to the frame's size) keeps the unit tests
deterministic and fast; the sources decode real clips and images. One end-to-end test runs the
real model through the command line on two sources.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

import fastsam_stream as fs
from fastsam_stream.core import DenseMasks, EventKind, Frame, Instances, SourceEvent, TrackState
from fastsam_stream.sinks import EventLogSink

CARPHONE_FRAMES = 120
TREE_FRAMES = 68  # tree.avi announces more, but 68 decode
FOLDER_FRAMES = 20
GATE_S = 30.0  # bound on waiting for the readers in the mixing gate (they need well under a second)


def _box(width: int, height: int) -> list[float]:
    """The one object every frame holds: the middle half of the frame."""
    return [width * 0.25, height * 0.25, width * 0.75, height * 0.75]


def _instances(frame: Frame) -> Instances:
    h, w = frame.height, frame.width
    x1, y1, x2, y2 = (int(v) for v in _box(w, h))
    mask = np.zeros((1, h, w), bool)
    mask[0, y1:y2, x1:x2] = True
    return Instances(np.array([_box(w, h)]), np.array([0.9]), (h, w), masks=DenseMasks(mask))


class MiddleBox:
    """A fake segmenter: one box and mask per frame. Records the source ids of every batch.

    With `gate`, its first call waits until every gated source has handed its reader enough frames
    that each buffer still holds some after this first batch: the next batch is then certain to
    find frames of every source waiting (no reliance on thread timing).
    """

    def __init__(self, gate: list[threading.Event] | None = None) -> None:
        self.batches: list[list[str]] = []
        self.gate = gate or []

    def segment(self, frames: list[Frame]) -> list[Instances]:
        if not self.batches:
            for ready in self.gate:
                ready.wait(GATE_S)
        self.batches.append([f.source_id for f in frames])
        return [_instances(f) for f in frames]


class Counted:
    """A source as it is, that sets `ready` once `after` of its frames have gone to the pipeline."""

    def __init__(self, inner, after: int) -> None:
        self.inner, self.after = inner, after
        self.source_id, self.fps, self.frame_count, self.is_live = (
            inner.source_id,
            inner.fps,
            inner.frame_count,
            inner.is_live,
        )
        self.ready = threading.Event()

    def frames(self):
        try:
            for n, item in enumerate(self.inner.frames()):
                if n > self.after:  # asked for item n: items 0..n-1 were put in the buffer
                    self.ready.set()
                yield item
        finally:
            self.ready.set()

    def close(self) -> None:
        self.inner.close()


def _image_folder(root: Path, count: int = FOLDER_FRAMES, size: tuple[int, int] = (40, 30)) -> Path:
    folder = root / "stills"
    folder.mkdir()
    width, height = size
    for i in range(count):
        image = np.full((height, width, 3), 12 * i % 256, np.uint8)
        assert cv2.imwrite(str(folder / f"img{i}.png"), image)
    return folder


class Recorder:
    def __init__(self) -> None:
        self.results: list[fs.FrameResult] = []
        self.events: list[SourceEvent] = []
        self.closed = 0

    def write(self, result: fs.FrameResult) -> None:
        self.results.append(result)

    def on_event(self, event: SourceEvent) -> None:
        self.events.append(event)

    def close(self) -> None:
        self.closed += 1


@pytest.fixture(scope="module")
def three_sources_run(videos, tmp_path_factory):
    folder = _image_folder(tmp_path_factory.mktemp("multi"))
    sources = [
        Counted(fs.FileSource(videos / "carphone_pristine.mp4", source_id="carphone"), 12),
        Counted(fs.FileSource(videos / "tree.avi", source_id="tree"), 12),
        Counted(fs.FolderSource(folder, source_id="stills"), 12),
    ]
    segmenter = MiddleBox(gate=[s.ready for s in sources])
    shared = Recorder()
    own = {s.source_id: Recorder() for s in sources}
    pipeline = fs.Pipeline(
        sources,
        segmenter,
        sinks=[shared],
        sinks_for=lambda s: [own[s.source_id]],
        # 16 frames of room per source: each reader gets past its 12th frame while the first batch
        # is held at the gate; the prepare stage can take at most two batches ahead (8 frames in
        # all), so every buffer still has frames when the gate opens.
        batch=fs.BatchSettings(max_batch=4, max_wait_ms=20, buffer_size=16),
    )
    returned = list(pipeline)
    return pipeline, segmenter, shared, own, returned


EXPECTED = {"carphone": CARPHONE_FRAMES, "tree": TREE_FRAMES, "stills": FOLDER_FRAMES}


def test_every_source_arrives_complete_and_in_its_own_order(three_sources_run):
    pipeline, _, shared, _, returned = three_sources_run
    for source_id, count in EXPECTED.items():
        indexes = [r.frame.index for r in returned if r.frame.source_id == source_id]
        assert indexes == list(range(count)), source_id
    assert {k: s.frames for k, s in pipeline.summary.sources.items()} == EXPECTED
    assert pipeline.summary.frames == sum(EXPECTED.values()) and pipeline.summary.dropped == 0
    assert all(r.dropped_before == 0 for r in returned)
    assert [id(r) for r in shared.results] == [id(r) for r in returned]  # the caller sees what the sinks saw


def test_results_go_to_their_own_sources_sinks_and_all_to_the_shared_ones(three_sources_run):
    _, _, shared, own, returned = three_sources_run
    assert len(shared.results) == sum(EXPECTED.values())
    for source_id, sink in own.items():
        assert {r.frame.source_id for r in sink.results} == {source_id}
        assert [r.frame.index for r in sink.results] == list(range(EXPECTED[source_id]))
        assert [id(r) for r in sink.results] == [id(r) for r in shared.results if r.frame.source_id == source_id]
    assert shared.closed == 1 and all(sink.closed == 1 for sink in own.values())


def test_each_source_has_its_own_tracker(three_sources_run):
    _, _, _, _, returned = three_sources_run
    for source_id in EXPECTED:
        ids = {t.id for r in returned if r.frame.source_id == source_id for t in r.tracks}
        assert ids == {1}, source_id  # a shared tracker would hand the second source id 2


def test_batches_mix_frames_of_several_sources(three_sources_run):
    _, segmenter, _, _, _ = three_sources_run
    assert sum(len(b) for b in segmenter.batches) == sum(EXPECTED.values())
    assert all(1 <= len(b) <= 4 for b in segmenter.batches)
    # Once every buffer had frames, batches took from all of them (the prepare stage may have
    # taken a batch or two ahead while the gate held, so which batch is not fixed).
    assert any(set(b) == set(EXPECTED) for b in segmenter.batches[1:])
    assert sum(len(set(b)) > 1 for b in segmenter.batches) >= 1


def test_duplicate_source_ids_are_rejected(videos):
    a = fs.FileSource(videos / "carphone_pristine.mp4", source_id="same")
    b = fs.FileSource(videos / "tree.avi", source_id="same")
    try:
        with pytest.raises(ValueError, match="unique"):
            fs.Pipeline([a, b], MiddleBox())
    finally:
        a.close()
        b.close()


def test_one_tracker_instance_for_several_sources_is_rejected(videos):
    a = fs.FileSource(videos / "carphone_pristine.mp4")
    b = fs.FileSource(videos / "tree.avi")
    try:
        with pytest.raises(ValueError, match="tracker"):
            fs.Pipeline([a, b], MiddleBox(), tracker=fs.IoUTracker())
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    "factory", [lambda: fs.IoUTracker(fs.IoUTrackerSettings(max_age=3)), fs.IoUTracker], ids=["lambda", "class"]
)
def test_a_tracker_factory_gives_every_source_its_own_tracker(videos, tmp_path, factory):
    """The ValueError above says "pass a factory (e.g. a class)": a class must work like any factory."""
    a = fs.FileSource(videos / "carphone_pristine.mp4")
    b = fs.FolderSource(_image_folder(tmp_path))
    results = list(fs.Pipeline([a, b], MiddleBox(), tracker=factory))
    assert len(results) == CARPHONE_FRAMES + FOLDER_FRAMES
    for source_id in (a.source_id, b.source_id):
        assert {t.id for r in results if r.frame.source_id == source_id for t in r.tracks} == {1}


def test_a_tracker_class_works_for_a_single_source_too(videos):
    results = list(fs.Pipeline(fs.FileSource(videos / "carphone_pristine.mp4"), MiddleBox(), tracker=fs.IoUTracker))
    assert len(results) == CARPHONE_FRAMES and {t.id for r in results for t in r.tracks} == {1}


def test_a_prompt_for_one_source_applies_only_to_it(videos, tmp_path):
    folder = _image_folder(tmp_path)
    carphone = fs.FileSource(videos / "carphone_pristine.mp4", source_id="carphone")
    stills = fs.FolderSource(folder, source_id="stills")
    prompt = fs.Prompt(boxes=[_box(176, 144)], frame=2, source_id="carphone")
    results = list(fs.Pipeline([carphone, stills], MiddleBox(), prompt=prompt))
    by_source = {k: [r for r in results if r.frame.source_id == k] for k in ("carphone", "stills")}
    assert len(by_source["carphone"]) == CARPHONE_FRAMES and len(by_source["stills"]) == FOLDER_FRAMES
    assert all(r.target is None for r in by_source["carphone"][:2])
    assert all(r.target is not None and r.target_found for r in by_source["carphone"][2:])
    assert all(r.target is None and not r.target_found for r in by_source["stills"])


def test_a_prompt_for_an_unknown_source_is_an_error(videos):
    carphone = fs.FileSource(videos / "carphone_pristine.mp4", source_id="carphone")
    try:
        with pytest.raises(fs.PromptError, match="nowhere"):
            fs.Pipeline([carphone], MiddleBox(), prompt=fs.Prompt(boxes=[[1, 1, 9, 9]], source_id="nowhere"))
    finally:
        carphone.close()


class ResizingSource:
    """Three 100×80 frames, a RECONNECTED event at the new size, then three 200×160 frames."""

    source_id, fps, frame_count, is_live = "cam", Fraction(25), None, False

    def frames(self):
        for index in range(6):
            width, height = (100, 80) if index < 3 else (200, 160)
            if index == 3:
                yield SourceEvent(
                    self.source_id, EventKind.RECONNECTED, 3, time.time(), attempt=1, width=200, height=160
                )
            yield Frame(np.zeros((height, width, 3), np.uint8), self.source_id, index, index / 25, time.monotonic())

    def close(self) -> None:
        pass


class MissesFrame3(MiddleBox):
    """Finds nothing on the first frame at the new size, so the tracker shows its own (rescaled) box."""

    def segment(self, frames):
        out = super().segment(frames)
        return [Instances.empty(i.image_shape) if f.index == 3 else i for f, i in zip(frames, out, strict=True)]


def test_a_resolution_change_rescales_the_tracks_and_is_reported(tmp_path):
    recorder = Recorder()
    events = EventLogSink(tmp_path / "events.jsonl")
    tracker = fs.IoUTracker(fs.IoUTrackerSettings(max_age=5))
    results = list(fs.Pipeline(ResizingSource(), MissesFrame3(), tracker=tracker, sinks=[recorder, events]))
    assert [r.frame.index for r in results] == list(range(6))
    kinds = [e.kind for e in recorder.events]
    assert kinds == [EventKind.RECONNECTED, EventKind.RESIZED]
    resized = recorder.events[1]
    assert (resized.width, resized.height, resized.next_frame) == (200, 160, 3)
    assert "100x80" in resized.message
    logged = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in logged] == ["reconnected", "resized"]
    # Frame 3 found nothing: the track is lost, and its box is the old one moved to the new size.
    (lost,) = results[3].tracks
    assert lost.id == 1 and lost.state is TrackState.LOST
    assert lost.box == pytest.approx(tuple(_box(200, 160)))
    # Frames 4 and 5 find the object at the new size: it keeps its id.
    for result in results[4:]:
        (track,) = result.tracks
        assert track.id == 1 and track.state is TrackState.TRACKED
    assert {t.id for r in results for t in r.tracks} == {1}


def test_without_rescaling_the_same_change_would_start_a_new_track():
    """The control for the test above: the old box does not overlap the new one enough to match."""
    tracker = fs.IoUTracker()
    small = Instances(np.array([_box(100, 80)]), np.array([0.9]), (80, 100))
    large = Instances(np.array([_box(200, 160)]), np.array([0.9]), (160, 200))
    assert tracker.update(small)[0].id == 1
    assert 2 in {t.id for t in tracker.update(large)}


def test_the_cli_writes_each_sources_tracks_in_its_own_folder(cli, weights, videos, davis, tmp_path):
    camel = tmp_path / "camel"
    camel.mkdir()
    for jpg in sorted((davis / "JPEGImages/480p/camel").glob("*.jpg"))[:5]:
        shutil.copy(jpg, camel / jpg.name)
    out = tmp_path / "out"
    done = subprocess.run(
        [
            *cli,
            "run",
            str(videos / "carphone_pristine.mp4"),
            str(camel),
            "--weights",
            str(weights),
            "--device",
            "cpu",
            "--imgsz",
            "320",
            "--no-video",
            "--quiet",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,  # only stops a hang
    )
    assert done.returncode == 0, done.stderr
    expected = {"carphone_pristine": CARPHONE_FRAMES, "camel": 5}
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    for source_id, count in expected.items():
        lines = [json.loads(line) for line in (out / source_id / "tracks.jsonl").read_text().splitlines()]
        assert [r["frame"] for r in lines] == list(range(count)), source_id
        assert {r["source"] for r in lines} == {source_id}
        assert all(r["dropped_before"] == 0 for r in lines)
        assert not (out / source_id / "annotated.mp4").exists()
        assert not (out / source_id / "events.jsonl").exists()  # files are not live: no events log
    assert "2 sources" in done.stdout


def test_a_failing_source_ends_its_own_lane_and_the_error_comes_after_the_others_finish(videos, tmp_path):
    """An unreadable image in one folder: that source stops there, the others run to their end.

    The clip beside it runs to its end and every sink is finalised, then the run raises the
    folder's error.
    """
    folder = _image_folder(tmp_path)
    (folder / "img3.png").write_bytes(b"not a png")
    clip = fs.FileSource(videos / "carphone_pristine.mp4")
    per_source: dict[str, list] = {clip.source_id: [], folder.name: []}
    closed: list[str] = []

    class Recorder:
        def __init__(self, source_id: str) -> None:
            self.source_id = source_id

        def write(self, result) -> None:
            per_source[self.source_id].append(result.frame.index)

        def close(self) -> None:
            closed.append(self.source_id)

    pipeline = fs.Pipeline([clip, fs.FolderSource(folder)], MiddleBox(), sinks_for=lambda s: [Recorder(s.source_id)])
    with pytest.raises(fs.SourceError, match="cannot read image .*img3.png"):
        pipeline.run()
    assert per_source[clip.source_id] == list(range(120))  # the other source finished
    assert per_source[folder.name] == [0, 1, 2]
    assert sorted(closed) == sorted(per_source)
    summary = pipeline.summary.sources[folder.name]
    assert summary.frames == 3 and "cannot read image" in summary.error
    assert pipeline.summary.sources[clip.source_id].error is None


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_four_real_sources_together_give_each_the_same_outputs_as_alone(weights, videos, davis, tmp_path):
    """The real model, four file sources batched together: each one's tracks.jsonl is as when run alone.

    Two DAVIS sequences are of one size, so their frames share forward passes. Every source's
    tracks.jsonl matches its run alone, up to float noise in the last digit: same frames, same
    ids, same states, boxes within 0.02 px.
    """
    from fastsam_stream.pipeline.segmenter import SegmenterSettings, UltralyticsSegmenter

    segmenter = UltralyticsSegmenter(SegmenterSettings(weights=str(weights), device="cpu", imgsz=320, conf=0.25))
    specs = {"carphone": videos / "carphone_pristine.mp4", "tree": videos / "tree.avi"}
    for sequence in ("camel", "dog"):
        specs[sequence] = tmp_path / sequence
        specs[sequence].mkdir()
        for image in sorted((davis / "JPEGImages/480p" / sequence).glob("*.jpg"))[:12]:
            shutil.copy(image, specs[sequence] / image.name)

    def source(source_id: str):
        return fs.open_source(specs[source_id], source_id=source_id)

    together = tmp_path / "together"
    fs.Pipeline(
        [source(i) for i in specs],
        segmenter,
        sinks_for=lambda s: [fs.JsonlSink(together / f"{s.source_id}.jsonl", masks="none")],
    ).run()
    for source_id in specs:
        alone = tmp_path / f"alone-{source_id}.jsonl"
        fs.Pipeline(source(source_id), segmenter, sinks=[fs.JsonlSink(alone, masks="none")]).run()
        mine, reference = _records(together / f"{source_id}.jsonl"), _records(alone)
        assert [r["frame"] for r in mine] == [r["frame"] for r in reference]
        for a, b in zip(mine, reference, strict=True):
            assert [(t["id"], t["state"], t["target"]) for t in a["tracks"]] == [
                (t["id"], t["state"], t["target"]) for t in b["tracks"]
            ], (source_id, a["frame"])
            for ta, tb in zip(a["tracks"], b["tracks"], strict=True):
                np.testing.assert_allclose(ta["box"], tb["box"], atol=0.02)
                assert abs(ta["score"] - tb["score"]) <= 2e-4


class Behind(MiddleBox):
    """A segmenter that is never ahead of decoding, whatever the machine.

    Each batch is held until the readers have decoded `lead` frames more than it has been given in
    all (bounded by GATE_S, which only stops a hang), so every stage holds frames when the run is
    stopped. Set `stopping` before stopping the run: the readers stop, and a batch held for them
    goes on.
    """

    def __init__(self, decoded, lead: int) -> None:
        super().__init__()
        self.decoded, self.lead, self.given = decoded, lead, 0
        self.stopping = threading.Event()

    def segment(self, frames: list[Frame]) -> list[Instances]:
        self.given += len(frames)
        deadline = time.monotonic() + GATE_S
        while self.decoded() < self.given + self.lead and not self.stopping.is_set():
            wanted = self.given + self.lead
            assert time.monotonic() < deadline, f"the readers decoded {self.decoded()} frames, {wanted} wanted"
            time.sleep(0.001)
        return super().segment(frames)


@pytest.mark.parametrize("policy", ["block", "drop_oldest"])
def test_every_decoded_frame_is_processed_or_counted_as_dropped_when_stopped(videos, policy):
    sources = [Counted(fs.FileSource(videos / "carphone_pristine.mp4", source_id=i), after=0) for i in ("a", "b")]
    yielded = {"a": 0, "b": 0}

    def counting(source):
        inner = source.frames

        def frames():
            for item in inner():
                yielded[source.source_id] += isinstance(item, Frame)
                yield item

        source.frames = frames
        return source

    # Both buffers full (a blocked reader cannot get further ahead than its buffer and one frame).
    behind = Behind(lambda: sum(yielded.values()), lead=2 * fs.BatchSettings().buffer_size)
    pipeline = fs.Pipeline([counting(s) for s in sources], behind, drop_policy=policy)
    for n, _ in enumerate(pipeline, 1):
        if n == 30:
            behind.stopping.set()
            pipeline.stop()
    for source_id, made in yielded.items():
        summary = pipeline.summary.sources[source_id]
        assert summary.frames + summary.dropped == made, (source_id, summary)
    assert pipeline.summary.frames == 30 and sum(yielded.values()) > 30
