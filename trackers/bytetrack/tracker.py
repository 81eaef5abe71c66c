"""The default tracker: ByteTrack, with what following a prompted object through a video needs on top.

ByteTrack: Zhang et al. 2022, "ByteTrack: Multi-Object Tracking by Associating Every Detection
Box", Algorithm 1. Per frame, as in Algorithm 1:
  1. predict every track's box with its Kalman filter (line 10; trackers/kalman.py), then move
     the predictions of the tracks seen in the last STOP_AFTER frames by the camera's motion since
     the last frame (not in ByteTrack: BoT-SORT's global motion compensation;
     trackers/camera_motion.py), unless the camera stood still;
  2. associate the confident instances (score ≥ high_score) by IoU, then the low-score ones
     (low_score ≤ score < high_score) with the tracks still unmatched that were seen last frame
     (lines 4-17; association.py);
  3. update the matched tracks' filters with their instances;
  4. start a track on every confident instance left over (lines 20-22), unless it duplicates a
     matched one;
  5. keep unmatched tracks as lost for `max_age` frames, then remove them (ByteTrack's rebirth
     buffer; trackers/lifecycle.py).
For prompted targets (targets.py), between 2 and 3: targets associate first, on every instance,
with their appearance gating and refining the IoU cost (looks.py: a gallery of the segmenter's own
descriptors, BoT-SORT style), then (a) take the instances that complete them in their predicted box
(parts.py), (b) when lost, look for themselves by appearance and colour near where they should be
(reacquire.py, looks.py), and (c) two targets never hold one object. Only then do the other tracks
associate, on the instances left. After 4 the frame's target change (a prompt) applies, and matched
targets refresh their gallery and colour model.

Ids are counted per tracker; no state is shared between instances.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ...core import Instances, TargetChange, Track, TrackState
from ..base import selected_parts
from ..camera_motion import CameraMotion, affine_scale
from ..kalman import BoxKalman
from ..lifecycle import finish, snapshot
from ..matching import box_iou, union_box
from ..registry import register
from . import looks as looks_
from . import reacquire
from .association import associate
from .settings import ByteTrackerSettings
from .targets import complete_target, one_object_one_target
from .track import KalmanTrack

DUPLICATE_IOU = 0.6  # an unmatched instance this close to a matched one is a leftover of NMS, not a new object
# Frames lost after which a track's velocity is forgotten: by then its last motion predicts nothing,
# and a prediction coasting on it would run off from where the object most likely is.
STOP_AFTER = 5
BACKGROUND_SHARE = 0.25  # an instance whose box covers this share of the frame is background to camera motion


@register("bytetrack", ByteTrackerSettings)
class ByteTracker:
    """ByteTrack with camera motion; for prompted targets: appearance, parts, re-acquisition, one object one target.

    Args:
        settings: Thresholds of the association rounds, track lifetimes, and the target steps;
            None: the defaults.
    """

    def __init__(self, settings: ByteTrackerSettings | None = None) -> None:
        self.settings = settings if settings is not None else ByteTrackerSettings()
        self._tracks: list[KalmanTrack] = []
        self._next_id = 1
        self._frame = -1
        s = self.settings
        self._camera = (
            CameraMotion(s.camera_motion_width, idle_every=s.camera_motion_idle_every) if s.camera_motion else None
        )

    def update(
        self, instances: Instances, targets: TargetChange | None = None, image: np.ndarray | None = None
    ) -> tuple[Track, ...]:
        """One frame of ByteTrack with the target steps, then the target change (see `Tracker.update`).

        Args:
            instances: This frame's instances.
            targets: The frame's target change, if any.
            image: The frame (BGR): targets learn their colour from it and re-acquire by it; None: no colour.

        Returns:
            Every live track after this frame, and each removed one once, on the frame it goes.
        """
        self._frame += 1
        self._predict()  # Algorithm 1, line 10
        self._follow_camera(instances, image)
        # Targets first (not in ByteTrack): both rounds on every instance, then their own steps, so
        # that what they take (their parts, themselves found by colour) no other track can take.
        following = [t for t in self._tracks if t.is_target]
        looks = looks_.frame_looks(instances, self.settings)
        extra = partial(looks_.association_cost, looks=looks, settings=self.settings) if looks is not None else None
        matched = associate(following, instances, set(), self.settings, self._frame, extra)  # track id → row
        taken = set(matched.values())
        self._complete_targets(following, instances, matched, taken, image, looks)
        # ByteTrack's two rounds (lines 12-17) for every other track, on the instances left.
        others = [t for t in self._tracks if not t.is_target]
        every_track = extra if self.settings.appearance_for == "all" else None
        matched.update(associate(others, instances, taken, self.settings, self._frame, every_track))
        taken.update(matched.values())
        for track in self._tracks:
            if track.id in matched:
                self._measure(track, instances, matched[track.id])
        self._start_tracks(instances, matched, taken)  # lines 20-22
        selected = self._change_targets(targets, instances, matched, taken) if targets is not None else {}
        self._refresh_looks(instances, matched, image, looks)
        return self._finish(matched, selected)  # line 19: unmatched tracks are lost, then removed

    def rescale(self, sx: float, sy: float) -> None:
        """Move every track to new frame coordinates (a stream that came back at another size).

        Args:
            sx: New width over old width.
            sy: New height over old height.
        """
        for track in self._tracks:
            track.kalman.rescale(np.array([sx, sy, sx, sy]))
            if track.size is not None:
                track.size = track.size * np.array([sx, sy])

    # -- ByteTrack -----------------------------------------------------------------------------

    def _predict(self) -> None:
        """Algorithm 1, line 10: every track's box, predicted to this frame."""
        for track in self._tracks:
            track.parts, track.measured = (), None
            track.kalman.predict()
            if self._frame - track.last_seen > STOP_AFTER:
                track.kalman.stop()

    def _follow_camera(self, instances: Instances, image: np.ndarray | None) -> None:
        """Move every prediction by the camera's motion since the last frame (BoT-SORT's GMC, after predict).

        The objects' own boxes are kept out of the estimate (`exclude`): what moves there is them. Not
        the boxes of a quarter of the frame or more: FastSAM segments everything, ground and sky and
        walls too, and those are the background the camera's motion is read from.
        """
        if self._camera is None or image is None:
            return
        height, width = instances.image_shape
        objects = (instances.scores >= self.settings.low_score) & (instances.areas < BACKGROUND_SHARE * height * width)
        motion = self._camera.estimate(image, exclude=instances.boxes[objects])
        if motion is None:  # a still camera, or nothing to compare with
            return
        scale = affine_scale(motion)
        for track in self._tracks:
            if self._frame - track.last_seen > STOP_AFTER:
                # Stopped (see STOP_AFTER): it stays where it was last predicted, as without camera
                # motion. A camera that follows its object (a handheld shot of a runner, a bag in the
                # wind) moves the background while the object stays put on screen: warping a stopped
                # prediction with the background would carry it off the frame (bag.avi: in 40 frames).
                continue
            track.kalman.warp(motion)
            if track.size is not None:
                track.size = track.size * scale

    def _measure(self, track: KalmanTrack, instances: Instances, row: int) -> None:
        """A matched track's filter takes its instance (with its parts: the object is their union)."""
        track.measured = union_box(instances.boxes[[row, *track.parts]])
        track.kalman.update(track.measured)
        if track.size is None or reacquire.seen_whole(track.measured, instances.image_shape):
            x1, y1, x2, y2 = track.measured
            track.size = np.array([x2 - x1, y2 - y1])
        track.score = float(instances.scores[row])
        track.last_seen = self._frame

    def _start_tracks(self, instances: Instances, matched: dict[int, int], taken: set[int]) -> None:
        """Algorithm 1, lines 20-22: a new track on every confident instance no track took.

        Except on a near-copy of a taken instance: a leftover of NMS, not a new object (DUPLICATE_IOU).
        """
        boxes = instances.boxes
        used = sorted(taken)
        for row in np.flatnonzero(instances.scores >= self.settings.high_score):
            if row in taken:
                continue
            if used and box_iou(boxes[row], boxes[used]).max() >= DUPLICATE_IOU:
                continue
            track = self._new_track(boxes[row], float(instances.scores[row]))
            matched[track.id] = int(row)
            taken.add(int(row))
            used.append(int(row))

    def _new_track(self, box: np.ndarray, score: float) -> KalmanTrack:
        track = KalmanTrack(self._next_id, BoxKalman(box), score, self._frame, self._frame)
        track.measured = np.asarray(box, np.float64)
        self._next_id += 1
        self._tracks.append(track)
        return track

    def _finish(self, matched: dict[int, int], selected: dict[int, tuple[int, ...]]) -> tuple[Track, ...]:
        """Algorithm 1, line 19 with ByteTrack's buffer: unmatched tracks are lost, removed after their max age.

        `selected`: by track id, the parts a target added this frame is reported with.
        """

        def report(track: KalmanTrack, removed: bool) -> Track:
            if removed:
                return snapshot(track, self._frame, track.box, None, TrackState.REMOVED)
            row = matched.get(track.id)
            box = track.measured if row is not None and track.measured is not None else track.box
            return snapshot(track, self._frame, box, row, parts=selected.get(track.id, track.parts))

        s = self.settings
        self._tracks, tracks = finish(self._tracks, self._frame, s.max_age, s.target_max_age, report)
        return tracks

    # -- targets -------------------------------------------------------------------------------

    def _complete_targets(
        self,
        following: list[KalmanTrack],
        instances: Instances,
        matched: dict[int, int],
        taken: set[int],
        image: np.ndarray | None,
        looks: looks_.FrameLooks | None,
    ) -> None:
        """Steps (a)-(c) for the targets (targets.py), in order; what they take is `taken`."""
        scores = instances.scores
        others = np.array([t.box for t in self._tracks if not t.is_target]).reshape(-1, 4)
        for track in following:
            free = [r for r in range(len(instances)) if r not in taken and scores[r] >= self.settings.low_score]
            row = complete_target(
                track, instances, matched.get(track.id), free, others, image, self._frame, self.settings, looks
            )
            if row is not None:
                matched[track.id] = row
                taken.update((row, *track.parts))
        one_object_one_target(following, instances, matched)

    def _change_targets(
        self, change: TargetChange, instances: Instances, matched: dict[int, int], taken: set[int]
    ) -> dict[int, tuple[int, ...]]:
        """Apply a prompt's change: drop targets, then make the tracks holding `change.add_rows` targets.

        A row no track holds starts a new track. With merge_parts, an added target follows the union
        of its selected rows from here on.

        Returns:
            Track id → the rows besides its own that the change selected for each added target: on
            this frame the target is what was selected, whether or not it follows parts.
        """
        by_row = {row: track_id for track_id, row in matched.items()}
        adding = {row: selected_parts(change, row) if self.settings.merge_parts else () for row in change.add_rows}
        self._release({p for rows in adding.values() for p in rows}, by_row, matched)
        for track in self._tracks:
            if change.drop_all or track.id in change.drop_ids:
                track.is_target = False
        selected = {}
        for row in change.add_rows:
            track = next((t for t in self._tracks if t.id == by_row.get(row)), None)
            if track is None:  # a row no track holds (a low score, or a part): the target starts here
                track = self._new_track(instances.boxes[row], float(instances.scores[row]))
                matched[track.id] = row
                by_row[row] = track.id  # the same row added twice on one frame is one target
            track.is_target, track.colour, track.colour_at = True, None, -reacquire.APPEARANCE_EVERY
            track.gallery = None  # a new target: what it looked like as another track's object says nothing
            if adding[row]:
                track.parts = adding[row]
                track.measured = union_box(instances.boxes[[row, *adding[row]]])
                track.kalman = BoxKalman(track.measured)
            taken.update((row, *adding[row]))
            selected[track.id] = selected_parts(change, row)
        return selected

    def _release(self, rows: set[int], by_row: dict[int, int], matched: dict[int, int]) -> None:
        """Rows that become a new target's parts stop being other tracks' (a track born on them this frame goes)."""
        for row in rows:
            holder = by_row.get(row)
            track = next((t for t in self._tracks if t.id == holder and not t.is_target), None)
            if track is None:
                continue
            del matched[track.id]
            if track.born == self._frame:
                self._tracks.remove(track)

    def _refresh_looks(
        self, instances: Instances, matched: dict[int, int], image: np.ndarray | None, looks: looks_.FrameLooks | None
    ) -> None:
        """Matched targets update their gallery (features) and colour model: step (b) needs them once they are lost."""
        every_track = self.settings.appearance_for == "all"
        if looks is not None:  # every view needed, in one call
            looks.of(
                [row for t in self._tracks if (row := matched.get(t.id)) is not None and (t.is_target or every_track)]
            )
        for track in self._tracks:
            row = matched.get(track.id)
            if row is None or not (track.is_target or every_track):
                continue
            if looks is not None:
                looks_.remember(track, instances, row, looks, self.settings)
            if track.is_target and image is not None and instances.has_masks and self.settings.reacquire:
                reacquire.refresh_colour(track, instances, [row, *track.parts], image, self._frame)
