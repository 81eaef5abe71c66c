"""Prompt selection rules (FastSAM's), on constructed instances with dense masks."""

from __future__ import annotations

import numpy as np
import pytest

from fastsam_stream.core import DenseMasks, Instances, Prompt
from fastsam_stream.errors import PromptError
from fastsam_stream.pipeline.prompts import select, select_by_box, select_by_points

H, W = 100, 200


def _rect(x1, y1, x2, y2) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y1:y2, x1:x2] = True
    return m


@pytest.fixture
def scene() -> Instances:
    # 0: large box on the left; 1: small square inside 0; 2: object on the right
    masks = np.stack([_rect(10, 10, 90, 90), _rect(40, 40, 60, 60), _rect(120, 20, 180, 80)])
    boxes = np.array([[10, 10, 90, 90], [40, 40, 60, 60], [120, 20, 180, 80]], np.float32)
    return Instances(boxes, np.array([0.9, 0.8, 0.7], np.float32), (H, W), masks=DenseMasks(masks))


def test_box_selects_highest_mask_iou_not_highest_score(scene):
    assert select_by_box(scene, np.array([38, 38, 62, 62])) == 1
    assert select_by_box(scene, np.array([8, 8, 92, 92])) == 0
    assert select_by_box(scene, np.array([115, 15, 185, 85])) == 2


def test_box_over_empty_space_selects_nothing(scene):
    assert select_by_box(scene, np.array([95, 90, 115, 99])) is None
    with pytest.raises(PromptError, match="no instance"):
        select(Prompt(boxes=[[95, 90, 115, 99]]), scene)


def test_foreground_points_merge_and_background_points_remove(scene):
    assert select_by_points(scene, np.array([[50.0, 50.0]]), np.array([1])) == (0, 1)  # inside both
    assert select_by_points(scene, np.array([[50.0, 50.0], [20.0, 20.0]]), np.array([1, 0])) == (1,)
    [both] = select(Prompt(points=[[20, 20], [150, 50]], labels=[1, 1]), scene)
    assert both.rows == (0, 2) and both.track_row == 0  # merged; the tracker follows the larger


def test_background_only_is_rejected(scene):
    with pytest.raises(PromptError, match="foreground"):
        select(Prompt(points=[[20, 20]], labels=[0]), scene)


@pytest.mark.parametrize(
    "prompt",
    [
        Prompt(boxes=[[200, 10, 250, 50]]),  # starts at the right edge: nothing inside
        Prompt(boxes=[[-50, 10, -5, 50]]),
        Prompt(points=[[200, 10]], labels=[1]),
        Prompt(points=[[10, 100]], labels=[1]),
    ],
)
def test_prompts_outside_the_frame_are_errors(scene, prompt):
    with pytest.raises(PromptError, match="outside the 200x100 frame"):
        select(prompt, scene)


def test_text_prompts_without_a_scorer_say_clip_is_needed(scene):
    with pytest.raises(PromptError, match="CLIP"):
        select(Prompt(text="a dog"), scene)


class FixedScorer:
    """A TextScorer whose similarities the test sets: one per instance row."""

    def __init__(self, by_row: list[float]) -> None:
        self.by_row = np.array(by_row, np.float32)
        self.calls: list[list[int]] = []

    def similarities(self, image, instances, rows, text):
        self.calls.append(list(rows))
        return self.by_row[list(rows)]


IMAGE = np.zeros((H, W, 3), np.uint8)


def test_several_boxes_give_one_target_each(scene):
    chosen = select(Prompt(boxes=[[115, 15, 185, 85], [38, 38, 62, 62]]), scene)
    assert [s.rows for s in chosen] == [(2,), (1,)]


def test_two_boxes_on_one_instance_are_an_error(scene):
    with pytest.raises(PromptError, match="box 2 .* same instance as box 1"):
        select(Prompt(boxes=[[115, 15, 185, 85], [118, 18, 182, 82]]), scene)


