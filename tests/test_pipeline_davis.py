"""The whole frame path on a real DAVIS sequence: prompt on frame 0 from the ground truth, then follow."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fastsam_stream import FolderSource, Pipeline, Prompt
from fastsam_stream.pipeline.prompts import select

SEQUENCE = "dog"
MIN_FIRST_FRAME_IOU = 0.75  # the stand-in int8 model gets 0.81 on dog/00000
MIN_MEAN_J = 0.6  # region similarity over frames 1.., counting frames where the target is missed as 0
MIN_FOUND = 0.7  # share of frames with the target found


def _gt(davis, index: int) -> np.ndarray:
    return cv2.imread(str(davis / f"Annotations/480p/{SEQUENCE}/{index:05d}.png"), cv2.IMREAD_GRAYSCALE) > 127


def _box_of(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def dog_run(segmenter, davis):
    """Box prompt from the ground-truth mask of frame 0, then the first 40 frames."""
    source = FolderSource(davis / f"JPEGImages/480p/{SEQUENCE}", fps=24)
    source.files = source.files[:40]
    source.frame_count = 40
    prompt = Prompt(boxes=[_box_of(_gt(davis, 0))], frame=0)
    results = []
    for result in Pipeline(source, segmenter, prompt=prompt):
        results.append((result.frame.index, result.target, result.target_mask))
    return results


def test_box_prompt_selects_the_ground_truth_object(dog_run, davis):
    index, target, mask = dog_run[0]
    assert index == 0 and target is not None and target.is_target
    assert _iou(mask, _gt(davis, 0)) >= MIN_FIRST_FRAME_IOU


def test_target_is_followed_with_one_id(dog_run, davis):
    assert [i for i, _, _ in dog_run] == list(range(40))  # every frame, in order
    ids = {t.id for _, t, _ in dog_run if t is not None}
    assert len(ids) == 1  # the target never changes identity, found or lost
    scores = [_iou(m, _gt(davis, i)) if m is not None else 0.0 for i, _, m in dog_run[1:]]
    found = sum(m is not None for _, _, m in dog_run[1:]) / len(scores)
    assert found >= MIN_FOUND
    assert np.mean(scores) >= MIN_MEAN_J
    # and still on the dog near the end
    late = [s for s in scores[-10:] if s > 0]
    assert late and max(late) >= MIN_FIRST_FRAME_IOU


def test_point_prompts_fg_selects_and_bg_removes(segmenter, davis):
    frame_path = davis / f"JPEGImages/480p/{SEQUENCE}/00000.jpg"
    from fastsam_stream.core import Frame

    instances = segmenter.segment([Frame(cv2.imread(str(frame_path)), "dog", 0, 0.0, 0.0)])[0]
    gt = _gt(davis, 0)
    ys, xs = np.nonzero(gt)
    centre = [float(np.median(xs)), float(np.median(ys))]
    if not gt[int(centre[1]), int(centre[0])]:
        centre = [float(xs[len(xs) // 2]), float(ys[len(ys) // 2])]
    [chosen] = select(Prompt(points=[centre], labels=[1]), instances)
    assert _iou(instances.masks(list(chosen.rows)).any(0), gt) >= MIN_FIRST_FRAME_IOU
    # the same point as background removes the instance again: nothing is left to select
    from fastsam_stream.errors import PromptError

    with pytest.raises(PromptError, match="no instance"):
        select(Prompt(points=[centre, centre], labels=[1, 0]), instances)
