"""Appearance from the segmenter itself: descriptors, the target's gallery, and the look-alike crossing they are for.

The descriptors (pipeline/embeddings.py) come from the real model on real frames, through the
PyTorch engine and the shared int8 ONNX export. The gallery (trackers/gallery.py) is pure logic,
tested on hand-made vectors. The look-alike test is the issue's case: two people of the same colour
cross, and the colour histogram picks the wrong one where the descriptor picks the right one. The
scene is built from real pixels: the Jogging sequence's first frame turned grey, where hue and
saturation are gone and every object has the same colour histogram. Two of its people are cut out
by their own masks and pasted on the same frame with its people painted out. The last test checks
that the assembled pipeline asks its segmenter for descriptors exactly when its tracker uses them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest
import torch

import fastsam_stream as fs
from fastsam_stream.core import Frame, Instances, TargetChange, Track, TrackState
from fastsam_stream.errors import ModelError
from fastsam_stream.pipeline import segmenter as segmenter_module
from fastsam_stream.pipeline.engines import OnnxEngine
from fastsam_stream.pipeline.segmenter import SegmenterSettings, UltralyticsSegmenter
from fastsam_stream.trackers import ByteTracker, ByteTrackerSettings, appearance, box_iou
from fastsam_stream.trackers.gallery import DISTINCT, EXEMPLARS, MOMENTUM, Gallery

CHANNELS = 64  # P3 of the n-sized YOLOv8-seg stand-in
STATIC_INT8 = "yolov8n-seg-int8.onnx"  # ../shared/models: fixed 1×3×320×320


def iou(a, b) -> float:
    return float(box_iou(np.asarray(a, np.float64)[None], np.asarray(b, np.float64)[None])[0, 0])


def grey(image: np.ndarray) -> np.ndarray:
    """The same picture with no colour: BGR, every pixel's hue and saturation 0."""
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


@pytest.fixture(scope="module")
def featured(segmenter) -> UltralyticsSegmenter:
    """The session's model (conf 0.25), asked for descriptors: the same engine, not a second load."""
    return UltralyticsSegmenter(segmenter.settings, engine=segmenter.engine, features=True)


@pytest.fixture(scope="module")
def jogging(davis) -> np.ndarray:
    image = cv2.imread(str(davis.parent / "sot" / "Jogging" / "img" / "0001.jpg"))
    assert image is not None and image.shape == (288, 352, 3)
    return image


# ------------------------------------------------------------------------------ descriptors


