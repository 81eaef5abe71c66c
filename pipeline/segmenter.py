"""The Segmenter protocol and its ultralytics backend (FastSAM or any YOLOv8-seg checkpoint).

The backend runs the network itself (letterbox → forward → NMS) instead of going through
ultralytics' predictor, so that it can take a batch of frames from several sources at once and
keep masks as prototypes × coefficients until someone asks for pixels.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
from pydantic import Field, field_validator

from ..core import Frame, Instances
from ..errors import ConfigError, ModelError
from ..settings import Fraction01, Settings
from .batch_probe import CANDIDATES, BatchChoice, measure_batch_sizes
from .embeddings import PooledEmbeddings
from .engines import Engine, OnnxEngine, TorchEngine
from .lazy_torch import inference_mode, torch
from .masks import Letterbox, ProtoMasks
from .openvino_engine import OpenVinoEngine, is_openvino_model

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = "FastSAM-s.pt"
_PAD_VALUE = 114  # ultralytics' letterbox grey


@runtime_checkable
class Segmenter(Protocol):
    """Anything that segments a batch of frames: the pipeline's only demand on a model."""

    def segment(self, frames: Sequence[Frame]) -> list[Instances]:
        """Segment every frame.

        Args:
            frames: A batch, possibly from several sources and of several sizes.

        Returns:
            One Instances per frame, in the same order.
        """
        ...


@runtime_checkable
class StagedSegmenter(Segmenter, Protocol):
    """A segmenter split in two stages, so the pipeline can overlap them.

    The pipeline pre-processes the next batch (`prepare`, on the CPU) while the current one is in
    the network (`infer`). `segment(f)` is `infer(prepare(f))`.
    """

    def prepare(self, frames: Sequence[Frame]) -> object:
        """Pre-process a batch (letterbox, normalise).

        Args:
            frames: The batch.

        Returns:
            Whatever `infer` takes.
        """
        ...

    def infer(self, prepared: object) -> list[Instances]:
        """The network and post-processing for what `prepare` made.

        Args:
            prepared: `prepare`'s result.

        Returns:
            One Instances per frame given to `prepare`, in its order.
        """
        ...


class _OneStage:
    """A plain Segmenter seen as a StagedSegmenter: preparing is keeping the frames."""

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter

    def segment(self, frames: Sequence[Frame]) -> list[Instances]:
        return self.segmenter.segment(frames)

    def prepare(self, frames: Sequence[Frame]) -> object:
        return list(frames)

    def infer(self, prepared: object) -> list[Instances]:
        return self.segmenter.segment(prepared)  # type: ignore[arg-type]


def staged(segmenter: Segmenter) -> StagedSegmenter:
    """The segmenter as two stages (a plain one prepares nothing).

    Args:
        segmenter: Any Segmenter.

    Returns:
        The segmenter itself when it is a StagedSegmenter, else an adapter.
    """
    if isinstance(segmenter, StagedSegmenter):
        return segmenter
    if isinstance(segmenter, Segmenter):
        return _OneStage(segmenter)
    raise TypeError(f"a segmenter needs segment(frames); got {type(segmenter).__name__}")


