"""Appearance from the segmenter itself: each instance's descriptor, pooled from the network's P3 map under its mask.

A tracker that must tell look-alikes apart (a player among players in the same kit) needs more
than a colour histogram. BoT-SORT runs a second, ReID network for it; the segmenter already
computes rich features for every pixel, and each instance has a mask. The P3 neck map (stride 8,
the Segment head's first input: 64 channels for a YOLOv8n-seg, 128 for FastSAM-s, 320 for
FastSAM-x) averaged under the instance's mask is a descriptor for free: no second
network, no extra weights, any `*-seg.pt` or FastSAM checkpoint.

Why P3 (bench/appearance_features.py on ../shared/eval, the README's "Appearance and camera
motion" has the table): how often the target's own instance is more similar to its first view
than every other instance near it, P3 and P4, centred, tie at 0.96, ahead of the mask prototypes
(0.95), the mask coefficients (0.90), P5 (0.89-0.91) and the colour histogram (0.87; it fails on
grey video). P3 is kept for its stride of 8: a small object still covers several of its cells.
The map's spatial mean is subtracted before pooling: the activations are mostly positive, and
without it every pair of instances is 0.95+ similar (a margin of 0.05 between the target and the
best other instance, against 0.23 centred), which leaves no room for a threshold.

Descriptors are computed on request only, on the device the map is on, for the rows asked:
`Instances.embeddings(rows)`. Instances nobody asks about cost nothing.
"""

from __future__ import annotations

import numpy as np

from .lazy_torch import inference_mode, torch
from .masks import ProtoMasks


class PooledEmbeddings:
    """The LazyEmbeddings of one frame: its P3 map (C×h×w) and its instances' prototype masks.

    Args:
        features: The frame's P3 map, C×h×w, covering the network input (stride 8).
        masks: The frame's masks (prototypes × coefficients), one row per instance.
    """

    def __init__(self, features: torch.Tensor, masks: ProtoMasks, _host: _HostMaps | None = None) -> None:
        if features.ndim != 3:
            raise ValueError(f"features must be a C×h×w map, got shape {tuple(features.shape)}")
        self.features = features
        self.source_masks = masks
        # Shared by every slice of one frame: the host copies and the map's mean are made once a frame.
        self._host = _host if _host is not None else _HostMaps()

    def __len__(self) -> int:
        return len(self.source_masks)

    def __getitem__(self, index: np.ndarray | slice) -> PooledEmbeddings:
        return PooledEmbeddings(self.features, self.source_masks[index], self._host)

    @inference_mode
    def compute(self) -> np.ndarray:
        """Every row's descriptor: the centred P3 map averaged under its mask, unit length.

        Returns:
            N×C float32; a row whose mask covers no feature cell is all zeros.
        """
        if len(self) == 0:
            return np.zeros((0, self.features.shape[0]), np.float32)
        if self.features.device.type != "cpu":
            return self._on_device()
        return self._per_box()

    def _on_device(self) -> np.ndarray:
        """All rows at once on the GPU: full-map masks at the prototypes' stride, pooled down to P3's."""
        channels, height, width = self.features.shape
        weights = self.source_masks.low_res().float()  # N×mh×mw in {0, 1}, at the prototypes' stride 4
        factor = max(weights.shape[1] // height, 1)
        if factor > 1:  # down to the map's stride: the share of each feature cell the mask covers
            weights = torch.nn.functional.avg_pool2d(weights[:, None], factor)[:, 0]
        weights = weights[:, :height, :width].reshape(len(weights), -1)
        weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1e-6)
        fmap = self.features.float().reshape(channels, -1)
        pooled = weights @ (fmap - fmap.mean(dim=1, keepdim=True)).T
        return torch.nn.functional.normalize(pooled, dim=1).cpu().numpy().astype(np.float32)

    def _per_box(self) -> np.ndarray:
        """Row by row on the CPU, each inside its own box only.

        Small single-threaded products: on the CPU the network's forward pass holds the cores,
        and frame-sized multi-threaded tensor operations from the tracker's thread would wait on
        it (measured: 100 ms instead of 2 ms for 10 rows while a forward pass runs).
        """
        fmap, protos, mean = self._host.of(self.features, self.source_masks.protos)
        coefficients = self.source_masks.coefficients.float().numpy()
        channels, height, width = fmap.shape
        factor = max(protos.shape[1] // height, 1)  # prototype cells per feature cell, each way
        cells = self.source_masks.letterbox.boxes_to_cells(self.source_masks.boxes, protos.shape[1:]).cpu().numpy()
        out = np.zeros((len(self), channels), np.float32)
        for i, (x1, y1, x2, y2) in enumerate(cells):
            fx1, fy1 = int(x1 // factor), int(y1 // factor)  # the feature cells the box touches
            fx2, fy2 = min(int(np.ceil(x2 / factor)), width), min(int(np.ceil(y2 / factor)), height)
            if fx2 <= fx1 or fy2 <= fy1:
                continue
            window = protos[:, fy1 * factor : fy2 * factor, fx1 * factor : fx2 * factor]
            logits = coefficients[i] @ window.reshape(len(coefficients[i]), -1)
            ys = np.arange(fy1 * factor, fy2 * factor)[:, None] + 0.5
            xs = np.arange(fx1 * factor, fx2 * factor)[None, :] + 0.5
            inside = (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)
            mask = (logits.reshape(window.shape[1:]) > 0) & inside
            cover = mask.reshape(fy2 - fy1, factor, fx2 - fx1, factor).mean(axis=(1, 3)).reshape(-1)
            if cover.sum() == 0:
                continue
            pooled = fmap[:, fy1:fy2, fx1:fx2].reshape(channels, -1) @ (cover / cover.sum()) - mean
            out[i] = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
        return out


class _HostMaps:
    """One frame's P3 map and prototypes as float32 host arrays, and the map's mean, made on first use."""

    def __init__(self) -> None:
        self._maps: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def of(self, features: torch.Tensor, protos: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(P3 C×h×w, prototypes nm×mh×mw, P3's per-channel mean C), computed once a frame."""
        if self._maps is None:
            # Views, not copies: the maps come channels-last from the network, and a contiguous
            # copy of a whole frame's map costs more than every box's window read from it.
            fmap = features.float().numpy()
            self._maps = (fmap, protos.float().numpy(), fmap.mean(axis=(1, 2)))
        return self._maps
