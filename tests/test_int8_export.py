"""The int8 OpenVINO export: `fastsam-stream export --format openvino --int8 --calibrate CLIP`.

One real export of the real (stand-in) model, calibrated on frames of a real clip, is made once
for the module. Against it: the folder holds one int8 model with its calibration record; the
pipeline's segmenter runs it (P3 features included) and finds what PyTorch finds, within the
tolerance int8 allows. Also: the flags that do not go together are one-line exit-2 errors that
write nothing; without nncf the error names the [int8] extra; `calibration_frames` takes its
frames evenly over a clip.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys

import av
import cv2
import numpy as np
import pytest
import yaml

from fastsam_stream.core import Frame
from fastsam_stream.pipeline.quantize import calibration_frames
from fastsam_stream.pipeline.segmenter import SegmenterSettings, UltralyticsSegmenter

CLIP = "vtest.avi"  # ../shared/media/videos: the pedestrians the comparison frames come from
FRAMES = 12  # calibration frames: few, to keep the export short (the default is 100)


@pytest.fixture(scope="module")
def int8_export(cli, weights, videos, tmp_path_factory):
    """The real model exported as int8 OpenVINO, calibrated on FRAMES frames of CLIP, to the default --out.

    The default folder, `<stem>_openvino_model` beside the checkpoint, has the name ultralytics
    gives its float export inside the exporter's temporary folder: the int8 model must not collide
    with it there.

    Returns:
        (the *_openvino_model folder, the finished export process).
    """
    folder = tmp_path_factory.mktemp("int8")
    checkpoint = shutil.copy(weights, folder / weights.name)  # the exporter writes beside its input
    target = folder / f"{weights.stem}_openvino_model"  # the default --out
    done = subprocess.run(
        [
            *cli,
            "export",
            "--weights",
            str(checkpoint),
            "--format",
            "openvino",
            "--int8",
            "--calibrate",
            str(videos / CLIP),
            "--calibration-frames",
            str(FRAMES),
            "--imgsz",
            "640",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert target.is_dir(), done.stdout
    return target, done


@pytest.fixture(scope="module")
def int8_segmenter(int8_export):
    folder, _ = int8_export
    return UltralyticsSegmenter(SegmenterSettings(weights=str(folder), device="cpu", conf=0.25), features=True)


@pytest.fixture(scope="module")
def torch_segmenter(weights):
    """The PyTorch reference, with appearance features (the shared `segmenter` fixture has none)."""
    return UltralyticsSegmenter(SegmenterSettings(weights=str(weights), device="cpu", conf=0.25), features=True)


def _real_frames(videos, davis) -> list[Frame]:
    """Three vtest frames (768×576, pedestrians) and the first DAVIS dog frame (854×480)."""
    with av.open(str(videos / "vtest.avi")) as container:
        images = [f.to_ndarray(format="bgr24") for f in itertools.islice(container.decode(video=0), 3)]
    frames = [Frame(image, "vtest", i, i / 10, 0.0) for i, image in enumerate(images)]
    return [*frames, Frame(cv2.imread(str(davis / "JPEGImages/480p/dog/00000.jpg")), "dog", 0, 0.0, 0.0)]


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """len(a)×len(b) IoU of xyxy boxes."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _decoded(path) -> list[np.ndarray]:
    """Every frame of a clip, BGR, decoded directly."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


# ------------------------------------------------------------------------------------ the export


def test_the_int8_export_writes_one_model_with_its_calibration_record(int8_export, weights, videos):
    """Exit 0 and the "exported" line; the folder holds one .xml, its .bin and metadata.yaml.

    The metadata keeps ultralytics' record (task, stride, names: what the engine reads) and adds
    `int8: {calibration: <clip name>, frames: <frames taken>, imgsz: 640}`. The model is int8
    (FakeQuantize operations, int8 weights), with the Segment head's box decoding left in float:
    no quantizer feeds its sigmoid or sits in its own scope or DFL. Nothing else is written
    beside the checkpoint.
    """
    import openvino as ov

    folder, done = int8_export
    assert done.stdout.splitlines()[-1].startswith("exported ") and str(folder) in done.stdout
    assert "Traceback" not in done.stderr
    (xml,) = folder.glob("*.xml")
    assert xml.with_suffix(".bin").is_file()
    assert sorted(p.name for p in folder.iterdir()) == sorted([xml.name, xml.with_suffix(".bin").name, "metadata.yaml"])
    assert sorted(p.name for p in folder.parent.iterdir()) == sorted([weights.name, folder.name])

    meta = yaml.safe_load((folder / "metadata.yaml").read_text())
    assert meta["task"] == "segment" and meta["stride"] == 32 and meta["names"][0] == "person"
    # vtest.avi has 795 frames, so all FRAMES are taken.
    assert meta["int8"] == {"calibration": CLIP, "frames": FRAMES, "imgsz": 640}

    operations = ov.Core().read_model(str(xml)).get_ordered_ops()
    quantizers = [op.get_friendly_name() for op in operations if op.get_type_name() == "FakeQuantize"]
    assert len(quantizers) > 10  # observed: 75
    assert any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8 for op in operations), (
        "no int8 weights"
    )
    sigmoids = [op for op in operations if op.get_type_name() == "Sigmoid"]
    assert sigmoids
    head = sigmoids[-1].get_friendly_name().split("/", 1)[0]  # e.g. __module.model.22
    for sigmoid in sigmoids:
        assert sigmoid.input(0).get_source_output().get_node().get_type_name() != "FakeQuantize"
    assert not [name for name in quantizers if name.startswith((f"{head}/", f"{head}.dfl"))]


def test_the_int8_export_prints_only_its_one_line(int8_export):
    """Like the float exports, a quiet int8 export prints one line, "exported ...", and nothing on stderr."""
    _, done = int8_export
    assert done.stdout.startswith("exported ") and done.stdout.count("\n") == 1, done.stdout[:300]
    assert done.stderr == ""


def test_the_int8_model_runs_in_the_segmenter_close_to_pytorch(int8_segmenter, torch_segmenter, videos, davis):
    """The int8 folder loads in the OpenVINO engine and finds what PyTorch finds, on real frames.

    For every PyTorch instance scoring over 0.5 (each frame has at least one), the int8 result has
    an instance of the same class whose box overlaps it with IoU > 0.85 (observed worst: 0.92, a
    car in vtest). `features` is True: P3 is found behind the quantizers, and the descriptors of
    matched instances have cosine > 0.97 with PyTorch's (observed worst: 0.998).
    """
    from fastsam_stream.pipeline.openvino_engine import OpenVinoEngine

    assert isinstance(int8_segmenter.engine, OpenVinoEngine)
    assert int8_segmenter.engine.fixed_input is None  # dynamic in batch and size, like the float export
    assert int8_segmenter.features and int8_segmenter.engine.has_features and torch_segmenter.features
    assert int8_segmenter.class_names[0] == "person" and int8_segmenter.stride == 32

    frames = _real_frames(videos, davis)
    worst_iou, worst_cosine = 1.0, 1.0
    for ours, theirs in zip(int8_segmenter.segment(frames), torch_segmenter.segment(frames), strict=True):
        confident = np.flatnonzero(theirs.scores > 0.5)
        assert len(confident) >= 1 and len(ours) >= 1
        assert ours.has_embeddings
        overlaps = _box_iou(theirs.boxes, ours.boxes)
        mine, expected = ours.embeddings(), theirs.embeddings()
        np.testing.assert_allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-5)  # unit: a dot is a cosine
        for i in confident:
            same_class = np.where(ours.class_ids == theirs.class_ids[i], overlaps[i], -1.0)
            j = int(np.argmax(same_class))
            worst_iou = min(worst_iou, float(same_class[j]))
            worst_cosine = min(worst_cosine, float(mine[j] @ expected[i]))
    print(f"int8 vs PyTorch: worst box IoU {worst_iou:.3f}, worst descriptor cosine {worst_cosine:.4f}")
    assert worst_iou > 0.85
    assert worst_cosine > 0.97


# ------------------------------------------------------------------------------------ flag errors


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--format", "openvino", "--int8", "--out", "{ov}"], "--int8 needs --calibrate"),
        (["--format", "onnx", "--int8", "--calibrate", "{clip}", "--out", "{onnx}"], "--int8 is for --format openvino"),
        (["--format", "openvino", "--calibrate", "{clip}", "--out", "{ov}"], "are for --int8 exports"),
        (["--format", "openvino", "--imgsz", "320", "--out", "{ov}"], "are for --int8 exports"),
        (["--format", "openvino", "--int8", "--calibrate", "{missing}", "--out", "{ov}"], "no such file"),
        (["--format", "openvino", "--int8", "--calibrate", "{text}", "--out", "{ov}"], "cannot read it as a video"),
        (
            ["--format", "openvino", "--int8", "--calibrate", "{clip}", "--calibration-frames", "0", "--out", "{ov}"],
            "--calibration-frames must be at least 1",
        ),
        (
            ["--format", "openvino", "--int8", "--calibrate", "{clip}", "--imgsz", "100", "--out", "{ov}"],
            "--imgsz 100",
        ),
    ],
    ids=[
        "int8-without-calibrate",
        "int8-onnx",
        "calibrate-without-int8",
        "imgsz-without-int8",
        "missing-clip",
        "text-file",
        "zero-frames",
        "imgsz-100",
    ],
)
def test_int8_flags_that_do_not_go_together_are_one_line_errors(cli, weights, videos, tmp_path, flags, message):
    """Each is a ConfigError: exit 2, one line on stderr naming the problem, no traceback, nothing written.

    The checks come before the export, so each fails in a moment; a file that is not a video
    (a short text file) is found out when its frames are read, also before the export.
    """
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "notes.txt").write_text("calibrate on the lobby camera\n")
    outputs = tmp_path / "out"
    places = {
        "{ov}": str(outputs / "model_openvino_model"),
        "{onnx}": str(outputs / "model.onnx"),
        "{clip}": str(videos / "tree.avi"),
        "{missing}": str(inputs / "missing.avi"),
        "{text}": str(inputs / "notes.txt"),
    }
    done = subprocess.run(
        [*cli, "export", "--weights", str(weights), *(places.get(f, f) for f in flags)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("fastsam-stream: error: "), done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
    assert not outputs.exists() and sorted(p.name for p in inputs.iterdir()) == ["notes.txt"]
    assert not weights.with_name(f"{weights.stem}_openvino_model").exists()  # nothing beside the checkpoint
    assert not weights.with_suffix(".onnx").exists()


def test_without_nncf_the_error_names_the_int8_extra(int8_export, tmp_path):
    """`nncf` unimportable (sys.modules entry None): quantize_openvino raises one line naming nncf and [int8].

    Nothing is written where the int8 model would go.
    """
    folder, _ = int8_export
    (xml,) = folder.glob("*.xml")
    out = tmp_path / "quantized.xml"
    script = f"""
