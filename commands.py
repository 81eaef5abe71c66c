"""The `fastsam-stream` commands (run, eval, export, config) and their command line.

Imported by cli.py once its signal handlers are in place: importing this module imports torch and
ultralytics, which takes seconds, and Ctrl-C meanwhile must still end in one line.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .config import Config, first_problem
from .errors import EXIT_GAVE_UP, EXIT_INTERRUPTED, ConfigError, FastSAMStreamError, OutputError
from .evaluation.cli import add_eval_parser, run_eval
from .options import add_config_options, add_model_options, given_settings, option_flags, setting_option
from .pipeline.export import EXPORT_FORMATS, ultralytics_export
from .pipeline.quantize import CALIBRATION_FRAMES
from .sinks.base import FileSink


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


def _add_run_options(run: argparse.ArgumentParser, control: bool = True) -> None:
    run.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="video file, image folder, stream URL (rtsp://, rtmp://, http(s)://, ...), camera (/dev/videoN or N) "
        "or lavfi:GRAPH; several run together, each with its own outputs",
    )
    add_config_options(run)
    add_model_options(run)
    setting_option(run, "--conf", "model.conf", type=float)
    setting_option(run, "--iou", "model.iou", type=float)
    setting_option(run, "--max-det", "model.max_det", type=int)
    setting_option(run, "--threads", "model.threads", type=int)
    setting_option(run, "--transport", "source.transport")
    setting_option(run, "--reconnect-attempts", "source.reconnect.max_attempts", type=int)
    setting_option(run, "--read-timeout", "source.read_timeout_s", type=float)
    setting_option(run, "--drop-policy", "source.drop_policy")
    setting_option(run, "--camera-size", "source.camera_size")
    setting_option(run, "--camera-fps", "source.camera_fps", type=float)
    run.add_argument(
        "--box",
        dest="prompt.boxes",
        action="append",
        help="box prompt X1,Y1,X2,Y2 in source pixels; repeatable: one target per box",
    )
    run.add_argument(
        "--point",
        dest="prompt.points",
        action="append",
        help="point prompt X,Y[,LABEL] (1 fg, 0 bg); repeatable",
    )
    setting_option(run, "--text", "prompt.text")
    setting_option(run, "--top-k", "prompt.top_k", type=int)
    setting_option(run, "--min-similarity", "prompt.min_similarity", type=float)
    setting_option(run, "--mask", "prompt.mask")
    setting_option(run, "--prompt-frame", "prompt.frame", type=int)
    setting_option(run, "--prompt-source", "prompt.source")
    setting_option(run, "--clip-model", "clip.model")
    setting_option(run, "--clip-weights", "clip.weights")
    if control:  # serve carries the control interface on its own HTTP port
        setting_option(run, "--control-port", "control.port", type=int)
        setting_option(run, "--control-stdin", "control.stdin", action="store_true")
    run.add_argument(
        "--ray",
        dest="cluster.address",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="spread the streams over Ray workers: no ADDRESS starts a Ray cluster on this machine; "
        "auto, HOST:PORT or ray://HOST:10001 joins that one (needs the [ray] extra)",
    )
    setting_option(run, "--workers", "cluster.workers", type=int)
    setting_option(run, "--out", "output.dir")
    setting_option(run, "--overwrite", "output.overwrite", action="store_true")
    setting_option(run, "--masks", "output.masks")
    run.add_argument(
        "--no-video", dest="output.video", action="store_const", const=False, help="do not write annotated.mp4"
    )
    setting_option(run, "--mot", "output.mot", action="store_true")
    setting_option(run, "--quiet", "output.quiet", action="store_true")
    run.add_argument("--debug", action="store_true", help="log more, and show tracebacks on errors")


RUN_HELP = "run the pipeline on video files, image folders, streams or cameras"
SERVE_HELP = "run as a service until stopped: live viewer in the browser, HTTP API, Prometheus metrics"


def _add_serve_options(serve: argparse.ArgumentParser) -> None:
    _add_run_options(serve, control=False)
    setting_option(serve, "--host", "serve.host")
    setting_option(serve, "--port", "serve.port", type=int)
    setting_option(serve, "--token", "serve.token")
    setting_option(serve, "--metrics-open", "serve.metrics_open", action="store_true")


def parser() -> argparse.ArgumentParser:
    """The command line: run, eval and export.

    Returns:
        The top-level parser.
    """
    top = argparse.ArgumentParser(prog="fastsam-stream", description="Segment and track a prompted object in video.")
    commands = top.add_subparsers(dest="command", required=True)
    _add_run_options(commands.add_parser("run", help=RUN_HELP))
    _add_serve_options(commands.add_parser("serve", help=SERVE_HELP))
    add_eval_parser(commands)
    defaults = commands.add_parser(
        "config", help="print every setting with its default and description (configs/default.yaml)"
    )
    defaults.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    export = commands.add_parser(
        "export",
        help="export weights to ONNX (the ONNX Runtime engine) or OpenVINO (the OpenVINO engine), "
        "with dynamic batch and size",
    )
    export.add_argument("--weights", required=True, help="the *.pt checkpoint to export")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="onnx", help="onnx (default) or openvino")
    export.add_argument(
        "--out",
        help="what to write (default: beside the weights): a *.onnx file, or for openvino a *_openvino_model folder",
    )
    export.add_argument(
        "--int8", action="store_true", help="openvino: quantise to int8 (NNCF), calibrated on --calibrate CLIP"
    )
    export.add_argument("--calibrate", metavar="CLIP", help="with --int8: a clip of the scene the model will watch")
    export.add_argument(
        "--calibration-frames",
        type=int,
        metavar="N",
        help=f"with --int8: frames taken evenly from the clip (default {CALIBRATION_FRAMES})",
    )
    export.add_argument(
        "--imgsz", type=int, help="with --int8: the network input size the model will run at (default 640)"
    )
    export.add_argument("--debug", action="store_true", help="show ultralytics' output and tracebacks on errors")
    return top


def export(args: argparse.Namespace) -> int:
    """Ultralytics' ONNX or OpenVINO export with what the engines want: dynamic batch and size.

    It runs on a copy of the checkpoint in a temporary folder, because ultralytics always writes
    beside its input: nothing next to the checkpoint is touched or overwritten.
    """
    import shutil
    import tempfile

    weights = Path(args.weights)
    if weights.suffix != ".pt" or not weights.is_file():
        raise ConfigError(f"--weights {weights}: give an existing *.pt checkpoint")
    out = _export_target(weights, args.format, args.out)
    if out.exists():
        raise OutputError(f"{out} exists already: remove it or choose another --out")
    calibration = _calibration(args)  # read before the export: a bad clip fails in a moment
    with tempfile.TemporaryDirectory() as folder:
        written = ultralytics_export(weights, args.format, Path(folder), verbose=args.debug)
        if calibration:
            # Beside the float export, never in its place: both may carry the checkpoint's name.
            written = _quantized(written, calibration, args, Path(folder) / "int8" / out.name)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(written), out)
        except OSError as exc:
            raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(f"exported {weights} -> {out} (use it with --weights {out})")
    return 0


def _calibration(args: argparse.Namespace) -> list | None:
    """The --int8 calibration frames (None without --int8), after checking the flags go together."""
    if not args.int8:
        if args.calibrate or args.calibration_frames is not None or args.imgsz is not None:
            raise ConfigError("--calibrate, --calibration-frames and --imgsz are for --int8 exports")
        return None
    args.calibration_frames = CALIBRATION_FRAMES if args.calibration_frames is None else args.calibration_frames
    args.imgsz = 640 if args.imgsz is None else args.imgsz
    if args.format != "openvino":
        raise ConfigError("--int8 is for --format openvino")
    if not args.calibrate:
        raise ConfigError("--int8 needs --calibrate CLIP: frames of the scene the model will watch")
    if args.calibration_frames < 1:
        raise ConfigError("--calibration-frames must be at least 1")
    if args.imgsz < 32 or args.imgsz % 32:
        raise ConfigError(f"--imgsz {args.imgsz}: must be a positive multiple of 32 (the network's stride)")
    if not Path(args.calibrate).is_file():
        raise ConfigError(f"--calibrate {args.calibrate}: no such file")
    import importlib.util

    if importlib.util.find_spec("nncf") is None:  # before the float export, not after it
        raise FastSAMStreamError("int8 export needs nncf: install fastsam-stream with its [int8] extra")
    from .pipeline.quantize import calibration_frames

    return calibration_frames(args.calibrate, args.calibration_frames)


def _quantized(exported: Path, frames: list, args: argparse.Namespace, folder: Path) -> Path:
    """The int8 version of an OpenVINO export folder, in `folder`, in place of the float one."""
    import shutil

    from .pipeline.quantize import quantize_export

    quantize_export(exported, frames, args.imgsz, folder, Path(args.calibrate).name, verbose=args.debug)
    shutil.rmtree(exported)
    return folder


def _export_target(weights: Path, export_format: str, out: str | None) -> Path:
    """Where an export goes: --out, checked against the format, or beside the weights."""
    if export_format == "onnx":
        target = Path(out) if out else weights.with_suffix(".onnx")
        if target.suffix != ".onnx":
            raise ConfigError(f"--out {target}: the export is an ONNX model, so name it *.onnx")
        return target
    target = Path(out) if out else weights.with_name(f"{weights.stem}_openvino_model")
    if not target.name.endswith("_openvino_model"):
        # The engine is chosen by what the path is: a folder named so is an OpenVINO model.
        raise ConfigError(f"--out {target}: an OpenVINO export is a folder, so name it *_openvino_model")
    return target


def print_defaults(args: argparse.Namespace) -> int:
    """`fastsam-stream config`: the documented default config on stdout (a start for your own)."""
    from .defaults_yaml import default_yaml

    print(default_yaml(), end="")
    return 0


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Nested config overrides for every option the user gave (unset options leave the config alone).

    Args:
        args: The parsed `run` command line.

    Returns:
        e.g. {"model": {"imgsz": 320}, "prompt": {"box": None, "boxes": [[1, 2, 3, 4]]}}.
    """
    overrides = given_settings(args)
    prompt = overrides.get("prompt", {})
    if "points" in prompt:
        prompt["points"] = [parse_point(p) for p in prompt["points"]]
    if "boxes" in prompt:
        prompt["boxes"] = [_floats(b, (4,), "--box") for b in prompt["boxes"]]
    if args.sources:
        overrides["sources"] = args.sources
    if "boxes" in overrides.get("prompt", {}):  # the command line's boxes replace the config's
        overrides["prompt"]["box"] = None
    if overrides.get("clip"):  # naming CLIP means loading it, also for text sent later
        overrides["clip"]["enabled"] = True
    return overrides


