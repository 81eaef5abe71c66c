"""Where the network runs: PyTorch (ultralytics *.pt checkpoints) or ONNX Runtime (ultralytics *.onnx exports).

OpenVINO, the third engine, is in pipeline/openvino_engine.py; `load_engine` (pipeline/segmenter.py)
chooses by what the weights' path is. Every engine takes the letterboxed batch as the prepare
stage makes it, B×H×W×3 uint8 BGR (`takes_uint8`), and converts it itself as the first step of
its forward pass; a float NCHW batch in [0, 1] is taken too. All give back
(predictions B×(4+nc+nm)×A, prototypes B×nm×mh×mw) as torch tensors, so NMS and mask assembly
are the same whichever engine ran. Asked for them (`run(images, features=True)`), they also give
the P3 neck map the Segment head starts from, B×C×h/8×w/8: appearance descriptors pool it
(pipeline/embeddings.py).

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
    # Takes the letterboxed frames as they are, B×H×W×3 uint8 BGR, and converts them itself (in the
    # network's graph or threads): the pipeline's prepare stage then makes no float copy at all.
    # An engine without the attribute is given B×3×H×W float RGB in [0, 1].
    takes_uint8: bool
    # (batch, height, width) when the network only takes that shape (a static export), else None
    fixed_input: tuple[int, int, int] | None

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward pass.

        Args:
            images: B×3×H×W float RGB in [0, 1], or B×H×W×3 uint8 BGR (`takes_uint8`).

        Returns:
            (predictions B×(4+nc+nm)×A, prototypes B×nm×mh×mw).
        """
        ...

    def run(self, images: torch.Tensor, features: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The forward pass, with the P3 map when `features`.

        Args:
            images: B×3×H×W float RGB in [0, 1], or B×H×W×3 uint8 BGR (`takes_uint8`).
            features: Also return the P3 neck map.

        Returns:
            (predictions, prototypes, P3 map B×C×H/8×W/8 or None when not asked for).
        """
        ...


def float_rgb(images: torch.Tensor) -> torch.Tensor:
    """B×3×H×W float RGB in [0, 1] from what an engine is given: itself, or B×H×W×3 uint8 BGR.

    The uint8 frames' memory stays NHWC: the result is channels-last, made by torch's threads
    (the channel flip, the conversion to float in place of a copy, the scale in place).

    Args:
        images: B×3×H×W float (returned as it is), or B×H×W×3 uint8 BGR.

    Returns:
        B×3×H×W float32 RGB in [0, 1].
    """
    if images.dtype != torch.uint8:
        return images
    nchw = images.permute(0, 3, 1, 2)  # a view: channels-last memory
    return nchw.flip(1).to(torch.float32, memory_format=torch.channels_last).mul_(1 / 255.0)


def split_outputs(outputs: object) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions B×(4+nc+nm)×A, prototypes B×nm×mh×mw) from a segmentation model's forward output."""
    head = outputs[0] if isinstance(outputs, (list, tuple)) and isinstance(outputs[0], (list, tuple)) else outputs
    if not isinstance(head, (list, tuple)) or len(head) < 2 or getattr(head[1], "ndim", 0) != 4:
        raise ModelError("the model's output has no mask prototypes: is it a segmentation model?")
    return head[0], head[1]


class ForwardPass:
    """The Engine protocol's `__call__` for an engine that implements `run`: the forward pass alone."""

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward pass, without the P3 map: `run(images, features=False)`.

        Args:
            images: B×3×H×W float RGB in [0, 1], or B×H×W×3 uint8 BGR (`takes_uint8`).

        Returns:
            (predictions B×(4+nc+nm)×A, prototypes B×nm×mh×mw).
        """
        predictions, protos, _ = self.run(images, features=False)
        return predictions, protos


class TorchEngine(ForwardPass):
    """A fused ultralytics nn.Module on one device, fp32 or fp16, in channels-last memory format.

    Channels-last is what makes PyTorch's CPU convolutions (oneDNN) fast; ultralytics uses the
    default layout (bench/pipeline_speed.py measures both, the README has the figures).

    Args:
        model: The fused network, on its device.
        half: Run in fp16 (CUDA).
    """

    fixed_input = None
    channels_last = True
    takes_uint8 = True

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
        # The Segment head's inputs are the neck's P3, P4, P5 maps: a hook keeps P3 when asked
        # (under the lock, so a concurrent caller never sees another batch's map).
        self._capture: list[torch.Tensor] | None = None
        head = model.model[-1] if hasattr(model, "model") and len(model.model) else None
        self.has_features = head is not None and hasattr(head, "proto")
        if self.has_features:
            head.register_forward_pre_hook(self._keep_p3)

    def _keep_p3(self, _module: object, inputs: tuple) -> None:
        if self._capture is not None:
            self._capture.append(inputs[0][0])

    def run(self, images: torch.Tensor, features: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The forward pass, with the P3 map the Segment head was given when `features`.

        Args:
            images: B×3×H×W float in [0, 1], or B×H×W×3 uint8 BGR, on the model's device.
            features: Also return P3 (B×C×H/8×W/8, on the device, in the model's precision).

        Returns:
            (predictions, prototypes, P3 or None).

        Raises:
            ModelError: Features asked of a model without a Segment head.
        """
        if features and not self.has_features:
            raise ModelError("this model has no Segment head to take appearance features from")
        images = float_rgb(images).contiguous(memory_format=torch.channels_last)  # a no-op once converted
        with self._lock:
            self._capture = [] if features else None
            try:
                predictions, protos = split_outputs(self.model(images.half() if self.half else images))
                p3 = self._capture[0] if features else None
            finally:
                self._capture = None
        return predictions, protos, p3


class OnnxEngine(ForwardPass):
    """An ultralytics ONNX export in ONNX Runtime (CPU; CUDA when asked for and available).

    Static exports (fixed batch and size) are supported: the segmenter letterboxes to their size
    and feeds them one batch of that size at a time.
    """

    channels_last = False  # it takes plain NCHW arrays
    takes_uint8 = True

    def __init__(self, path: str | Path, threads: int, cuda_device: int | None = None, features: bool = False) -> None:
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
        # With features, the graph is loaded with P3 as a third output (edited in memory); without,
        # as it is, so that nothing blocks ONNX Runtime's fusions around P3.
        p3 = _p3_output(path) if features else None  # None: an export where P3 cannot be found (has_features)
        if p3 is not None:
            try:
                self.session = ort.InferenceSession(p3[1], options, providers=providers)
            except Exception:  # noqa: BLE001 - an edit ONNX Runtime rejects: the model still runs, without features
                p3 = None
        try:
            if p3 is None:
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
        self._outputs = [o.name for o in self.session.get_outputs()[:2]]
        self._p3_name = p3[0] if p3 else None
        self.has_features = p3 is not None

    def run(self, images: torch.Tensor, features: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The forward pass in ONNX Runtime, with the P3 map when `features`.

        Args:
            images: B×3×H×W float in [0, 1], or B×H×W×3 uint8 BGR, on any device (made a float32
                NCHW host array).
            features: Also return P3 (the engine must have been loaded with `features=True`).

        Returns:
            (predictions, prototypes, P3 or None) as CPU tensors.

        Raises:
            ModelError: Features asked of an engine loaded without them.
        """
        array = _float_nchw(images)
        if not features:
            predictions, protos = self.session.run(self._outputs, {self._input: array})
            return torch.from_numpy(predictions), torch.from_numpy(protos), None
        if not self.has_features:
            raise ModelError("this ONNX engine was loaded without appearance features (features=True)")
        predictions, protos, p3 = self.session.run([*self._outputs, self._p3_name], {self._input: array})
        return torch.from_numpy(predictions), torch.from_numpy(protos), torch.from_numpy(p3)


def _float_nchw(images: torch.Tensor) -> np.ndarray:
    """A contiguous float32 NCHW RGB host array in [0, 1], from float NCHW or uint8 BGR NHWC."""
    if images.dtype != torch.uint8:
        return np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
    bgr = images.cpu().numpy()
    out = np.empty((bgr.shape[0], 3, *bgr.shape[1:3]), dtype=np.float32)
    for channel in range(3):  # BGR→RGB and NHWC→NCHW: one strided pass per channel, no temporaries
        np.multiply(bgr[..., 2 - channel], 1 / 255.0, out=out[:, channel], dtype=np.float32)
    return out


def _p3_output(path: str | Path) -> tuple[str, bytes] | None:
    """The P3 map's tensor name in an ultralytics segmentation export, and the graph with it as an output.

    P3 is what the Segment head's prototype branch starts from: the input of its first
    convolution (`.../proto/cv1/conv/Conv`), behind the quantizer in an int8 export. Exports
    only name their two outputs, so the graph is edited in memory (nothing is written to disk).

    Returns:
        (name, serialized model), or None when the graph has no such node.
    """
    try:
        import onnx  # the [onnx] extra installs it with onnxruntime
    except ImportError:  # onnxruntime alone: the model runs, without features
        return None

    try:
        model = onnx.load(str(path))
    except Exception:  # noqa: BLE001 - a file onnx cannot parse: ONNX Runtime's load then says what is wrong
        return None
    producers = {out: node for node in model.graph.node for out in node.output}
    first = next((n for n in model.graph.node if "/proto/cv1/conv/Conv" in n.name and n.input), None)
    if first is None:
        return None
    name = first.input[0]
    while name in producers and producers[name].op_type in _QUANTIZERS:
        name = producers[name].input[0]  # back through the int8 quantizer to the float map
    if name not in producers:
        return None
    known = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    elem_type = known.get(name, onnx.TensorProto.FLOAT)  # an fp16 export declares its maps as FLOAT16
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, elem_type, None))
    return name, model.SerializeToString()


# What an int8 export puts between a float map and a convolution that reads it.
_QUANTIZERS = {"DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "Cast"}


def _names(text: str | None) -> dict[int, str]:
    if not text:
        return {0: "object"}
    try:
        names = ast.literal_eval(text)  # ultralytics writes the dict's repr
    except (ValueError, SyntaxError):
        return {0: "object"}
    return {int(k): str(v) for k, v in names.items()} if isinstance(names, dict) else {0: "object"}