class SegmenterSettings(Settings):
    """The network and its post-processing: config section `model`."""

    weights: str = Field(
        DEFAULT_WEIGHTS,
        min_length=1,
        description="FastSAM / YOLOv8-seg checkpoint (*.pt), ONNX export (*.onnx, run in ONNX Runtime) or "
        "OpenVINO export (*_openvino_model/ folder or its .xml, run in OpenVINO on the CPU); "
        f"{DEFAULT_WEIGHTS} is fetched by name where there is internet",
    )
    device: str | None = Field(None, description="cpu or cuda:N (default: cuda:0 when available, else cpu)")
    imgsz: int = Field(640, ge=32, le=4096, description="network input size, a multiple of 32")
    # Low on purpose: the tracker's second round wants the unsure instances too; tracks only
    # start at tracker.high_score.
    conf: Fraction01 = Field(0.1, description="confidence threshold (tracks start at tracker.high_score)")
    iou: Fraction01 = Field(0.7, description="NMS IoU threshold")
    max_det: int = Field(300, ge=1, description="most instances per frame")
    # FastSAM is class-agnostic: one instance per object, whatever a class-aware stand-in says.
    agnostic_nms: bool = Field(True, description="NMS across classes (FastSAM's behaviour)")
    half: bool = Field(False, description="fp16 on CUDA (PyTorch weights only)")
    threads: int | None = Field(
        None, ge=1, description="CPU threads for the network (default: every core this process may use)"
    )

    @field_validator("imgsz")
    @classmethod
    def _stride_multiple(cls, v: int) -> int:
        if v % 32:
            raise ValueError(f"must be a multiple of 32 (the network's stride), e.g. {v + (-v) % 32}")
        return v


def cpu_count() -> int:
    """CPU cores this process may run on: the default number of threads for the network.

    The affinity mask, not the machine's total: in a container or under `taskset`, the total would
    over-subscribe the cores allowed.
    """
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
    """The torch device for a device setting, checked here so a bad one fails before a model loads.

    Args:
        name: "cpu", "cuda" or "cuda:N"; None picks cuda:0 when a CUDA GPU is available, else the CPU.

    Returns:
        The device.

    Raises:
        ConfigError: The name is not a device, names a CUDA GPU that is not there, or a device
            type other than cpu and cuda.
    """
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
        raise ModelError(
            f"{weights}: weights must be a PyTorch checkpoint (*.pt), an ONNX export (*.onnx) "
            "or an OpenVINO export (*_openvino_model/)"
        )
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
    except Exception as exc:  # noqa: BLE001 - ultralytics raises many types for a bad checkpoint: each a ModelError
        raise ModelError(f"cannot load {weights} as an ultralytics checkpoint: {str(exc).splitlines()[0]}") from None
    if not isinstance(model.model, torch.nn.Module) or model.task != "segment":
        raise ModelError(f"{weights} is a {model.task!r} model; a segmentation (*-seg or FastSAM) checkpoint is needed")
    net = model.model.fuse(verbose=False) if hasattr(model.model, "fuse") else model.model
    return net.to(device).eval()


