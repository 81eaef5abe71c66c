"""The batch size measured at start-up (pipeline/batch_probe.py) when `batch.max_batch` is unset.

The engine here is a fake whose cost per call the test sets: each forward pass advances a fake
clock, which the segmenter times the network with. So which size wins depends only on those
numbers, never on the machine's speed: nothing sleeps and nothing is timed for real. The frames
are real DAVIS images, letterboxed and passed through NMS by the real segmenter.
"""

from __future__ import annotations

import logging
import shutil

import cv2
import pytest
import torch

import fastsam_stream as fs
from fastsam_stream.core import Frame
from fastsam_stream.pipeline.batch_probe import NEAR_TIE, BatchChoice, measure_batch_sizes
from fastsam_stream.pipeline.batcher import BatchConfig
from fastsam_stream.pipeline.segmenter import SegmenterSettings, UltralyticsSegmenter

BATCHER_LOG = "fastsam_stream.pipeline.batcher"
PROBE_CALLS = [1, 1, 1, 2, 2, 2, 4, 4, 4]  # a warm-up pass, then two timed ones, at each of 1, 2 and 4
# Per call, in seconds: 50, 40 and 50 ms per frame; batch 2 is the fastest per frame.
TWO_IS_FASTEST = {1: 0.050, 2: 0.080, 4: 0.200}
FRAMES_PER_SOURCE = 6
SEQUENCES = ("dog", "camel", "blackswan")  # all 854×480: every batch is one group, one engine call
WAIT_MS = 30_000  # a partial batch waits for the rest (only ends of sources cut one short); only stops a hang


