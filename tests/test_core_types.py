"""Tests for the core value types (Frame, Instances, Prompt, FrameResult) and the tracks.jsonl contract."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from fastsam_stream.core import DenseMasks, Frame, FrameResult, Instances, Prompt, Track, TrackState
from fastsam_stream.sinks import JsonlSink, decode_rle, encode_rle

H, W = 48, 64


def make_frame(index: int = 0, pts: float = 0.0, source_id: str = "cam0") -> Frame:
    return Frame(np.zeros((H, W, 3), np.uint8), source_id=source_id, index=index, pts=pts, captured_at=0.0)


def block_mask(x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y1:y2, x1:x2] = True
    return m


def four_instances() -> tuple[Instances, np.ndarray]:
    """Four instances whose boxes, scores, class ids and masks all identify the row (row i ↔ value i)."""
    boxes = np.array([[i, i, i + 10, i + 10] for i in range(4)], np.float32)
    scores = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    class_ids = np.array([10, 11, 12, 13])
    masks = np.zeros((4, H, W), bool)
    for i in range(4):
        masks[i, i, i] = True  # one distinct pixel per row
    return Instances(boxes, scores, (H, W), class_ids=class_ids, masks=DenseMasks(masks)), masks


# ------------------------------------------------------------------------------------------ Frame


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((H, W), np.uint8),  # grey, 2-D
        np.zeros((H, W, 4), np.uint8),  # BGRA
        np.zeros((H, W, 1), np.uint8),
        np.zeros((H, W, 3), np.float32),  # wrong dtype
        np.zeros((H, W, 3), np.uint16),
        np.zeros((1, H, W, 3), np.uint8),  # batched
        [[[0, 0, 0]]],  # not an ndarray
    ],
    ids=["2d", "4ch", "1ch", "float32", "uint16", "4d", "list"],
)
def test_frame_rejects_wrong_image(image):
    with pytest.raises(ValueError):
        Frame(image, source_id="s", index=0, pts=0.0, captured_at=0.0)


def test_frame_rejects_negative_index():
    with pytest.raises(ValueError):
        make_frame(index=-1)


def test_frame_accepts_bgr_uint8_and_reports_size():
    frame = make_frame()
    assert (frame.height, frame.width) == (H, W)


def test_frame_is_frozen():
    frame = make_frame()
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.index = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.image = np.zeros((H, W, 3), np.uint8)  # type: ignore[misc]


# -------------------------------------------------------------------------------------- Instances


def test_instances_len():
    instances, _ = four_instances()
    assert len(instances) == 4
    assert len(Instances.empty((H, W))) == 0


def test_instances_accepts_empty_list_boxes():
    instances = Instances([], [], (H, W))
    assert len(instances) == 0
    assert instances.boxes.shape == (0, 4)


@pytest.mark.parametrize(
    "boxes",
    [np.zeros((3, 5)), np.zeros((3, 3)), np.zeros(4), np.zeros((2, 2, 4))],
    ids=["Nx5", "Nx3", "flat4", "3d"],
)
def test_instances_rejects_boxes_not_n_by_4(boxes):
    with pytest.raises(ValueError):
        Instances(boxes, np.zeros(len(boxes)), (H, W))


@pytest.mark.parametrize("scores", [np.zeros(2), np.zeros(4), np.zeros((3, 1))], ids=["short", "long", "2d"])
def test_instances_rejects_scores_not_n(scores):
    with pytest.raises(ValueError):
        Instances(np.zeros((3, 4)), scores, (H, W))


def test_instances_rejects_class_ids_not_n():
    with pytest.raises(ValueError):
        Instances(np.zeros((3, 4)), np.zeros(3), (H, W), class_ids=np.zeros(2))


def test_instances_rejects_mask_count_mismatch():
    with pytest.raises(ValueError):
        Instances(np.zeros((3, 4)), np.zeros(3), (H, W), masks=DenseMasks(np.zeros((2, H, W), bool)))


@pytest.mark.parametrize("shape", [(0, W), (H, 0), (H, W, 3), (H,)])
def test_instances_rejects_bad_image_shape(shape):
    with pytest.raises(ValueError):
        Instances(np.zeros((1, 4)), np.zeros(1), shape)


def test_dense_masks_rejects_non_3d():
    with pytest.raises(ValueError):
        DenseMasks(np.zeros((H, W), bool))


def test_instances_int_index_keeps_one_row():
    instances, masks = four_instances()
    one = instances[2]
    assert len(one) == 1
    np.testing.assert_array_equal(one.boxes, instances.boxes[[2]])
    np.testing.assert_array_equal(one.class_ids, [12])
    np.testing.assert_array_equal(one.masks(), masks[[2]])


def test_instances_negative_int_index():
    instances, _ = four_instances()
    np.testing.assert_array_equal(instances[-1].class_ids, [13])


def test_instances_numpy_integer_index():
    instances, _ = four_instances()
    np.testing.assert_array_equal(instances[np.int64(1)].class_ids, [11])


def test_instances_slice():
    instances, masks = four_instances()
    part = instances[1:3]
    assert len(part) == 2
    np.testing.assert_array_equal(part.scores, np.array([0.2, 0.3], np.float32))
    np.testing.assert_array_equal(part.class_ids, [11, 12])
    np.testing.assert_array_equal(part.masks(), masks[1:3])
    assert part.image_shape == (H, W)


def test_instances_boolean_array():
    instances, masks = four_instances()
    keep = np.array([True, False, False, True])
    part = instances[keep]
    assert len(part) == 2
    np.testing.assert_array_equal(part.class_ids, [10, 13])
    np.testing.assert_array_equal(part.masks(), masks[keep])


def test_instances_index_list_keeps_order():
    instances, masks = four_instances()
    part = instances[[3, 0]]
    np.testing.assert_array_equal(part.boxes, instances.boxes[[3, 0]])
    np.testing.assert_array_equal(part.class_ids, [13, 10])
    np.testing.assert_array_equal(part.masks(), masks[[3, 0]])


def test_instances_slice_without_class_ids_or_masks():
    instances = Instances(np.zeros((3, 4)), np.zeros(3), (H, W))
    part = instances[[0, 2]]
    assert part.class_ids is None
    assert not part.has_masks


def test_instances_masks_for_requested_rows():
    instances, masks = four_instances()
    got = instances.masks([2, 0])
    assert got.shape == (2, H, W)
    assert got.dtype == bool
    np.testing.assert_array_equal(got, masks[[2, 0]])


def test_instances_masks_all_rows_when_none():
    instances, masks = four_instances()
    np.testing.assert_array_equal(instances.masks(), masks)


def test_instances_masks_single_int_is_one_by_h_by_w():
    instances, masks = four_instances()
    got = instances.masks(1)
    assert got.shape == (1, H, W)
    np.testing.assert_array_equal(got[0], masks[1])


def test_instances_masks_empty_int_array_is_zero_by_h_by_w():
    instances, _ = four_instances()
    got = instances.masks(np.array([], np.int64))
    assert got.shape == (0, H, W)
    assert got.dtype == bool


def test_instances_empty_index_list():
    instances, _ = four_instances()
    assert len(instances[[]]) == 0
    assert instances.masks([]).shape == (0, H, W)


def test_instances_masks_without_masks_raises():
    instances = Instances(np.zeros((2, 4)), np.zeros(2), (H, W))
    with pytest.raises(ValueError):
        instances.masks()


def test_dense_masks_converts_to_bool():
    masks = DenseMasks(np.ones((1, H, W), np.uint8))
    assert masks.render().dtype == bool


def test_instances_areas_from_boxes():
    instances = Instances(np.array([[0, 0, 10, 20], [5, 5, 6, 6]]), np.zeros(2), (H, W))
    np.testing.assert_allclose(instances.areas, [200.0, 1.0])


# ----------------------------------------------------------------------------------------- Prompt


@pytest.mark.parametrize("label", [2, -1, 5])
def test_prompt_rejects_label_other_than_0_or_1(label):
    with pytest.raises(ValueError):
        Prompt(points=[[10, 10], [20, 20]], labels=[1, label])


def test_prompt_accepts_labels_0_and_1():
    prompt = Prompt(points=[[10, 10], [20, 20]], labels=[1, 0])
    assert prompt.points.shape == (2, 2)
    assert prompt.labels.tolist() == [1, 0]
    assert not prompt.is_empty


@pytest.mark.parametrize("labels", [[1], [1, 1, 1], []])
def test_prompt_rejects_points_labels_count_mismatch(labels):
    with pytest.raises(ValueError):
        Prompt(points=[[10, 10], [20, 20]], labels=labels)


@pytest.mark.parametrize(
    "box",
    [[50, 10, 20, 40], [10, 50, 40, 20], [10, 10, 10, 40], [10, 10, 40, 10]],
    ids=["x2<x1", "y2<y1", "zero-width", "zero-height"],
)
def test_prompt_rejects_unordered_box(box):
    with pytest.raises(ValueError):
        Prompt(boxes=[box])


def test_prompt_accepts_ordered_box():
    prompt = Prompt(boxes=[10, 20, 30, 40])
    assert prompt.boxes.shape == (1, 4)
    assert prompt.boxes.dtype == np.float32


def test_prompt_rejects_negative_frame():
    with pytest.raises(ValueError):
        Prompt(boxes=[[0, 0, 10, 10]], frame=-1)


def test_prompt_default_is_empty():
    prompt = Prompt()
    assert prompt.is_empty
    assert prompt.points.shape == (0, 2)
    assert prompt.boxes.shape == (0, 4)


# ------------------------------------------------------------------------------------ FrameResult


def track(
    track_id: int,
    state: TrackState = TrackState.TRACKED,
    *,
    target: bool = False,
    row: int | None = None,
    box=(0.0, 0.0, 10.0, 10.0),
    score: float = 0.5,
) -> Track:
    lost = 0 if state is TrackState.TRACKED else 1
    return Track(id=track_id, box=box, score=score, state=state, age=3, frames_lost=lost, is_target=target, row=row)


def two_masked_instances() -> tuple[Instances, np.ndarray]:
    masks = np.stack([block_mask(2, 3, 20, 15), block_mask(30, 20, 60, 45)])
    boxes = np.array([[2, 3, 20, 15], [30, 20, 60, 45]], np.float32)
    return Instances(boxes, np.array([0.91, 0.62], np.float32), (H, W), masks=DenseMasks(masks)), masks


def test_target_mask_is_union_of_target_rows():
    instances, masks = two_masked_instances()
    result = FrameResult(make_frame(), instances, (), target_rows={1: (0, 1)})
    got = result.target_mask
    assert got.shape == (H, W) and got.dtype == bool
    np.testing.assert_array_equal(got, masks[0] | masks[1])


def test_target_mask_single_row():
    instances, masks = two_masked_instances()
    result = FrameResult(make_frame(), instances, (), target_rows={1: (1,)})
    np.testing.assert_array_equal(result.target_mask, masks[1])
    assert result.target_found


def test_target_mask_none_without_target_rows():
    instances, _ = two_masked_instances()
    result = FrameResult(make_frame(), instances, (track(1, target=True, row=0),))
    assert result.target_mask is None
    assert not result.target_found


def test_frame_result_target_and_mask_of():
    instances, masks = two_masked_instances()
    t_target, t_other = track(1, target=True, row=0), track(2, row=1)
    result = FrameResult(make_frame(), instances, (t_other, t_target), target_rows={1: (0,)})
    assert result.target is t_target
    np.testing.assert_array_equal(result.mask_of(t_other), masks[1])
    np.testing.assert_array_equal(result.mask_of(t_target), masks[0])
    assert result.mask_of(track(3, TrackState.LOST)) is None


def test_several_targets_each_have_their_own_mask_and_target_mask_is_their_union():
    instances, masks = two_masked_instances()
    first, second = track(5, target=True, row=1), track(2, target=True, row=0)
    result = FrameResult(make_frame(), instances, (first, second), target_rows={5: (1,), 2: (0,)})
    assert result.targets == (second, first) and result.target is second
    np.testing.assert_array_equal(result.mask_of(first), masks[1])
    np.testing.assert_array_equal(result.mask_of(second), masks[0])
    np.testing.assert_array_equal(result.target_mask, masks[0] | masks[1])


# ------------------------------------------------------------------------------------ JSONL sink


def write_and_read(tmp_path, results, masks="target") -> list[dict]:
    path = tmp_path / "tracks.jsonl"
    sink = JsonlSink(path, masks=masks)
    try:
        for result in results:
            sink.write(result)
    finally:
        sink.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def scene() -> tuple[FrameResult, np.ndarray]:
    """Target tracked on row 0, another track on row 1, a lost non-target and a removed track."""
    instances, masks = two_masked_instances()
    tracks = (
        track(1, target=True, row=0, box=(2.0, 3.0, 20.0, 15.0), score=0.91),
        track(2, row=1, box=(30.0, 20.0, 60.0, 45.0), score=0.62),
        track(3, TrackState.LOST),
        track(4, TrackState.REMOVED),
    )
    return FrameResult(make_frame(index=7, pts=0.233333), instances, tracks, target_rows={1: (0,)}), masks


def test_jsonl_record_keys_and_types(tmp_path):
    result, _ = scene()
    [record] = write_and_read(tmp_path, [result])
    assert set(record) == {"source", "frame", "pts", "dropped_before", "tracks"}
    assert record["dropped_before"] == 0
    assert record["source"] == "cam0"
    assert type(record["frame"]) is int and record["frame"] == 7
    assert type(record["pts"]) is float and record["pts"] == pytest.approx(0.233333)
    assert isinstance(record["tracks"], list)
    for entry in record["tracks"]:
        assert set(entry) - {"mask"} == {"id", "target", "state", "box", "score"}
        assert type(entry["id"]) is int
        assert type(entry["target"]) is bool
        assert entry["state"] in ("tracked", "lost")
        assert isinstance(entry["box"], list) and len(entry["box"]) == 4
        assert all(type(v) is float for v in entry["box"])
        assert type(entry["score"]) is float


def test_jsonl_lists_tracked_and_target_only(tmp_path):
    result, _ = scene()
    [record] = write_and_read(tmp_path, [result])
    assert [e["id"] for e in record["tracks"]] == [1, 2]  # lost non-target and removed are left out


def test_jsonl_tracked_target_has_mask_that_decodes_to_original(tmp_path):
    result, masks = scene()
    [record] = write_and_read(tmp_path, [result])
    target = next(e for e in record["tracks"] if e["target"])
    assert target["id"] == 1 and target["state"] == "tracked"
    assert target["box"] == [2.0, 3.0, 20.0, 15.0]
    assert target["score"] == pytest.approx(0.91)
    assert set(target["mask"]) == {"size", "counts"}
    assert target["mask"]["size"] == [H, W]
    assert isinstance(target["mask"]["counts"], str)
    np.testing.assert_array_equal(decode_rle(target["mask"]), masks[0])


def test_jsonl_target_mask_is_pycocotools_compressed_rle(tmp_path):
    result, masks = scene()
    [record] = write_and_read(tmp_path, [result])
    rle = next(e for e in record["tracks"] if e["target"])["mask"]
    decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
    np.testing.assert_array_equal(decoded.astype(bool), masks[0])
    assert mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}) == masks[0].sum()


def test_jsonl_non_target_has_no_mask_by_default(tmp_path):
    result, _ = scene()
    [record] = write_and_read(tmp_path, [result])
    other = next(e for e in record["tracks"] if e["id"] == 2)
    assert other["target"] is False
    assert "mask" not in other


def test_jsonl_masks_all_gives_every_tracked_instance_its_mask(tmp_path):
    result, masks = scene()
    [record] = write_and_read(tmp_path, [result], masks="all")
    by_id = {e["id"]: e for e in record["tracks"]}
    np.testing.assert_array_equal(decode_rle(by_id[1]["mask"]), masks[0])
    np.testing.assert_array_equal(decode_rle(by_id[2]["mask"]), masks[1])


def test_jsonl_masks_none_writes_no_masks(tmp_path):
    result, _ = scene()
    [record] = write_and_read(tmp_path, [result], masks="none")
    assert len(record["tracks"]) == 2
    assert all("mask" not in e for e in record["tracks"])


def test_jsonl_lost_target_listed_without_mask(tmp_path):
    instances, _ = two_masked_instances()
    tracks = (track(1, TrackState.LOST, target=True), track(2, row=1))
    result = FrameResult(make_frame(index=8, pts=0.266667), instances, tracks, target_rows={})
    [record] = write_and_read(tmp_path, [result])
    lost = next(e for e in record["tracks"] if e["id"] == 1)
    assert lost["target"] is True
    assert lost["state"] == "lost"
    assert "mask" not in lost


def test_jsonl_lost_target_without_masks_on_frame(tmp_path):
    # A frame where the target is lost and nothing carries masks still writes a valid line.
    tracks = (track(1, TrackState.LOST, target=True),)
    result = FrameResult(make_frame(), Instances.empty((H, W)), tracks)
    [record] = write_and_read(tmp_path, [result], masks="all")
    assert record["tracks"] == [{"id": 1, "target": True, "state": "lost", "box": [0.0, 0.0, 10.0, 10.0], "score": 0.5}]


def test_jsonl_one_line_per_frame_in_order(tmp_path):
    instances, _ = two_masked_instances()
    results = [FrameResult(make_frame(index=i, pts=i / 30), instances, ()) for i in range(3)]
    records = write_and_read(tmp_path, results)
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert all(r["tracks"] == [] for r in records)


def test_jsonl_is_readable_before_close(tmp_path):
    result, _ = scene()
    path = tmp_path / "tracks.jsonl"
    sink = JsonlSink(path)
    try:
        sink.write(result)
        lines = path.read_text(encoding="utf-8").splitlines()
        assert len(lines) == 1 and json.loads(lines[0])["frame"] == 7
    finally:
        sink.close()


# --------------------------------------------------------------------------------------------- RLE


@pytest.mark.parametrize(
    "mask",
    [
        np.random.default_rng(0).random((H, W)) > 0.5,
        np.zeros((H, W), bool),
        np.ones((H, W), bool),
        np.random.default_rng(1).random((7, 13)) > 0.3,  # odd, non-square
        block_mask(0, 0, 1, 1),
    ],
    ids=["random", "empty", "full", "odd-shape", "one-pixel"],
)
def test_rle_round_trip(mask):
    rle = encode_rle(mask)
    assert rle["size"] == [mask.shape[0], mask.shape[1]]
    assert isinstance(rle["counts"], str)
    back = decode_rle(rle)
    assert back.dtype == bool
    np.testing.assert_array_equal(back, mask)


def test_rle_counts_match_pycocotools_encoding():
    mask = np.random.default_rng(2).random((H, W)) > 0.7
    rle = encode_rle(mask)
    reference = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle["counts"] == reference["counts"].decode("ascii")
    np.testing.assert_array_equal(
        mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool), mask
    )


def test_rle_of_c_ordered_and_fortran_masks_agree():
    mask = np.random.default_rng(3).random((H, W)) > 0.5
    assert encode_rle(np.ascontiguousarray(mask)) == encode_rle(np.asfortranarray(mask))


def test_rle_survives_json_round_trip():
    mask = block_mask(5, 5, 40, 30)
    rle = json.loads(json.dumps(encode_rle(mask)))
    np.testing.assert_array_equal(decode_rle(rle), mask)


def test_prompt_rejects_fractional_labels():
    with pytest.raises(ValueError, match="label"):
        Prompt(points=[[1, 2]], labels=[0.5])


@pytest.mark.parametrize(("field", "value"), [("points", np.zeros((2, 3))), ("boxes", np.zeros((1, 5)))])
def test_prompt_rejects_arrays_of_the_wrong_width(field, value):
    with pytest.raises(ValueError, match="must be K×"):
        Prompt(**{field: value, **({"labels": [1, 1]} if field == "points" else {})})
