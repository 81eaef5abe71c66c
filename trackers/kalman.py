"""A constant-velocity Kalman filter on a box (centre x, centre y, width, height), as in SORT and ByteTrack.

Matching then compares this frame's instances with where each track should be *now*, not where it
was last seen.

Noise scales with the box's size (a 10-pixel jitter matters for a 30-pixel pedestrian, not for a
bus), with ByteTrack's weights. Several boxes are filtered at once as stacked arrays.
"""

from __future__ import annotations

import numpy as np

POSITION_WEIGHT = 1.0 / 20  # std of position noise per unit of box size
VELOCITY_WEIGHT = 1.0 / 160  # std of velocity noise per unit of box size

_DIM = 4
# x' = F x: position += velocity, once per frame.
_F = np.eye(2 * _DIM)
_F[:_DIM, _DIM:] = np.eye(_DIM)
_H = np.eye(_DIM, 2 * _DIM)  # we measure the position half of the state


def xyxy_to_cxcywh(box: np.ndarray) -> np.ndarray:
    """A box's corners (x1, y1, x2, y2) as centre and size (cx, cy, w, h), float64."""
    box = np.asarray(box, np.float64)
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]])


def cxcywh_to_xyxy(state: np.ndarray) -> np.ndarray:
    """The corners (x1, y1, x2, y2) of the box in the first four entries (cx, cy, w, h) of `state`."""
    cx, cy, w, h = state[:4]
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


class BoxKalman:
    """One track's filter: `predict()` once per frame, `update(box)` when it is matched."""

    def __init__(self, box: np.ndarray) -> None:
        position = xyxy_to_cxcywh(box)
        self.mean = np.concatenate([position, np.zeros(_DIM)])
        size = self._size(position)
        std = np.concatenate([2 * POSITION_WEIGHT * size, 10 * VELOCITY_WEIGHT * size])
        self.covariance = np.diag(std**2)

    @staticmethod
    def _size(position: np.ndarray) -> np.ndarray:
        w, h = max(position[2], 1.0), max(position[3], 1.0)
        return np.array([w, h, w, h])

    @property
    def box(self) -> np.ndarray:
        """The current estimate as xyxy."""
        return cxcywh_to_xyxy(self.mean)

    def predict(self) -> None:
        """Move the estimate one frame on with its velocity; the uncertainty grows by the process noise."""
        size = self._size(self.mean[:4])
        q = np.diag(np.concatenate([POSITION_WEIGHT * size, VELOCITY_WEIGHT * size]) ** 2)
        self.mean = _F @ self.mean
        # A box cannot shrink below a pixel however fast it was shrinking when it was lost.
        self.mean[2:4] = np.maximum(self.mean[2:4], 1.0)
        self.covariance = _F @ self.covariance @ _F.T + q

    def update(self, box: np.ndarray) -> None:
        """Correct the estimate with a measured xyxy `box` (the track's matched instance)."""
        measured = xyxy_to_cxcywh(box)
        r = np.diag((POSITION_WEIGHT * self._size(self.mean[:4])) ** 2)
        innovation_cov = _H @ self.covariance @ _H.T + r
        gain = np.linalg.solve(innovation_cov, _H @ self.covariance).T
        self.mean = self.mean + gain @ (measured - _H @ self.mean)
        self.covariance = self.covariance - gain @ innovation_cov @ gain.T

    def stop(self) -> None:
        """Forget the velocity (a track lost for long: its last motion no longer predicts anything)."""
        self.mean[_DIM:] = 0.0

    def rescale(self, factor: np.ndarray) -> None:
        """Move to new frame coordinates (`factor` = [sx, sy, sx, sy] on cx, cy, w, h)."""
        scale = np.concatenate([factor, factor])
        self.mean = self.mean * scale
        self.covariance = self.covariance * np.outer(scale, scale)

    def warp(self, matrix: np.ndarray) -> None:
        """Move the state into this frame's coordinates by the camera's motion (trackers/camera_motion.py).

        Once per frame, before matching. BoT-SORT warps right after `predict()`; the other order
        gives the same mean and covariance (the two linear maps commute), but for the process
        noise's size. The centre is mapped by the affine; the velocity turns (and stretches) with
        its linear part L but does not translate; width, height and their rates scale by
        s = sqrt |det L|, so the box stays axis-aligned. The covariance goes through the same
        linear map.

        Args:
            matrix: 2×3 affine A with [x', y'] = A @ [x, y, 1], from the previous frame's pixel
                coordinates to this frame's, in the coordinates the boxes are in.
        """
        linear, shift = matrix[:, :2], matrix[:, 2]
        scale = np.sqrt(abs(np.linalg.det(linear)))
        transform = np.zeros((2 * _DIM, 2 * _DIM))
        for first in (0, _DIM):  # the (cx, cy) and (vcx, vcy) pairs turn; the size entries scale
            transform[first : first + 2, first : first + 2] = linear
            transform[first + 2 : first + 4, first + 2 : first + 4] = scale * np.eye(2)
        self.mean = transform @ self.mean
        self.mean[:2] += shift
        self.covariance = transform @ self.covariance @ transform.T
