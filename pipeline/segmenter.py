"""The Segmenter protocol and its ultralytics backend (FastSAM or any YOLOv8-seg checkpoint).

The backend runs the network itself (letterbox → forward → NMS) instead of going through
ultralytics' predictor, so that it can take a batch of frames from several sources at once and
keep masks as prototypes × coefficients until someone asks for pixels.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import cv2
import numpy as np
import torch

from ..core import Frame, Instances
from ..errors import ConfigError, ModelError
from .masks import Letterbox, ProtoMasks

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = "FastSAM-s.pt"
_PAD_VALUE = 114  # ultralytics' letterbox grey


class Segmenter(Protocol):
    def segment(self, frames: Sequence[Frame]) -> list[Instances]:
        """One Instances per frame, in the same order."""
        ...


@dataclass(frozen=True)
class SegmenterSettings:
    weights: str = DEFAULT_WEIGHTS
    device: str | None = None  # None: cuda:0 when available, else cpu
    imgsz: int = 640
    conf: float = 0.4
    iou: float = 0.7
    max_det: int = 300
    agnostic_nms: bool = True  # FastSAM is class-agnostic; keeps one instance per object
    half: bool = False
    threads: int | None = None  # torch CPU threads; None: every core this process may use


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def quiet_ultralytics(verbose: bool = False) -> None:
    """Keep ultralytics offline and silent. Must run before ultralytics is first imported.

    YOLO_OFFLINE stops its online checks and telemetry, YOLO_AUTOINSTALL=false stops it from
    pip-installing missing packages at run time. A user's own settings win.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "true" if verbose else "false")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(cache / "fastsam-stream" / "ultralytics"))


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {name!r}: use cpu or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name} asked for, but torch sees no CUDA GPU here: use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device {name} asked for, but only {torch.cuda.device_count()} CUDA GPU(s) exist")
    if device.type not in {"cpu", "cuda"}:
        raise ConfigError(f"device {name} is not supported: use cpu or cuda:N")
    return device


def load_segmentation_model(weights: str, device: torch.device) -> torch.nn.Module:
    """Load an ultralytics segmentation checkpoint from a path, or by name where it can be fetched."""
    quiet_ultralytics()
    path = Path(weights).expanduser()
    if path.suffix != ".pt":
        raise ModelError(f"{weights}: only PyTorch checkpoints (*.pt) are supported as weights")
    is_bare_name = len(Path(weights).parts) == 1
    if not path.is_file() and not is_bare_name:
        raise ModelError(f"weights file not found: {weights}")
    from ultralytics import YOLO  # imported here so the env above is in place first

    try:
        model = YOLO(str(path) if path.is_file() else weights)
    except (ConnectionError, FileNotFoundError, OSError) as exc:
        if path.is_file():
            raise ModelError(f"cannot read weights {weights}: {exc}") from None
        raise ModelError(
            f"could not fetch {weights} (no internet here?): download it where there is, then pass --weights PATH"
        ) from None
    except Exception as exc:  # ultralytics raises many types for a bad checkpoint
        raise ModelError(f"cannot load {weights} as an ultralytics checkpoint: {str(exc).splitlines()[0]}") from None
    if not isinstance(model.model, torch.nn.Module) or model.task != "segment":
        raise ModelError(f"{weights} is a {model.task!r} model; a segmentation (*-seg or FastSAM) checkpoint is needed")
    net = model.model.fuse(verbose=False) if hasattr(model.model, "fuse") else model.model
    return net.to(device).eval()


def letterbox(image: np.ndarray, imgsz: int, stride: int, minimal: bool) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect ratio and pad to imgsz×imgsz, or only to a stride multiple when `minimal`."""
    h, w = image.shape[:2]
    gain = min(imgsz / h, imgsz / w)
    ch, cw = max(round(h * gain), 1), max(round(w * gain), 1)
    ih, iw = (imgsz, imgsz)
    if minimal:
        ih, iw = ch + (-ch) % stride, cw + (-cw) % stride
    top, left = (ih - ch) // 2, (iw - cw) // 2
    resized = cv2.resize(image, (cw, ch), interpolation=cv2.INTER_LINEAR) if (ch, cw) != (h, w) else image
    padded = cv2.copyMakeBorder(
        resized, top, ih - ch - top, left, iw - cw - left, cv2.BORDER_CONSTANT, value=(_PAD_VALUE,) * 3
    )
    return padded, Letterbox((h, w), (ih, iw), gain, left, top, (ch, cw))


def split_outputs(outputs: object) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions B×(4+nc+nm)×A, prototypes B×nm×mh×mw) from a segmentation model's forward output."""
    head = outputs[0] if isinstance(outputs, (list, tuple)) and isinstance(outputs[0], (list, tuple)) else outputs
    if not isinstance(head, (list, tuple)) or len(head) < 2 or getattr(head[1], "ndim", 0) != 4:
        raise ModelError("the model's output has no mask prototypes: is it a segmentation model?")
    return head[0], head[1]


class UltralyticsSegmenter:
    """FastSAM / YOLOv8-seg on one device. `segment` takes a batch of frames of any sizes."""

    def __init__(self, settings: SegmenterSettings, model: torch.nn.Module | None = None) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        if settings.half and self.device.type != "cuda":
            raise ConfigError("half precision needs a CUDA device")
        torch.set_num_threads(settings.threads or cpu_count())
        quiet_ultralytics()
        self.model = model if model is not None else load_segmentation_model(settings.weights, self.device)
        if settings.half:
            self.model = self.model.half()
        self.stride = int(max(getattr(self.model, "stride", torch.tensor([32])).max().item(), 32))
        names = getattr(self.model, "names", {0: "object"})
        self.class_names: dict[int, str] = dict(names) if isinstance(names, dict) else dict(enumerate(names))
        from ultralytics.utils.nms import non_max_suppression

        self._nms = non_max_suppression

    @torch.inference_mode()
    def segment(self, frames: Sequence[Frame]) -> list[Instances]:
        if not frames:
            return []
        same_size = len({f.image.shape for f in frames}) == 1
        boxed = [letterbox(f.image, self.settings.imgsz, self.stride, minimal=same_size) for f in frames]
        batch = np.stack([img for img, _ in boxed])[..., ::-1].transpose(0, 3, 1, 2)  # BGR→RGB, NHWC→NCHW
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
        x = (x.half() if self.settings.half else x.float()) / 255.0
        predictions, protos = split_outputs(self.model(x))
        s = self.settings
        detections = self._nms(
            predictions, s.conf, s.iou, agnostic=s.agnostic_nms, max_det=s.max_det, nc=len(self.class_names)
        )
        return [self._instances(det, proto, lb) for det, proto, (_, lb) in zip(detections, protos, boxed)]

    def _instances(self, det: torch.Tensor, proto: torch.Tensor, lb: Letterbox) -> Instances:
        boxes = lb.boxes_to_source(det[:, :4].float())
        masks = ProtoMasks(proto, det[:, 6:], boxes, lb)
        return Instances(
            boxes.cpu().numpy(),
            det[:, 4].float().cpu().numpy(),
            lb.source_shape,
            class_ids=det[:, 5].long().cpu().numpy(),
            masks=masks,
        )
