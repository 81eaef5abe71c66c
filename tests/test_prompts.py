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
    both = select(Prompt(points=[[20, 20], [150, 50]], labels=[1, 1]), scene)
    assert both.rows == (0, 2) and both.track_row == 0  # merged; the tracker follows the larger


def test_background_only_is_rejected(scene):
    with pytest.raises(PromptError, match="foreground"):
        select(Prompt(points=[[20, 20]], labels=[0]), scene)


@pytest.mark.parametrize(
    "prompt",
    [
        Prompt(boxes=[[150, 10, 250, 50]]),  # x2 beyond the 200-wide frame
        Prompt(boxes=[[-5, 10, 50, 50]]),
        Prompt(points=[[200, 10]], labels=[1]),
        Prompt(points=[[10, 100]], labels=[1]),
    ],
)
def test_prompts_outside_the_frame_are_errors(scene, prompt):
    with pytest.raises(PromptError, match="outside the 200x100 frame"):
        select(prompt, scene)


def test_text_prompts_are_not_supported_yet(scene):
    with pytest.raises(PromptError, match="text"):
        select(Prompt(text="a dog"), scene)
