"""`fastsam-stream eval davis|sot|mot`.

The dataset readers, the prompts taken from ground truth, and whole runs of the real pipeline and
stand-in model on the real data in ../shared/eval.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess

import numpy as np
import pytest

from fastsam_stream.cli import main as cli_main
from fastsam_stream.errors import ConfigError, SourceError
from fastsam_stream.evaluation.datasets import davis_sequences, mot_sequences, read_boxes, sot_targets
from fastsam_stream.evaluation.runner import prompt_from_mask

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def eval_root(davis):
    return davis.parent  # ../shared/eval: davis2016/, sot/, mot/


def main(argv: list[str]) -> int:
    """`fastsam-stream eval ARGV...`, in this process."""
    return cli_main(["eval", *argv])


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def model_args(weights, *extra: str) -> list[str]:
    return ["--weights", str(weights), "--device", "cpu", "--imgsz", "320", "--quiet", *extra]


# --- readers and prompts (no model) ---------------------------------------------------------------


def test_readers_find_the_shared_sequences(eval_root):
    assert [s.name for s in davis_sequences(eval_root / "davis2016")] == [
        "blackswan",
        "bmx-trees",
        "breakdance",
        "camel",
        "car-roundabout",
        "dog",
    ]
    dog = davis_sequences(eval_root / "davis2016", ["dog"])[0]
    assert len(dog.frames) == len(dog.annotations) == 60 and dog.mask(0).shape == (480, 854)
    assert [t.name for t in sot_targets(eval_root / "sot")] == ["Car4", "Jogging.1", "Jogging.2"]
    assert [t.name for t in sot_targets(eval_root / "sot", ["Jogging"])] == ["Jogging.1", "Jogging.2"]
    (jogging2,) = sot_targets(eval_root / "sot", ["Jogging.2"])
    assert jogging2.boxes.shape == (307, 4) and jogging2.boxes[0].tolist() == [180, 79, 37, 114]
    mot = mot_sequences(eval_root / "mot/MOT17-mini/train")
    assert [s.name for s in mot] == ["MOT17-02-FRCNN", "MOT17-04-FRCNN", "MOT17-05-FRCNN"] and mot[0].fps == 30


def test_wrong_roots_and_names_are_one_line_errors(eval_root, tmp_path):
    with pytest.raises(SourceError, match="no such DAVIS folder"):
        davis_sequences(tmp_path / "missing")
    with pytest.raises(SourceError, match="is not a DAVIS root: expected JPEGImages/480p"):
        davis_sequences(eval_root / "sot")
    with pytest.raises(ConfigError, match=r"no DAVIS sequence 'cat' in .* \(it has: blackswan, .*dog\)"):
        davis_sequences(eval_root / "davis2016", ["dog", "cat"])
    with pytest.raises(SourceError, match="holds no OTB-style sequence"):
        sot_targets(eval_root / "davis2016")
    with pytest.raises(ConfigError, match="no SOT sequence 'Jogging.3'"):
        sot_targets(eval_root / "sot", ["Jogging.3"])
    with pytest.raises(SourceError, match="holds no MOTChallenge sequence"):
        mot_sequences(eval_root / "mot")


def test_ground_truth_boxes_take_commas_tabs_or_spaces(tmp_path):
    path = tmp_path / "groundtruth_rect.txt"
    path.write_text("1,2,3,4\n5\t6\t7\t8\n9 10  11 12\nNaN,NaN,NaN,NaN\n\n")
    boxes = read_boxes(path)
    assert boxes[:3].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]] and np.isnan(boxes[3]).all()
    path.write_text("1,2,3,4\n1,2,3\n")
    with pytest.raises(SourceError, match="line 2: expected 4 numbers"):
        read_boxes(path)


def test_prompts_from_a_ground_truth_mask():
    mask = np.zeros((50, 80), bool)
    mask[10:31, 20:61] = True  # 21 rows × 41 columns: the deepest pixels are a ridge along row 20, centred at column 40
    assert prompt_from_mask(mask, "box").boxes.tolist() == [[20, 10, 61, 31]]  # xyxy, pixel edges
    point = prompt_from_mask(mask, "point")
    assert point.points.tolist() == [[40, 20]] and point.labels.tolist() == [1]
    assert np.array_equal(prompt_from_mask(mask, "mask").mask, mask)
    with pytest.raises(SourceError, match="annotation is empty"):
        prompt_from_mask(np.zeros_like(mask), "box")


# --- whole runs with the real model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def davis_run(weights, eval_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("davis")
    code, printed = run(
        "davis",
        str(eval_root / "davis2016"),
        "--seq",
        "dog",
        "--prompt",
        "box",
        "--out",
        str(out),
        *model_args(weights),
    )
    return code, printed, out


def test_davis_eval_writes_scores_and_a_plot(davis_run):
    code, printed, out = davis_run
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    dog = report["sequences"]["dog"]
    for key in ("J", "F", "J&F"):
        assert 0 <= dog[key] <= 1 and 0 <= report["mean"][key] <= 1
    assert dog["J&F"] == pytest.approx((dog["J"] + dog["F"]) / 2)
    assert dog["frames"] == 60 and len(dog["J_per_frame"]) == 60 and dog["prompt_failed"] == []
    assert dog["J_per_frame"][0] > 0.6  # the box prompt picked the dog on frame 0
    assert report["settings"]["imgsz"] == 320 and report["settings"]["device"] == "cpu"
    assert report["settings"]["tracker"]["min_iou"] > 0 and report["mean"]["fps"] > 0
    assert (out / "davis.png").read_bytes()[:8] == PNG
    assert "dog" in printed and "mean over 1 sequences: J&F" in printed


def test_sot_eval_on_the_first_frames(weights, eval_root, tmp_path):
    code, printed = run(
        "sot",
        str(eval_root / "sot"),
        "--seq",
        "Car4",
        "--max-frames",
        "30",
        "--out",
        str(tmp_path),
        *model_args(weights),
    )
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    car = report["targets"]["Car4"]
    assert car["frames"] == 30 and len(car["boxes"]) == 30 and len(car["success_curve"]) == 21
    assert 0 <= car["AUC"] <= 1 and 0 <= car["precision@20px"] <= 1
    assert car["boxes"][0] == [70, 51, 107, 87]  # frame 0 reports the ground truth (OTB)
    assert report["mean"]["AUC"] == car["AUC"] and (tmp_path / "sot.png").read_bytes()[:8] == PNG
    assert "success AUC" in printed


def test_mot_eval_writes_motchallenge_files_and_trackeval_scores(weights, eval_root, tmp_path):
    code, printed = run("mot", str(eval_root / "mot/MOT17-mini/train"), "--out", str(tmp_path), *model_args(weights))
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["sequences"]) == {"MOT17-02-FRCNN", "MOT17-04-FRCNN", "MOT17-05-FRCNN"}
    for name, seq in report["sequences"].items():
        lines = (tmp_path / "trackers/fastsam-stream/data" / f"{name}.txt").read_text().splitlines()
        assert lines, name
        for line in lines:
            fields = line.split(",")
            assert len(fields) == 10 and 1 <= int(fields[0]) <= seq["frames"] and int(fields[1]) >= 1
        assert (tmp_path / "gt" / name / "gt/gt.txt").is_file()
        for key in ("HOTA", "IDF1"):
            assert 0 <= seq[key] <= 1
        assert seq["MOTA"] <= 1  # MOTA can go below 0
    assert {"HOTA", "IDF1", "MOTA"} <= set(report["combined"]) and (tmp_path / "mot.png").read_bytes()[:8] == PNG
    assert "COMBINED" in printed


def test_bad_inputs_are_one_line_errors(eval_root, tmp_path, capsys):
    assert main(["davis", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 1
    assert main(["sot", str(eval_root / "sot"), "--seq", "Nope", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"fastsam-stream: error: no such DAVIS folder: {tmp_path / 'nowhere'}"
    assert err[1].startswith("fastsam-stream: error: no SOT sequence 'Nope' in ") and len(err) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["sot", str(eval_root / "sot"), "--max-frames", "0"])
    assert exit_info.value.code == 2
    assert "expected a positive whole number" in capsys.readouterr().err


def test_the_console_script_runs_eval_and_exits_non_zero_on_bad_input(cli, tmp_path):
    done = subprocess.run([*cli, "eval", "mot", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == f"fastsam-stream: error: {tmp_path} holds no MOTChallenge sequence (<seq>/seqinfo.ini, img1/, gt/gt.txt)"
    )
