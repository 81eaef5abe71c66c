"""Lazy instance masks: prototypes × coefficients at the model's resolution, assembled on request.

Assembly follows ultralytics' `retina_masks=True` path: the mask logits are upsampled to the
letterboxed input, the letterbox padding is cut away, the rest is resized to the source frame,
and only then thresholded and cropped to the box. A 160×160 binary mask is never stretched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

_RENDER_CHUNK = 8  # masks assembled at once: bounds the float intermediate to 8×H×W


@dataclass(frozen=True)
class Letterbox:
    """Where a source frame sits inside the network input: scaled by `gain`, offset by (left, top)."""

    source_shape: tuple[int, int]  # (H, W) of the frame
    input_shape: tuple[int, int]  # (h, w) of the network input
    gain: float
    left: int
    top: int
    content_shape: tuple[int, int]  # (h, w) of the resized frame inside the input

    def boxes_to_source(self, boxes: torch.Tensor) -> torch.Tensor:
        """xyxy boxes in input pixels → source pixels, clipped to the frame."""
        out = boxes.clone()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.left) / self.gain
        out[:, [1, 3]] = (out[:, [1, 3]] - self.top) / self.gain
        h, w = self.source_shape
        out[:, [0, 2]] = out[:, [0, 2]].clamp(0, w)
        out[:, [1, 3]] = out[:, [1, 3]].clamp(0, h)
        return out


class ProtoMasks:
    """The LazyMasks of one frame: shared prototypes (C×mh×mw) and one coefficient row per instance."""

    def __init__(self, protos: torch.Tensor, coefficients: torch.Tensor, boxes: torch.Tensor, letterbox: Letterbox):
        if coefficients.ndim != 2 or coefficients.shape[1] != protos.shape[0]:
            raise ValueError(f"coefficients {tuple(coefficients.shape)} do not fit prototypes {tuple(protos.shape)}")
        if boxes.shape != (len(coefficients), 4):
            raise ValueError(f"{len(coefficients)} coefficient rows but boxes of shape {tuple(boxes.shape)}")
        self.protos = protos
        self.coefficients = coefficients
        self.boxes = boxes  # source pixels, same device as protos
        self.letterbox = letterbox

    def __len__(self) -> int:
        return len(self.coefficients)

    def __getitem__(self, index: np.ndarray | slice) -> "ProtoMasks":
        if isinstance(index, np.ndarray):
            index = torch.as_tensor(index, device=self.coefficients.device)
        return ProtoMasks(self.protos, self.coefficients[index], self.boxes[index], self.letterbox)

    @torch.inference_mode()
    def render(self) -> np.ndarray:
        chunks = [self._render(i, i + _RENDER_CHUNK) for i in range(0, len(self), _RENDER_CHUNK)]
        return np.concatenate(chunks) if chunks else np.zeros((0, *self.letterbox.source_shape), bool)

    def _render(self, start: int, stop: int) -> np.ndarray:
        lb = self.letterbox
        c, mh, mw = self.protos.shape
        logits = (self.coefficients[start:stop].float() @ self.protos.float().view(c, -1)).view(-1, mh, mw)
        logits = F.interpolate(logits[None], size=lb.input_shape, mode="bilinear", align_corners=False)[0]
        (ch, cw), top, left = lb.content_shape, lb.top, lb.left
        logits = logits[:, top : top + ch, left : left + cw]
        logits = F.interpolate(logits[None], size=lb.source_shape, mode="bilinear", align_corners=False)[0]
        masks = logits > 0
        h, w = lb.source_shape
        boxes = self.boxes[start:stop]
        cols = torch.arange(w, device=masks.device)[None, None, :]
        rows = torch.arange(h, device=masks.device)[None, :, None]
        x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
        masks &= (cols >= x1.floor()) & (cols < x2.ceil()) & (rows >= y1.floor()) & (rows < y2.ceil())
        return masks.cpu().numpy()
