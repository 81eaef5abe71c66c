"""The ultralytics backend on real frames with the real (stand-in) model."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from fastsam_stream.core import Frame
from fastsam_stream.errors import ConfigError, ModelError
from fastsam_stream.pipeline.segmenter import (
    SegmenterSettings,
    UltralyticsSegmenter,
    letterbox,
    load_segmentation_model,
)


def _frame(path, index=0) -> Frame:
    image = cv2.imread(str(path))
    return Frame(image, "test", index, 0.0, 0.0)


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_instances_are_in_source_pixels_and_masks_match_ultralytics_retina_masks(segmenter, davis, weights):
    from ultralytics import YOLO

    frame = _frame(davis / "JPEGImages/480p/dog/00000.jpg")
    ours = segmenter.segment([frame])[0]
    theirs = YOLO(str(weights)).predict(
        frame.image, retina_masks=True, conf=0.25, iou=0.7, agnostic_nms=True, verbose=False, device="cpu"
    )[0]
    assert len(ours) == len(theirs.boxes) >= 1
    assert ours.image_shape == (480, 854)
    np.testing.assert_allclose(ours.boxes, theirs.boxes.xyxy.numpy(), atol=1.0)
    masks = ours.masks()
    assert masks.shape == (len(ours), 480, 854) and masks.dtype == bool
    for mine, reference in zip(masks, theirs.masks.data.numpy().astype(bool), strict=True):
        assert _mask_iou(mine, reference) > 0.98


def test_small_object_masks_stay_within_a_boundary_pixel_of_ultralytics(segmenter, videos, weights):
    """Vtest's pedestrians are ~30 px wide: our masks stay within about a pixel of ultralytics'.

    One bilinear step instead of ultralytics' two moves their boundaries by about a pixel, no more.
    """
    import av
    from ultralytics import YOLO

    with av.open(str(videos / "vtest.avi")) as container:
        image = next(container.decode(video=0)).to_ndarray(format="bgr24")
    ours = segmenter.segment([Frame(image, "vtest", 0, 0.0, 0.0)])[0].masks()
    theirs = (
        YOLO(str(weights))
        .predict(image, retina_masks=True, conf=0.25, iou=0.7, agnostic_nms=True, verbose=False, device="cpu")[0]
        .masks.data.numpy()
        .astype(bool)
    )
    assert len(ours) == len(theirs) >= 3
    ious = [_mask_iou(a, b) for a, b in zip(ours, theirs, strict=True)]
    assert min(ious) > 0.95, ious


def test_masks_are_assembled_only_for_requested_rows(segmenter, videos):
    import av

    with av.open(str(videos / "vtest.avi")) as container:
        image = next(container.decode(video=0)).to_ndarray(format="bgr24")
    instances = segmenter.segment([Frame(image, "vtest", 0, 0.0, 0.0)])[0]
    assert len(instances) >= 3  # several pedestrians
    one = instances.masks([1])
    assert one.shape == (1, 576, 768)
    np.testing.assert_array_equal(one[0], instances.masks()[1])
    # the mask lies inside its box (cropped as ultralytics crops)
    ys, xs = np.nonzero(one[0])
    x1, y1, x2, y2 = instances.boxes[1]
    assert xs.min() >= np.floor(x1) and xs.max() < np.ceil(x2) and ys.min() >= np.floor(y1) and ys.max() < np.ceil(y2)


def test_a_batch_of_frames_of_different_sizes_gives_each_frame_its_own_result(segmenter, davis, videos):
    import av

    dog = _frame(davis / "JPEGImages/480p/dog/00000.jpg")
    with av.open(str(videos / "vtest.avi")) as container:
        street = Frame(next(container.decode(video=0)).to_ndarray(format="bgr24"), "vtest", 0, 0.0, 0.0)
    together = segmenter.segment([dog, street, dog])
    alone = [segmenter.segment([dog])[0], segmenter.segment([street])[0]]
    assert [r.image_shape for r in together] == [(480, 854), (576, 768), (480, 854)]
    assert len(alone[0]) >= 1 and len(alone[1]) >= 3
    # mixed sizes use a square letterbox instead of the minimal one, so allow small differences
    for batched, single in zip(together[:2], alone, strict=True):
        assert abs(len(batched) - len(single)) <= 1
        best = max(_mask_iou(batched.masks([0])[0], m) for m in single.masks())
        assert best > 0.9


def test_letterbox_keeps_aspect_and_pads_to_stride():
    image = np.zeros((576, 768, 3), np.uint8)
    padded, lb = letterbox(image, 640, 32, minimal=True)
    assert padded.shape == (480, 640, 3) and lb.content_shape == (480, 640) and lb.gain == pytest.approx(640 / 768)
    square, lb2 = letterbox(image, 640, 32, minimal=False)
    assert square.shape == (640, 640, 3) and lb2.top == 80 and lb2.left == 0


def test_missing_weights_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_segmentation_model(str(tmp_path / "nope" / "FastSAM-s.pt"), device=None)


def test_official_name_offline_says_to_pass_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ultralytics looks for the name in the working directory first
    with pytest.raises(ModelError, match="--weights"):
        load_segmentation_model("FastSAM-s.pt", device=None)


def test_a_file_that_is_not_a_checkpoint_is_a_model_error(tmp_path):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a torch checkpoint")
    with pytest.raises(ModelError, match="bogus.pt"):
        load_segmentation_model(str(bogus), device=None)


def test_cuda_without_a_gpu_is_a_config_error(weights):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="CUDA"):
        UltralyticsSegmenter(SegmenterSettings(weights=str(weights), device="cuda:0"))


def test_a_fastsam_shaped_checkpoint_loads_from_a_path(tmp_path, davis):
    """FastSAM is YOLOv8-seg with one class.

    Its official weights cannot be fetched here, so this builds that architecture from
    ultralytics' own yaml (random weights, nc=1), saves it in the checkpoint format, and loads it
    through the same path as --weights.
    """
    import torch
    from ultralytics.nn.tasks import SegmentationModel

    net = SegmentationModel("yolov8n-seg.yaml", nc=1, verbose=False)
    net.names = {0: "object"}
    path = tmp_path / "fastsam-like.pt"
    torch.save({"model": net, "train_args": {"task": "segment", "imgsz": 640}}, path)

    segmenter = UltralyticsSegmenter(SegmenterSettings(weights=str(path), device="cpu", conf=0.001, max_det=50))
    assert segmenter.class_names == {0: "object"}
    instances = segmenter.segment([_frame(davis / "JPEGImages/480p/dog/00000.jpg")])[0]
    assert 0 < len(instances) <= 50  # random weights: many low-score instances, capped by max_det
    assert set(instances.class_ids.tolist()) == {0}
    assert instances.masks([0]).shape == (1, 480, 854)


def test_nms_runs_torchvisions_kernel_in_a_process_that_never_imported_torchvision(weights, davis):
    # ultralytics' NMS takes torchvision's C++ kernel only when torchvision is already imported, and a
    # Python loop at about twice the CPU otherwise: the segmenter must import it itself. A fresh
    # process, because in this one some other test has long imported torchvision.
    script = f"""
import sys
import cv2
from fastsam_stream.core import Frame
from fastsam_stream.pipeline.segmenter import SegmenterSettings, UltralyticsSegmenter
assert "torchvision" not in sys.modules, "imported before the segmenter: this test would prove nothing"
segmenter = UltralyticsSegmenter(SegmenterSettings(weights={str(weights)!r}, device="cpu"))
imported = "torchvision" in sys.modules  # what ultralytics' NMS looks at
import torchvision.ops
calls = []
kernel = torchvision.ops.nms
torchvision.ops.nms = lambda *args: calls.append(1) or kernel(*args)
image = cv2.imread({str(davis / "JPEGImages/480p/dog/00000.jpg")!r})
found = segmenter.segment([Frame(image, "t", 0, 0.0, 0.0)])[0]
print(int(imported), len(calls), len(found))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    imported, calls, found = map(int, done.stdout.split()[-3:])
    assert imported == 1 and calls == 1 and found >= 1
