"""Prompt selection with the real stand-in model on real frames (issue #5).

Covers, against the DAVIS 2016 ground truth of each sequence's first frame:
- foreground points (one deep inside the object; one per part where the model splits it);
- a background point removing a background instance that also holds the foreground point;
- box prompts (the ground-truth box) and mask prompts (the ground-truth mask);
- a box with a background point on the instance it picks, and text restricted to a box (with a
  scorer whose similarities the test sets);
and, through a real Pipeline on real clips, several boxes becoming several targets that keep
their identities, with the JsonlSink listing each target's own mask.

Thresholds come from what the stand-in (yolov8n-seg int8, imgsz 640, cpu, conf 0.25) measured;
each constant says what it measured. Every frame is segmented once per module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import combinations

import cv2
import numpy as np
import pytest

from fastsam_stream import FileSource, JsonlSink, Pipeline, Prompt
from fastsam_stream.core import Frame, FrameResult, Instances
from fastsam_stream.errors import PromptError
from fastsam_stream.pipeline.prompts import INSIDE_BOX_SHARE, select
from fastsam_stream.sinks.jsonl import decode_rle

SEQUENCES = ["blackswan", "bmx-trees", "breakdance", "camel", "car-roundabout", "dog"]
# Sequences whose object the model finds as one instance. Measured best single-instance IoU with
# the ground truth on frame 0: blackswan 0.887, camel 0.915, car-roundabout 0.964, dog 0.814.
# Left out: bmx-trees (the ground truth is rider + bike; the model gives a person, 0.558, and a
# bicycle, 0.235) and breakdance (the dancer comes as lower body, 0.527, and upper body, 0.357).
# Those two are covered by the split-object test below instead.
WHOLE = ["blackswan", "camel", "car-roundabout", "dog"]
SPLIT = ["bmx-trees", "breakdance"]
MIN_IOU = 0.75  # worst measured on WHOLE: dog 0.814 (point, box); same floor as test_pipeline_davis
MIN_SPLIT_IOU = 0.6  # merged parts measured: bmx-trees 0.639, breakdance 0.806
MIN_MERGE_GAIN = 0.05  # merged minus best single part, measured: bmx-trees +0.081, breakdance +0.279
MIN_PART_COVER = 0.25  # a "part" covers this share of the ground truth (parts measured 0.32 .. 0.60)

# No first frame has a background instance holding the object deep inside it: the instances
# lying mostly outside the object that hold some of it (breakdance row 11: 257 px, bmx-trees'
# bicycle: 85 px, car-roundabout row 2: 17 px) do so at most 2 px from an edge, too thin to aim
# a point at. (breakdance's upper and lower body share 810 px, but both are the object.) A
# search over the 439 frames of the six sequences found breakdance
# 00068: a person behind the dancer (mask IoU 0.097 with the ground truth, 34% of it inside)
# holds 2233 px of the dancer, up to 13 px deep. Foreground only merges it: 0.679; with a
# background point on it: 0.759.
BG_FRAME = ("breakdance", 68)
MIN_BG_GAIN = 0.03  # measured +0.079
MIN_BG_IOU = 0.7  # measured 0.759
MAX_INSIDE_GT = 0.5  # the "extra" instance lies mostly outside the object (measured 34% inside)

PERSON = 0  # COCO class of the stand-in model


@dataclass(frozen=True)
class Scene:
    """One segmented DAVIS frame with its ground truth and every instance mask rendered once."""

    image: np.ndarray
    gt: np.ndarray
    instances: Instances
    masks: np.ndarray  # N×H×W bool
    ious: np.ndarray  # N: mask IoU of each instance with gt

    @property
    def best(self) -> int:
        return int(np.argmax(self.ious))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _deepest(region: np.ndarray) -> list[float]:
    """The pixel farthest from the region's border (a centroid can fall outside a concave shape)."""
    assert region.any(), "empty region"
    dist = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return [float(x), float(y)]


