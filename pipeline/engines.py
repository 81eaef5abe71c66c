"""Where the network runs: PyTorch (ultralytics *.pt checkpoints) or ONNX Runtime (ultralytics *.onnx exports).

The weights file's suffix chooses. Both take a float NCHW batch in [0, 1] and give back
(predictions B×(4+nc+nm)×A, prototypes B×nm×mh×mw) as torch tensors, so NMS and mask assembly
are the same whichever engine ran.

ONNX Runtime is there because it can run this network's CPU forward pass faster than PyTorch
(the README's Speed section has the figures and the command); outputs match within float
tolerance (tests/test_engines.py).
"""

from __future__ import annotations

import ast
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import ModelError
from .lazy_torch import torch


class Engine(Protocol):
    """Runs the network's forward pass; the segmenter letterboxes before and does NMS after."""

    stride: int
    class_names: dict[int, str]
    channels_last: bool  # wants NHWC memory behind the NCHW view (PyTorch convolutions run faster so)
    # (batch, height, width) when the network only takes that shape (a static export), else None
    fixed_input: tuple[int, int, int] | None

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward pass.

        Args:
            images: B×3×H×W float in [0, 1].

        Returns:
            (predictions B×(4+nc+nm)×A, prototypes B×nm×mh×mw).
        """
        ...


def split_outputs(outputs: object) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions B×(4+nc+nm)×A, prototypes B×nm×mh×mw) from a segmentation model's forward output."""
    head = outputs[0] if isinstance(outputs, (list, tuple)) and isinstance(outputs[0], (list, tuple)) else outputs
    if not isinstance(head, (list, tuple)) or len(head) < 2 or getattr(head[1], "ndim", 0) != 4:
        raise ModelError("the model's output has no mask prototypes: is it a segmentation model?")
    return head[0], head[1]


class TorchEngine:
    """A fused ultralytics nn.Module on one device, fp32 or fp16, in channels-last memory format.

    Channels-last is what makes PyTorch's CPU convolutions (oneDNN) fast; ultralytics uses the
    default layout (bench/pipeline_speed.py measures both, the README has the figures).

    Args:
        model: The fused network, on its device.
        half: Run in fp16 (CUDA).
    """

    fixed_input = None
    channels_last = True

    def __init__(self, model: torch.nn.Module, half: bool = False) -> None:
        model = model.to(memory_format=torch.channels_last)
        self.model = model.half() if half else model
        self.half = half
        self.stride = int(max(getattr(model, "stride", torch.tensor([32])).max().item(), 32))
        names = getattr(model, "names", {0: "object"})
        self.class_names = dict(names) if isinstance(names, dict) else dict(enumerate(names))
        self.device = next(model.parameters()).device
        # ultralytics' Detect head caches its anchors for the last input shape: two pipelines
        # sharing one model from two threads would race on that cache.
        self._lock = threading.Lock()

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward pass, one call at a time (see the lock in `__init__`).

        Args:
            images: B×3×H×W float in [0, 1] on the model's device; cast to fp16 here when `half`.

        Returns:
            (predictions B×(4+nc+nm)×A, prototypes B×nm×mh×mw).
        """
        images = images.contiguous(memory_format=torch.channels_last)  # a no-op for prepared batches
        with self._lock:
            return split_outputs(self.model(images.half() if self.half else images))


class OnnxEngine:
    """An ultralytics ONNX export in ONNX Runtime (CPU; CUDA when asked for and available).

    Static exports (fixed batch and size) are supported: the segmenter letterboxes to their size
    and feeds them one batch of that size at a time.
    """

    channels_last = False  # it takes plain NCHW arrays

    def __init__(self, path: str | Path, threads: int, cuda_device: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError(f"{path} is an ONNX model: it needs onnxruntime (fastsam-stream's [onnx] extra)") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: it warns about unused initializers in every export
        providers: list = ["CPUExecutionProvider"]
        if cuda_device is not None:
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ModelError("--device cuda with an ONNX model needs onnxruntime-gpu installed")
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": cuda_device}))
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own Fail/InvalidGraph types: all become a ModelError
            raise ModelError(f"cannot load {path} in ONNX Runtime: {str(exc).splitlines()[0]}") from None
        if cuda_device is not None and self.session.get_providers()[0] != "CUDAExecutionProvider":
            raise ModelError(f"ONNX Runtime could not use CUDA for {path} (it fell back to the CPU)")
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("task", "segment") != "segment" or len(self.session.get_outputs()) < 2:
            raise ModelError(f"{path} is not a segmentation model (task {meta.get('task')!r})")
        self.stride = int(meta.get("stride", 32))
        self.class_names = _names(meta.get("names"))
        shape = self.session.get_inputs()[0].shape  # e.g. [1, 3, 320, 320] or ['batch', 3, 'height', 'width']
        self.fixed_input = None
        if any(isinstance(d, int) for d in (shape[0], shape[2], shape[3])):
            # A static export (ultralytics makes them square). Partly fixed shapes, or a non-square
            # size, would need a letterbox this engine does not do: say so rather than feed it wrongly.
            if not all(isinstance(d, int) for d in shape) or shape[2] != shape[3]:
                raise ModelError(f"{path} takes input {shape}: export it with dynamic=True, or static and square")
            self.fixed_input = (shape[0], shape[2], shape[3])
        self._input = self.session.get_inputs()[0].name

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward pass in ONNX Runtime, which takes host arrays.

        Args:
            images: B×3×H×W float in [0, 1], on any device (copied to a float32 host array).

        Returns:
            (predictions B×(4+nc+nm)×A, prototypes B×nm×mh×mw) as CPU tensors.
        """
        array = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        predictions, protos = self.session.run(None, {self._input: array})[:2]
        return torch.from_numpy(predictions), torch.from_numpy(protos)


def _names(text: str | None) -> dict[int, str]:
    if not text:
        return {0: "object"}
    try:
        names = ast.literal_eval(text)  # ultralytics writes the dict's repr
    except (ValueError, SyntaxError):
        return {0: "object"}
    return {int(k): str(v) for k, v in names.items()} if isinstance(names, dict) else {0: "object"}
