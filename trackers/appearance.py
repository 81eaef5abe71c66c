"""What the target looks like: a hue-saturation histogram of the pixels of its mask.

Used to re-acquire a lost target (after an occlusion, say) among instances near where it should
be: position alone cannot tell the jogger who comes out from behind a pole from the one running
beside her. A colour histogram is cheap (one mask, one cv2.calcHist), needs no extra model, and
tolerates the pose and size changes a few frames of occlusion bring.
"""

from __future__ import annotations

import cv2
import numpy as np

HUE_BINS, SATURATION_BINS = 16, 8
MIN_PIXELS = 16  # a mask smaller than this says nothing reliable about colour


def colour_histogram(image: np.ndarray, mask: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """Normalised H-S histogram of `image` (BGR) under `mask` (H×W bool), computed inside `box` only."""
    h, w = mask.shape
    x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
    x2, y2 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    if x2 <= x1 or y2 <= y1:
        return None
    region = mask[y1:y2, x1:x2]
    if region.sum() < MIN_PIXELS:
        return None
    hsv = cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1], region.astype(np.uint8), [HUE_BINS, SATURATION_BINS], [0, 180, 0, 256])
    return (hist / max(float(hist.sum()), 1.0)).astype(np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """1 − Bhattacharyya distance: 1 for identical colour distributions, 0 for disjoint ones."""
    return 1.0 - float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


def blend(old: np.ndarray | None, new: np.ndarray, weight: float) -> np.ndarray:
    """Running appearance: `weight` of the new look, the rest of the old (slow drift, no jumps)."""
    return new if old is None else (1 - weight) * old + weight * new