def _box_of(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _box_region(box: list[float], shape: tuple[int, int]) -> np.ndarray:
    region = np.zeros(shape, bool)
    x1, y1, x2, y2 = box
    region[int(np.floor(y1)) : int(np.ceil(y2)), int(np.floor(x1)) : int(np.ceil(x2))] = True
    return region


def _selected_mask(scene: Scene, rows: tuple[int, ...]) -> np.ndarray:
    return scene.masks[list(rows)].any(axis=0)


@pytest.fixture(scope="module")
def scene(segmenter, davis):
    """A function of (sequence, index) giving that DAVIS frame, segmented once for the whole module."""
    cache: dict[tuple[str, int], Scene] = {}

    def get(sequence: str, index: int = 0) -> Scene:
        if (sequence, index) not in cache:
            image = cv2.imread(str(davis / f"JPEGImages/480p/{sequence}/{index:05d}.jpg"))
            gt = cv2.imread(str(davis / f"Annotations/480p/{sequence}/{index:05d}.png"), cv2.IMREAD_GRAYSCALE) > 127
            assert image is not None and gt.any(), f"{sequence}/{index:05d} is missing"
            [instances] = segmenter.segment([Frame(image, sequence, index, 0.0, 0.0)])
            masks = instances.masks()
            cache[sequence, index] = Scene(image, gt, instances, masks, np.array([_iou(m, gt) for m in masks]))
        return cache[sequence, index]

    return get


# --- points ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sequence", WHOLE)
def test_foreground_point_deep_inside_selects_the_object(scene, sequence):
    s = scene(sequence)
    [chosen] = select(Prompt(points=[_deepest(s.gt)], labels=[1]), s.instances)
    assert chosen.rows == (s.best,) and chosen.track_row == s.best
    assert _iou(_selected_mask(s, chosen.rows), s.gt) >= MIN_IOU


@pytest.mark.parametrize("sequence", SPLIT)
def test_foreground_points_on_each_part_merge_a_split_object(scene, sequence):
    """Where the model splits the object, one foreground point per part gives back the whole."""
    s = scene(sequence)
    cover = (s.masks & s.gt).sum(axis=(1, 2)) / s.gt.sum()
    parts = np.flatnonzero(cover >= MIN_PART_COVER)
    assert len(parts) == 2, f"expected the object in two parts, got cover {np.round(cover, 2)}"
    # each point lies in its part only, so the merge comes from the two points, not from overlap
    points = [_deepest(s.gt & s.masks[p] & ~np.delete(s.masks, p, axis=0).any(axis=0)) for p in parts]
    [chosen] = select(Prompt(points=points, labels=[1, 1]), s.instances)
    assert set(chosen.rows) == set(parts.tolist())
    areas = s.masks[parts].sum(axis=(1, 2))
    assert chosen.track_row == parts[int(np.argmax(areas))]  # the tracker follows the larger part
    merged = _iou(_selected_mask(s, chosen.rows), s.gt)
    assert merged >= MIN_SPLIT_IOU
    assert merged >= s.ious[parts].max() + MIN_MERGE_GAIN


def test_background_point_removes_an_extra_instance_holding_the_foreground_point(scene):
    s = scene(*BG_FRAME)
    main = s.best
    inside_gt = (s.masks & s.gt).sum(axis=(1, 2)) / np.maximum(s.masks.sum(axis=(1, 2)), 1)
    shared = (s.masks & s.masks[main] & s.gt).sum(axis=(1, 2))
    shared[main] = 0
    shared[inside_gt > MAX_INSIDE_GT] = 0  # the extra instance is mostly background
    extra = int(np.argmax(shared))
    assert shared[extra] > 0, "no background instance overlaps the object here"
    rest = np.delete(s.masks, [main, extra], axis=0).any(axis=0)
    fg = _deepest(s.gt & s.masks[main] & s.masks[extra] & ~rest)  # held by exactly these two
    bg = _deepest(s.masks[extra] & ~s.gt & ~s.masks[main] & ~rest)  # in the extra one only

    [fg_only] = select(Prompt(points=[fg], labels=[1]), s.instances)
    assert set(fg_only.rows) == {main, extra}  # FastSAM's rule: every instance holding it, merged
    [with_bg] = select(Prompt(points=[fg, bg], labels=[1, 0]), s.instances)
    assert with_bg.rows == (main,) and with_bg.track_row == main

    before = _iou(_selected_mask(s, fg_only.rows), s.gt)
    after = _iou(_selected_mask(s, with_bg.rows), s.gt)
    assert after >= before + MIN_BG_GAIN
    assert after >= MIN_BG_IOU


# --- boxes and masks ------------------------------------------------------------------------


@pytest.mark.parametrize("sequence", SEQUENCES)
def test_ground_truth_box_selects_the_object(scene, sequence):
    s = scene(sequence)
    [chosen] = select(Prompt(boxes=[_box_of(s.gt)]), s.instances)
    # On every sequence the box picks the instance closest to the ground truth (measured on all six),
    # although it ranks by IoU with the box region, not with the object.
    assert chosen.track_row == s.best
    if sequence in WHOLE:
        assert s.ious[chosen.track_row] >= MIN_IOU
    # Where the segmenter cut the object in parts (bmx-trees: the rider and the bike), the parts
    # inside the box join the target, and the union is closer to the object than any one part.
    if len(chosen.rows) > 1:
        assert _iou(_selected_mask(s, chosen.rows), s.gt) > s.ious[s.best] + 0.05


@pytest.mark.parametrize("sequence", SEQUENCES)
def test_ground_truth_mask_selects_the_highest_iou_instance(scene, sequence):
    s = scene(sequence)
    [chosen] = select(Prompt(mask=s.gt), s.instances)
    brute_force = int(np.argmax(s.ious))  # IoU with the ground truth over every instance
    assert chosen.rows == (brute_force,) and chosen.track_row == brute_force
    assert s.ious[brute_force] > 0.5  # the object is there to be chosen (lowest measured: 0.527)


# --- combinations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sequence", "expect_next"),
    [
        # four cars: without the one the box picks, a neighbouring car that reaches into the box
        # (box-region IoU 0.008) is the best left
        ("car-roundabout", True),
        # one instance (the dog): nothing is left
        ("dog", False),
    ],
)
def test_box_with_background_point_on_its_pick(scene, sequence, expect_next):
    s = scene(sequence)
    box = _box_of(s.gt)
    [alone] = select(Prompt(boxes=[box]), s.instances)
    picked = alone.track_row
    bg = _deepest(s.masks[picked] & ~np.delete(s.masks, picked, axis=0).any(axis=0))
    region = _box_region(box, s.gt.shape)
    box_iou = np.array([_iou(m, region) for m in s.masks])
    box_iou[picked] = 0.0
    prompt = Prompt(boxes=[box], points=[bg], labels=[0])
    if expect_next:
        assert box_iou.max() > 0
        [chosen] = select(prompt, s.instances)
        assert chosen.rows == (int(np.argmax(box_iou)),)
        assert chosen.track_row != picked
    else:
        assert box_iou.max() == 0
        with pytest.raises(PromptError, match="no instance overlaps"):
            select(prompt, s.instances)


