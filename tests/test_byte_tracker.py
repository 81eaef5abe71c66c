"""ByteTracker on constructed sequences (issue #6): the target keeps its id through everything below.

Fast motion, an occlusion, a split into parts and a merge with a neighbour, and low-score frames.

Every frame is synthetic: a grey BGR image with coloured rectangles painted on it, one DenseMasks
mask per instance, boxes and scores chosen by the test. Where a feature is what makes the
difference, the same sequence is run through the plain IoUTracker (or a ByteTracker with that
feature switched off) and shown to fail there. The Kalman filter and the settings checks are
tested on their own at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from fastsam_stream.core import DenseMasks, Instances, TargetChange, TrackState
from fastsam_stream.trackers import ByteTracker, ByteTrackerSettings, IoUTracker, box_iou
from fastsam_stream.trackers.bytetrack.tracker import DUPLICATE_IOU, STOP_AFTER
from fastsam_stream.trackers.kalman import BoxKalman

SHAPE = (240, 320)  # height, width
BACKGROUND = 90
RED, BLUE, GREEN = (40, 40, 220), (220, 60, 40), (40, 200, 40)  # BGR: hues far apart
SIDE = 40  # default object size
DIAGONAL = float(np.hypot(SIDE, SIDE))
DEFAULTS = ByteTrackerSettings()


# ------------------------------------------------------------------------------------ helpers


@dataclass(frozen=True)
class Blob:
    """One instance: painted rectangles (box, colour) whose union is its mask and box."""

    pieces: tuple[tuple[tuple[float, float, float, float], tuple[int, int, int]], ...]
    score: float = 0.9

    @property
    def box(self) -> tuple[float, float, float, float]:
        boxes = np.array([box for box, _ in self.pieces])
        return (*boxes[:, :2].min(axis=0), *boxes[:, 2:].max(axis=0))


def blob(box, colour=RED, score=0.9) -> Blob:
    return Blob(((tuple(float(v) for v in box), colour),), score)


def merged(*blobs: Blob, score: float = 0.9) -> Blob:
    """One instance covering several objects (the segmenter merged them): each keeps its colour."""
    return Blob(tuple(p for b in blobs for p in b.pieces), score)


def box_at(x: float, y: float, w: float = SIDE, h: float = SIDE) -> tuple[float, float, float, float]:
    return (x, y, x + w, y + h)


def scene(*blobs: Blob, shape=SHAPE) -> tuple[Instances, np.ndarray]:
    """The frame showing `blobs` (painted in order) and its Instances, row i = blobs[i]."""
    image = np.full((*shape, 3), BACKGROUND, np.uint8)
    masks = np.zeros((len(blobs), *shape), bool)
    for i, b in enumerate(blobs):
        for (x1, y1, x2, y2), colour in b.pieces:
            rows, cols = slice(int(round(y1)), int(round(y2))), slice(int(round(x1)), int(round(x2)))
            image[rows, cols] = colour
            masks[i, rows, cols] = True
    boxes = np.array([b.box for b in blobs], np.float32).reshape(-1, 4)
    scores = np.array([b.score for b in blobs], np.float32)
    return Instances(boxes, scores, shape, masks=DenseMasks(masks)), image


def step(tracker, *blobs: Blob, target: int | tuple[int, ...] | None = None, image: bool = True, shape=SHAPE):
    """Feed one frame; `target` row(s) become the only targets; `image=False` hides the pixels."""
    instances, picture = scene(*blobs, shape=shape)
    change = None if target is None else TargetChange.only(*np.atleast_1d(target).tolist())
    return tracker.update(instances, targets=change, image=picture if image else None)


def by_id(tracks):
    ids = [t.id for t in tracks]
    assert len(ids) == len(set(ids)), f"a track id is reported twice: {ids}"
    return {t.id: t for t in tracks}


def the_target(tracks):
    [target] = [t for t in tracks if t.is_target]
    return target


def holder_of(tracks, row):
    """The track that matched `row` this frame (None when none did)."""
    held = [t for t in tracks if t.row == row]
    assert len(held) <= 1, f"row {row} is held by several tracks: {held}"
    return held[0] if held else None


def iou(a, b) -> float:
    return float(box_iou(np.array(a), np.array(b))[0, 0])


# ------------------------------------------------------------------------- 1. Kalman motion


def fast_path() -> list[float]:
    """The x of an object that speeds up (10 px/frame for 3 frames) then runs at 25 px/frame."""
    xs = [20.0]
    for speed in [10] * 3 + [25] * 9:
        xs.append(xs[-1] + speed)
    return xs


def test_fast_path_is_beyond_plain_iou_matching():
    xs = fast_path()
    fast = [iou(box_at(a, 100), box_at(b, 100)) for a, b in zip(xs[3:], xs[4:], strict=False)]
    assert max(fast) < DEFAULTS.min_iou


@pytest.mark.parametrize("as_target", [True, False])
def test_fast_object_keeps_its_id_by_motion_prediction(as_target):
    # image=False: no colour model, so only the Kalman prediction can bridge the 25 px steps.
    tracker = ByteTracker()
    xs = fast_path()
    [first] = step(tracker, blob(box_at(xs[0], 100)), target=0 if as_target else None, image=False)
    for x in xs[1:]:
        [track] = step(tracker, blob(box_at(x, 100)), image=False)
        assert track.id == first.id, f"new id at x={x}"
        assert track.state is TrackState.TRACKED and track.row == 0
        assert track.is_target is as_target
        assert track.box == pytest.approx(box_at(x, 100))


def test_iou_tracker_loses_the_same_fast_object():
    tracker = IoUTracker()
    xs = fast_path()
    [first] = step(tracker, blob(box_at(xs[0], 100)), target=0)
    ids = [holder_of(step(tracker, blob(box_at(x, 100))), 0).id for x in xs[1:]]
    assert ids[:3] == [first.id] * 3  # the slow start is fine ...
    assert first.id not in ids[3:]  # ... but at 25 px/frame every frame is a new id
    assert len(set(ids[3:])) == len(ids[3:])


# ------------------------------------------------------------------------------ 2. occlusion


def occlusion_run(tracker, hidden: int, speed: float, image: bool = True, distractor=None, warmup: int = 6):
    """A red target moving right at `speed`, hidden for `hidden` frames, then back where it would be.

    `distractor(x)` (optional) gives a blue blob to show on every frame from the second hidden one
    on, for the target's true x. Returns (target id, frames while hidden, frames after, last box seen).
    """
    x = 20.0
    first = step(tracker, blob(box_at(x, 100)), target=0, image=image)
    target_id = the_target(first).id
    for _ in range(warmup - 1):
        x += speed
        step(tracker, blob(box_at(x, 100)), image=image)
    last_seen = box_at(x, 100)
    during, after = [], []
    for k in range(hidden):
        x += speed
        extra = [distractor(x)] if distractor is not None and k >= 1 else []
        during.append(step(tracker, *extra, image=image))
    for _ in range(4):
        x += speed
        extra = [distractor(x)] if distractor is not None else []
        after.append((step(tracker, blob(box_at(x, 100)), *extra, image=image), box_at(x, 100)))
    return target_id, during, after, last_seen


def test_occluded_target_is_lost_while_hidden_and_gets_its_id_back():
    hidden = 8
    target_id, during, after, last_seen = occlusion_run(ByteTracker(), hidden=hidden, speed=6)
    xs = []
    for k, tracks in enumerate(during, start=1):
        [target] = tracks
        assert target.id == target_id and target.is_target
        assert target.state is TrackState.LOST and target.row is None and target.parts == ()
        assert target.frames_lost == k
        xs.append(target.box[0])
    # The predicted box moves on with the target's motion while the velocity is trusted ...
    assert xs[0] > last_seen[0]
    assert all(b > a for a, b in zip(xs[:STOP_AFTER], xs[1 : STOP_AFTER + 1], strict=True))
    # ... and holds still once it is forgotten, instead of running off.
    assert xs[STOP_AFTER + 1 :] == pytest.approx([xs[STOP_AFTER]] * (hidden - STOP_AFTER - 1))
    for tracks, truth in after:
        [target] = tracks
        assert target.id == target_id
        assert target.state is TrackState.TRACKED and target.row == 0 and target.frames_lost == 0
        assert target.box == pytest.approx(truth)


def test_iou_tracker_gives_the_occluded_target_a_new_id():
    target_id, _, after, _ = occlusion_run(IoUTracker(), hidden=8, speed=6)
    for tracks, _ in after:
        assert holder_of(tracks, 0).id != target_id
        assert by_id(tracks)[target_id].state is TrackState.LOST


def test_short_occlusion_is_bridged_by_motion_alone():
    # No image: no colour to re-acquire by. The target comes back 50 px from where it was last
    # seen (no overlap with that box) but where its velocity puts it.
    target_id, during, after, last_seen = occlusion_run(ByteTracker(), hidden=4, speed=10, image=False)
    assert iou(after[0][1], last_seen) == 0.0
    assert all(the_target(tracks).state is TrackState.LOST for tracks in during)
    for tracks, _ in after:
        assert holder_of(tracks, 0).id == target_id
        assert len(tracks) == 1  # no new track was started for it

    iou_id, _, iou_after, _ = occlusion_run(IoUTracker(), hidden=4, speed=10)
    assert holder_of(iou_after[0][0], 0).id != iou_id


def test_occluded_target_does_not_jump_to_a_distractor_near_its_prediction():
    # A blue object running alongside, overlapping the predicted box a little (IoU under min_iou)
    # and well inside the colour search radius, shows up while the target is hidden.
    def distractor(x):
        return blob(box_at(x + 4, 130), BLUE)

    assert 0 < iou(box_at(60, 100), distractor(60).box) < DEFAULTS.min_iou
    target_id, during, after, _ = occlusion_run(ByteTracker(), hidden=8, speed=6, distractor=distractor)
    distractor_ids = set()
    for k, tracks in enumerate(during):
        target = by_id(tracks)[target_id]
        assert target.state is TrackState.LOST and target.row is None
        if k >= 1:
            other = holder_of(tracks, 0)
            assert other is not None and not other.is_target
            distractor_ids.add(other.id)
    assert len(distractor_ids) == 1  # the distractor has a track of its own, the same all along
    for tracks, _ in after:
        target = by_id(tracks)[target_id]
        assert target.state is TrackState.TRACKED and target.row == 0  # row 0: red
        assert holder_of(tracks, 1).id in distractor_ids


# ------------------------------------------------------------------- 3. re-acquisition by colour


def lose_stationary_target(tracker, box, lost: int, shape=SHAPE) -> int:
    """A red target seen still at `box` for 6 frames (its colour is learnt), then `lost` empty frames."""
    target_id = the_target(step(tracker, blob(box), target=0, shape=shape)).id
    for _ in range(5):
        step(tracker, blob(box), shape=shape)
    for _ in range(lost):
        assert the_target(step(tracker, shape=shape)).state is TrackState.LOST
    return target_id


@pytest.mark.parametrize("red_side", [+1, -1])
@pytest.mark.parametrize("red_first", [True, False])
def test_lost_target_reacquires_its_own_colour_away_from_its_prediction(red_side, red_first):
    tracker = ByteTracker()
    home = box_at(140, 100)
    target_id = lose_stationary_target(tracker, home, lost=3)
    # Back 60 px to one side (no overlap with its predicted box), a blue twin 60 px to the other:
    # position cannot tell them apart, colour can.
    red = blob(box_at(140 + 60 * red_side, 100))
    blue = blob(box_at(140 - 60 * red_side, 100), BLUE)
    assert iou(red.box, home) == 0.0 and iou(blue.box, home) == 0.0
    blobs = (red, blue) if red_first else (blue, red)
    tracks = by_id(step(tracker, *blobs))
    target = tracks[target_id]
    assert target.state is TrackState.TRACKED and target.is_target
    assert target.row == blobs.index(red)
    assert target.box == pytest.approx(red.box)
    other = holder_of(tracks.values(), blobs.index(blue))
    assert other is not None and other.id != target_id and not other.is_target
    # and it stays with it
    tracks = by_id(step(tracker, *blobs))
    assert tracks[target_id].row == blobs.index(red)


def test_reacquire_off_leaves_the_target_lost():
    tracker = ByteTracker(ByteTrackerSettings(reacquire=False))
    target_id = lose_stationary_target(tracker, box_at(140, 100), lost=3)
    tracks = by_id(step(tracker, blob(box_at(200, 100)), blob(box_at(80, 100), BLUE)))
    assert tracks[target_id].state is TrackState.LOST
    assert holder_of(tracks.values(), 0).id != target_id
    assert len(tracks) == 3  # both instances started tracks of their own


BIG = (480, 640)


@pytest.mark.parametrize(
    "lost, distance, taken",
    [
        (1, 1.8, False),  # radius 1.1 diagonals
        (2, 1.1, True),  # radius 1.2
        (20, 2.6, True),  # the radius has grown to its maximum, 3
        (30, 3.5, False),  # beyond max_search_radius however long it is lost
    ],
)
def test_reacquisition_search_radius_grows_up_to_its_maximum(lost, distance, taken):
    assert DEFAULTS.search_radius == 1.0 and DEFAULTS.search_growth == 0.1 and DEFAULTS.max_search_radius == 3.0
    tracker = ByteTracker()
    home = box_at(300, 220)
    target_id = lose_stationary_target(tracker, home, lost=lost, shape=BIG)
    back = box_at(300 + distance * DIAGONAL, 220)
    tracks = by_id(step(tracker, blob(back), shape=BIG))
    if taken:
        assert tracks[target_id].state is TrackState.TRACKED and tracks[target_id].row == 0
        assert len(tracks) == 1
    else:
        assert tracks[target_id].state is TrackState.LOST
        assert holder_of(tracks.values(), 0).id != target_id


def test_reacquisition_wants_a_similar_size():
    tracker = ByteTracker()
    target_id = lose_stationary_target(tracker, box_at(140, 100), lost=3)
    big = blob(box_at(180, 60, 2.5 * SIDE, 2.5 * SIDE))  # its colour, but 6.25 times its area
    tracks = by_id(step(tracker, big))
    assert tracks[target_id].state is TrackState.LOST
    assert holder_of(tracks.values(), 0).id != target_id


def test_reacquisition_needs_the_image():
    tracker = ByteTracker()
    target_id = lose_stationary_target(tracker, box_at(140, 100), lost=3)
    tracks = by_id(step(tracker, blob(box_at(200, 100)), image=False))
    assert tracks[target_id].state is TrackState.LOST


# ---------------------------------------------------------------------------- 4. split / merge


def halves(box):
    x1, y1, x2, y2 = box
    mid = (y1 + y2) / 2
    return [(x1, y1, x2, mid), (x1, mid, x2, y2)]


def quarters(box):
    x1, y1, x2, y2 = box
    mx, my = (x1 + x2) / 2, (y1 + y2) / 2
    return [(x1, y1, mx, my), (mx, y1, x2, my), (x1, my, mx, y2), (mx, my, x2, y2)]


def thirds(box):
    x1, y1, x2, y2 = box
    w = (x2 - x1) / 3
    return [(x1 + i * w, y1, x1 + (i + 1) * w, y2) for i in range(3)]


def split_run(tracker, split, split_frames=5, merged_frames=3):
    """A 60×80 red target drifting right: whole for 3 frames, cut into `split` pieces, whole again.

    Returns (target id, [(tracks, whole box)] while split, [(tracks, whole box)] after).
    """
    x, during, after = 60.0, [], []
    target_id = the_target(step(tracker, blob(box_at(x, 80, 60, 80)), target=0)).id
    for _ in range(2):
        x += 3
        step(tracker, blob(box_at(x, 80, 60, 80)))
    for _ in range(split_frames):
        x += 3
        whole = box_at(x, 80, 60, 80)
        during.append((step(tracker, *[blob(p) for p in split(whole)]), whole))
    for _ in range(merged_frames):
        x += 3
        whole = box_at(x, 80, 60, 80)
        after.append((step(tracker, blob(whole)), whole))
    return target_id, during, after


def test_target_split_in_halves_is_followed_as_their_union():
    target_id, during, after = split_run(ByteTracker(), halves)
    for tracks, whole in during:
        assert len(tracks) == 1, "a half started a track of its own"
        [target] = tracks
        assert target.id == target_id and target.state is TrackState.TRACKED
        assert target.row is not None and len(target.parts) == 1
        assert {target.row, *target.parts} == {0, 1}
        assert target.box == pytest.approx(whole)  # the box of the union, not of one half
    for tracks, whole in after:
        [target] = tracks
        assert target.id == target_id and target.row == 0 and target.parts == ()
        assert target.box == pytest.approx(whole)


@pytest.mark.parametrize("other", ["merge_parts=False", "IoUTracker"])
def test_without_parts_the_other_half_becomes_a_track(other):
    tracker = ByteTracker(ByteTrackerSettings(merge_parts=False)) if other != "IoUTracker" else IoUTracker()
    target_id, during, _ = split_run(tracker, halves)
    for tracks, whole in during:
        target = by_id(tracks)[target_id]
        assert target.parts == ()
        assert iou(target.box, whole) == pytest.approx(0.5, abs=0.05)  # one half only
        assert len(tracks) == 2  # the other half is followed as a new object


def test_target_split_in_quarters_keeps_its_id():
    # Each quarter alone has IoU 0.25 < min_iou with the target's box: only their union matches.
    assert iou(quarters(box_at(0, 0, 60, 80))[0], box_at(0, 0, 60, 80)) < DEFAULTS.min_iou
    target_id, during, after = split_run(ByteTracker(), quarters)
    for tracks, whole in during:
        target = by_id(tracks)[target_id]
        assert target.state is TrackState.TRACKED and target.is_target
        assert target.box == pytest.approx(whole)
    for tracks, _ in after:
        target = by_id(tracks)[target_id]
        assert target.state is TrackState.TRACKED and target.row == 0 and target.parts == ()

    iou_id, iou_during, _ = split_run(IoUTracker(), quarters)
    assert all(by_id(tracks)[iou_id].state is TrackState.LOST for tracks, _ in iou_during)


@pytest.mark.parametrize("split", [thirds, quarters])
def test_every_piece_of_a_split_target_is_its_part(split):
    target_id, during, _ = split_run(ByteTracker(), split)
    for tracks, _ in during:
        target = by_id(tracks)[target_id]
        assert {target.row, *target.parts} == set(range(len(split(box_at(0, 0, 60, 80)))))
        assert len(tracks) == 1, f"pieces became tracks: {[t.id for t in tracks if t.id != target_id]}"


def neighbour_run(tracker, merged_frames=3, apart_frames=4):
    """Red target A and a blue neighbour B side by side, merged by the segmenter, then apart again.

    The segmenter merges them into one instance for `merged_frames` frames, then sees them apart
    again (A row 0, B row 1).

    Returns (target id, neighbour id, tracks while merged, tracks after).
    """
    a, b = blob(box_at(60, 80, 60, 80)), blob(box_at(130, 80, 60, 80), BLUE)
    first = step(tracker, a, b, target=0)
    target_id, neighbour_id = holder_of(first, 0).id, holder_of(first, 1).id
    for _ in range(3):
        step(tracker, a, b)
    during = [step(tracker, merged(a, b)) for _ in range(merged_frames)]
    after = [step(tracker, a, b) for _ in range(apart_frames)]
    return target_id, neighbour_id, during, after


def test_target_keeps_its_id_through_a_merge_with_a_neighbour_and_back():
    target_id, neighbour_id, during, after = neighbour_run(ByteTracker())
    for tracks in during:
        tracks = by_id(tracks)
        assert set(tracks) == {target_id, neighbour_id}  # no new track
        assert tracks[target_id].state is TrackState.TRACKED and tracks[target_id].row == 0
        assert tracks[neighbour_id].state is TrackState.LOST  # the target had priority on the merged instance
    for tracks in after:
        tracks = by_id(tracks)
        assert set(tracks) == {target_id, neighbour_id}
        target = tracks[target_id]
        assert target.is_target and target.state is TrackState.TRACKED
        assert 0 in {target.row, *target.parts}  # the target's own instance is (in) it


def test_target_lets_go_of_its_neighbour_after_they_come_apart():
    target_id, neighbour_id, _, after = neighbour_run(ByteTracker())
    tracks = by_id(after[-1])
    assert tracks[target_id].row == 0 and tracks[target_id].parts == ()
    assert tracks[neighbour_id].state is TrackState.TRACKED and tracks[neighbour_id].row == 1


# ------------------------------------------------------------------- 5. ByteTrack's second round


def blurred_run(settings: ByteTrackerSettings, as_target: bool = True, low: float = 0.2, image: bool = True):
    """A red object moving 4 px/frame: confident for 3 frames, blurred for 5, then confident again.

    Blurred: score `low`, box stretched sideways so that it is no target's part, and a low-score
    green blob far away. Returns (id, blurred, back).
    """
    tracker = ByteTracker(settings)
    x = 60.0
    first_id = step(tracker, blob(box_at(x, 80)), target=0 if as_target else None, image=image)[0].id
    for _ in range(2):
        x += 4
        step(tracker, blob(box_at(x, 80)), image=image)
    blurred = []
    for _ in range(5):
        x += 4
        far = blob(box_at(250, 180), GREEN, score=low)
        smeared = blob(box_at(x - 7, 80, SIDE + 14, SIDE), score=low)  # blur stretches it along its motion
        blurred.append(step(tracker, smeared, far, image=image))
    x += 4
    back = step(tracker, blob(box_at(x, 80)), image=image)
    return first_id, blurred, back


@pytest.mark.parametrize("as_target", [True, False])
def test_low_score_object_stays_tracked_through_the_second_round(as_target):
    # No image: a target cannot re-acquire by colour, so only the second round can match.
    low = 0.2
    assert DEFAULTS.low_score <= low < DEFAULTS.high_score
    track_id, blurred, back = blurred_run(DEFAULTS, as_target, low, image=False)
    for tracks in blurred:
        assert len(tracks) == 1, "a low-score instance started a track"
        [track] = tracks
        assert track.id == track_id and track.state is TrackState.TRACKED and track.row == 0
        assert track.score == pytest.approx(low)
    [track] = back
    assert track.id == track_id and track.state is TrackState.TRACKED and track.score == pytest.approx(0.9)


@pytest.mark.parametrize("as_target", [True, False])
def test_without_a_second_round_the_low_score_object_is_lost(as_target):
    # low_score == high_score: nothing is low-score, so no second round; and with the image
    # given, a target does not re-acquire by colour an instance under low_score either.
    track_id, blurred, back = blurred_run(ByteTrackerSettings(low_score=0.4, high_score=0.4), as_target, image=True)
    for tracks in blurred:
        [track] = tracks
        assert track.id == track_id and track.state is TrackState.LOST
    assert holder_of(back, 0).id == track_id  # it recovers by IoU once confident again


def test_low_score_instances_never_start_tracks():
    tracker = ByteTracker()
    for _ in range(5):
        assert step(tracker, blob(box_at(100, 100), score=0.2), blob(box_at(200, 50), GREEN, score=0.39)) == ()
    [track] = step(tracker, blob(box_at(100, 100), score=0.4))  # high_score is inclusive
    assert track.state is TrackState.TRACKED


def test_instances_under_low_score_are_ignored_even_next_to_a_track():
    tracker = ByteTracker()
    [first] = step(tracker, blob(box_at(100, 100)), target=0)
    [track] = step(tracker, blob(box_at(100, 100), score=0.05))
    assert track.id == first.id and track.state is TrackState.LOST


def test_second_round_is_stricter_and_only_for_tracks_seen_last_frame():
    # Non-target, no image: nothing but the two rounds can match.
    assert DEFAULTS.min_iou < 0.4 < DEFAULTS.low_min_iou
    moved = box_at(100 + 17, 100)  # IoU 23/57 ≈ 0.40 with the track's box
    assert iou(moved, box_at(100, 100)) == pytest.approx(0.40, abs=0.01)

    confident = ByteTracker()
    [first] = step(confident, blob(box_at(100, 100)), image=False)
    [track] = step(confident, blob(moved), image=False)
    assert track.id == first.id and track.state is TrackState.TRACKED

    blurred = ByteTracker()
    [first] = step(blurred, blob(box_at(100, 100)), image=False)
    [track] = step(blurred, blob(moved, score=0.2), image=False)
    assert track.id == first.id and track.state is TrackState.LOST

    gap = ByteTracker()
    [first] = step(gap, blob(box_at(100, 100)), image=False)
    step(gap, image=False)  # missed one frame: no longer "seen last frame"
    [track] = step(gap, blob(box_at(100, 100), score=0.2), image=False)
    assert track.id == first.id and track.state is TrackState.LOST


# -------------------------------------------------------------------------------- 6. duplicates


def test_duplicate_box_neither_starts_a_track_nor_steals_the_target():
    a = blob(box_at(100, 100), score=0.8)
    dup = blob(box_at(105, 103), score=0.85)  # the NMS leftover: a slightly shifted copy
    assert iou(a.box, dup.box) >= DUPLICATE_IOU
    tracker = ByteTracker()
    tracks = step(tracker, a, dup, target=0)
    assert len(tracks) == 1
    target_id = the_target(tracks).id
    for _ in range(3):
        tracks = step(tracker, blob(dup.box, score=0.95), a)  # the duplicate first, and more confident
        assert len(tracks) == 1
        target = the_target(tracks)
        assert target.id == target_id and target.row == 1 and target.parts == ()


def test_overlapping_but_distinct_box_does_start_a_track():
    a, near = blob(box_at(100, 100)), blob(box_at(117, 100), BLUE)
    assert iou(a.box, near.box) < DUPLICATE_IOU
    tracks = step(ByteTracker(), a, near, target=0)
    assert len(tracks) == 2 and holder_of(tracks, 1) is not None


# ---------------------------------------------------------------------------- 7. target priority


@pytest.mark.parametrize("kind", [ByteTracker, IoUTracker])
def test_target_has_priority_over_an_overlapping_non_target(kind):
    # The red target moves 15 px right over a blue non-target that it now hides completely.
    # The only instance overlaps the non-target's box more (0.85) than the target's (0.6).
    a, b = box_at(100, 100, 60, 60), box_at(120, 100, 60, 60)
    now = box_at(115, 100, 60, 60)
    assert iou(now, b) > iou(now, a) > DEFAULTS.min_iou
    tracker = kind()
    first = step(tracker, blob(a), blob(b, BLUE), target=0)
    target_id, other_id = holder_of(first, 0).id, holder_of(first, 1).id
    tracks = by_id(step(tracker, blob(now)))
    if kind is ByteTracker:
        assert tracks[target_id].state is TrackState.TRACKED and tracks[target_id].row == 0
        assert tracks[other_id].state is TrackState.LOST
    else:  # the plain tracker maximises total IoU: the non-target takes it
        assert tracks[target_id].state is TrackState.LOST
        assert tracks[other_id].row == 0


def crossing_run(tracker):
    """Red and blue targets crossing at 20 px/frame, 10 px apart vertically; rows alternate."""
    swaps = 0
    ids = None
    for t in range(13):
        red, blue = blob(box_at(20 + 20 * t, 100)), blob(box_at(280 - 20 * t, 110), BLUE)
        rows = (red, blue) if t % 2 == 0 else (blue, red)
        tracks = step(tracker, *rows, target=(0, 1) if t == 0 else None)
        assert sum(t_.is_target for t_ in tracks) == 2
        now = (holder_of(tracks, rows.index(red)).id, holder_of(tracks, rows.index(blue)).id)
        ids = ids or now
        swaps += now != ids
    return swaps


def test_crossing_targets_keep_their_ids():
    assert crossing_run(ByteTracker()) == 0
    assert crossing_run(IoUTracker()) > 0  # without motion they swap where they overlap


# -------------------------------------------------------------------------------- 8. rescale


def moving_target(tracker, frames=5) -> tuple[int, float]:
    x = 40.0
    target_id = the_target(step(tracker, blob(box_at(x, 60)), target=0)).id
    for _ in range(frames - 1):
        x += 5
        step(tracker, blob(box_at(x, 60)))
    return target_id, x


def test_rescale_moves_predictions_to_the_new_frame_size():
    tracker = ByteTracker()
    target_id, x = moving_target(tracker)
    tracker.rescale(2.0, 2.0)
    for _ in range(3):
        x += 5
        tracks = step(tracker, blob(box_at(2 * x, 120, 2 * SIDE, 2 * SIDE)), shape=(480, 640))
        [target] = tracks
        assert target.id == target_id and target.state is TrackState.TRACKED and target.row == 0


def test_without_rescale_the_resized_target_is_a_new_object():
    tracker = ByteTracker()
    target_id, x = moving_target(tracker)
    tracks = by_id(step(tracker, blob(box_at(2 * (x + 5), 120, 2 * SIDE, 2 * SIDE)), shape=(480, 640)))
    assert tracks[target_id].state is TrackState.LOST
    assert len(tracks) == 2


def test_rescaled_prediction_is_the_scaled_prediction():
    plain, scaled = ByteTracker(), ByteTracker()
    moving_target(plain)
    moving_target(scaled)
    scaled.rescale(2.0, 1.5)
    [a] = step(plain)
    [b] = step(scaled, shape=(360, 640))
    assert a.state is b.state is TrackState.LOST
    assert b.box == pytest.approx(tuple(np.array(a.box) * [2.0, 1.5, 2.0, 1.5]))


# ----------------------------------------------------------------------------- lifetimes


def test_lost_non_target_is_removed_after_max_age_and_target_is_kept():
    tracker = ByteTracker(ByteTrackerSettings(max_age=2))
    first = step(tracker, blob(box_at(20, 20)), blob(box_at(200, 100), BLUE), target=0)
    target_id, other_id = holder_of(first, 0).id, holder_of(first, 1).id
    states = []
    for _ in range(4):
        tracks = by_id(step(tracker))
        assert tracks[target_id].state is TrackState.LOST
        states.append(tracks[other_id].state if other_id in tracks else None)
    assert states == [TrackState.LOST, TrackState.LOST, TrackState.REMOVED, None]


def test_target_max_age_removes_the_target():
    tracker = ByteTracker(ByteTrackerSettings(target_max_age=1))
    step(tracker, blob(box_at(20, 20)), target=0)
    assert [step(tracker)[0].state for _ in range(2)] == [TrackState.LOST, TrackState.REMOVED]
    assert step(tracker) == ()


# ---------------------------------------------------------------------- 9. settings validation


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_iou": 0.0},
        {"min_iou": 1.5},
        {"low_min_iou": 0.0},
        {"low_score": 0.5, "high_score": 0.4},
        {"low_score": -0.1},
        {"high_score": 1.1},
        {"max_age": -1},
        {"target_max_age": -1},
    ],
)
def test_settings_reject_bad_values(kwargs):
    with pytest.raises(ValueError):
        ByteTrackerSettings(**kwargs)


def test_settings_accept_boundary_values():
    ByteTrackerSettings(min_iou=1.0, low_min_iou=1.0, low_score=0.4, high_score=0.4, max_age=0, target_max_age=0)


# ------------------------------------------------------------------------ 10. the Kalman filter


def truth(k: int) -> np.ndarray:
    """A 40×30 box moving (7, −3) px per frame."""
    return np.array([100 + 7 * k, 200 - 3 * k, 140 + 7 * k, 230 - 3 * k], np.float64)


def test_kalman_prediction_converges_to_constant_velocity():
    kalman = BoxKalman(truth(0))
    errors = []
    for k in range(1, 16):
        kalman.predict()
        errors.append(np.abs(kalman.box - truth(k)).max())
        kalman.update(truth(k))
    assert errors[0] == pytest.approx(7.0)  # born still: the first prediction is where it was
    assert all(b <= a + 1e-9 for a, b in zip(errors, errors[1:], strict=False))
    assert max(errors[9:]) < 1.0  # within a pixel after ~10 frames
    kalman.predict()
    np.testing.assert_allclose(kalman.box, truth(16), atol=1.0)


def test_kalman_predicts_without_updates_and_stop_forgets_velocity():
    kalman = BoxKalman(truth(0))
    for k in range(1, 20):
        kalman.predict()
        kalman.update(truth(k))
    kalman.predict()
    ahead = kalman.box.copy()
    kalman.predict()
    np.testing.assert_allclose(kalman.box - ahead, [7, -3, 7, -3], atol=0.5)  # coasting on its velocity
    kalman.stop()
    still = kalman.box.copy()
    for _ in range(3):
        kalman.predict()
    np.testing.assert_allclose(kalman.box, still)


def test_kalman_rescale_scales_box_and_velocity():
    kalman = BoxKalman(truth(0))
    for k in range(1, 20):
        kalman.predict()
        kalman.update(truth(k))
    before = kalman.box.copy()
    kalman.rescale(np.array([2.0, 0.5, 2.0, 0.5]))
    np.testing.assert_allclose(kalman.box, before * [2.0, 0.5, 2.0, 0.5])
    kalman.predict()
    np.testing.assert_allclose(kalman.box - before * [2.0, 0.5, 2.0, 0.5], [14, -1.5, 14, -1.5], atol=1.0)


def test_kalman_box_never_shrinks_below_a_pixel():
    kalman = BoxKalman(np.array([0, 0, 40, 40.0]))
    for k in range(1, 8):
        kalman.predict()
        kalman.update(np.array([0, 0, 40 - 5 * k, 40 - 5 * k]))  # shrinking fast
    for _ in range(20):
        kalman.predict()
        x1, y1, x2, y2 = kalman.box
        assert x2 - x1 >= 1.0 - 1e-9 and y2 - y1 >= 1.0 - 1e-9


def test_target_that_leaves_the_frame_is_reacquired_when_it_comes_back():
    """Like the dog in 01_dog.mp4: it runs out on the right, stays out a while, and comes back in there.

    Its box shrinks at the edge and its prediction drifts past it while it is out.
    """
    tracker = ByteTracker()
    width = SHAPE[1]
    first = the_target(step(tracker, blob(box_at(150, 100)), target=0))
    for x in range(160, width - SIDE + 1, 10):  # running right, whole
        step(tracker, blob(box_at(x, 100)), blob(box_at(20, 20), BLUE))
    for x in range(width - SIDE + 10, width, 10):  # leaving: cut by the edge
        step(tracker, blob((x, 100, width, 140)), blob(box_at(20, 20), BLUE))
    for _ in range(20):  # gone
        out = the_target(step(tracker, blob(box_at(20, 20), BLUE)))
    assert out.state is TrackState.LOST and out.box[0] > width - 10  # its prediction left with it
    back = by_id(step(tracker, blob(box_at(20, 20), BLUE), blob(box_at(width - SIDE - 30, 110))))
    assert back[first.id].state is TrackState.TRACKED and back[first.id].row == 1
    assert not any(t.is_target and t.id != first.id for t in back.values())


def test_two_targets_never_follow_one_object_segmented_twice():
    """Two targets side by side, then one object segmented twice where both reach: one target takes it.

    The segmenter gives one object two boxes (a leftover of NMS) where both targets' predictions
    reach: only one target may take it.
    """
    tracker = ByteTracker()
    first = step(tracker, blob(box_at(100, 100)), blob(box_at(128, 100), BLUE), target=(0, 1))
    assert len([t for t in first if t.is_target]) == 2
    tracks = step(tracker, blob(box_at(114, 100)), blob((116, 98, 156, 136)))
    held = [t for t in tracks if t.is_target and t.row is not None]
    assert len(held) == 1