def check_options(overrides: dict[str, Any], add_options: Any = _add_run_options) -> None:
    """Refuse a bad option in the command line's own words (`--conf: ...`, not a config key).

    Args:
        overrides: What `overrides_from` made of the command line.
        add_options: Adds the command's options to a parser (run's by default).

    Raises:
        ConfigError: One line naming the option.
    """
    try:
        Config.model_validate(overrides)
    except ValidationError as exc:
        key, message = first_problem(exc)
        run = argparse.ArgumentParser()
        add_options(run)
        flags = {**option_flags(run), "sources": "SOURCE"}
        named = [flag for k, flag in flags.items() if key == k or key.startswith(k + ".")]
        if not named and key in ("prompt", ""):  # a rule across the prompt's parts: the prompt options given
            named = [flags[f"prompt.{name}"] for name in overrides.get("prompt", {}) if f"prompt.{name}" in flags]
        if not named:  # a rule the config file may complete: said with the merged config
            return
        raise ConfigError(f"{'/'.join(named)}: {message}") from None


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
    from .cluster.build import build_cluster_pipeline
    from .config import load_config
    from .pipeline.segmenter import quiet_ultralytics

    quiet_ultralytics(verbose=args.debug)
    overrides = overrides_from(args)
    check_options(overrides)
    config = load_config(args.config, overrides, tracker=args.tracker)
    server = bind_control(config)
    try:
        pipeline = build_cluster_pipeline(config) if config.cluster.address else build_pipeline(config)
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
        except Exception:
            if len(pipeline.sources) > 1:  # the others ran to their end: say how far each got
                print(pipeline.summary.line(), file=sys.stderr)
            raise
        bar.total = bar.n  # containers can announce a wrong count; end the bar on the real one
        bar.refresh()
    summary = pipeline.summary
    if summary.interrupted:
        print(summary.line(), file=sys.stderr)
        return EXIT_INTERRUPTED
    outputs = ", ".join(written_outputs(pipeline))
    print(f"{summary.line()} -> {outputs}" if outputs else summary.line())
    if summary.gave_up:
        print(f"fastsam-stream: error: gave up reconnecting to {', '.join(summary.gave_up)}", file=sys.stderr)
        return EXIT_GAVE_UP
    return 0