def letterbox_geometry(source_shape: tuple[int, int], imgsz: int, stride: int, minimal: bool) -> Letterbox:
    """Where a frame goes in the network input.

    It is scaled to fit imgsz and centred, padded to imgsz×imgsz or, when `minimal`, only to a
    stride multiple.
    """
    h, w = source_shape
    gain = min(imgsz / h, imgsz / w)
    ch, cw = max(round(h * gain), 1), max(round(w * gain), 1)
    ih, iw = (imgsz, imgsz)
    if minimal:
        ih, iw = ch + (-ch) % stride, cw + (-cw) % stride
    return Letterbox((h, w), (ih, iw), gain, (iw - cw) // 2, (ih - ch) // 2, (ch, cw))


def letterbox(image: np.ndarray, imgsz: int, stride: int, minimal: bool) -> tuple[np.ndarray, Letterbox]:
    """The letterboxed image (OpenCV, on the CPU) and its geometry."""
    lb = letterbox_geometry(image.shape[:2], imgsz, stride, minimal)
    (ch, cw), (ih, iw) = lb.content_shape, lb.input_shape
    resized = cv2.resize(image, (cw, ch), interpolation=cv2.INTER_LINEAR) if (ch, cw) != image.shape[:2] else image
    padded = cv2.copyMakeBorder(
        resized, lb.top, ih - ch - lb.top, lb.left, iw - cw - lb.left, cv2.BORDER_CONSTANT, value=(_PAD_VALUE,) * 3
    )
    return padded, lb


def letterbox_on_device(images: torch.Tensor, lb: Letterbox) -> torch.Tensor:
    """The same letterbox for a B×H×W×3 uint8 BGR batch already on the device (a GPU).

    Returns B×3×h×w float RGB in [0, 1]. Bilinear without antialiasing, like cv2.INTER_LINEAR.
    """
    x = images.flip(-1).permute(0, 3, 1, 2).float().div_(255.0)
    (ch, cw), (ih, iw) = lb.content_shape, lb.input_shape
    if (ch, cw) != lb.source_shape:
        x = torch.nn.functional.interpolate(x, size=(ch, cw), mode="bilinear", align_corners=False)
    pad = (lb.left, iw - cw - lb.left, lb.top, ih - ch - lb.top)
    return torch.nn.functional.pad(x, pad, value=_PAD_VALUE / 255.0)


@dataclass(frozen=True)
class _Prepared:
    """One group of same-size frames, ready for the network."""

    rows: list[int]  # positions of these frames in the batch handed to `prepare`
    # Letterboxed on the CPU: B×h×w×3 uint8 BGR for an engine that `takes_uint8`, else B×3×h×w
    # float32 RGB in [0, 1]; or, to be letterboxed on the device, the raw B×H×W×3 uint8 frames in
    # pinned memory (on_device)
    images: torch.Tensor
    letterboxes: list[Letterbox]
    on_device: bool = False


def load_engine(settings: SegmenterSettings, device: torch.device, features: bool = False) -> Engine:
    """The engine the weights' path names (`features`: with the P3 map as an output).

    PyTorch for *.pt checkpoints, ONNX Runtime for *.onnx exports, OpenVINO for an ultralytics
    `*_openvino_model/` folder or its .xml (CPU only).
    """
    if is_openvino_model(settings.weights):
        if settings.device is not None and device.type != "cpu":  # by default, the CPU even where a GPU is
            raise ConfigError("OpenVINO models run on the CPU here: use --device cpu, or *.pt weights on a GPU")
        if settings.half:
            raise ConfigError("half precision applies to PyTorch weights (*.pt), not to OpenVINO models")
        return OpenVinoEngine(settings.weights, settings.threads or cpu_count(), features)
    if Path(settings.weights).suffix == ".onnx":
        if not Path(settings.weights).expanduser().is_file():
            raise ModelError(f"weights file not found: {settings.weights}")
        if settings.half:
            raise ConfigError("half precision applies to PyTorch weights (*.pt), not to ONNX models")
        cuda_device = (device.index or 0) if device.type == "cuda" else None
        return OnnxEngine(Path(settings.weights).expanduser(), settings.threads or cpu_count(), cuda_device, features)
    return TorchEngine(load_segmentation_model(settings.weights, device), half=settings.half)


class UltralyticsSegmenter:
    """FastSAM / YOLOv8-seg on one device. `segment` takes a batch of frames of any sizes.

    Frames are grouped by size and each group is letterboxed to its own minimal stride-padded
    rectangle, so a frame's result does not depend on what else shared its batch (a frame from
    one camera segments the same whether it is batched with others or alone).

    Args:
        settings: The model section.
        engine: A loaded engine (tests); None: loaded from `settings.weights`.
        features: Instances carry appearance descriptors (`Instances.embeddings`), pooled from
            the network's P3 map, which each frame's result then keeps on the device. A model
            whose P3 cannot be found gives none (a warning says so): `self.features` is False.
        clock: What `best_batch` times the network with (tests give one their engine advances).

    On the CPU it sets two process-wide thread counts: torch's (the model's `threads` for the
    PyTorch engine, one beside ONNX Runtime and OpenVINO, set again before each batch) and
    OpenCV's (one).
    """

    def __init__(
        self,
        settings: SegmenterSettings,
        engine: Engine | None = None,
        features: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._batch_choices: dict[tuple[int, ...], BatchChoice] = {}  # per frame shape, measured once
        self._probe_lock = threading.Lock()
        self.device = resolve_device(settings.device)
        if settings.half and self.device.type != "cuda":
            raise ConfigError("half precision needs a CUDA device")
        quiet_ultralytics()
        self.engine = engine if engine is not None else load_engine(settings, self.device, features)
        if isinstance(self.engine, OpenVinoEngine):
            self.device = torch.device("cpu")  # where it runs, whatever the default device was
        if features and not getattr(self.engine, "has_features", False):
            # The tracker then tells targets apart by colour, as it did before it had features.
            log.warning("%s: no P3 map found to take appearance features from; trackers use colour", settings.weights)
            features = False
        self.features = features
        # Thread counts chosen together. Torch's: the network's when torch runs it; otherwise the
        # network runs in its own runtime's threads and torch is left with NMS and mask assembly,
        # small tensors for which a second thread costs more than it gains (its OpenMP workers
        # spin on the cores the network is using): NMS took 5.9 ms of CPU a frame at 2 threads,
        # 1.4 ms at 1, on this project's 2-core machine (bench/post_threads.py). The count is
        # process-wide, so `infer` sets it again whenever another segmenter changed it.
        on_cpu = self.device.type == "cpu"
        self.torch_threads = settings.threads or cpu_count()
        if on_cpu and not isinstance(self.engine, TorchEngine):
            self.torch_threads = 1
        torch.set_num_threads(self.torch_threads)
        if on_cpu:
            # OpenCV's own pool (the letterbox's resize, the tracker's optical flow) would put a
            # second set of threads on the cores the network's threads take: one thread instead.
            # (On 2 cores the difference was within the run-to-run noise, bench/pipeline_profile.py;
            # it grows with the cores OpenCV would otherwise spread over.) Process-wide too.
            cv2.setNumThreads(1)
        self.stride = self.engine.stride
        self.class_names = self.engine.class_names
        # On a GPU, letterboxing runs there (from pinned host memory); on the CPU, OpenCV does it.
        self.preprocess_on_device = self.device.type == "cuda" and isinstance(self.engine, TorchEngine)
        # ultralytics' NMS takes torchvision's C++ kernel only when torchvision is already imported
        # ("torchvision" in sys.modules), and its own Python loop otherwise: 1.8 against 1.0 ms of
        # CPU a frame on the segment thread, between one forward pass and the next
        # (bench/pipeline_profile.py, vtest.avi, OpenVINO int8, 2 cores).
        import torchvision  # noqa: F401
        from ultralytics.utils.nms import non_max_suppression

        self._nms = non_max_suppression

    def best_batch(self, frame: Frame) -> BatchChoice:
        """The batch size this engine runs fastest per frame at `frame`'s size, measured once per size.

        A static export takes its own batch size, unmeasured. See pipeline/batch_probe.py.

        Args:
            frame: A frame of the run (its size is what is measured).

        Returns:
            The choice and the timings behind it.
        """
        fixed = self.engine.fixed_input
        if fixed:
            return BatchChoice(fixed[0], {})
        with self._probe_lock:  # two pipelines starting on one segmenter measure once, not at once
            shape = frame.image.shape
            if shape not in self._batch_choices:
                prepared = {size: self.prepare([frame] * size) for size in CANDIDATES}
                self._batch_choices[shape] = measure_batch_sizes(
                    lambda batch: self.infer(prepared[len(batch)]), frame, CANDIDATES, self.clock
                )
            return self._batch_choices[shape]

    def segment(self, frames: Sequence[Frame]) -> list[Instances]:
        """Segment a batch in one go: `infer(prepare(frames))`.

        Args:
            frames: Frames of any sizes, from any sources.

        Returns:
            One Instances per frame, in the same order.
        """
        return self.infer(self.prepare(frames))

    def prepare(self, frames: Sequence[Frame]) -> list[_Prepared]:
        """Pre-processing, run by the pipeline while the previous batch is in the network.

        Frames are grouped by size (and by the batch a static export takes), letterboxed and
        normalised.
        """
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, frame in enumerate(frames):
            by_size.setdefault(frame.image.shape, []).append(i)
        fixed = self.engine.fixed_input
        groups = []
        for rows in by_size.values():
            step = fixed[0] if fixed else len(rows)
            groups += [rows[start : start + step] for start in range(0, len(rows), step)]
        return [self._prepare_group(rows, [frames[i] for i in rows]) for rows in groups]

    def _prepare_group(self, rows: list[int], frames: Sequence[Frame]) -> _Prepared:
        fixed = self.engine.fixed_input
        imgsz = max(fixed[1:]) if fixed else self.settings.imgsz
        if self.preprocess_on_device and not fixed:
            # The GPU letterboxes: the host only stacks the frames into pinned memory, from which
            # the copy to the device runs asynchronously.
            raw = torch.from_numpy(np.stack([f.image for f in frames]))
            raw = raw.pin_memory() if self.device.type == "cuda" else raw
            lb = letterbox_geometry(frames[0].image.shape[:2], imgsz, self.stride, minimal=True)
            return _Prepared(rows, raw, [lb] * len(frames), on_device=True)
        boxed = [letterbox(f.image, imgsz, self.stride, minimal=fixed is None) for f in frames]
        images = [img for img, _ in boxed]
        if fixed and len(images) < fixed[0]:  # a static export takes exactly its batch size
            images += [np.zeros_like(images[0])] * (fixed[0] - len(images))
        stacked = images[0][None] if len(images) == 1 else np.stack(images)  # B×H×W×3 uint8 BGR
        if getattr(self.engine, "takes_uint8", False):
            # The engine converts (in its graph, or in its own threads as part of its forward pass):
            # no float copy of the batch is made here, where it would compete with the network.
            return _Prepared(rows, torch.from_numpy(stacked), [lb for _, lb in boxed])
        rgb = np.multiply(stacked[..., ::-1], 1 / 255.0, dtype=np.float32)  # BGR→RGB, to [0, 1]
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2)  # an NCHW view of NHWC memory
        if not self.engine.channels_last:
            x = x.contiguous()
        return _Prepared(rows, x, [lb for _, lb in boxed])

    @inference_mode
    def infer(self, prepared: list[_Prepared]) -> list[Instances]:
        """The network and NMS for prepared groups; results back in the frames' original order."""
        results: dict[int, Instances] = {}
        s = self.settings
        if torch.get_num_threads() != self.torch_threads:  # another segmenter in this process set its own
            torch.set_num_threads(self.torch_threads)
        # ONNX Runtime takes host arrays (its CUDA provider copies them itself).
        device = self.device if isinstance(self.engine, TorchEngine) else torch.device("cpu")
        for group in prepared:
            images = group.images.to(device, non_blocking=True)
            if group.on_device:
                images = letterbox_on_device(images, group.letterboxes[0])
            if hasattr(self.engine, "run"):
                predictions, protos, p3 = self.engine.run(images, self.features)
            else:  # an engine of the earlier protocol: the forward pass only
                (predictions, protos), p3 = self.engine(images), None
            detections = self._nms(
                predictions, s.conf, s.iou, agnostic=s.agnostic_nms, max_det=s.max_det, nc=len(self.class_names)
            )
            # strict=False: a static export's batch is padded to its size; the padding's outputs are left out.
            maps = p3 if p3 is not None else [None] * len(protos)
            for row, det, proto, fmap, lb in zip(group.rows, detections, protos, maps, group.letterboxes, strict=False):
                results[row] = self._instances(det, proto, fmap, lb)
        return [results[i] for i in range(len(results))]

    def _instances(self, det: torch.Tensor, proto: torch.Tensor, fmap: torch.Tensor | None, lb: Letterbox) -> Instances:
        boxes = lb.boxes_to_source(det[:, :4].float())
        masks = ProtoMasks(proto, det[:, 6:], boxes, lb)
        return Instances(
            boxes.cpu().numpy(),
            det[:, 4].float().cpu().numpy(),
            lb.source_shape,
            class_ids=det[:, 5].long().cpu().numpy(),
            masks=masks,
            embeddings=PooledEmbeddings(fmap, masks) if fmap is not None else None,
        )