def test_descriptors_are_unit_rows_that_slice_with_their_instances(featured, segmenter, jogging):
    [found] = featured.segment([Frame(jogging, "jogging", 0, 0.0, 0.0)])
    assert len(found) >= 3 and found.has_embeddings  # the two joggers and the passer-by
    every = found.embeddings()
    assert every.shape == (len(found), CHANNELS) and every.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(every, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(found[[2, 0]].embeddings(), found.embeddings([2, 0]), atol=1e-6)
    np.testing.assert_allclose(found.embeddings([2, 0]), every[[2, 0]], atol=1e-6)
    np.testing.assert_allclose(found[found.scores > 0.5].embeddings(), every[found.scores > 0.5], atol=1e-6)
    assert not np.allclose(every[0], every[1], atol=0.05)  # different people, different descriptors
    # The CPU path (each row inside its box) and the batched GPU path (all rows at once) agree.
    pooled = found._embeddings
    np.testing.assert_allclose(pooled._per_box(), pooled._on_device(), atol=1e-4)
    [plain] = segmenter.segment([Frame(jogging, "jogging", 0, 0.0, 0.0)])
    assert not plain.has_embeddings
    np.testing.assert_allclose(plain.boxes, found.boxes, atol=1e-3)  # asking for features changes no result
    with pytest.raises(ValueError, match="no embeddings"):
        plain.embeddings()


def test_an_instance_is_most_like_itself_on_the_next_frame(featured, davis):
    """Car-roundabout frames 0 and 1: each car matched by box is its own nearest descriptor, both ways."""
    folder = davis / "JPEGImages" / "480p" / "car-roundabout"
    images = [cv2.imread(str(folder / f"{k:05d}.jpg")) for k in (0, 1)]
    first, second = featured.segment([Frame(image, "cars", k, k / 24, 0.0) for k, image in enumerate(images)])
    overlap = box_iou(first.boxes, second.boxes)
    similar = first.embeddings() @ second.embeddings().T
    matched = [(i, int(np.argmax(overlap[i]))) for i in range(len(first)) if overlap[i].max() > 0.5]
    assert len(matched) >= 3 and len(second) >= 4
    for i, j in matched:
        others = max(np.delete(similar[i], j).max(), np.delete(similar[:, j], i).max())
        assert similar[i, j] > 0.95 and similar[i, j] > others + 0.1, (i, j, similar[i, j], others)


def test_the_int8_onnx_export_gives_descriptors_when_asked(weights, jogging):
    path = weights.parent / STATIC_INT8
    if not path.is_file():
        pytest.fail(f"{path} is missing: the tests read real data from ../shared (see ../shared/README.md)")
    settings = SegmenterSettings(weights=str(path), device="cpu", conf=0.25)
    with_features = UltralyticsSegmenter(settings, features=True)  # P3 added as an output, in memory
    plain_engine = OnnxEngine(path, threads=1)
    plain = UltralyticsSegmenter(settings, engine=plain_engine)
    assert with_features.features and with_features.engine.has_features and not plain.features
    frame = Frame(jogging, "jogging", 0, 0.0, 0.0)
    [found], [bare] = with_features.segment([frame]), plain.segment([frame])
    assert len(found) >= 3 and found.has_embeddings and not bare.has_embeddings
    every = found.embeddings()
    assert every.shape == (len(found), CHANNELS)
    np.testing.assert_allclose(np.linalg.norm(every, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(found.boxes, bare.boxes, atol=1e-3)  # the extra output changes no result

    batch = torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    predictions, protos, p3 = with_features.engine.run(batch, True)
    assert tuple(p3.shape) == (1, CHANNELS, 40, 40)
    assert plain_engine.run(batch, False)[2] is None
    np.testing.assert_allclose(plain_engine(batch)[0].numpy(), predictions.numpy(), atol=1e-3)
    assert len(plain_engine(batch)) == len(with_features.engine(batch)) == 2
    with pytest.raises(ModelError, match="without appearance features"):
        plain_engine.run(batch, True)
    # A segmenter asked for features its engine cannot give falls back to none (trackers use colour).
    assert UltralyticsSegmenter(settings, engine=plain_engine, features=True).features is False


def test_the_torch_engine_keeps_p3_only_when_asked(segmenter):
    engine = segmenter.engine
    batch = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # small: three forward passes
    predictions, protos, p3 = engine.run(batch, False)
    assert p3 is None
    with_p3 = engine.run(batch, True)
    assert tuple(with_p3[2].shape) == (1, CHANNELS, 8, 8)  # stride 8
    torch.testing.assert_close(with_p3[0], predictions)  # the hook only looks
    plain = engine(batch)
    assert isinstance(plain, tuple) and len(plain) == 2
    torch.testing.assert_close(plain[1], protos)


# ---------------------------------------------------------------------------------- gallery


def unit(*values: float) -> np.ndarray:
    vector = np.zeros(8, np.float32)
    vector[: len(values)] = values
    return vector / np.linalg.norm(vector)


def axis(i: int) -> np.ndarray:
    vector = np.zeros(8, np.float32)
    vector[i] = 1.0
    return vector


def test_gallery_first_view_is_always_an_exemplar_and_usual_waits_for_the_second():
    gallery = Gallery()
    np.testing.assert_array_equal(gallery.similarity(np.stack([axis(0)])), [-1.0])  # empty: nothing is like it
    gallery.add(2 * axis(0), exemplar=False)  # not clean, but the first: kept, and made unit length
    assert gallery.updates == 1 and gallery.usual is None and len(gallery.exemplars) == 1
    np.testing.assert_allclose(gallery.mean, axis(0))
    second = unit(1, 1)
    gallery.add(second, exemplar=False)
    assert gallery.usual == pytest.approx(float(axis(0) @ second))  # its similarity before it was added
    assert len(gallery.exemplars) == 1  # not clean: the mean only


def test_gallery_mean_moves_towards_new_views():
    gallery = Gallery()
    gallery.add(axis(0), exemplar=True)
    before = float(gallery.mean @ axis(1))
    gallery.add(axis(1), exemplar=False)
    expected = MOMENTUM * axis(0) + (1 - MOMENTUM) * axis(1)
    np.testing.assert_allclose(gallery.mean, expected / np.linalg.norm(expected), atol=1e-6)
    assert float(gallery.mean @ axis(1)) > before and np.linalg.norm(gallery.mean) == pytest.approx(1.0)
    for _ in range(30):
        gallery.add(axis(1), exemplar=False)
    assert float(gallery.mean @ axis(1)) > 0.99 and gallery.updates == 32
    assert gallery.usual > 0.9  # it has come to look like its recent views


def test_gallery_keeps_the_first_and_the_latest_distinct_exemplars():
    gallery = Gallery()
    for i in range(EXEMPLARS + 2):
        gallery.add(axis(i), exemplar=True)
    assert len(gallery.exemplars) == EXEMPLARS
    np.testing.assert_array_equal(gallery.exemplars[0], axis(0))  # the prompt's view stays
    latest = [axis(i) for i in range(EXEMPLARS + 2 - (EXEMPLARS - 1), EXEMPLARS + 2)]
    np.testing.assert_array_equal(np.stack(gallery.exemplars[1:]), np.stack(latest))


def test_gallery_skips_near_duplicate_exemplars_and_zero_vectors():
    gallery = Gallery()
    gallery.add(axis(0), exemplar=True)
    close = unit(1.0, 0.1)  # cos 0.995 with the first
    assert float(close @ axis(0)) >= DISTINCT
    gallery.add(close, exemplar=True)
    assert len(gallery.exemplars) == 1 and gallery.updates == 2  # the mean took it, the exemplars did not
    state = (gallery.mean.copy(), gallery.updates, gallery.usual, len(gallery.exemplars))
    gallery.add(np.zeros(8, np.float32), exemplar=True)  # nothing seen
    np.testing.assert_array_equal(gallery.mean, state[0])
    assert (gallery.updates, gallery.usual, len(gallery.exemplars)) == state[1:]


def test_gallery_similarity_is_the_best_match_over_mean_and_exemplars():
    gallery = Gallery()
    gallery.add(axis(0), exemplar=True)
    gallery.add(axis(1), exemplar=True)  # a second, different view: the mean stays near the first
    queries = np.stack([axis(0), axis(1), axis(2), unit(1, 1)])
    got = gallery.similarity(queries)
    assert got[1] == pytest.approx(1.0) and float(gallery.mean @ axis(1)) < 0.2  # the exemplar, not the mean
    np.testing.assert_allclose(got[0], 1.0, atol=1e-6)
    assert got[2] == pytest.approx(0.0, abs=1e-6)
    best = max(float(unit(1, 1) @ v) for v in [gallery.mean, *gallery.exemplars])
    assert got[3] == pytest.approx(best)


# ------------------------------------------------------------------------ the look-alikes

# Jogging frame 1: the jogger in white (groundtruth_rect.2.txt, 1-based x, y, w, h → xyxy) is A,
# the target; the passer-by in a dark coat at the bottom left is B. Grey, they have one colour
# histogram; the descriptor puts B 0.73-0.85 from A's first view, where A's own views score 0.99+.
# Not the other jogger: grey, on this background, the two joggers are 0.98-1.0 alike in the
# descriptor too (as alike as each is to herself), and neither cue tells them apart.
WHITE_JOGGER = (179.0, 78.0, 216.0, 192.0)
PASSER_BY = (62.0, 212.0, 100.0, 288.0)
FEET = 250  # both stand on this row of the road
ROWS = slice(112, 272)  # the strip of the frame the scene is cut to (fewer pixels to segment)
MEET = 176.0  # x where they meet
STEP = 15.0  # pixels a frame each walks
APPROACH, HIDDEN, AFTER = 6, 5, 8  # frames walking towards each other, A behind B, walking apart


@dataclass(frozen=True)
class Person:
    pixels: np.ndarray  # h×w×3
    mask: np.ndarray  # h×w bool

    def paste(self, image: np.ndarray, centre_x: float) -> np.ndarray:
        """Paint the person with its feet on FEET, centred at `centre_x`; returns its box in the strip."""
        height, width = self.mask.shape
        x, y = int(round(centre_x - width / 2)), FEET - height
        image[y : y + height, x : x + width][self.mask] = self.pixels[self.mask]
        return self.box(centre_x)

    def box(self, centre_x: float) -> np.ndarray:
        height, width = self.mask.shape
        x = int(round(centre_x - width / 2))
        return np.array([x, FEET - height - ROWS.start, x + width, FEET - ROWS.start], np.float64)


def crossing_script() -> list[tuple[float, float, bool]]:
    """(A's centre x, B's centre x, A visible) per frame.

    They walk towards each other; at MEET both stop and A is hidden behind B; then each turns back
    the way it came. Kalman motion says they passed through each other, so A's prediction runs on
    into B.
    """
    walk = [(MEET - (APPROACH - k) * STEP, MEET + (APPROACH - k) * STEP, True) for k in range(APPROACH)]
    hidden = [(MEET, MEET, False)] * HIDDEN
    apart = [(MEET - k * STEP, MEET + k * STEP, True) for k in range(1, AFTER + 1)]
    return walk + hidden + apart


@dataclass(frozen=True)
class Crossing:
    images: list[np.ndarray]
    found: list[Instances]
    a_boxes: list[np.ndarray]  # where A is (behind B while hidden)
    b_boxes: list[np.ndarray]
    a_row: int  # A's row on frame 0


@pytest.fixture(scope="module")
def crossing(featured, jogging) -> Crossing:
    picture = grey(jogging)
    [people] = featured.segment([Frame(picture, "jogging", 0, 0.0, 0.0)])
    masks = people.masks()
    # The background: the frame with everyone painted out.
    everyone = cv2.dilate(masks.any(axis=0).astype(np.uint8) * 255, np.ones((9, 9), np.uint8))
    background = cv2.inpaint(picture, everyone, 5, cv2.INPAINT_TELEA)

    def cut(box) -> Person:
        row = int(np.argmax(box_iou(np.array([box]), people.boxes)[0]))
        assert iou(people.boxes[row], box) > 0.7 and people.class_ids[row] == 0
        x1, y1, x2, y2 = np.round(people.boxes[row]).astype(int)
        return Person(picture[y1:y2, x1:x2].copy(), masks[row, y1:y2, x1:x2].copy())

    a, b = cut(WHITE_JOGGER), cut(PASSER_BY)
    script = crossing_script()
    images = {}
    for a_x, b_x, shown in dict.fromkeys(script):  # frames repeat (standing still, walking back): segment each once
        image = background.copy()
        if shown:
            a.paste(image, a_x)
        b.paste(image, b_x)  # B is in front
        images[a_x, b_x, shown] = np.ascontiguousarray(image[ROWS])
    keys = list(images)
    segmented = featured.segment([Frame(images[k], "crossing", i, 0.0, 0.0) for i, k in enumerate(keys)])
    found = dict(zip(keys, segmented, strict=True))
    a_boxes = [a.box(a_x) for a_x, _, _ in script]
    first = found[script[0]]
    a_row = int(np.argmax(box_iou(a_boxes[0][None], first.boxes)[0]))
    assert len(first) == 2 and iou(first.boxes[a_row], a_boxes[0]) > 0.8
    return Crossing(
        [images[k] for k in script], [found[k] for k in script], a_boxes, [b.box(b_x) for _, b_x, _ in script], a_row
    )


def follow_a(crossing: Crossing, how: str) -> list[Track | None]:
    """The target's snapshot on each frame (None once gone), A prompted on frame 0."""
    tracker = ByteTracker(ByteTrackerSettings(appearance=how))
    target_id, mine = None, []
    for k, (image, found) in enumerate(zip(crossing.images, crossing.found, strict=True)):
        tracks = tracker.update(found, TargetChange.only(crossing.a_row) if k == 0 else None, image)
        if k == 0:
            [target_id] = [t.id for t in tracks if t.is_target]
        mine.append(next((t for t in tracks if t.id == target_id and t.state != TrackState.REMOVED), None))
    return mine


def test_look_alikes_crossing_the_descriptor_keeps_the_target_where_colour_follows_the_other(crossing):
    first = crossing.found[0]
    a_row, b_row = crossing.a_row, 1 - crossing.a_row
    # The colour histogram cannot tell them apart: in grey, both are all one hue-saturation bin.
    colours = [
        appearance.colour_histogram(crossing.images[0], mask, box)
        for mask, box in zip(first.masks([a_row, b_row]), first.boxes[[a_row, b_row]], strict=True)
    ]
    assert appearance.similarity(*colours) > 0.99
    # The descriptor can: B is further from A than A is from itself after the crossing.
    last = crossing.found[-1]
    a_last = int(np.argmax(box_iou(crossing.a_boxes[-1][None], last.boxes)[0]))
    a_first = first.embeddings([a_row])[0]
    assert float(a_first @ last.embeddings([a_last])[0]) > 0.95
    assert float(a_first @ first.embeddings([b_row])[0]) < 0.9

    final = range(len(crossing.images) - 5, len(crossing.images))
    by_features = follow_a(crossing, "features")
    for k in final:
        track = by_features[k]
        assert track is not None and track.state == TrackState.TRACKED, (k, track)
        assert iou(track.box, crossing.a_boxes[k]) > 0.5, (k, track.box, crossing.a_boxes[k])

    by_colour = follow_a(crossing, "colour")
    for k in final:  # it follows B (or is lost): it is not on A
        track = by_colour[k]
        assert track is None or iou(track.box, crossing.a_boxes[k]) < 0.5, (k, track)


# -------------------------------------------------------------------------------- assembly


def test_the_pipeline_asks_for_descriptors_when_its_tracker_uses_them(segmenter, weights, davis, monkeypatch):
    asked = []

    def loaded(settings, device, features=False):  # the session's engine: no second model load
        asked.append(features)
        return segmenter.engine

    monkeypatch.setattr(segmenter_module, "load_engine", loaded)
    model = {"model": {"weights": str(weights), "device": "cpu"}}
    configs = {
        True: fs.load_config(overrides=model),  # the default tracker: bytetrack, appearance features
        False: fs.load_config(overrides={**model, "tracker": {"appearance": "colour"}}),
    }
    iou_tracker = fs.load_config(overrides=model, tracker="iou")
    for expected, config in [*configs.items(), (False, iou_tracker)]:
        source = fs.FolderSource(davis / "JPEGImages" / "480p" / "camel")
        pipeline = fs.build_pipeline(config, source=source, sinks=[lambda result: None])
        try:
            assert isinstance(pipeline.segmenter, UltralyticsSegmenter)
            assert pipeline.segmenter.features is expected
        finally:
            pipeline.close()
            source.close()
    assert asked == [True, False, False]


def test_a_zero_descriptor_is_no_evidence_either_way():
    """A mask too thin for one feature cell gives a zero descriptor: it neither costs nor forbids a match."""
    from fastsam_stream.trackers.bytetrack.looks import _shortfall
    from fastsam_stream.trackers.bytetrack.track import KalmanTrack
    from fastsam_stream.trackers.gallery import Gallery
    from fastsam_stream.trackers.kalman import BoxKalman

    track = KalmanTrack(1, BoxKalman(np.array([0.0, 0.0, 10.0, 10.0])), 0.9, 0, 0, is_target=True)
    track.gallery = Gallery()
    view = np.zeros(8, np.float32)
    view[0] = 1.0
    track.gallery.add(view, exemplar=True)
    track.gallery.add(view, exemplar=True)
    other = np.zeros(8, np.float32)
    other[1] = 1.0
    shortfall = _shortfall(track, np.stack([view, other, np.zeros(8, np.float32)]))
    assert shortfall[0] == pytest.approx(0.0, abs=1e-6)
    assert shortfall[1] == pytest.approx(1.0, abs=1e-6)  # orthogonal: as unlike as can be
    assert shortfall[2] == 0.0  # nothing seen: not "unlike"
