"""Re-prompting a running pipeline: JSON commands over HTTP on 127.0.0.1, or one per line on stdin.

    {"op": "add", "source": "cam", "box": [x1, y1, x2, y2]}   # the keys of the config's `prompt`
    {"op": "replace", "text": "a red car", "frame": 120}      # every target is replaced
    {"op": "drop", "ids": [3]}                                # no ids: every target

A command applies to the frame it names or, when that has passed (or it names none), to the
next frame of its source (no source: every source). What it did is an event in the outputs:
targets_changed (with the ids added and dropped) or prompt_failed. HTTP: `POST /commands` with
one command as the body answers 202 (queued) or 400 (the reason); `GET /targets` lists each
source's target ids. There is no authentication, which is why it only listens on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Literal, TextIO

from pydantic import ValidationError, model_validator

from ..config import PromptConfig, one_line
from ..errors import PromptError
from .prompts import read_mask

if TYPE_CHECKING:
    from .runner import Pipeline

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # bytes; a command is a few hundred


class ControlCommand(PromptConfig):
    """One command: an `op` and, for add and replace, the keys of a config `prompt`.

    Validated as a whole on parsing, so a bad command is refused with its reason before anything
    is queued on the pipeline.
    """

    op: Literal["add", "replace", "drop"]
    ids: list[int] | None = None  # drop: these targets; None: all

    @model_validator(mode="after")
    def _source_needs_a_prompt(self) -> ControlCommand:
        return self  # replaces PromptConfig's rule: a drop names its source and no prompt

    @model_validator(mode="after")
    def _fits_op(self) -> ControlCommand:
        if self.op == "drop" and not self.is_empty:
            raise ValueError("drop takes ids (or none, for every target), not a prompt")
        if self.op != "drop" and self.is_empty:
            raise ValueError(f"{self.op} needs a prompt: box, boxes, points, text or mask")
        if self.op != "drop" and self.ids is not None:
            raise ValueError("ids belong to drop")
        return self


def parse_command(text: str | bytes) -> ControlCommand:
    """A command from its JSON text; PromptError (one line) when it is not a valid one."""
    try:
        return ControlCommand.model_validate_json(text)
    except ValidationError as exc:
        raise PromptError(f"bad command: {one_line(exc)}") from None


def apply_command(command: ControlCommand, pipeline: Pipeline) -> str:
    """Queue the command on the pipeline; returns a line saying what was queued."""
    where = command.source or "every source"
    if command.op == "drop":
        pipeline.drop_targets(command.ids, command.source, command.frame)
        return f"drop {'every target' if command.ids is None else command.ids} queued for {where}"
    mask = read_mask(command.mask) if command.mask else None
    prompt = command.to_prompt(mask)
    pipeline.add_prompt(prompt, replace=command.op == "replace")
    return f"{command.op} {prompt.describe()} queued for {where}"


class ControlServer:
    """The HTTP endpoint, serving in a daemon thread until `close()` (or the `with` block ends).

    It may start before its pipeline exists (the command line binds the port before the model
    loads, so a taken port fails at once); until `pipeline` is set it answers 503.
    """

    def __init__(self, pipeline: Pipeline | None = None, port: int = 0, host: str = "127.0.0.1") -> None:
        self.pipeline = pipeline
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="control-http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Where it listens, e.g. http://127.0.0.1:8765 (the port the system gave, when asked for port 0)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        """Stop serving and release the port; waits for the serving loop to end."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ControlServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler_for(control: ControlServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # seconds: a client that announces more body than it sends cannot hold a thread for ever

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") != "/commands":
                return self._reply(HTTPStatus.NOT_FOUND, {"error": "POST commands to /commands"})
            try:
                length = int(self.headers.get("Content-Length") or "")
            except ValueError:
                return self._reply(HTTPStatus.LENGTH_REQUIRED, {"error": "send the command with a Content-Length"})
            if not 0 <= length <= MAX_BODY:
                return self._reply(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"a command is at most {MAX_BODY} bytes"}
                )
            pipeline = control.pipeline
            if pipeline is None:
                return self._reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "the pipeline is still starting"})
            try:
                done = apply_command(parse_command(self.rfile.read(length)), pipeline)
            except PromptError as exc:
                return self._reply(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            except Exception as exc:  # noqa: BLE001 - a bug must not kill the endpoint; the client hears of it
                log.exception("control: command failed")
                return self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {exc}"})
            log.info("control: %s", done)
            self._reply(HTTPStatus.ACCEPTED, {"queued": done})

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") != "/targets":
                return self._reply(HTTPStatus.NOT_FOUND, {"error": "GET /targets, or POST /commands"})
            if control.pipeline is None:
                return self._reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "the pipeline is still starting"})
            self._reply(HTTPStatus.OK, control.pipeline.targets())

        def _reply(self, status: HTTPStatus, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            log.debug("control: " + format, *args)  # not to stderr, where the progress bar is

    return Handler


class StdinControl:
    """Commands from a text stream (standard input), one JSON object per line, in a daemon thread.

    A bad line is logged as a warning and skipped; the end of the stream ends the reading.
    """

    def __init__(self, pipeline: Pipeline, stream: TextIO) -> None:
        self.pipeline = pipeline
        self.stream = stream
        self._thread = threading.Thread(target=self._read, name="control-stdin", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.stream:
            if not line.strip():
                continue
            try:
                log.info("control: %s", apply_command(parse_command(line), self.pipeline))
            except PromptError as exc:
                log.warning("control: %s", exc)
            except Exception:  # noqa: BLE001 - a bug must not end the reading of later commands
                log.exception("control: command failed")
