"""The `fastsam-stream` command. Errors print one line and exit non-zero; `--debug` shows tracebacks."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from .errors import ConfigError, FastSAMStreamError, OutputError
from .evaluation.cli import add_eval_parser, run_eval

EXIT_INTERRUPTED = 130
EXIT_GAVE_UP = 3  # a live source ran out of reconnect attempts (its outputs are complete up to then)


def _floats(text: str, count: tuple[int, ...], what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in count:
        raise ConfigError(f"{what} {text!r}: expected {' or '.join(str(c) for c in count)} comma-separated numbers")
    return values


def parse_point(text: str) -> list[float | int]:
    values = _floats(text, (2, 3), "--point")
    if len(values) == 3:
        if values[2] not in (0.0, 1.0):
            raise ConfigError(f"--point {text}: label must be 1 (foreground) or 0 (background)")
        return [values[0], values[1], int(values[2])]
    return values


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="fastsam-stream", description="Segment and track a prompted object in video.")
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the pipeline on video files, image folders, streams or cameras")
    run.add_argument(
        "sources", nargs="*", metavar="SOURCE",
        help="video file, image folder, stream URL (rtsp://, rtmp://, http(s)://, ...), camera (/dev/videoN or N) "
        "or lavfi:GRAPH; several run together, each with its own outputs",
    )
    run.add_argument("--config", help="YAML config file, or a bundled one: default, monitoring, tracking, road")
    run.add_argument("--tracker", help="tracker settings: a YAML file with a 'tracker' section, or a bundled one: bytetrack, iou")
    run.add_argument("--weights", help="FastSAM / YOLOv8-seg checkpoint (*.pt) or ONNX export (*.onnx, run in ONNX Runtime); "
                     "default: FastSAM-s.pt, fetched online")
    run.add_argument("--device", help="cpu or cuda:N (default: cuda:0 when available)")
    run.add_argument("--imgsz", type=int, help="network input size, a multiple of 32 (default 640)")
    run.add_argument("--conf", type=float, help="confidence threshold (default 0.1; tracks start at tracker.high_score 0.4)")
    run.add_argument("--iou", type=float, help="NMS IoU threshold (default 0.7)")
    run.add_argument("--max-det", type=int, help="most instances per frame (default 300)")
    run.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    run.add_argument("--transport", choices=["tcp", "udp"], help="RTSP transport (default tcp)")
    run.add_argument("--reconnect-attempts", type=int, help="give a lost live source up after N attempts (default: never)")
    run.add_argument("--read-timeout", type=float, help="seconds without data before a live source counts as lost (default 5)")
    run.add_argument("--drop-policy", choices=["auto", "block", "drop_oldest"],
                     help="when the segmenter is behind: drop_oldest (live default) or block (files)")
    run.add_argument("--camera-size", help="V4L2 capture size WIDTHxHEIGHT")
    run.add_argument("--camera-fps", type=float, help="V4L2 capture frame rate")
    run.add_argument("--box", action="append", default=[],
                     help="box prompt X1,Y1,X2,Y2 in source pixels; repeatable: one target per box")
    run.add_argument("--point", action="append", default=[], help="point prompt X,Y[,LABEL] (1 fg, 0 bg); repeatable")
    run.add_argument("--text", help='text prompt, e.g. "a black dog" (CLIP; see --clip-weights)')
    run.add_argument("--top-k", type=int, help="text: the K most similar instances become targets (default 1)")
    run.add_argument("--min-similarity", type=float, help="text: only instances at least this similar (cosine)")
    run.add_argument("--mask", help="mask prompt: an image of the prompt frame's size whose nonzero pixels are the object")
    run.add_argument("--prompt-frame", type=int, help="frame the prompt applies to (default 0)")
    run.add_argument("--prompt-source", help="id of the source the prompt is for (default: every source)")
    run.add_argument("--clip-model", help="open_clip model for text prompts (default ViT-B-32)")
    run.add_argument("--clip-weights", help="open_clip pretrained tag (fetched online) or local checkpoint path (default openai)")
    run.add_argument("--control-port", type=int, help="re-prompt while running: JSON commands over HTTP on 127.0.0.1:PORT (0: any)")
    run.add_argument("--control-stdin", action="store_true", help="re-prompt while running: JSON commands on stdin, one per line")
    run.add_argument("--out", help="output folder (default runs/fastsam-stream)")
    run.add_argument("--masks", choices=["target", "all", "none"], help="which tracks get RLE masks in tracks.jsonl")
    run.add_argument("--no-video", action="store_true", help="do not write annotated.mp4")
    run.add_argument("--mot", action="store_true", help="also write mot.txt: every tracked instance in MOTChallenge format")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--debug", action="store_true", help="log more, and show tracebacks on errors")
    add_eval_parser(commands)
    export = commands.add_parser("export", help="export weights to ONNX for the ONNX Runtime engine (dynamic batch and size)")
    export.add_argument("--weights", required=True, help="the *.pt checkpoint to export")
    export.add_argument("--out", help="the .onnx file to write (default: beside the weights)")
    export.add_argument("--debug", action="store_true", help="show ultralytics' output and tracebacks on errors")
    return top


def export(args: argparse.Namespace) -> int:
    """ultralytics' ONNX export with what the engine wants: dynamic batch and size, simplified graph.

    It runs on a copy of the checkpoint in a temporary folder, because ultralytics always writes
    beside its input: nothing next to the checkpoint is touched or overwritten."""
    import shutil
    import tempfile
    from pathlib import Path

    from .pipeline.segmenter import quiet_ultralytics

    quiet_ultralytics(verbose=args.debug)
    weights = Path(args.weights)
    if weights.suffix != ".pt" or not weights.is_file():
        raise ConfigError(f"--weights {weights}: give an existing *.pt checkpoint")
    out = Path(args.out) if args.out else weights.with_suffix(".onnx")
    if out.suffix != ".onnx":
        raise ConfigError(f"--out {out}: the export is an ONNX model, so name it *.onnx")
    if out.exists():
        raise OutputError(f"{out} exists already: remove it or choose another --out")
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory() as folder:
        copy = Path(shutil.copy(weights, Path(folder) / weights.name))
        try:
            written = Path(YOLO(str(copy)).export(format="onnx", dynamic=True, simplify=True, opset=17))
        except ImportError as exc:
            raise FastSAMStreamError(f"ONNX export needs {exc.name or 'onnx'}: install fastsam-stream with its [onnx] extra") from None
        except Exception as exc:  # noqa: BLE001 - ultralytics raises many types
            raise FastSAMStreamError(f"ONNX export of {weights} failed: {str(exc).splitlines()[0]}") from None
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(written), out)
        except OSError as exc:
            raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(f"exported {weights} -> {out} (use it with --weights {out})")
    return 0


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Nested config overrides for every option the user gave (unset options leave the config alone)."""
    given = {
        ("sources", None): args.sources or None,
        ("source", "transport"): args.transport,
        ("source", "read_timeout_s"): args.read_timeout,
        ("source", "drop_policy"): args.drop_policy,
        ("source", "camera_size"): args.camera_size,
        ("source", "camera_fps"): args.camera_fps,
        ("model", "weights"): args.weights,
        ("model", "device"): args.device,
        ("model", "imgsz"): args.imgsz,
        ("model", "conf"): args.conf,
        ("model", "iou"): args.iou,
        ("model", "max_det"): args.max_det,
        ("model", "threads"): args.threads,
        ("prompt", "points"): [parse_point(p) for p in args.point] or None,
        ("prompt", "text"): args.text,
        ("prompt", "top_k"): args.top_k,
        ("prompt", "min_similarity"): args.min_similarity,
        ("prompt", "mask"): args.mask,
        ("clip", "model"): args.clip_model,
        ("clip", "weights"): args.clip_weights,
        ("control", "port"): args.control_port,
        ("control", "stdin"): True if args.control_stdin else None,
        ("prompt", "frame"): args.prompt_frame,
        ("prompt", "source"): args.prompt_source,
        ("output", "dir"): args.out,
        ("output", "masks"): args.masks,
        ("output", "video"): False if args.no_video else None,
        ("output", "mot"): True if args.mot else None,
        ("output", "quiet"): True if args.quiet else None,
    }
    overrides: dict[str, Any] = {}
    for (section, key), value in given.items():
        if value is None:
            continue
        if key is None:
            overrides[section] = value
        else:
            overrides.setdefault(section, {})[key] = value
    if args.box:  # the command line's boxes replace the config's
        overrides.setdefault("prompt", {}).update(box=None, boxes=[_floats(b, (4,), "--box") for b in args.box])
    if args.clip_model or args.clip_weights:  # naming CLIP means loading it, also for text sent later
        overrides.setdefault("clip", {})["enabled"] = True
    if args.reconnect_attempts is not None:
        overrides.setdefault("source", {})["reconnect"] = {"max_attempts": args.reconnect_attempts}
    return overrides


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM shuts down like Ctrl-C: sinks are finalised