class FixedScorer:
    """A TextScorer whose similarities the test sets per row; it records the rows it was asked about."""

    def __init__(self, similarity: dict[int, float]) -> None:
        self.similarity = similarity
        self.calls: list[list[int]] = []

    def similarities(self, image, instances, rows, text):
        self.calls.append([int(r) for r in rows])
        return np.array([self.similarity[int(r)] for r in rows], np.float32)


def _mostly_inside(instances: Instances, box: list[float]) -> set[int]:
    """Rows with at least INSIDE_BOX_SHARE of their box's area inside `box` (computed here, apart from prompts.py)."""
    inside = set()
    for row, (x1, y1, x2, y2) in enumerate(instances.boxes.astype(np.float64)):
        w = max(0.0, min(x2, box[2]) - max(x1, box[0]))
        h = max(0.0, min(y2, box[3]) - max(y1, box[1]))
        if w * h >= INSIDE_BOX_SHARE * (x2 - x1) * (y2 - y1):
            inside.add(row)
    return inside


def test_text_in_a_box_scores_only_instances_mostly_inside_it(scene):
    # breakdance frame 0: 17 people; the dancer's box holds 3 of them mostly (shares measured
    # 0.99, 0.76, 1.0) and overlaps 3 more that lie mostly outside it (0.49, 0.38, 0.37)
    s = scene("breakdance")
    box = _box_of(s.gt)
    inside = _mostly_inside(s.instances, box)
    b = s.instances.boxes
    touching = (b[:, 0] < box[2]) & (b[:, 2] > box[0]) & (b[:, 1] < box[3]) & (b[:, 3] > box[1])
    overlapping = set(np.flatnonzero(touching).tolist())
    assert len(inside) >= 2 and overlapping - inside, "the frame no longer tests the restriction"

    # Every row outside the box would beat every row inside; inside, a row that is neither the
    # first nor the best scored wins.
    ranked_inside = sorted(inside, key=lambda r: -s.instances.scores[r])
    winner = ranked_inside[-1]
    similarity = {r: 0.9 for r in range(len(s.instances))}
    similarity.update({r: 0.2 for r in inside})
    similarity[winner] = 0.3
    scorer = FixedScorer(similarity)
    [chosen] = select(Prompt(text="a dancer", boxes=[box]), s.instances, s.image, scorer)
    assert len(scorer.calls) == 1 and sorted(scorer.calls[0]) == sorted(inside)
    assert chosen.rows == (winner,)

    # top_k ranks within the box too: the winner first, then another inside row
    two = Prompt(text="a dancer", boxes=[box], top_k=2)
    [first, second] = select(two, s.instances, s.image, FixedScorer(similarity))
    assert first.rows == (winner,) and second.track_row in inside - {winner}