def test_background_point_vetoes_a_box_candidate(scene):
    # the box fits the right object best; a background point on it leaves the left one
    [plain] = select(Prompt(boxes=[[60, 15, 185, 85]]), scene)
    [vetoed] = select(Prompt(boxes=[[60, 15, 185, 85]], points=[[150, 50]], labels=[0]), scene)
    assert plain.rows == (2,) and vetoed.rows == (0,)


def test_mask_prompt_selects_highest_mask_iou(scene):
    [chosen] = select(Prompt(mask=_rect(42, 38, 62, 60)), scene)
    assert chosen.rows == (1,)
    [chosen] = select(Prompt(mask=_rect(125, 25, 200, 100)), scene)
    assert chosen.rows == (2,)
    with pytest.raises(PromptError, match="no instance overlaps the mask"):
        select(Prompt(mask=_rect(0, 92, 8, 100)), scene)


def test_mask_prompt_of_another_size_or_empty_is_an_error(scene):
    with pytest.raises(PromptError, match="mask prompt is 100x50 but the frame is 200x100"):
        select(Prompt(mask=np.ones((50, 100), bool)), scene)
    with pytest.raises(PromptError, match="empty"):
        Prompt(mask=np.zeros((H, W), bool))


def test_text_picks_the_highest_similarity_and_scores_every_candidate_once(scene):
    scorer = FixedScorer([0.1, 0.3, 0.2])
    [chosen] = select(Prompt(text="a cup"), scene, IMAGE, scorer)
    assert chosen.rows == (1,) and scorer.calls == [[0, 1, 2]]
    scorer.by_row[:] = [0.5, 0.3, 0.2]
    [chosen] = select(Prompt(text="a cup"), scene, IMAGE, scorer)
    assert chosen.rows == (0,)


def test_text_top_k_and_threshold_give_several_targets(scene):
    scorer = FixedScorer([0.1, 0.3, 0.25])
    assert [s.rows for s in select(Prompt(text="x", top_k=2), scene, IMAGE, scorer)] == [(1,), (2,)]
    assert [s.rows for s in select(Prompt(text="x", top_k=5, min_similarity=0.2), scene, IMAGE, scorer)] == [(1,), (2,)]
    # min_similarity alone: every instance that similar, not just the best one
    assert [s.rows for s in select(Prompt(text="x", min_similarity=0.2), scene, IMAGE, scorer)] == [(1,), (2,)]
    with pytest.raises(PromptError, match="at least 0.5 similar"):
        select(Prompt(text="x", min_similarity=0.5), scene, IMAGE, scorer)


def test_text_restricted_to_a_box_and_vetoed_by_background_points(scene):
    scorer = FixedScorer([0.1, 0.3, 0.9])
    [chosen] = select(Prompt(text="x", boxes=[[0, 0, 100, 100]]), scene, IMAGE, scorer)
    assert chosen.rows == (1,) and scorer.calls[-1] == [0, 1]  # row 2 lies outside the box
    [chosen] = select(Prompt(text="x", points=[[150, 50]], labels=[0]), scene, IMAGE, scorer)
    assert chosen.rows == (1,) and scorer.calls[-1] == [0, 1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": "  "}, "must not be empty"),
        ({"text": "x", "points": [[1, 1]], "labels": [1]}, "background points"),
        ({"boxes": [[0, 0, 5, 5]], "points": [[1, 1]], "labels": [1]}, "background points"),
        ({"text": "x", "boxes": [[0, 0, 5, 5], [5, 5, 9, 9]]}, "one box"),
        ({"mask": np.ones((4, 4)), "boxes": [[0, 0, 5, 5]]}, "stands alone"),
        ({"points": [[1, 1]], "labels": [2]}, "1 \\(foreground\\) or 0"),
        ({"text": "x", "top_k": 0}, "top_k"),
        ({"boxes": [[0, 0, 5, 5]], "top_k": 2}, "give text too"),
        ({"boxes": [[float("nan"), 0, 5, 5]]}, "finite"),
        ({"points": [[float("inf"), 1]], "labels": [1]}, "finite"),
    ],
)
def test_bad_prompt_combinations_are_prompt_errors(kwargs, message):
    with pytest.raises(PromptError, match=message):
        Prompt(**kwargs)
