"""The `fastsam-stream` command. Errors print one line and exit non-zero; `--debug` shows tracebacks."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .config import ControlConfig, OutputConfig, PromptConfig, SourceConfig
from .errors import ConfigError, FastSAMStreamError, OutputError
from .evaluation.cli import add_eval_parser, run_eval
from .options import add_config_options, add_model_options, setting_option
from .pipeline.clip_settings import ClipSettings
from .pipeline.segmenter import SegmenterSettings
from .sinks.base import FileSink
from .sources.live import ReconnectPolicy

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


def parse_point(text: str) -> list[float]:
    """X,Y or X,Y,LABEL as numbers; whether the label is valid is Prompt's rule (core.py), checked with the config.

    Args:
        text: The --point value.

    Returns:
        Two or three numbers.
    """
    return _floats(text, (2, 3), "--point")


def _run_parser(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run the pipeline on video files, image folders, streams or cameras")
    run.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="video file, image folder, stream URL (rtsp://, rtmp://, http(s)://, ...), camera (/dev/videoN or N) "
        "or lavfi:GRAPH; several run together, each with its own outputs",
    )
    add_config_options(run)
    add_model_options(run)
    model = SegmenterSettings
    setting_option(run, "--conf", model, "conf", type=float)
    setting_option(run, "--iou", model, "iou", type=float)
    setting_option(run, "--max-det", model, "max_det", type=int)
    setting_option(run, "--threads", model, "threads", type=int)
    setting_option(run, "--transport", SourceConfig, "transport")
    setting_option(run, "--reconnect-attempts", ReconnectPolicy, "max_attempts", type=int)
    setting_option(run, "--read-timeout", SourceConfig, "read_timeout_s", type=float)
    setting_option(run, "--drop-policy", SourceConfig, "drop_policy")
    setting_option(run, "--camera-size", SourceConfig, "camera_size")
    setting_option(run, "--camera-fps", SourceConfig, "camera_fps", type=float)
    run.add_argument(
        "--box",
        action="append",
        default=[],
        help="box prompt X1,Y1,X2,Y2 in source pixels; repeatable: one target per box",
    )
    run.add_argument("--point", action="append", default=[], help="point prompt X,Y[,LABEL] (1 fg, 0 bg); repeatable")
    setting_option(run, "--text", PromptConfig, "text")
    setting_option(run, "--top-k", PromptConfig, "top_k", type=int)
    setting_option(run, "--min-similarity", PromptConfig, "min_similarity", type=float)
    setting_option(run, "--mask", PromptConfig, "mask")
    setting_option(run, "--prompt-frame", PromptConfig, "frame", type=int)
    setting_option(run, "--prompt-source", PromptConfig, "source")
    setting_option(run, "--clip-model", ClipSettings, "model")
    setting_option(run, "--clip-weights", ClipSettings, "weights")
    setting_option(run, "--control-port", ControlConfig, "port", type=int)
    setting_option(run, "--control-stdin", ControlConfig, "stdin", action="store_true")
    setting_option(run, "--out", OutputConfig, "dir")
    setting_option(run, "--masks", OutputConfig, "masks")
    run.add_argument("--no-video", action="store_true", help="do not write annotated.mp4")
    setting_option(run, "--mot", OutputConfig, "mot", action="store_true")
    setting_option(run, "--quiet", OutputConfig, "quiet", action="store_true")
    run.add_argument("--debug", action="store_true", help="log more, and show tracebacks on errors")


def parser() -> argparse.ArgumentParser:
    """The command line: run, eval and export.

    Returns:
        The top-level parser.
    """
    top = argparse.ArgumentParser(prog="fastsam-stream", description="Segment and track a prompted object in video.")
    commands = top.add_subparsers(dest="command", required=True)
    _run_parser(commands)
    add_eval_parser(commands)
    defaults = commands.add_parser(
        "config", help="print every setting with its default and description (configs/default.yaml)"
    )
    defaults.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    export = commands.add_parser(
        "export", help="export weights to ONNX for the ONNX Runtime engine (dynamic batch and size)"
    )
    export.add_argument("--weights", required=True, help="the *.pt checkpoint to export")
    export.add_argument("--out", help="the .onnx file to write (default: beside the weights)")
    export.add_argument("--debug", action="store_true", help="show ultralytics' output and tracebacks on errors")
    return top


def export(args: argparse.Namespace) -> int:
    """Ultralytics' ONNX export with what the engine wants: dynamic batch and size, simplified graph.

    It runs on a copy of the checkpoint in a temporary folder, because ultralytics always writes
    beside its input: nothing next to the checkpoint is touched or overwritten.
    """
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
            raise FastSAMStreamError(
                f"ONNX export needs {exc.name or 'onnx'}: install fastsam-stream with its [onnx] extra"
            ) from None
        except Exception as exc:  # noqa: BLE001 - ultralytics raises many types
            raise FastSAMStreamError(f"ONNX export of {weights} failed: {str(exc).splitlines()[0]}") from None
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(written), out)
        except OSError as exc:
            raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(f"exported {weights} -> {out} (use it with --weights {out})")
    return 0


def print_defaults(args: argparse.Namespace) -> int:
    """`fastsam-stream config`: the documented default config on stdout (a start for your own)."""
    from .defaults_yaml import default_yaml

    print(default_yaml(), end="")
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
        print(
            f"control: POST JSON commands to {server.url}/commands (GET {server.url}/targets)",
            file=sys.stderr,
            flush=True,
        )
    if config.control.stdin:
        StdinControl(pipeline, sys.stdin)
    try:
        yield
    finally:
        if server is not None:
            server.close()


def run(args: argparse.Namespace) -> int:
    """`fastsam-stream run`: build the pipeline from the config and the options, and run it to the end.

    The control port is bound and the sources opened before the model loads, so a taken port or a
    wrong source fails at once. Ctrl-C or SIGTERM stop after the frame in hand, with every output
    finalised.

    Args:
        args: The parsed `run` command line.

    Returns:
        The exit status: 0, EXIT_INTERRUPTED after a stop signal, or EXIT_GAVE_UP when a live
        source ran out of reconnect attempts.

    Raises:
        FastSAMStreamError: A bad config, source, prompt or output, or a source that failed.
    """
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
    with (
        controlled(config, server, pipeline),
        tqdm(total=pipeline.frame_count, unit="frame", disable=not show, dynamic_ncols=True) as bar,
    ):
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
    outputs = ", ".join(str(s.path) for s in pipeline.sinks if isinstance(s, FileSink))
    print(f"{summary.line()} -> {outputs}")
    if summary.gave_up:
        print(f"fastsam-stream: error: gave up reconnecting to {', '.join(summary.gave_up)}", file=sys.stderr)
        return EXIT_GAVE_UP
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The `fastsam-stream` entry point: parse the command line and run the command it names.

    Errors end as one line on stderr and a non-zero status instead of a traceback (`--debug`
    re-raises them).

    Args:
        argv: The arguments after the program name; None reads sys.argv.

    Returns:
        The process exit status: the command's own, the error's exit code, EXIT_INTERRUPTED on
        Ctrl-C, or 1 for an unexpected error.
    """
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    # Explicit, because a process started with SIGINT ignored (a background job) would keep ignoring Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        commands = {"config": print_defaults, "export": export, "eval": run_eval, "run": run}
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
