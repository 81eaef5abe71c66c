"""Camera-motion compensation: how the whole picture moved from one frame to the next.

A moving camera moves every box at once, and the Kalman filter's prediction (trackers/kalman.py)
assumes a still camera: a pan of 20 pixels a frame carries every track's prediction away from its
object, and matching by IoU then fails for small or fast objects. BoT-SORT's answer, "global motion
compensation" (GMC), is to estimate the camera's motion between consecutive frames as an affine
map and to move every track's state by it before matching. This module owns that estimate, in the
sparse-optical-flow flavour: corners of the previous frame, followed into this frame by pyramidal
Lucas-Kanade, and a rotation + uniform scale + translation fitted to them with RANSAC, all on a
small grey copy of the frame (the camera's motion is a property of the whole picture, not of its
fine detail, and the small copy keeps the cost under 2 ms a 1280×720 frame on one core:
bench/camera_motion_cost.py).

The objects' own motion is not the camera's: the caller passes where the detections are
(`exclude`), and no corner is taken inside them; RANSAC drops what still moves otherwise.

A fixed camera (most monitoring cameras) would pay for that estimate on every frame only to learn,
every time, that nothing moved. With `idle_every` N > 1, once IDLE_AFTER estimates in a row found
a still camera the estimator idles: it estimates only every Nth frame (from the frame just
before it, so the answer is still one frame's motion), and computes nothing at all on the others.
The first estimate that finds motion (or fails: too few corners) ends the idling. The price: a
camera that starts to move while idle is first compensated on up to its Nth frame of motion.

`CameraMotion` keeps one stream's previous frame and no global state: one per stream.
`warp_box` moves a box by an estimated matrix (`BoxKalman.warp` moves a track's state).
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_POINTS = 10  # fewer tracked corners (or RANSAC inliers) than this say nothing reliable
RANSAC_THRESHOLD_PX = 1.0  # reprojection error, in pixels of the small frame, for a RANSAC inlier
QUALITY_LEVEL = 0.01  # a corner's strength relative to the frame's strongest (OpenCV's usual setting)
CORNER_SPACING = 1 / 40  # corners at least this fraction of the small frame's width apart
# Lucas-Kanade on the small frame. Its cost grows with the window's area, and a 9-pixel window (36
# pixels of a 1280-wide frame at width 320) is as accurate as OpenCV's default 21 here: on six DAVIS
# clips both agree with a full-resolution estimate to the same fraction of a pixel, at a third of
# the cost. 4 pyramid levels follow pans of over 50 small-frame pixels a frame; each point
# converges in a few iterations, so 10 are plenty.
FLOW_WINDOW = (9, 9)
FLOW_LEVELS = 3
FLOW_STOP = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 10, 0.03)
_LAST_ROW = np.array([[0.0, 0.0, 1.0]])  # makes a 2×3 affine a 3×3 matrix
# Still estimates in a row before the estimator idles: a camera on a pole or a wall, not a
# handheld camera or a pan that paused (those move by more than still_px within a few frames).
IDLE_AFTER = 10


class CameraMotion:
    """Estimates the frame-to-frame camera motion of one stream as a 2×3 affine matrix.

    Args:
        width: frames are downscaled to this width (keeping their aspect, never upscaled)
            before estimation; smaller is cheaper and coarser.
        max_corners: the most corners followed from one frame to the next.
        still_px: a motion that moves no corner of the frame by more than this many
            full-resolution pixels is "no motion" (`estimate` returns None).
        idle_every: once IDLE_AFTER estimates in a row found no motion, estimate only every
            this many frames until one finds motion; 1: estimate every frame.
    """

    def __init__(self, width: int = 256, max_corners: int = 300, still_px: float = 0.3, idle_every: int = 1) -> None:
        if width < 16 or max_corners < MIN_POINTS or idle_every < 1:
            raise ValueError(f"width must be at least 16, max_corners at least {MIN_POINTS}, idle_every at least 1")
        self.width = width
        self.max_corners = max_corners
        self.still_px = still_px
        self.idle_every = idle_every
        self._mask: np.ndarray | None = None  # reused: one allocation per frame size, not per frame
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame (a stream that came back at another size, or a cut)."""
        self._previous: np.ndarray | None = None  # small grey copy of the previous frame
        self._previous_exclude: np.ndarray | None = None  # boxes given with it, full-resolution xyxy
        self._shape: tuple[int, int] | None = None  # full-resolution (height, width) of the previous frame
        self._to_small: np.ndarray | None = None  # 3×3: full-resolution pixel → small-frame pixel
        self._from_small: np.ndarray | None = None  # its inverse
        self._frame_corners: np.ndarray | None = None  # 4×3: the full frame's corners, homogeneous
        self._still_run = 0  # estimates in a row that found a still camera
        self._until_estimate = 0  # while idle: frames until the next estimate; 0: not idle

    def estimate(self, image: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray | None:
        """The camera's motion from the previous frame given to `estimate` to `image`.

        Args:
            image: this frame, BGR uint8 H×W×3 (or grey H×W).
            exclude: N×4 xyxy boxes, in full-resolution pixels, where moving objects are in this
                frame; kept with the frame, they mask its corners when the next frame comes.

        Returns:
            A 2×3 float64 affine A with [x', y'] = A @ [x, y, 1] mapping the previous frame's
            full-resolution pixel coordinates to this frame's; or None when there is nothing to
            apply: the first frame, a frame of another size than the previous one (the estimator
            resets), too few corners followed or RANSAC failed, or a motion that moves no corner of
            the frame by more than `still_px` (a still camera: the caller skips the warp), or a
            frame skipped while idle (see `idle_every`).
        """
        shape = image.shape[:2]
        if shape != self._shape:
            self._start(shape)
        if self._until_estimate > 0:  # idle
            self._until_estimate -= 1
            if self._until_estimate > 1:
                return None  # neither estimated nor the frame before an estimate: nothing to compute
        small = self._small_grey(image)
        previous, previous_exclude = self._previous, self._previous_exclude
        self._previous = small
        self._previous_exclude = None if exclude is None else np.array(exclude, np.float64).reshape(-1, 4)
        if previous is None or self._until_estimate == 1:
            return None  # the first frame, or (idle) the frame the next estimate starts from
        matrix = self._fit(previous, previous_exclude, small)
        still = matrix is not None and self._is_still(matrix)
        # Only a measured stillness counts towards idling: a featureless frame says nothing.
        self._still_run = self._still_run + 1 if still else 0
        if self._still_run >= IDLE_AFTER and self.idle_every > 1:
            self._until_estimate = self.idle_every
        else:
            self._until_estimate = 0
        return None if matrix is None or still else matrix

    def _start(self, shape: tuple[int, int]) -> None:
        self.reset()
        height, width = shape
        small_width = min(self.width, width)
        small_height = max(round(height * small_width / width), 1)
        self._mask = np.empty((small_height, small_width), np.uint8)
        self._shape = shape
        # cv2.resize maps pixel centres: x_small + 0.5 = (x + 0.5) * scale, per axis.
        sx, sy = small_width / width, small_height / height
        self._to_small = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
        self._from_small = np.linalg.inv(self._to_small)
        self._frame_corners = np.array([[0.0, 0.0, 1.0], [width, 0.0, 1.0], [0.0, height, 1.0], [width, height, 1.0]])

    def _small_grey(self, image: np.ndarray) -> np.ndarray:
        height, width = self._mask.shape
        if image.shape[1] != width:
            # Shrink first, so that the conversion runs on the small frame. Bilinear, not INTER_AREA:
            # as accurate on the tests' pans and on DAVIS clips, and 3 to 10 times cheaper (INTER_AREA
            # at a ratio that is not a whole number costs 2 to 5 ms a 1280×720 frame).
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image.copy()

    def _fit(self, previous: np.ndarray, exclude: np.ndarray | None, current: np.ndarray) -> np.ndarray | None:
        """The affine from `previous` to `current` in full-resolution pixels, or None when unreliable."""
        corners = self._corners(previous, self._corner_mask(exclude))
        if (corners is None or len(corners) < MIN_POINTS) and exclude is not None and len(exclude):
            # The objects cover (nearly) the whole frame: take corners everywhere, RANSAC drops what moves.
            corners = self._corners(previous, None)
        if corners is None or len(corners) < MIN_POINTS:
            return None  # a blank or featureless frame
        followed, status, _ = cv2.calcOpticalFlowPyrLK(
            previous, current, corners, None, winSize=FLOW_WINDOW, maxLevel=FLOW_LEVELS, criteria=FLOW_STOP
        )
        found = status.ravel() == 1
        if found.sum() < MIN_POINTS:
            return None
        small, inliers = cv2.estimateAffinePartial2D(
            corners[found], followed[found], method=cv2.RANSAC, ransacReprojThreshold=RANSAC_THRESHOLD_PX
        )
        if small is None or inliers.sum() < MIN_POINTS:
            return None
        # Back to full resolution: full → small, move, small → full.
        return self._from_small[:2] @ np.vstack([small, _LAST_ROW]) @ self._to_small

    def _corners(self, previous: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
        """Up to max_corners strong corners of the small frame, outside `mask`'s zeros (None: none found)."""
        return cv2.goodFeaturesToTrack(
            previous,
            maxCorners=self.max_corners,
            qualityLevel=QUALITY_LEVEL,
            minDistance=max(previous.shape[1] * CORNER_SPACING, 1.0),
            mask=mask,
            blockSize=3,
        )

    def _corner_mask(self, exclude: np.ndarray | None) -> np.ndarray | None:
        """A uint8 mask of the small frame that is 0 inside the `exclude` boxes, or None for none."""
        if exclude is None or len(exclude) == 0:
            return None
        mask = self._mask
        mask.fill(255)
        height, width = mask.shape
        sx, sy = self._to_small[0, 0], self._to_small[1, 1]
        # Rounded outwards: a corner on the box's edge may belong to the object.
        x1 = np.clip(np.floor(exclude[:, 0] * sx), 0, width).astype(int)
        y1 = np.clip(np.floor(exclude[:, 1] * sy), 0, height).astype(int)
        x2 = np.clip(np.ceil(exclude[:, 2] * sx), 0, width).astype(int)
        y2 = np.clip(np.ceil(exclude[:, 3] * sy), 0, height).astype(int)
        for a, b, c, d in zip(x1, y1, x2, y2, strict=True):
            mask[b:d, a:c] = 0
        return mask

    def _is_still(self, matrix: np.ndarray) -> bool:
        """Whether `matrix` moves none of the frame's four corners by more than `still_px`."""
        corners = self._frame_corners
        moved = corners @ matrix.T - corners[:, :2]
        return float(np.max(np.hypot(moved[:, 0], moved[:, 1]))) < self.still_px


def affine_scale(matrix: np.ndarray) -> float:
    """The uniform scale of a 2×3 affine: sqrt |det| of its linear part (1 for a pan, 1.1 for a 10% zoom in)."""
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def warp_box(box: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """An xyxy box moved by a 2×3 affine, as `BoxKalman.warp` moves a track's box.

    Args:
        box: x1, y1, x2, y2 in the previous frame's pixels.
        matrix: the camera's motion, as `CameraMotion.estimate` returns it.

    Returns:
        The box in this frame's pixels (float64): its centre mapped by the affine, its width and
        height scaled by the matrix's scale (sqrt |det| of the linear part), so it stays axis-aligned.
    """
    box = np.asarray(box, np.float64)
    centre = matrix[:, :2] @ ((box[:2] + box[2:]) / 2) + matrix[:, 2]
    half = (box[2:] - box[:2]) / 2 * affine_scale(matrix)
    return np.concatenate([centre - half, centre + half])
