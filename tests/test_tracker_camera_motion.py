"""Camera-motion compensation inside ByteTracker (`camera_motion`), on a real frame and the real segmenter.

A synthetic camera sweeps over the first 1280×720 frame of 01_dog.mp4: a 320×180 view that starts at
0.4 scale, zooms in 1.5 % a frame, pans right and down by (20, 6) source pixels a frame for 10
frames, then turns and pans back (about 9 view pixels a frame, growing with the zoom). The dog, the
target, moves left in the view, then right. On the five frames after the turn (10-14) the segmenter
"misses" it: its row is dropped from the real segmenter's instances, while the picture keeps
moving. The tracker's prediction must coast through those frames. Kalman motion alone keeps moving
the dog's box the way the camera was going and misses it by the time it comes back. GMC moves the
prediction with the camera, so the dog is matched again with its id.

Re-acquisition is off in both runs. It searches by appearance around the prediction whatever that
prediction is, so it would hide what the prediction does. In this scene it also takes the wrong
object while the dog is missed. Every box's truth is the frame-0 detection carried through the
camera's known matrix. The still-camera test runs the same frame ten times and checks that GMC
then changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from fastsam_stream.core import Frame, Instances, TargetChange, Track, TrackState
from fastsam_stream.trackers import ByteTracker, ByteTrackerSettings, box_iou
from fastsam_stream.trackers.kalman import BoxKalman

VIEW = (320, 180)  # width, height of what the camera sees
START_SCALE = 0.4  # view pixels per source pixel on frame 0: the view shows 800×450 of the 1280×720 frame
ZOOM = 1.015  # per frame
CENTRE = np.array([560.0, 440.0])  # the source point at the view's centre on frame 0
PAN = np.array([20.0, 6.0])  # source pixels per frame the view's centre moves, until TURN, then back
FRAMES = 20
TURN = 10  # the first frame of the pan back
MISSED = range(TURN, TURN + 5)  # frames on which the segmenter does not find the dog
AFTER = range(TURN + 5, FRAMES)  # the dog is found again
DOG = 16  # COCO class id


def camera(k: int) -> np.ndarray:
    """2×3 map from the source frame to view `k`."""
    scale = START_SCALE * ZOOM**k
    centre = CENTRE + (min(k, TURN) - max(k - TURN, 0)) * PAN
    width, height = VIEW
    return np.array([[scale, 0.0, width / 2 - scale * centre[0]], [0.0, scale, height / 2 - scale * centre[1]]])


def move_box(matrix: np.ndarray, box: np.ndarray) -> np.ndarray:
    """An xyxy box through a scale-and-shift affine (no rotation: it stays a box)."""
    return np.array(
        [
            matrix[0, 0] * box[0] + matrix[0, 2],
            matrix[1, 1] * box[1] + matrix[1, 2],
            matrix[0, 0] * box[2] + matrix[0, 2],
            matrix[1, 1] * box[3] + matrix[1, 2],
        ]
    )


def iou(a, b) -> float:
    return float(box_iou(np.asarray(a, np.float64)[None], np.asarray(b, np.float64)[None])[0, 0])


@dataclass(frozen=True)
class Sweep:
    images: list[np.ndarray]
    found: list[Instances]  # the segmenter's instances, with the dog dropped on MISSED frames
    truth: list[np.ndarray]  # the dog's box in each view
    dog: int  # its row on frame 0


@pytest.fixture(scope="module")
def sweep(segmenter, videos) -> Sweep:
    capture = cv2.VideoCapture(str(videos / "01_dog.mp4"))
    ok, source = capture.read()
    capture.release()
    assert ok and source.shape == (720, 1280, 3)
    images = [cv2.warpAffine(source, camera(k), VIEW, flags=cv2.INTER_LINEAR) for k in range(FRAMES)]
    for k in (0, FRAMES - 1):  # the view stays inside the real frame: no made-up border
        corners = cv2.invertAffineTransform(camera(k)) @ np.array([[0.0, 0.0, 1.0], [*VIEW, 1.0]]).T
        assert corners.min() >= 0 and (corners.max(axis=1) <= [1280, 720]).all()
    instances = segmenter.segment([Frame(image, "sweep", k, k / 25, 0.0) for k, image in enumerate(images)])
    [dog] = np.flatnonzero(instances[0].class_ids == DOG)
    on_source = move_box(cv2.invertAffineTransform(camera(0)), instances[0].boxes[dog])
    truth = [move_box(camera(k), on_source) for k in range(FRAMES)]
    found = []
    for k, got in enumerate(instances):
        overlap = box_iou(truth[k][None], got.boxes)[0] if len(got) else np.zeros(0)
        assert overlap.max(initial=0.0) > 0.8, f"frame {k}: the segmenter does not find the dog"
        found.append(got[overlap < 0.3] if k in MISSED else got)
    return Sweep(images, found, truth, int(dog))


def follow(sweep: Sweep, camera_motion: bool) -> tuple[int, list[Track | None], list[tuple[Track, ...]]]:
    """Run the sweep through a ByteTracker; the dog is the target from frame 0.

    Returns:
        (the target's id, the target's snapshot on each frame (None once gone), every frame's tracks).
    """
    tracker = ByteTracker(ByteTrackerSettings(camera_motion=camera_motion, reacquire=False))
    target_id, mine, every = None, [], []
    for k, (image, instances) in enumerate(zip(sweep.images, sweep.found, strict=True)):
        tracks = tracker.update(instances, TargetChange.only(sweep.dog) if k == 0 else None, image)
        if k == 0:
            [target_id] = [t.id for t in tracks if t.is_target]
        mine.append(next((t for t in tracks if t.id == target_id and t.state != TrackState.REMOVED), None))
        every.append(tracks)
    return target_id, mine, every


def test_gmc_keeps_a_missed_targets_prediction_on_it_through_a_turning_pan(sweep):
    target_id, mine, every = follow(sweep, camera_motion=True)
    for k in range(TURN):  # before the miss: both runs see the same thing
        assert mine[k].state == TrackState.TRACKED and iou(mine[k].box, sweep.truth[k]) > 0.8, k
    for k in MISSED:  # the prediction follows the camera while nothing is measured
        assert mine[k].state == TrackState.LOST, k
        assert iou(mine[k].box, sweep.truth[k]) > 0.6, (k, iou(mine[k].box, sweep.truth[k]))
    for k in AFTER:  # found again: the same id, on the dog
        assert mine[k] is not None and mine[k].state == TrackState.TRACKED, k
        assert iou(mine[k].box, sweep.truth[k]) > 0.8, (k, iou(mine[k].box, sweep.truth[k]))
        assert not [t for t in every[k] if t.id != target_id and iou(t.box, sweep.truth[k]) > 0.5]

    target_id, mine, every = follow(sweep, camera_motion=False)
    assert iou(mine[MISSED[-1]].box, sweep.truth[MISSED[-1]]) < 0.3  # the prediction went on the camera's old way
    for k in AFTER:
        assert mine[k] is None or iou(mine[k].box, sweep.truth[k]) < 0.5, (k, mine[k])
        # The dog is followed again, under another id
        on_dog = [t for t in every[k] if t.state == TrackState.TRACKED and iou(t.box, sweep.truth[k]) > 0.5]
        assert on_dog and all(t.id != target_id for t in on_dog), (k, on_dog)


def test_a_still_camera_moves_no_prediction(sweep, monkeypatch):
    """Ten times the same frame: with GMC the tracks are exactly those without, and no state is warped."""
    warps = []
    original = BoxKalman.warp

    def counted(self, matrix):
        warps.append(matrix)
        return original(self, matrix)

    monkeypatch.setattr(BoxKalman, "warp", counted)
    runs = {}
    for camera_motion in (True, False):
        tracker = ByteTracker(ByteTrackerSettings(camera_motion=camera_motion))
        runs[camera_motion] = [
            tracker.update(sweep.found[0], TargetChange.only(sweep.dog) if k == 0 else None, sweep.images[0])
            for k in range(10)
        ]
    assert warps == []
    assert runs[True] == runs[False]
    assert len(runs[True][-1]) >= 2 and any(t.is_target and t.state == TrackState.TRACKED for t in runs[True][-1])