def bind_control(config: Any) -> Any:
    """The control endpoint the config asks for, bound now: a taken port fails before the model loads."""
    if config.control.port is None:
        return None
    from .pipeline.control import ControlServer

    try:
        return ControlServer(None, config.control.port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on 127.0.0.1:{config.control.port}: {exc.strerror or exc}") from None


@contextmanager
def controlled(config: Any, server: Any, pipeline: Any) -> Iterator[None]:
    """Hand the pipeline to the control interface for the length of the run."""
    from .pipeline.control import StdinControl

    if server is not None:
        server.pipeline = pipeline
        print(f"control: POST JSON commands to {server.url}/commands (GET {server.url}/targets)", file=sys.stderr, flush=True)
    if config.control.stdin:
        StdinControl(pipeline, sys.stdin)
    try:
        yield
    finally:
        if server is not None:
            server.close()


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .assemble import build_pipeline
    from .config import load_config
    from .pipeline.segmenter import quiet_ultralytics

    quiet_ultralytics(verbose=args.debug)
    config = load_config(args.config, overrides_from(args), tracker=args.tracker)
    server = bind_control(config)
    try:
        pipeline = build_pipeline(config)
    except BaseException:
        if server is not None:
            server.close()
        raise
    # From here on a signal only asks the pipeline to stop after the frame in hand, so every sink
    # ends on the same frame and is finalised; a second signal changes nothing.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: pipeline.stop())
    show = not config.output.quiet and sys.stderr.isatty()
    with controlled(config, server, pipeline), tqdm(total=pipeline.frame_count, unit="frame", disable=not show, dynamic_ncols=True) as bar:
        try:
            for _ in pipeline:
                bar.update(1)
        except FastSAMStreamError:
            if len(pipeline.sources) > 1:  # the others ran to their end: say how far each got
                print(pipeline.summary.line(), file=sys.stderr)
            raise
        bar.total = bar.n  # containers can announce a wrong count; end the bar on the real one
        bar.refresh()
    summary = pipeline.summary
    if summary.interrupted:
        print(summary.line(), file=sys.stderr)
        return EXIT_INTERRUPTED
    outputs = ", ".join(str(s.path) for s in pipeline.sinks if hasattr(s, "path"))
    print(f"{summary.line()} -> {outputs}")
    if summary.gave_up:
        print(f"fastsam-stream: error: gave up reconnecting to {', '.join(summary.gave_up)}", file=sys.stderr)
        return EXIT_GAVE_UP
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Explicit, because a process started with SIGINT ignored (a background job) would keep ignoring Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        commands = {"export": export, "eval": run_eval, "run": run}
        return commands[args.command](args)
    except FastSAMStreamError as exc:
        if args.debug:
            raise
        print(f"fastsam-stream: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fastsam-stream: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the user gets one line; --debug gives the traceback
        if args.debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"fastsam-stream: unexpected error: {type(exc).__name__}: {first} (run with --debug)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