def written_outputs(pipeline: Any) -> list[str]:
    """The files a finished run wrote (only those that exist: a live source that gave up early wrote none)."""
    from .cluster.driver import ClusterPipeline

    if isinstance(pipeline, ClusterPipeline):
        return pipeline.output_paths
    return [str(s.path) for s in pipeline.sinks if isinstance(s, FileSink) and s.path.exists()]


def serve(args: argparse.Namespace) -> int:
    """`fastsam-stream serve`: the pipeline as a service, with its HTTP surface, until SIGTERM or Ctrl-C.

    The port is bound and the sources opened before the model loads (a taken port or a wrong
    source fails at once; /healthz answers meanwhile, /readyz says the model is loading). Sources
    join and leave through the API; one failing, ending or giving up never stops the others. A
    stop signal drains: the frame in hand reaches every sink, and every file is finalised.

    Args:
        args: The parsed `serve` command line.

    Returns:
        0 once stopped.

    Raises:
        FastSAMStreamError: A bad config, source, prompt or output; a non-loopback host without a token.
    """
    import os
    from pathlib import Path

    from .assemble import StreamFactory, build_pipeline, claim_output_dir, open_sources
    from .config import load_config
    from .pipeline.segmenter import quiet_ultralytics
    from .service.app import make_app
    from .service.core import Service
    from .service.frames import FrameHub
    from .service.security import check_bind
    from .service.server import HttpServer

    quiet_ultralytics(verbose=args.debug)
    overrides = overrides_from(args)
    if os.environ.get("FASTSAM_STREAM_TOKEN") and "token" not in overrides.get("serve", {}):
        overrides.setdefault("serve", {})["token"] = os.environ["FASTSAM_STREAM_TOKEN"]
    check_options(overrides, _add_serve_options)
    config = load_config(args.config, overrides, tracker=args.tracker)
    s = config.serve
    check_bind(s.host, s.token)
    cluster = config.cluster.address is not None
    if cluster:
        from .cluster.build import ClusterStreamFactory, build_cluster_pipeline
        from .cluster.connect import import_ray

        import_ray()  # without the [ray] extra: one line, before the port is taken
    # A reused folder or a wrong source fails now, before the port is taken and the model loads.
    if config.output.segment_minutes is None:
        claim_output_dir(Path(config.output.dir), config.output.overwrite)
    sources = [] if cluster else open_sources(config, allow_none=True)  # a cluster's are checked by its build
    hub = FrameHub()
    service = Service(s, hub, ClusterStreamFactory(config) if cluster else StreamFactory(config))
    try:
        server = HttpServer(make_app(service), s.host, s.port, s.read_timeout_s)
    except OSError as exc:
        for source in sources:
            source.close()
        raise ConfigError(f"cannot listen on {s.host}:{s.port}: {exc.strerror or exc}") from None
    print(
        f"serving on {server.url} (viewer: {server.url}/, metrics: {server.url}/metrics)", file=sys.stderr, flush=True
    )
    try:
        try:
            if cluster:
                pipeline = build_cluster_pipeline(config, serving=True, hub=hub)
            else:
                pipeline = build_pipeline(config, source=sources, shared_sinks=[hub], serving=True)
        except BaseException:
            for source in sources:
                source.close()
            raise
        for signum in (signal.SIGINT, signal.SIGTERM):  # drain: the frame in hand reaches every sink
            signal.signal(signum, lambda *_: pipeline.stop())
        service.pipeline = pipeline
        for _ in pipeline:
            pass
    finally:
        hub.close()  # viewers' streams end, so the server can stop
        server.close()
    print(pipeline.summary.line(), file=sys.stderr)
    return 0


COMMANDS = {"config": print_defaults, "export": export, "eval": run_eval, "run": run, "serve": serve}
"""Each command's function: it takes the parsed command line and returns the exit status."""
