"""`fastsam-stream eval davis|sot|mot ROOT`: the command line of the evaluation.

`add_eval_parser(subparsers)` adds the `eval` command to the main parser and `run_eval(args)`
runs it. Datasets are checked (root, --seq names) before the model loads, so a wrong path fails
in a moment.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..options import add_config_options, add_model_options, given_settings

KINDS = {
    "davis": "video object segmentation on DAVIS: J, F and J&F per sequence",
    "sot": "single-object tracking on OTB-style sequences: success AUC and precision at 20 px",
    "mot": "multi-object tracking on MOTChallenge sequences: HOTA, IDF1 and MOTA (TrackEval)",
}

ROOTS = {
    "davis": "DAVIS root: JPEGImages/480p/<seq>/*.jpg and Annotations/480p/<seq>/*.png",
    "sot": "OTB-style root: <seq>/img/*.jpg and <seq>/groundtruth_rect[.N].txt (x,y,w,h per frame)",
    "mot": "MOTChallenge split, e.g. MOT17/train: <seq>/seqinfo.ini, img1/, gt/gt.txt",
}


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def add_eval_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The `eval` command, with one sub-command per benchmark."""
    parser = subparsers.add_parser("eval", help="run the pipeline on a benchmark and score it (DAVIS, SOT, MOT)")
    kinds = parser.add_subparsers(dest="eval_kind", required=True, metavar="{davis,sot,mot}")
    for kind, help_text in KINDS.items():
        sub = kinds.add_parser(kind, help=help_text, description=help_text)
        sub.add_argument("root", metavar="ROOT", help=ROOTS[kind])
        sub.add_argument(
            "--seq", nargs="+", action="extend", metavar="NAME", help="only these sequences (default: all)"
        )
        if kind == "davis":
            sub.add_argument(
                "--prompt",
                choices=["box", "point", "mask"],
                default="box",
                help="frame-0 prompt from the ground truth: its box, its deepest pixel, or the mask (default box)",
            )
        add_config_options(sub)
        add_model_options(sub)
        sub.add_argument("--max-frames", type=_positive, metavar="N", help="only the first N frames of each sequence")
        sub.add_argument("--out", help=f"output folder (default runs/eval/{kind})")
        sub.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
        sub.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def eval_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides from the eval command's model options; options not given leave the config alone.

    Args:
        args: The parsed `eval` command line.

    Returns:
        {"model": {...}} with the --weights, --device and --imgsz given, or {} when none was.
    """
    return given_settings(args)


def _datasets(args: argparse.Namespace) -> list:
    from .datasets import davis_sequences, mot_sequences, sot_targets

    readers = {"davis": davis_sequences, "sot": sot_targets, "mot": mot_sequences}
    return readers[args.eval_kind](args.root, args.seq)


def _log(args: argparse.Namespace):
    return (lambda _: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))


def _evaluate(args: argparse.Namespace, config: Any, items: list, out: Path) -> dict:
    from ..pipeline.segmenter import UltralyticsSegmenter
    from . import runner

    segmenter = UltralyticsSegmenter(config.model, features=config.tracker.wants_embeddings)  # once, for every sequence
    log, limit = _log(args), args.max_frames
    if args.eval_kind == "davis":
        results = runner.evaluate_davis(items, config, segmenter, args.prompt, limit, log)
    elif args.eval_kind == "sot":
        results = runner.evaluate_sot(items, config, segmenter, limit, log)
    else:
        results = runner.evaluate_mot(items, config, segmenter, out, limit, log)
    return {
        "kind": args.eval_kind,
        "root": str(Path(args.root).resolve()),
        "settings": _settings(args, config, segmenter),
        **results,
    }


def _settings(args: argparse.Namespace, config: Any, segmenter: Any) -> dict:
    from .metrics import DAVIS_BOUND_TH

    m = config.model
    settings = {
        "config": args.config or "default",
        "weights": m.weights,
        "imgsz": m.imgsz,
        "device": str(segmenter.device),
        "conf": m.conf,
        "iou": m.iou,
        "max_det": m.max_det,
        "agnostic_nms": m.agnostic_nms,
        "half": m.half,
        "threads": m.threads,
        "tracker": config.tracker.model_dump(),
        "batch": config.batch.model_dump(),
        "max_frames": args.max_frames,
    }
    if args.eval_kind == "davis":
        settings.update(
            prompt=args.prompt, bound_th=DAVIS_BOUND_TH, frames_scored="all but the first and the last (DAVIS toolkits)"
        )
    elif args.eval_kind == "sot":
        settings.update(prompt="box", first_frame="ground truth (OTB/pysot)", invalid_gt_frames="excluded")
    else:
        settings.update(prompt=None, tracks_written="state tracked, 1-based MOTChallenge boxes")
    return settings


def run_eval(args: argparse.Namespace) -> int:
    """Run `fastsam-stream eval KIND ROOT ...`; errors are raised as FastSAMStreamError (one line)."""
    from ..assemble import prepare_output_dir
    from ..config import load_config
    from ..pipeline.segmenter import quiet_ultralytics
    from .report import finish
    from .runner import evaluation_config

    quiet_ultralytics(verbose=args.debug)
    config = evaluation_config(load_config(args.config, eval_overrides(args), tracker=args.tracker))
    items = _datasets(args)  # wrong root or --seq: fails here, before the model loads
    if args.eval_kind == "mot":
        from .metrics import require_trackeval

        require_trackeval()  # before the model loads and every sequence runs, not after
    out = prepare_output_dir(Path(args.out or f"runs/eval/{args.eval_kind}"))
    report = _evaluate(args, config, items, out)
    for line in finish(report, out):
        print(line)
    return 0
