"""Issue #6's quality bars and issue #16's figures, measured the way a user would.

That is `fastsam-stream eval` with the default config (bytetrack) and the stand-in model at
imgsz 640 on ../shared/eval.

For scale (from the issue): ultralytics alone with the same model and its ByteTrack reaches a
mean J&F of 0.699 on these DAVIS sequences (0.24 on bmx-trees, 0.32 on breakdance, where it
loses the target) and a mean success AUC of 0.36 on the SOT targets (0.15 and 0.12 on the two
Jogging targets, occluded by a pole).

Issue #16 (appearance from the segmenter's features, camera-motion compensation) asked that no
sequence score more than 0.03 under what it scored before them: BEFORE_16 holds those scores
(README, "Appearance and camera motion"), and the means hold the figures measured with both parts on
(DAVIS 0.802, SOT 0.748), less a rounding margin.
"""

from __future__ import annotations

import json

import pytest

from fastsam_stream.cli import main

MIN_MEAN_JF = 0.795
MIN_MEAN_AUC = 0.74
# Where a tracker that loses the target scores about 0.3 (see above): keeping it must show.
MIN_JF_WHERE_OTHERS_LOSE = 0.45
MIN_AUC_OCCLUDED = 0.5
# Each sequence's score before issue #16, with the default config of then (bench/tracker_parts_eval.py).
BEFORE_16 = {
    "blackswan": 0.910,
    "bmx-trees": 0.516,
    "breakdance": 0.655,
    "camel": 0.901,
    "car-roundabout": 0.958,
    "dog": 0.886,
    "Car4": 0.826,
    "Jogging.1": 0.673,
    "Jogging.2": 0.747,
}
MAX_LOSS = 0.03


def _eval(kind: str, root, weights, out) -> dict:
    code = main(
        [
            "eval",
            kind,
            str(root),
            "--weights",
            str(weights),
            "--device",
            "cpu",
            "--imgsz",
            "640",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def eval_root(davis):
    return davis.parent


def test_davis_box_prompts_reach_the_bar(eval_root, weights, tmp_path):
    report = _eval("davis", eval_root / "davis2016", weights, tmp_path)
    assert report["mean"]["J&F"] >= MIN_MEAN_JF
    scores = report["sequences"]
    assert len(scores) == 6
    for name in ("bmx-trees", "breakdance"):
        assert scores[name]["J&F"] >= MIN_JF_WHERE_OTHERS_LOSE, name
    for name, row in scores.items():
        assert row["J&F"] >= BEFORE_16[name] - MAX_LOSS, name


def test_sot_targets_reach_the_bar(eval_root, weights, tmp_path):
    report = _eval("sot", eval_root / "sot", weights, tmp_path)
    assert report["mean"]["AUC"] >= MIN_MEAN_AUC
    scores = report["targets"]
    for name in ("Jogging.1", "Jogging.2"):  # through the pole's occlusion
        assert scores[name]["AUC"] >= MIN_AUC_OCCLUDED, name
    for name, row in scores.items():
        assert row["AUC"] >= BEFORE_16[name] - MAX_LOSS, name
