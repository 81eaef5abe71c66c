"""Post-training int8 quantisation of an OpenVINO export (NNCF), calibrated on frames of a clip.

`fastsam-stream export --format openvino --int8 --calibrate CLIP` runs it. The calibration frames
come from the user's own clip, spread evenly over it and letterboxed exactly as the pipeline
letterboxes them, so the activation ranges are those of the camera the model will watch. As
ultralytics does for its int8 exports, the Segment head's box decoding (its sigmoid and the
distribution-focal decoding) stays in float: quantising it shifts boxes by whole pixels.

The accuracy this costs and the speed it gains are measured in the README's Speed section
(`fastsam-stream eval` and `bench/pipeline_speed.py` on an int8 export).
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from pathlib import Path

import av
import numpy as np
import yaml

from ..errors import ConfigError, FastSAMStreamError
from .openvino_engine import model_xml
from .segmenter import letterbox

CALIBRATION_FRAMES = 100
"""Frames taken from the clip: enough for stable activation ranges; the export takes about 30 s on 2 cores."""


def calibration_frames(clip: str | Path, count: int) -> list[np.ndarray]:
    """Up to `count` BGR frames spread evenly over a clip.

    Args:
        clip: A video file PyAV can read.
        count: How many frames to take.

    Returns:
        The frames, as H×W×3 uint8 BGR arrays.

    Raises:
        ConfigError: The clip cannot be read or has no frames.
    """
    try:
        with av.open(str(clip)) as container:
            # Counted, not read from the header, which can be wrong or missing: packets, not decoded.
            total = sum(1 for packet in container.demux(video=0) if packet.size)
        step = max(total // count, 1)
        frames = []
        with av.open(str(clip)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i % step == 0:
                    frames.append(frame.to_ndarray(format="bgr24"))
                    if len(frames) == count:
                        break
    except (av.FFmpegError, OSError, IndexError) as exc:
        raise ConfigError(f"--calibrate {clip}: cannot read it as a video ({exc})") from None
    if not frames:
        raise ConfigError(f"--calibrate {clip}: the clip has no video frames")
    return frames


def quantize_openvino(xml: Path, frames: list[np.ndarray], imgsz: int, out_xml: Path, verbose: bool = False) -> None:
    """Quantise an OpenVINO export to int8 and save it.

    Args:
        xml: The float export's .xml (ultralytics' layout: float NCHW RGB input in [0, 1]).
        frames: Calibration frames, BGR, as `calibration_frames` gives them.
        imgsz: The network input size the frames are letterboxed to (the run's `model.imgsz`).
        out_xml: Where the int8 model is written (.xml, with its .bin beside it).
        verbose: Show NNCF's log and progress bars.

    Raises:
        FastSAMStreamError: NNCF is not installed, or quantisation failed.
    """
    if not verbose:  # NNCF logs every node it leaves in float; torch, imported by it, warns of no CUDA
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise FastSAMStreamError(
            f"int8 export needs {exc.name}: install fastsam-stream with its [int8] extra"
        ) from None

    model = ov.Core().read_model(str(xml))

    def network_input(image: np.ndarray) -> np.ndarray:
        boxed, _ = letterbox(image, imgsz, 32, minimal=True)
        return np.ascontiguousarray(boxed[None, ..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32) / 255.0

    if not verbose:
        nncf.set_log_level(logging.ERROR)
    try:
        # NNCF draws progress bars on stdout, which is the command's own output.
        with contextlib.redirect_stdout(sys.stdout if verbose else io.StringIO()):
            quantized = nncf.quantize(
                model,
                nncf.Dataset(frames, network_input),
                preset=nncf.QuantizationPreset.MIXED,
                subset_size=len(frames),
                ignored_scope=nncf.IgnoredScope(names=_box_decoding(model)),
            )
        ov.save_model(quantized, str(out_xml))
    except Exception as exc:  # noqa: BLE001 - NNCF and OpenVINO raise their own types
        raise FastSAMStreamError(f"int8 quantisation failed: {str(exc).splitlines()[0]}") from None


def _box_decoding(model: object) -> list[str]:
    """The operations kept in float: every sigmoid, and the head's own decoding (its scope and its DFL).

    The head is the scope of the graph's last sigmoid (the class scores), e.g. `__module.model.22`.
    """
    operations = model.get_ordered_ops()
    sigmoids = [op.get_friendly_name() for op in operations if op.get_type_name() == "Sigmoid"]
    if not sigmoids:
        return []
    head = sigmoids[-1].split("/", 1)[0]
    return [
        op.get_friendly_name()
        for op in operations
        if op.get_type_name() == "Sigmoid" or op.get_friendly_name().startswith((f"{head}/", f"{head}.dfl"))
    ]


def quantize_export(
    exported: Path, frames: list[np.ndarray], imgsz: int, target: Path, calibration: str, verbose: bool = False
) -> Path:
    """An int8 copy of an OpenVINO export folder, its metadata.yaml saying how it was calibrated.

    Args:
        exported: The float export (ultralytics' `*_openvino_model/` layout), left as it is.
        frames: Calibration frames, BGR, as `calibration_frames` gives them.
        imgsz: The network input size the frames are letterboxed to.
        target: The folder to write (created; it must not exist).
        calibration: The calibration clip's name, for the metadata.
        verbose: Show NNCF's log and progress bars.

    Returns:
        `target`.

    Raises:
        FastSAMStreamError: NNCF is not installed, or quantisation failed.
    """
    target.mkdir(parents=True)
    xml = model_xml(exported)
    quantize_openvino(xml, frames, imgsz, target / xml.name, verbose)
    meta_path = exported / "metadata.yaml"
    meta = yaml.safe_load(meta_path.read_text()) if meta_path.is_file() else {}
    meta["int8"] = {"calibration": calibration, "frames": len(frames), "imgsz": imgsz}
    (target / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return target