# --- several boxes → several targets, through a real pipeline -------------------------------

# Clip, frames, how many targets (the top-scoring people whose boxes do not overlap on frame 0), and
# floors from the measured run (40 frames each):
# - vtest.avi (10 fps, pedestrians ~30 px wide): found 10, 19 and 19 of 40 frames. The default
#   IoUTracker loses them: a pedestrian walking ~7 px/frame changes box enough that consecutive
#   boxes fall under min_iou 0.3 (frame 3: 0.27), and a duplicate detection on frame 18 starts a
#   non-target track that takes the target's person on frame 19. A lost target keeps its last
#   box and re-attaches to whoever later walks into it. Their masks never overlap (0.0).
# - bedroom.mp4 (30 fps, two children): found 40 and 24 of 40; the second child is hidden behind
#   the first from frame 25 on. While they are close their masks overlap up to IoU 0.162.
# Per-frame motion measured: centre moves at most 0.48 (vtest) / 0.32 (bedroom) box widths.
CLIPS = {
    # vtest: two of the pedestrians cross around frame 26, where their masks touch (IoU 0.10)
    "vtest.avi": dict(frames=40, targets=3, min_found=0.2, max_mask_iou=0.25),
    "bedroom.mp4": dict(frames=40, targets=2, min_found=0.5, max_mask_iou=0.25),
}
MAX_MOVE = 1.0  # box sizes (the larger side) per frame


def _separate_people(instances: Instances, count: int) -> list[int]:
    """The `count` highest-scoring people whose boxes overlap none of the others chosen."""
    chosen: list[int] = []
    for row in np.argsort(-instances.scores, kind="stable"):
        if instances.class_ids[row] != PERSON:
            continue
        x1, y1, x2, y2 = instances.boxes[row]
        if all(not (x1 < b[2] and b[0] < x2 and y1 < b[3] and b[1] < y2) for b in instances.boxes[chosen]):
            chosen.append(int(row))
    return chosen[:count]


@dataclass
class Run:
    clip: str
    rows: list[int]  # frame-0 instance rows whose boxes were the prompt
    results: list[FrameResult]
    jsonl: list[dict]

    @property
    def settings(self) -> dict:
        return CLIPS[self.clip]


@pytest.fixture(scope="module", params=list(CLIPS))
def multi_run(request, segmenter, videos, tmp_path_factory):
    clip, settings = request.param, CLIPS[request.param]
    first_source = FileSource(videos / clip)
    try:
        first = next(iter(first_source.frames()))
    finally:
        first_source.close()
    [instances] = segmenter.segment([first])
    rows = _separate_people(instances, settings["targets"])
    assert len(rows) == settings["targets"], f"{clip}: only {len(rows)} separate people on frame 0"

    results: list[FrameResult] = []
    path = tmp_path_factory.mktemp("multi") / "tracks.jsonl"

    def collect(result: FrameResult) -> None:
        results.append(result)
        if result.frame.index >= settings["frames"] - 1:
            pipeline.stop()  # the run ends after this frame, every sink having had it

    pipeline = Pipeline(
        FileSource(videos / clip),
        segmenter,
        prompt=Prompt(boxes=instances.boxes[rows]),
        sinks=[collect, JsonlSink(path)],
    )
    pipeline.run()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return Run(clip, rows, results, lines)


