"""Lazy instance masks: prototypes × coefficients at the model's resolution, assembled on request.

Like ultralytics' `retina_masks=True`, the mask logits are interpolated to source resolution
before they are thresholded (a 160×160 binary mask is never stretched), and the mask is cropped
to its box. Unlike it, only the pixels inside the box are computed, in one bilinear sampling of
the prototype-resolution logits at each source pixel's centre, instead of upsampling the whole
input and then resizing the whole frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .lazy_torch import inference_mode, torch


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
        """Xyxy boxes in input pixels → source pixels, clipped to the frame."""
        out = boxes.clone()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.left) / self.gain
        out[:, [1, 3]] = (out[:, [1, 3]] - self.top) / self.gain
        h, w = self.source_shape
        out[:, [0, 2]] = out[:, [0, 2]].clamp(0, w)
        out[:, [1, 3]] = out[:, [1, 3]].clamp(0, h)
        return out

    def boxes_to_cells(self, boxes: torch.Tensor, grid_shape: tuple[int, int]) -> torch.Tensor:
        """Xyxy boxes in source pixels → cells of a (rows, cols) grid laid over the network input.

        The inverse of `boxes_to_source`, scaled to a map of the input (the prototypes', stride 4).
        """
        (ih, iw), (rows, cols) = self.input_shape, grid_shape
        out = boxes.float().clone()
        out[:, [0, 2]] = (out[:, [0, 2]] * self.gain + self.left) * (cols / iw)
        out[:, [1, 3]] = (out[:, [1, 3]] * self.gain + self.top) * (rows / ih)
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

    def __getitem__(self, index: np.ndarray | slice) -> ProtoMasks:
        if isinstance(index, np.ndarray):
            index = torch.as_tensor(index, device=self.coefficients.device)
        return ProtoMasks(self.protos, self.coefficients[index], self.boxes[index], self.letterbox)

    @inference_mode
    def low_res(self) -> torch.Tensor:
        """Every instance's mask at the prototypes' resolution (network input / 4), cropped to its box.

        What appearance descriptors pool under (pipeline/embeddings.py): a coarse mask is enough
        to average features, and it costs one small matrix product for all rows.

        Returns:
            N×mh×mw bool tensor on the prototypes' device, in network-input coordinates.
        """
        c, mh, mw = self.protos.shape
        logits = (self.coefficients.float() @ self.protos.float().view(c, -1)).view(-1, mh, mw)
        boxes = self.letterbox.boxes_to_cells(self.boxes, (mh, mw))
        xs = torch.arange(mw, device=logits.device).view(1, 1, -1) + 0.5
        ys = torch.arange(mh, device=logits.device).view(1, -1, 1) + 0.5
        boxes = boxes.to(logits.device)
        inside = (xs >= boxes[:, 0, None, None]) & (xs <= boxes[:, 2, None, None])
        inside = inside & (ys >= boxes[:, 1, None, None]) & (ys <= boxes[:, 3, None, None])
        return (logits > 0) & inside

    @inference_mode
    def render(self) -> np.ndarray:
        """Every instance's mask at source resolution, each computed inside its box only.

        Returns:
            N×H×W bool, H×W the source frame's size; all False outside each box.
        """
        h, w = self.letterbox.source_shape
        out = np.zeros((len(self), h, w), dtype=bool)
        if len(self) == 0:
            return out
        c, mh, mw = self.protos.shape
        logits = (self.coefficients.float() @ self.protos.float().view(c, -1)).view(-1, 1, mh, mw)
        boxes = self.boxes.cpu().numpy()
        for i, box in enumerate(boxes):
            x1, y1 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
            x2, y2 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
            if x2 > x1 and y2 > y1:
                out[i, y1:y2, x1:x2] = self._sample(logits[i : i + 1], x1, y1, x2, y2)
        return out

    def _sample(self, logits: torch.Tensor, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
        """Bilinear mask logits at the centres of source pixels [y1:y2, x1:x2], thresholded.

        Only the box is computed, so the cost follows the object's size, not the frame's.
        """
        lb = self.letterbox
        _, _, mh, mw = logits.shape
        ih, iw = lb.input_shape
        device = logits.device
        # source pixel centre → network input pixel → normalised prototype coordinate in [-1, 1]
        xs = ((torch.arange(x1, x2, device=device) + 0.5) * lb.gain + lb.left) / iw * 2 - 1
        ys = ((torch.arange(y1, y2, device=device) + 0.5) * lb.gain + lb.top) / ih * 2 - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]
        sampled = torch.nn.functional.grid_sample(
            logits, grid.float(), mode="bilinear", padding_mode="border", align_corners=False
        )
        return (sampled[0, 0] > 0).cpu().numpy()
