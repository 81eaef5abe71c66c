"""The ONNX Runtime and OpenVINO engines against the PyTorch one, on real frames with the real (stand-in) model.

The engines: ONNX and OpenVINO exports made by `fastsam-stream export`, and the shared static int8
ONNX export (fixed 1×3×320×320). Also: a frame's result does not depend on what else shared its
batch; export refuses to overwrite and checks its --out name; an OpenVINO folder that is not a
model, or a missing openvino package, is a one-line ModelError.
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

from fastsam_stream.core import Frame
from fastsam_stream.errors import ModelError
from fastsam_stream.pipeline.segmenter import SegmenterSettings, UltralyticsSegmenter

STATIC_INT8 = "yolov8n-seg-int8.onnx"  # ../shared/models: the original fixed-shape int8 export


@pytest.fixture(scope="module")
def exported(cli, weights, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    checkpoint = shutil.copy(weights, folder / weights.name)  # the exporter writes beside its input
    done = subprocess.run(
        [*cli, "export", "--weights", str(checkpoint), "--out", str(folder / "model.onnx")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("exported ") and (folder / "model.onnx").is_file()
    return folder / "model.onnx"


@pytest.fixture(scope="module")
def onnx_segmenter(exported):
    return UltralyticsSegmenter(SegmenterSettings(weights=str(exported), device="cpu", conf=0.25))


def _vtest_frames(videos, count: int) -> list[Frame]:
    with av.open(str(videos / "vtest.avi")) as container:
        images = [f.to_ndarray(format="bgr24") for f in itertools.islice(container.decode(video=0), count)]
    return [Frame(image, "vtest", i, i / 10, 0.0) for i, image in enumerate(images)]


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_onnx_runtime_matches_pytorch_on_real_frames(onnx_segmenter, segmenter, videos, davis):
    frames = _vtest_frames(videos, 3) + [
        Frame(cv2.imread(str(davis / "JPEGImages/480p/dog/00000.jpg")), "dog", 0, 0.0, 0.0)
    ]
    for theirs, ours in zip(segmenter.segment(frames), onnx_segmenter.segment(frames), strict=True):
        assert len(ours) == len(theirs) >= 1
        np.testing.assert_allclose(ours.boxes, theirs.boxes, atol=0.5)
        np.testing.assert_allclose(ours.scores, theirs.scores, atol=0.01)
        np.testing.assert_array_equal(ours.class_ids, theirs.class_ids)
        assert min(_mask_iou(a, b) for a, b in zip(ours.masks(), theirs.masks(), strict=True)) > 0.98
    assert onnx_segmenter.class_names[0] == "person" and onnx_segmenter.stride == 32


def test_a_static_int8_export_runs_at_its_own_size(weights, videos):
    """Fixed batch 1 and 320×320: frames are letterboxed to its size and fed one at a time."""
    path = weights.parent / STATIC_INT8
    if not path.is_file():
        pytest.fail(f"{path} is missing: the tests read real data from ../shared (see ../shared/README.md)")
    static = UltralyticsSegmenter(SegmenterSettings(weights=str(path), device="cpu", conf=0.25))
    assert static.engine.fixed_input == (1, 320, 320)
    with av.open(str(videos / "carphone_pristine.mp4")) as container:
        images = [f.to_ndarray(format="bgr24") for f in itertools.islice(container.decode(video=0), 3)]
    results = static.segment([Frame(image, "carphone", i, 0.0, 0.0) for i, image in enumerate(images)])
    assert len(results) == 3
    for instances in results:  # the driver, in source pixels
        person = instances[instances.class_ids == 0]
        assert len(person) >= 1 and person.image_shape == (144, 176)
        x1, y1, x2, y2 = person.boxes[np.argmax(person.scores)]
        assert x1 < 60 and y1 < 50 and x2 > 140 and y2 > 120


def test_a_frames_result_does_not_depend_on_its_batch(onnx_segmenter, videos, davis):
    """Frames of different sizes in one batch are segmented in groups of one size.

    Each group at its own minimal letterbox: the same result as alone.
    """
    vtest = _vtest_frames(videos, 2)
    dog = Frame(cv2.imread(str(davis / "JPEGImages/480p/dog/00000.jpg")), "dog", 0, 0.0, 0.0)
    mixed = onnx_segmenter.segment([vtest[0], dog, vtest[1]])
    alone = [onnx_segmenter.segment([f])[0] for f in (vtest[0], dog, vtest[1])]
    for together, single in zip(mixed, alone, strict=True):
        assert len(together) == len(single)
        np.testing.assert_allclose(together.boxes, single.boxes, atol=1e-3)
        np.testing.assert_allclose(together.scores, single.scores, atol=1e-4)


def test_letterboxing_on_the_device_matches_opencv(segmenter, videos):
    """The GPU path's letterbox (torch ops, here run on the CPU) against the OpenCV one.

    And the whole segmenter through that path: the same instances.
    """
    import torch

    from fastsam_stream.pipeline.segmenter import letterbox, letterbox_geometry, letterbox_on_device

    frames = _vtest_frames(videos, 2)
    expected, lb = letterbox(frames[0].image, 640, 32, minimal=True)
    assert lb == letterbox_geometry(frames[0].image.shape[:2], 640, 32, minimal=True)
    got = letterbox_on_device(torch.from_numpy(frames[0].image[None]), lb)[0]
    reference = torch.from_numpy(np.ascontiguousarray(expected[..., ::-1])).permute(2, 0, 1).float() / 255
    assert got.shape == reference.shape == (3, 480, 640)
    assert (got - reference).abs().mean() < 1 / 255

    on_host = segmenter.segment(frames)
    segmenter.preprocess_on_device = True
    try:
        on_device = segmenter.segment(frames)
    finally:
        segmenter.preprocess_on_device = False
    for a, b in zip(on_device, on_host, strict=True):
        assert len(a) == len(b)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=2.0)


def test_export_refuses_to_overwrite_and_needs_an_onnx_name(cli, weights, exported, tmp_path):
    for out, message in ((exported, "exists already"), (tmp_path / "model.pt", "name it *.onnx")):
        done = subprocess.run(
            [*cli, "export", "--weights", str(weights), "--out", str(out)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode != 0 and message in done.stderr and done.stderr.count("\n") == 1
    assert not weights.with_suffix(".onnx").exists()  # nothing written beside the checkpoint


# ------------------------------------------------------------------------------------ OpenVINO


@pytest.fixture(scope="module")
def openvino_export(cli, weights, tmp_path_factory):
    """The real model exported by `fastsam-stream export --format openvino`: the *_openvino_model folder."""
    folder = tmp_path_factory.mktemp("openvino")
    checkpoint = shutil.copy(weights, folder / weights.name)  # the exporter writes beside its input
    target = folder / "model_openvino_model"
    done = subprocess.run(
        [*cli, "export", "--weights", str(checkpoint), "--format", "openvino", "--out", str(target)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("exported ") and target.is_dir()
    assert len(list(target.glob("*.xml"))) == 1 and (target / "metadata.yaml").is_file()
    return target


@pytest.fixture(scope="module")
def openvino_segmenter(openvino_export):
    return UltralyticsSegmenter(SegmenterSettings(weights=str(openvino_export), device="cpu", conf=0.25))


def _real_frames(videos, davis) -> list[Frame]:
    """Three vtest frames (768×576, pedestrians) and the first DAVIS dog frame (854×480)."""
    dog = Frame(cv2.imread(str(davis / "JPEGImages/480p/dog/00000.jpg")), "dog", 0, 0.0, 0.0)
    return [*_vtest_frames(videos, 3), dog]


def _assert_same_instances(ours, theirs) -> None:
    """The tolerances the ONNX Runtime comparison uses: boxes 0.5 px, scores 0.01, same classes, mask IoU > 0.98."""
    assert len(ours) == len(theirs) >= 1
    np.testing.assert_allclose(ours.boxes, theirs.boxes, atol=0.5)
    np.testing.assert_allclose(ours.scores, theirs.scores, atol=0.01)
    np.testing.assert_array_equal(ours.class_ids, theirs.class_ids)
    assert min(_mask_iou(a, b) for a, b in zip(ours.masks(), theirs.masks(), strict=True)) > 0.98


def test_openvino_matches_pytorch_on_real_frames(openvino_segmenter, openvino_export, segmenter, videos, davis):
    """The exported folder runs in OpenVINO (not PyTorch) and finds what PyTorch finds, frame by frame.

    Loading the folder's .xml instead of the folder gives the same engine and the same results.
    """
    from fastsam_stream.pipeline.openvino_engine import OpenVinoEngine

    assert isinstance(openvino_segmenter.engine, OpenVinoEngine)
    assert openvino_segmenter.engine.fixed_input is None  # the export is dynamic in batch and size
    assert openvino_segmenter.class_names[0] == "person" and openvino_segmenter.stride == 32
    frames = _real_frames(videos, davis)
    ours = openvino_segmenter.segment(frames)
    for mine, theirs in zip(ours, segmenter.segment(frames), strict=True):
        _assert_same_instances(mine, theirs)

    (xml,) = openvino_export.glob("*.xml")
    by_xml = UltralyticsSegmenter(SegmenterSettings(weights=str(xml), device="cpu", conf=0.25))
    assert isinstance(by_xml.engine, OpenVinoEngine)
    for mine, folder in zip(by_xml.segment(frames[-2:]), ours[-2:], strict=True):
        assert len(mine) == len(folder)
        np.testing.assert_allclose(mine.boxes, folder.boxes, atol=1e-3)


def test_openvino_gives_the_same_appearance_descriptors_as_pytorch(openvino_export, weights, davis):
    """features=True: P3 is added as an OpenVINO output, and the pooled descriptors match PyTorch's (cosine > 0.99)."""
    frame = Frame(cv2.imread(str(davis / "JPEGImages/480p/dog/00000.jpg")), "dog", 0, 0.0, 0.0)
    ours = UltralyticsSegmenter(SegmenterSettings(weights=str(openvino_export), device="cpu", conf=0.25), features=True)
    theirs = UltralyticsSegmenter(SegmenterSettings(weights=str(weights), device="cpu", conf=0.25), features=True)
    assert ours.features and ours.engine.has_features and theirs.features
    [found], [reference] = ours.segment([frame]), theirs.segment([frame])
    _assert_same_instances(found, reference)
    assert found.has_embeddings
    rows = list(range(len(found)))
    mine, expected = found.embeddings(rows), reference.embeddings(rows)
    assert mine.shape == expected.shape and mine.shape[0] >= 1
    np.testing.assert_allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-5)  # unit vectors: a dot is a cosine
    assert float(np.min(np.sum(mine * expected, axis=1))) > 0.99