class TimedEngine:
    """A fake engine (pipeline/engines.py's Engine protocol) whose forward pass costs what the test says.

    Each call advances `now` by `cost[batch size]` seconds and records the batch size; `clock` is
    the time the segmenter reads, counted in `reads`. The outputs hold no detections (every score
    0), so NMS finds nothing and every frame's Instances is empty.

    Args:
        cost: Seconds per call, by batch size (sizes not given cost nothing).
        fixed_input: (batch, height, width) to play a static export.
    """

    stride = 32
    class_names = {0: "object"}
    channels_last = False

    def __init__(self, cost: dict[int, float], fixed_input: tuple[int, int, int] | None = None) -> None:
        self.cost = cost
        self.fixed_input = fixed_input
        self.now = 0.0
        self.reads = 0
        self.batches: list[int] = []

    def clock(self) -> float:
        self.reads += 1
        return self.now

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        predictions, protos, _ = self.run(images, False)
        return predictions, protos

    def run(self, images: torch.Tensor, features: bool) -> tuple[torch.Tensor, torch.Tensor, None]:
        b, _, h, w = images.shape
        self.batches.append(b)
        self.now += self.cost.get(b, 0.0)
        anchors = sum((h // s) * (w // s) for s in (8, 16, 32))
        predictions = torch.zeros(b, 4 + len(self.class_names) + 32, anchors)
        return predictions, torch.zeros(b, 32, h // 4, w // 4), None


def timed_segmenter(engine: TimedEngine) -> UltralyticsSegmenter:
    """The real segmenter around the fake engine, timing it with the engine's clock."""
    return UltralyticsSegmenter(SegmenterSettings(weights="unused.pt", device="cpu"), engine=engine, clock=engine.clock)


def davis_frame(davis, sequence: str = "dog", index: int = 0) -> Frame:
    image = cv2.imread(str(davis / f"JPEGImages/480p/{sequence}/{index:05d}.jpg"))
    assert image is not None
    return Frame(image, sequence, index, index / 24, 0.0)


# ------------------------------------------------------------------------------- the measurement


def test_measure_batch_sizes_times_two_passes_per_size_after_a_warm_up(davis):
    """Each size: a warm-up run, then two timed runs; seconds per frame is the faster's time over its size."""
    now = [0.0]
    runs: list[int] = []
    cost = {1: 0.010, 2: 0.016, 4: 0.036}  # 10, 8 and 9 ms per frame

    def run(batch: list[Frame]) -> None:
        runs.append(len(batch))
        now[0] += cost[len(batch)]

    frame = davis_frame(davis)
    choice = measure_batch_sizes(run, frame, (1, 2, 4), clock=lambda: now[0])
    assert runs == PROBE_CALLS
    assert choice.size == 2
    assert choice.seconds_per_frame == pytest.approx({1: 0.010, 2: 0.008, 4: 0.009})
    assert choice.describe() == "batch 2 (ms/frame: 1 10.0, 2 8.0, 4 9.0)"
    # Other candidates are taken as given.
    runs.clear()
    cost[3] = 0.024
    assert measure_batch_sizes(run, frame, (1, 3), clock=lambda: now[0]).size == 3
    assert runs == [1, 1, 1, 3, 3, 3]


def test_a_pass_slowed_by_other_work_does_not_decide(davis):
    """The faster of the two timed passes counts.

    A pass that other work slowed (here batch 1's first, 3× its cost) would otherwise make batch 2
    look faster per frame.
    """
    now = [0.0]
    runs: list[int] = []
    cost = {1: 0.010, 2: 0.024, 4: 0.048}  # 10, 12 and 12 ms per frame: batch 1 is fastest

    def run(batch: list[Frame]) -> None:
        runs.append(len(batch))
        slowed = len(runs) == 2  # batch 1's first timed pass
        now[0] += cost[len(batch)] * (3 if slowed else 1)

    choice = measure_batch_sizes(run, davis_frame(davis), (1, 2, 4), clock=lambda: now[0])
    assert choice.size == 1
    assert choice.seconds_per_frame == pytest.approx({1: 0.010, 2: 0.012, 4: 0.012})


def test_the_fixed_batch_description_says_it_was_not_measured():
    assert BatchChoice(1, {}).describe() == "batch 1 (the model's fixed batch)"


def test_an_unset_max_batch_can_hold_up_to_the_largest_candidate():
    """The default is unset (measured); a batch then holds at most 4 frames, the largest size measured."""
    assert BatchConfig().max_batch is None
    assert BatchConfig().largest_batch == 4
    assert BatchConfig(max_batch=2).largest_batch == 2


# -------------------------------------------------------------------------- the segmenter's choice


def test_best_batch_takes_the_fastest_size_per_frame(davis):
    """Batch 2 at 40 ms/frame beats 1 and 4 at 50; measured on the frame's own size through the real segmenter."""
    engine = TimedEngine(TWO_IS_FASTEST)
    choice = timed_segmenter(engine).best_batch(davis_frame(davis))
    assert choice.size == 2
    assert choice.seconds_per_frame == pytest.approx({1: 0.050, 2: 0.040, 4: 0.050})
    assert engine.batches == PROBE_CALLS


@pytest.mark.parametrize(
    ("cost", "expected"),
    [
        ({1: 0.050, 2: 0.098, 4: 0.196}, 1),  # 2 and 4 only 2% faster per frame than 1: noise, 1 waits less
        ({1: 0.050, 2: 0.096, 4: 0.192}, 2),  # 2 is 4% faster; 4 is no faster than 2
        ({1: 0.050, 2: 0.080, 4: 0.158}, 2),  # 4 is 1.25% faster than 2: not enough
        ({1: 0.050, 2: 0.080, 4: 0.150}, 4),  # 4 is 6% faster than 2
    ],
    ids=["2-and-4-within-3pct-of-1", "2-clearly-faster", "4-within-3pct-of-2", "4-clearly-faster"],
)
def test_a_near_tie_goes_to_the_smaller_batch(davis, cost, expected):
    """A larger batch must be more than NEAR_TIE (3%) faster per frame than the best smaller one to be chosen."""
    assert NEAR_TIE == 0.03
    assert timed_segmenter(TimedEngine(cost)).best_batch(davis_frame(davis)).size == expected


def test_best_batch_is_measured_once_per_frame_size(davis, videos):
    """The same size again (another frame of it): the stored choice, no engine call; a new size is measured."""
    engine = TimedEngine(TWO_IS_FASTEST)
    segmenter = timed_segmenter(engine)
    first = segmenter.best_batch(davis_frame(davis, "dog", 0))
    assert engine.batches == PROBE_CALLS
    again = segmenter.best_batch(davis_frame(davis, "camel", 3))  # also 854×480
    assert again is first and engine.batches == PROBE_CALLS and engine.reads == 12

    engine.cost = {1: 0.050, 2: 0.120, 4: 0.400}  # at this size, 1 is the fastest
    small = cv2.imread(str(davis / "JPEGImages/480p/dog/00000.jpg"))
    other = segmenter.best_batch(Frame(cv2.resize(small, (427, 240)), "dog", 0, 0.0, 0.0))
    assert other.size == 1 and engine.batches == PROBE_CALLS * 2
    assert segmenter.best_batch(davis_frame(davis, "dog", 1)) is first  # the first size's choice is kept


def test_a_static_engine_takes_its_fixed_batch_unmeasured(davis):
    """An engine with a fixed input (a static export): its batch, without a forward pass or a clock read."""
    engine = TimedEngine(TWO_IS_FASTEST, fixed_input=(1, 320, 320))
    choice = timed_segmenter(engine).best_batch(davis_frame(davis))
    assert choice == BatchChoice(1, {})
    assert engine.batches == [] and engine.reads == 0


# ------------------------------------------------------------------------------- through a Pipeline


@pytest.fixture(scope="module")
def davis_folders(davis, tmp_path_factory):
    """Three folders of six real DAVIS frames each, all 854×480."""
    root = tmp_path_factory.mktemp("davis")
    folders = []
    for sequence in SEQUENCES:
        folder = root / sequence
        folder.mkdir()
        for jpg in sorted((davis / "JPEGImages/480p" / sequence).glob("*.jpg"))[:FRAMES_PER_SOURCE]:
            shutil.copy(jpg, folder / jpg.name)
        folders.append(folder)
    return folders


def _pipeline(folders, segmenter, max_batch: int | None) -> fs.Pipeline:
    sources = [fs.FolderSource(folder, source_id=folder.name) for folder in folders]
    return fs.Pipeline(sources, segmenter, batch=fs.BatchSettings(max_batch=max_batch, max_wait_ms=WAIT_MS))


def _batcher_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == BATCHER_LOG and r.getMessage().startswith("max_batch")]


def test_an_unset_max_batch_is_measured_on_the_first_frame_and_bounds_every_batch(davis_folders, caplog):
    """max_batch=None: the first frame goes alone, the probe picks 2, and no later batch holds more than 2.

    The probe's six passes come before any real batch; the choice is logged at INFO with its
    timings, and `Pipeline.max_batch` says it.
    """
    caplog.set_level(logging.INFO, logger=BATCHER_LOG)
    engine = TimedEngine(TWO_IS_FASTEST)
    pipeline = _pipeline(davis_folders, timed_segmenter(engine), max_batch=None)
    assert pipeline.max_batch is None  # not measured before the run
    results = list(pipeline)
    total = FRAMES_PER_SOURCE * len(SEQUENCES)
    assert len(results) == total and all(len(r.instances) == 0 for r in results)

    assert pipeline.max_batch == 2
    assert engine.batches[: len(PROBE_CALLS)] == PROBE_CALLS
    real = engine.batches[len(PROBE_CALLS) :]
    # The frame the probe measured goes alone; the rest fill batches of 2 (a partial batch waits
    # for the rest, so only the last one can be short).
    assert real == [1] + [2] * ((total - 1) // 2) + [1] * ((total - 1) % 2)
    histogram = pipeline.metrics().batch_size
    assert histogram.count == len(real) and histogram.total == total
    assert histogram.cumulative[histogram.bounds.index(2)] == histogram.count  # every batch ≤ 2

    (line,) = _batcher_lines(caplog)
    assert line.startswith("max_batch 2, measured on 854x480 frames (ms/frame: 1 50.0, 2 40.0, 4 50.0)"), line
    assert "854x480" in line


def test_an_explicit_max_batch_is_used_without_measuring(davis_folders, caplog):
    """max_batch=4 set: best_batch is never called nor the clock read, and batches of 4 go through.

    The probe would have chosen 2 with these costs.
    """
    caplog.set_level(logging.INFO, logger=BATCHER_LOG)
    engine = TimedEngine(TWO_IS_FASTEST)
    segmenter = timed_segmenter(engine)
    asked: list[Frame] = []
    measure = segmenter.best_batch
    segmenter.best_batch = lambda frame: asked.append(frame) or measure(frame)
    pipeline = _pipeline(davis_folders, segmenter, max_batch=4)
    assert pipeline.max_batch == 4
    total = FRAMES_PER_SOURCE * len(SEQUENCES)
    assert len(list(pipeline)) == total

    assert asked == [] and engine.reads == 0 and _batcher_lines(caplog) == []
    assert engine.batches == [4] * (total // 4) + [total % 4]  # full batches, the last one short
    assert pipeline.max_batch == 4
    histogram = pipeline.metrics().batch_size
    assert histogram.total == total and max(engine.batches) == 4


class FrameCounter:
    """A plain segmenter (segment only, no best_batch): nothing to measure."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def segment(self, frames):
        self.batches.append(len(frames))
        return [fs.Instances.empty(f.image.shape[:2]) for f in frames]


def test_a_segmenter_without_best_batch_gets_batches_of_4(davis_folders, caplog):
    """max_batch unset and nothing to measure with: the largest candidate, 4, said so in the log."""
    caplog.set_level(logging.INFO, logger=BATCHER_LOG)
    segmenter = FrameCounter()
    pipeline = _pipeline(davis_folders, segmenter, max_batch=None)
    total = FRAMES_PER_SOURCE * len(SEQUENCES)
    assert len(list(pipeline)) == total
    assert pipeline.max_batch == 4
    assert segmenter.batches[0] == 1 and max(segmenter.batches) == 4 and sum(segmenter.batches) == total
    (line,) = _batcher_lines(caplog)
    assert line.startswith("max_batch 4 (not measured")


class ProbeFails(FrameCounter):
    """A staged segmenter whose batch-size measurement fails (as an out-of-memory at batch 4 would)."""

    def prepare(self, frames):
        return list(frames)

    def infer(self, prepared):
        return self.segment(prepared)

    def best_batch(self, frame: Frame) -> None:
        raise RuntimeError("out of memory at batch 4\nsecond line of the error")


def test_a_failed_measurement_falls_back_to_batch_1_and_the_run_goes_on(davis_folders, caplog):
    """The probe's error is a one-line warning, not the run's end: every frame still comes, one per batch."""
    caplog.set_level(logging.INFO, logger=BATCHER_LOG)
    segmenter = ProbeFails()
    pipeline = _pipeline(davis_folders, segmenter, max_batch=None)
    total = FRAMES_PER_SOURCE * len(SEQUENCES)
    assert len(list(pipeline)) == total
    assert pipeline.max_batch == 1 and segmenter.batches == [1] * total
    (line,) = _batcher_lines(caplog)
    assert line == "max_batch 1: measuring the batch size failed (out of memory at batch 4)"