import sys
sys.modules["nncf"] = None  # import nncf now raises ImportError, as where it is not installed
from pathlib import Path
import numpy as np
from fastsam_stream.errors import FastSAMStreamError
from fastsam_stream.pipeline.quantize import quantize_openvino
try:
    quantize_openvino(Path({str(xml)!r}), [np.zeros((240, 320, 3), np.uint8)], 640, Path({str(out)!r}))
except FastSAMStreamError as exc:
    print("FastSAMStreamError:", exc)
else:
    print("quantised")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("FastSAMStreamError:") and done.stdout.count("\n") == 1, done.stdout
    assert "nncf" in done.stdout and "[int8]" in done.stdout
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ calibration frames


def test_calibration_frames_are_spread_evenly_over_the_clip(videos):
    """bag.avi (196 frames, 480×360), 10 asked: 10 BGR uint8 frames of the clip's size, at 0, 19, 38 … 171.

    Each is the frame decoded directly at index i*step (step = 196 // 10), so they are spread
    over the clip, not its first 10.
    """
    clip = videos / "bag.avi"
    decoded = _decoded(clip)
    assert len(decoded) == 196
    frames = calibration_frames(clip, 10)
    assert len(frames) == 10
    step = len(decoded) // 10
    for i, frame in enumerate(frames):
        assert frame.dtype == np.uint8 and frame.shape == (360, 480, 3)
        np.testing.assert_array_equal(frame, decoded[i * step])
    assert not np.array_equal(frames[1], decoded[1])  # not simply the first frames


def test_a_short_clip_gives_all_its_frames(videos):
    """carphone_pristine.mp4 (120 frames, 176×144) with 200 asked: its 120 frames, in order."""
    clip = videos / "carphone_pristine.mp4"
    decoded = _decoded(clip)
    frames = calibration_frames(clip, 200)
    assert len(frames) == len(decoded) == 120
    for frame, expected in zip(frames, decoded, strict=True):
        assert frame.dtype == np.uint8 and frame.shape == (144, 176, 3)
        np.testing.assert_array_equal(frame, expected)


def test_calibration_frames_do_not_trust_a_wrong_frame_count_in_the_header(videos):
    """tree.avi decodes to 68 frames (320×240) but its AVI header says 444: 10 asked still gives 10, spread evenly.

    Expected: the frames decoded directly at i*step, step = 68 // 10.
    """
    clip = videos / "tree.avi"
    decoded = _decoded(clip)
    assert len(decoded) == 68
    frames = calibration_frames(clip, 10)
    assert len(frames) == 10
    step = len(decoded) // 10
    for i, frame in enumerate(frames):
        assert frame.dtype == np.uint8 and frame.shape == (240, 320, 3)
        np.testing.assert_array_equal(frame, decoded[i * step])
