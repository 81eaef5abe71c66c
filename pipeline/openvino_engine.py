"""The OpenVINO engine: ultralytics' OpenVINO export (`*_openvino_model/`, or its .xml) on the CPU.

On small Intel and AMD CPU boxes OpenVINO runs this network's forward pass faster than PyTorch
and ONNX Runtime (the README's Speed section has the figures and the command). It gives back
what the other engines give (predictions, prototypes and, when asked, the P3 neck map) as torch
tensors, so NMS, masks and appearance descriptors are the same whichever engine ran; outputs
match PyTorch's within float tolerance (tests/test_engines.py).

Performance hints, chosen by measurement on a 2-core CPU (`bench/openvino_hints.py`): the
LATENCY hint, one stream using every thread the network is given, and one synchronous request.
The THROUGHPUT hint splits the cores into streams, so one request runs on one core; it only
pays with several requests in flight, which a pipeline that hands one batch at a time to the
network does not have, and even then it was no faster per frame than LATENCY.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import yaml

from ..errors import ModelError
from .engines import ForwardPass
from .lazy_torch import torch

HINTS = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
"""The compile settings (see the module docstring); the thread count comes from the model settings."""


def is_openvino_model(weights: str | Path) -> bool:
    """Whether `weights` names an OpenVINO model: an ultralytics `*_openvino_model/` folder or an .xml file.

    Args:
        weights: The model setting, as the user gave it.

    Returns:
        True for a path ending in .xml, a folder named `*_openvino_model` (ultralytics' export
        layout), or another folder holding an .xml; other folders are not models at all.
    """
    path = Path(weights).expanduser()
    if path.suffix == ".xml" or path.name.endswith("_openvino_model"):
        return True
    return path.is_dir() and any(path.glob("*.xml"))


def model_xml(weights: str | Path) -> Path:
    """The .xml file of an OpenVINO model given as its folder or itself.

    Args:
        weights: The folder, or the .xml.

    Returns:
        The .xml's path.

    Raises:
        ModelError: Nothing there, or a folder without exactly one .xml.
    """
    path = Path(weights).expanduser()
    if path.is_file() and path.suffix == ".xml":
        return path
    if not path.is_dir():
        raise ModelError(f"OpenVINO model not found: {weights}")
    found = sorted(path.glob("*.xml"))
    if len(found) != 1:
        raise ModelError(f"{weights}: an OpenVINO model folder needs exactly one .xml file, found {len(found)}")
    return found[0]


class OpenVinoEngine(ForwardPass):
    """An ultralytics OpenVINO export, compiled for the CPU with the LATENCY hint.

    Static exports (fixed batch and size) are supported like ONNX ones: the segmenter letterboxes
    to their size and feeds them one batch of that size at a time.

    Args:
        weights: The `*_openvino_model/` folder or its .xml; ultralytics' metadata.yaml beside the
            .xml gives the class names and stride.
        threads: CPU threads for the network.
        features: Also output the P3 neck map (added as an output before compiling).
    """

    channels_last = False  # it takes plain NCHW arrays
    takes_uint8 = True  # the graph starts with the conversion, which OpenVINO fuses into the first layer

    def __init__(self, weights: str | Path, threads: int, features: bool = False) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise ModelError(
                f"{weights} is an OpenVINO model: it needs openvino (fastsam-stream's [openvino] extra)"
            ) from None
        xml = model_xml(weights)
        meta = _metadata(xml.parent / "metadata.yaml")
        if meta.get("task", "segment") != "segment":
            raise ModelError(f"{weights} is not a segmentation model (task {meta.get('task')!r})")
        core = ov.Core()
        try:
            model = core.read_model(str(xml))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with its own text for any bad IR
            raise ModelError(f"cannot load {weights} in OpenVINO: {str(exc).splitlines()[0]}") from None
        if len(model.outputs) < 2 or model.outputs[1].get_partial_shape().rank.get_length() != 4:
            raise ModelError(f"{weights} is not a segmentation model: it has no mask prototypes output")
        self.has_features = features and _add_p3_output(model)
        self.stride = int(meta.get("stride", 32))
        names = meta.get("names") or {0: "object"}
        self.class_names = {int(k): str(v) for k, v in names.items()} if isinstance(names, dict) else {0: "object"}
        self.fixed_input = _fixed_input(model, weights)
        model = _with_uint8_input(model)
        compiled = core.compile_model(model, "CPU", {**HINTS, "INFERENCE_NUM_THREADS": threads})
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()  # one request: two pipelines sharing the engine take turns

    def run(self, images: torch.Tensor, features: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The forward pass, with the P3 map when `features`.

        Args:
            images: B×H×W×3 uint8 BGR as letterboxed, or B×3×H×W float RGB in [0, 1], on any device.
            features: Also return P3 (the engine must have been loaded with `features=True`).

        Returns:
            (predictions, prototypes, P3 or None) as CPU tensors.

        Raises:
            ModelError: Features asked of an engine loaded without them.
        """
        if features and not self.has_features:
            raise ModelError("this OpenVINO engine was loaded without appearance features (features=True)")
        if images.dtype != torch.uint8:  # back to the frames' own form, which the graph takes
            images = images.detach().permute(0, 2, 3, 1).flip(-1).mul(255).round_().to(torch.uint8)
        array = np.ascontiguousarray(images.cpu().numpy())
        with self._lock:
            # share_outputs=False (the default): the arrays are copies, not views of the request's
            # buffers, which the next inference overwrites.
            outputs = self._request.infer({0: array})
        values = [torch.from_numpy(outputs[i]) for i in range(3 if features else 2)]
        return values[0], values[1], values[2] if features else None


def _with_uint8_input(model: object) -> object:
    """The model taking B×H×W×3 uint8 BGR, as letterboxed, with the float RGB conversion in its graph.

    OpenVINO folds the conversion into the first convolution, so it costs next to nothing, where
    in the pipeline's prepare stage it was a float copy of every frame made beside the network.
    """
    import openvino as ov
    from openvino.preprocess import ColorFormat, PrePostProcessor

    steps = PrePostProcessor(model)
    steps.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.BGR)
    steps.input().model().set_layout(ov.Layout("NCHW"))
    steps.input().preprocess().convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB).scale(255.0)
    return steps.build()


def _add_p3_output(model: object) -> bool:
    """Add the P3 map (the input of the Segment head's prototype branch) as the model's third output.

    Returns:
        False when the graph has no `proto.cv1` convolution to find it by.
    """
    for node in model.get_ordered_ops():
        if node.get_type_name() == "Convolution" and "proto.cv1.conv" in node.get_friendly_name():
            source = node.input(0).get_source_output()
            while source.get_node().get_type_name() in _QUANTIZERS:  # back to the float map in an int8 export
                source = source.get_node().input(0).get_source_output()
            model.add_outputs([source])
            return True
    return False


# What an int8 (NNCF) export puts between a float map and a convolution that reads it.
_QUANTIZERS = {"FakeQuantize", "FakeConvert", "Convert"}


def _fixed_input(model: object, weights: str | Path) -> tuple[int, int, int] | None:
    shape = model.inputs[0].get_partial_shape()
    dims = [shape[i].get_length() if shape[i].is_static else None for i in range(4)]
    if all(d is None for d in (dims[0], dims[2], dims[3])):
        return None
    if None in dims or dims[2] != dims[3]:
        raise ModelError(f"{weights} takes input {shape}: export it with dynamic=True, or static and square")
    return dims[0], dims[2], dims[3]


def _metadata(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        meta = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return meta if isinstance(meta, dict) else {}