def _tree_of(folder) -> dict[str, tuple[int, int]]:
    """Every file under `folder`, with its size and modification time (to see that nothing was rewritten)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_openvino_export_refuses_to_overwrite_and_needs_a_folder_name(cli, weights, openvino_export, tmp_path):
    """An existing target: exit 1, one line, the folder untouched.

    An --out not named *_openvino_model: exit 2 (a ConfigError), nothing written.
    """
    before = _tree_of(openvino_export)
    done = subprocess.run(
        [*cli, "export", "--weights", str(weights), "--format", "openvino", "--out", str(openvino_export)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "exists already" in done.stderr and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr
    assert _tree_of(openvino_export) == before

    wrong = tmp_path / "model"
    done = subprocess.run(
        [*cli, "export", "--weights", str(weights), "--format", "openvino", "--out", str(wrong)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "_openvino_model" in done.stderr and done.stderr.count("\n") == 1
    assert not wrong.exists() and list(tmp_path.iterdir()) == []
    assert not weights.with_name(f"{weights.stem}_openvino_model").exists()  # nothing beside the checkpoint


def test_a_folder_that_is_no_openvino_model_is_a_one_line_model_error(cli, videos, tmp_path):
    """An empty *_openvino_model folder: ModelError from the segmenter; `run` exits non-zero with one line."""
    empty = tmp_path / "x_openvino_model"
    empty.mkdir()
    with pytest.raises(ModelError, match="exactly one .xml") as caught:
        UltralyticsSegmenter(SegmenterSettings(weights=str(empty), device="cpu"))
    assert "\n" not in str(caught.value)

    done = subprocess.run(
        [
            *cli,
            "run",
            str(videos / "tree.avi"),
            "--weights",
            str(empty),
            "--device",
            "cpu",
            "--no-video",
            "--quiet",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "exactly one .xml" in done.stderr, done.stderr


def test_without_the_openvino_package_the_error_names_the_extra(openvino_export):
    """`openvino` unimportable (sys.modules entry None): loading an OpenVINO model says to install [openvino]."""
    script = f"""
import sys
sys.modules["openvino"] = None  # import openvino now raises ImportError, as where it is not installed
from fastsam_stream.errors import ModelError
from fastsam_stream.pipeline.segmenter import SegmenterSettings, UltralyticsSegmenter
try:
    UltralyticsSegmenter(SegmenterSettings(weights={str(openvino_export)!r}, device="cpu"))
except ModelError as exc:
    print("ModelError:", exc)
else:
    print("loaded")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ModelError:") and "[openvino]" in done.stdout, done.stdout
    assert done.stdout.count("\n") == 1