def _union_box(boxes: np.ndarray) -> tuple[float, float, float, float]:
    return (float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()), float(boxes[:, 3].max()))


def _centre(box) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def test_each_box_becomes_its_own_target(multi_run):
    first = multi_run.results[0]
    assert first.frame.index == 0
    ids = {t.id for t in first.targets}
    assert len(ids) == len(multi_run.rows)
    assert set(first.target_rows) == ids
    # each box selected the instance it was drawn from, and no other
    assert sorted(r for rows in first.target_rows.values() for r in rows) == sorted(multi_run.rows)


def test_targets_never_share_an_instance_or_swap(multi_run):
    settings = multi_run.settings
    results = multi_run.results
    assert [r.frame.index for r in results] == list(range(settings["frames"]))
    initial = set(results[0].target_rows)
    previous: dict[int, tuple[int, tuple]] = {}  # id → (frame index, box) where last found
    for result in results:
        found = result.target_rows
        assert set(found) <= initial, f"frame {result.frame.index}: new target ids {set(found) - initial}"
        rows = [r for rs in found.values() for r in rs]
        assert len(rows) == len(set(rows)), f"frame {result.frame.index}: targets share an instance"
        masks = {tid: result.instances.masks(list(rs)).any(axis=0) for tid, rs in found.items()}
        for a, b in combinations(masks, 2):
            overlap = _iou(masks[a], masks[b])
            assert overlap < settings["max_mask_iou"], (
                f"frame {result.frame.index}: {a} and {b} overlap ({overlap:.3f})"
            )
        for track in result.targets:  # the mask a target reports comes from the instance it matched
            if track.id in found:
                assert track.row in found[track.id]
        # motion is judged on the rows each target reports (what a sink draws), not the tracker's box
        boxes = {tid: _union_box(result.instances.boxes[list(rs)]) for tid, rs in found.items()}
        for tid, box in boxes.items():
            if tid not in previous:
                continue
            index, last = previous[tid]
            own = np.linalg.norm(_centre(box) - _centre(last))
            # from one frame to the next a target is always nearer its own last box than any other
            # target's (a swap would show here); after a gap the tracker may re-acquire it where it
            # went (motion, colour), so only consecutive frames are compared
            for other, (other_index, other_box) in previous.items():
                if other != tid and index == other_index == result.frame.index - 1:
                    to_other = np.linalg.norm(_centre(box) - _centre(other_box))
                    assert own < to_other, f"frame {result.frame.index}: target {tid} is nearer target {other}'s box"
            if index == result.frame.index - 1:  # the step from one frame to the next is small
                # (against the box's larger side: when a pedestrian merges with a neighbour for a
                # frame, the segmenter's one instance for both moves the centre by up to half a height)
                size = max(last[2] - last[0], last[3] - last[1])
                assert own < MAX_MOVE * size, f"frame {result.frame.index}: target {tid} moved {own:.0f} px"
        previous.update({tid: (result.frame.index, box) for tid, box in boxes.items()})


def test_each_target_is_found_in_enough_frames(multi_run):
    settings = multi_run.settings
    results = multi_run.results
    for tid in results[0].target_rows:
        found = sum(tid in r.target_rows for r in results) / len(results)
        assert found >= settings["min_found"], f"target {tid} found in {found:.0%} of frames"


def test_jsonl_lists_each_target_with_its_own_mask(multi_run):
    assert len(multi_run.jsonl) == len(multi_run.results)  # the sink saw exactly the frames we did
    first, line = multi_run.results[0], multi_run.jsonl[0]
    assert line["frame"] == 0
    entries = {e["id"]: e for e in line["tracks"] if e["target"]}
    assert set(entries) == {t.id for t in first.targets}
    decoded = {}
    for track in first.targets:
        entry = entries[track.id]
        assert entry["state"] == "tracked" and "mask" in entry
        decoded[track.id] = decode_rle(entry["mask"])
        assert np.array_equal(decoded[track.id], first.mask_of(track))
    for a, b in combinations(decoded, 2):
        assert _iou(decoded[a], decoded[b]) < 0.1  # each its own mask (frame 0 measured 0.0)
    # non-targets are listed without masks under the default mask policy
    assert all("mask" not in e for e in line["tracks"] if not e["target"])
