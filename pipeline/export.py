"""Ultralytics' ONNX and OpenVINO exports, as the engines want them: dynamic batch and size.

One place for what every export needs, used by `fastsam-stream export` and the benchmarks:
ultralytics kept offline (`quiet_ultralytics`), the format's package checked before the export
starts (ultralytics would otherwise try to pip-install it at run time), and the export made from a
copy of the checkpoint in the caller's folder, because ultralytics always writes beside its input.
"""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from pathlib import Path

from ..errors import FastSAMStreamError
from .segmenter import quiet_ultralytics

EXPORT_FORMATS = ("onnx", "openvino")
# What ultralytics is asked for, per format: dynamic batch and size, which the engines take.
_EXPORT_ARGS = {
    "onnx": {"format": "onnx", "dynamic": True, "simplify": True, "opset": 17},
    "openvino": {"format": "openvino", "dynamic": True},
}
_PACKAGE = {"onnx": "onnx", "openvino": "openvino"}  # what each format imports, and its extra's name


def ultralytics_export(weights: Path, export_format: str, folder: Path, verbose: bool = False) -> Path:
    """Export a checkpoint with ultralytics, from a copy of it in `folder`.

    Args:
        weights: The *.pt checkpoint; nothing beside it is written.
        export_format: "onnx" or "openvino".
        folder: Where the copy and the export are written (a temporary folder, usually).
        verbose: Show ultralytics' output and torch's tracing warnings.

    Returns:
        The exported *.onnx file or *_openvino_model folder, inside `folder`.

    Raises:
        FastSAMStreamError: the format's package is not installed, or the export failed.
    """
    quiet_ultralytics(verbose=verbose)
    needed = _PACKAGE[export_format]
    if importlib.util.find_spec(needed) is None:
        raise FastSAMStreamError(
            f"{export_format} export needs {needed}: install fastsam-stream with its [{needed}] extra"
        )
    from ultralytics import YOLO

    copy = Path(shutil.copy(weights, Path(folder) / Path(weights).name))
    try:
        with warnings.catch_warnings():
            if not verbose:  # torch.jit.trace's deprecation notice, from inside ultralytics' OpenVINO export
                warnings.simplefilter("ignore")
            return Path(YOLO(str(copy)).export(**_EXPORT_ARGS[export_format]))
    except ImportError as exc:
        raise FastSAMStreamError(
            f"{export_format} export needs {exc.name or needed}: install fastsam-stream with its [{needed}] extra"
        ) from None
    except Exception as exc:  # noqa: BLE001 - ultralytics raises many types
        raise FastSAMStreamError(f"{export_format} export of {weights} failed: {str(exc).splitlines()[0]}") from None
