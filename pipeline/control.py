"""Re-prompting a running pipeline: JSON commands over HTTP on 127.0.0.1, or one per line on stdin.

    {"op": "add", "source": "cam", "box": [x1, y1, x2, y2]}   # the keys of the config's `prompt`
    {"op": "replace", "text": "a red car", "frame": 120}      # every target is replaced
    {"op": "drop", "ids": [3]}                                # no ids: every target

A command applies to the frame it names or, when that has passed (or it names none), to the
next frame of its source (no source: every source). What it did is an event in the outputs:
targets_changed (with the ids added and dropped) or prompt_failed. HTTP: `POST /commands` with
one command as the body answers 202 (queued) or 400 (the reason); `GET /targets` lists each
source's target ids. A request that is not one of these is answered with its status and a
one-line JSON error (400, 404, 408, 411, 413, 501), a client that goes away is closed and
counted; neither ever prints a traceback. There is no authentication, which is why it only
listens on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, BinaryIO, Literal, TextIO

from pydantic import ValidationError, model_validator

from ..config import PromptConfig, one_line
from ..errors import PromptError
from .prompts import read_mask

if TYPE_CHECKING:
    from .runner import Pipeline

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # bytes; a command is a few hundred
READ_TIMEOUT_S = 10.0  # a client silent this long, or whose body takes longer to arrive, is answered 408
SHUTDOWN_POLL_S = 0.1  # how often the serving loop looks for close(): how long close() may wait
DRAIN_LIMIT = 4 * MAX_BODY  # bytes of an unread body read away after a refusal, so the reply is not lost
TEXT_NEEDS_CLIP = (
    "text prompts need CLIP, which this run did not load: start it with --clip-weights PATH "
    "(or clip.enabled: true in the config), see README, Text prompts"
)


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
    """Queue the command on the pipeline; returns a line saying what was queued.

    Raises:
        PromptError: The command cannot be queued (text without CLIP, an unknown source, a full
            queue...); its message says what to do from the command line.
    """
    where = command.source or "every source"
    if command.op == "drop":
        pipeline.drop_targets(command.ids, command.source, command.frame)
        return f"drop {'every target' if command.ids is None else command.ids} queued for {where}"
    if command.text and pipeline.text_scorer is None:
        raise PromptError(TEXT_NEEDS_CLIP)
    mask = read_mask(command.mask) if command.mask else None
    prompt = command.to_prompt(mask)
    pipeline.add_prompt(prompt, replace=command.op == "replace")
    return f"{command.op} {prompt.describe()} queued for {where}"


class ControlServer:
    """The HTTP endpoint, serving in a daemon thread until `close()` (or the `with` block ends).

    It may start before its pipeline exists (the command line binds the port before the model
    loads, so a taken port fails at once); until `pipeline` is set it answers 503.

    A request it cannot take is answered with a status and a one-line JSON error, and logged as
    one line (INFO): a bad or missing Content-Length 411, a body over MAX_BODY 413, a body that
    stops arriving for `read_timeout_s` 408, a request that is not HTTP or not a valid command 400.
    A client that goes away or resets the connection mid-request or mid-reply (or is too slow) is
    closed without a traceback and counted in `dropped_clients`.

    Args:
        pipeline: The pipeline to re-prompt; None until it is built (set the attribute then).
        port: The port on 127.0.0.1; 0 lets the system pick one (see `url`).
        host: The interface; keep 127.0.0.1 (there is no authentication).
        read_timeout_s: How long a request may take to arrive once its headers are in, and how
            long a client may stay silent before that; then it is answered 408 and closed.
    """

    def __init__(
        self,
        pipeline: Pipeline | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        if not read_timeout_s > 0:
            raise ValueError(f"read_timeout_s must be > 0, got {read_timeout_s}")
        self.pipeline = pipeline
        self.read_timeout_s = read_timeout_s
        self._count_lock = threading.Lock()
        self._dropped_clients = 0
        self._server = _Server((host, port), _handler_for(self), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(SHUTDOWN_POLL_S,), name="control-http", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """Where it listens, e.g. http://127.0.0.1:8765 (the port the system gave, when asked for port 0)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def dropped_clients(self) -> int:
        """Connections that ended before their request was answered: the client closed or reset it, or was too slow."""
        with self._count_lock:
            return self._dropped_clients

    def client_dropped(self, client: object, why: str) -> None:
        """Count a client that went away (or was sent away) mid-request or mid-reply; one log line, no traceback."""
        with self._count_lock:
            self._dropped_clients += 1
        log.info("control: client %s dropped: %s", _peer(client), why)

    def close(self) -> None:
        """Stop serving and release the port; waits for the serving loop to end."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ControlServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Server(ThreadingHTTPServer):
    """socketserver's threading HTTP server, minus its traceback on stderr for a request that failed."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], control: ControlServer):
        self.control = control
        super().__init__(address, handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """What escaped a handler (it catches connection errors itself): one line, the traceback only at DEBUG."""
        error = sys.exc_info()[1]
        self.control.client_dropped(client_address, _reason(error) if error is not None else "failed")
        log.debug("control: request from %s failed", _peer(client_address), exc_info=True)


class _Lines:
    """A request's input stream that notes whether the client closed it in the middle of a line.

    The request line and headers are read line by line; a line without its newline (or no line
    at all where a header should be) means the client went away mid-request.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.cut = False  # a line ended without its newline, or the headers ended without their blank line

    def readline(self, limit: int = -1) -> bytes:
        line = self._stream.readline(limit)
        if not line.endswith(b"\n") and len(line) != limit:
            self.cut = True
        return line

    def read1(self, size: int = -1) -> bytes:
        return self._stream.read1(size)

    def close(self) -> None:
        self._stream.close()

    @property
    def closed(self) -> bool:
        return self._stream.closed


def _peer(client: object) -> str:
    if isinstance(client, tuple) and len(client) >= 2:
        return f"{client[0]}:{client[1]}"
    return str(client)


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _handler_for(control: ControlServer) -> type[BaseHTTPRequestHandler]:
    timeout_s = control.read_timeout_s

    class Handler(BaseHTTPRequestHandler):
        timeout = timeout_s  # per read or write; a body must arrive whole within it (see _read_body)
        server_version = "fastsam-stream-control"
        error_content_type = "application/json"

        def setup(self) -> None:
            super().setup()
            self.rfile = _Lines(self.rfile)
            self.command, self.path, self.request_version = None, "", "HTTP/1.0"  # until a request line is read
            self.requestline, self.raw_requestline = "", b""
            self._dropped = False
            self._replying = False  # a reply is being written: a timeout now is a client that does not read it

        def _drop(self, why: str) -> None:
            if not self._dropped:
                self._dropped = True
                control.client_dropped(self.client_address, why)

        def handle_one_request(self) -> None:
            """http.server's, with every way a client can fail caught: counted, one log line, no traceback."""
            try:
                self.raw_requestline = self.rfile.readline(65537)
                if not self.raw_requestline:  # connected and closed without a request: nothing to answer
                    self.close_connection = True
                    return
                if self.rfile.cut:
                    self.close_connection = True
                    return self._drop("closed the connection in the middle of the request line")
                if len(self.raw_requestline) > 65536:
                    self.requestline = self.request_version = self.command = ""
                    return self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG, "the request line is too long")
                if not self.parse_request():  # answered by send_error
                    return
                if self.rfile.cut:
                    self.close_connection = True
                    return self._drop("closed the connection in the middle of the headers")
                method = getattr(self, "do_" + self.command, None)
                if method is None:
                    return self.send_error(
                        HTTPStatus.NOT_IMPLEMENTED, f"unsupported method {self.command!r}: GET /targets, POST /commands"
                    )
                method()
                self.wfile.flush()
            except TimeoutError:
                self.close_connection = True
                if self._replying:
                    return self._drop(f"did not read the reply for {timeout_s:g} s")
                started = "stopped sending in the middle of its request" if self.raw_requestline else "sent nothing"
                self._drop(f"{started} for {timeout_s:g} s")
                self._answer_timeout()
            except OSError as exc:  # reset, broken pipe: the client went away mid-request or mid-reply
                self.close_connection = True
                self._drop(_reason(exc))

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = self._content_length()
            if length is None:  # answered
                return
            body = self._read_body(length)
            if body is None:  # answered, or the client is gone
                return
            if self.path.rstrip("/") != "/commands":
                return self._refuse(HTTPStatus.NOT_FOUND, "POST commands to /commands")
            pipeline = control.pipeline
            if pipeline is None:
                return self._refuse(HTTPStatus.SERVICE_UNAVAILABLE, "the pipeline is still starting")
            try:
                done = apply_command(parse_command(body), pipeline)
            except PromptError as exc:
                return self._refuse(HTTPStatus.BAD_REQUEST, str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug must not kill the endpoint; the client hears of it
                reason = _reason(exc)
                log.error("control: command failed: %s", reason)
                log.debug("control: command failed", exc_info=True)
                return self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": reason})
            log.info("control: %s", done)
            self._reply(HTTPStatus.ACCEPTED, {"queued": done})

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") != "/targets":
                return self._refuse(HTTPStatus.NOT_FOUND, "GET /targets, or POST /commands")
            pipeline = control.pipeline
            if pipeline is None:
                return self._refuse(HTTPStatus.SERVICE_UNAVAILABLE, "the pipeline is still starting")
            try:
                targets = pipeline.targets()
            except Exception as exc:  # noqa: BLE001 - a bug must not kill the endpoint; the client hears of it
                log.error("control: listing the targets failed: %s", _reason(exc))
                log.debug("control: listing the targets failed", exc_info=True)
                return self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": _reason(exc)})
            self._reply(HTTPStatus.OK, targets)

        def _content_length(self) -> int | None:
            """The announced body size, or None after refusing the request (411, 413)."""
            values = {v.strip() for v in self.headers.get_all("Content-Length") or []}
            if self.headers.get("Transfer-Encoding"):
                return self._refuse_unread(
                    HTTPStatus.LENGTH_REQUIRED, "send the command with a Content-Length (chunked bodies are not read)"
                )
            if not values:
                return self._refuse_unread(HTTPStatus.LENGTH_REQUIRED, "send the command with a Content-Length")
            (value,) = values if len(values) == 1 else ("",)
            if not re.fullmatch(r"[0-9]{1,15}", value):
                shown = ", ".join(sorted(v[:20] for v in values))
                return self._refuse_unread(
                    HTTPStatus.LENGTH_REQUIRED, f"bad Content-Length {shown!r}: send one, the body's size in bytes"
                )
            if int(value) > MAX_BODY:
                return self._refuse_unread(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a command is at most {MAX_BODY} bytes, not {int(value)}"
                )
            return int(value)

        def _read_body(self, length: int) -> bytes | None:
            """The body, read within `read_timeout_s`; None after answering 408, or when the client went away."""
            deadline = time.monotonic() + timeout_s
            chunks, got = [], 0
            while got < length:
                left = deadline - time.monotonic()
                try:
                    if left <= 0:
                        raise TimeoutError
                    self.connection.settimeout(left)
                    chunk = self.rfile.read1(length - got)
                except TimeoutError:
                    self._drop(f"sent {got} of the {length} body bytes announced, then nothing for {timeout_s:g} s")
                    self._answer_timeout(f"the body did not arrive within {timeout_s:g} s ({got} of {length} bytes)")
                    return None
                if not chunk:
                    self._drop(f"closed the connection after {got} of the {length} body bytes announced")
                    self._refuse(
                        HTTPStatus.BAD_REQUEST,
                        f"the body ended after {got} of the {length} bytes of its Content-Length",
                        logged=True,
                    )
                    return None
                chunks.append(chunk)
                got += len(chunk)
            self.connection.settimeout(timeout_s)
            return b"".join(chunks)

        def _answer_timeout(self, message: str | None = None) -> None:
            try:  # the dropped client's line is the log's
                self._refuse(
                    HTTPStatus.REQUEST_TIMEOUT,
                    message or f"the request did not arrive within {timeout_s:g} s",
                    logged=True,
                )
            except OSError:  # it is gone too: nothing more to say
                pass

        def _refuse(self, status: HTTPStatus, message: str, logged: bool = False) -> None:
            """Answer a request that cannot be taken: a one-line JSON error, and the connection closed.

            It is one line in the log, unless `logged` says the line is written already (a dropped client).
            """
            if not logged:
                log.info("control: %d from %s%s: %s", status, _peer(self.client_address), self._what(), message)
            self.close_connection = True
            self._reply(status, {"error": " ".join(message.split())})

        def _refuse_unread(self, status: HTTPStatus, message: str) -> None:
            """Refuse before reading the body, then read what the client still sends and discard it.

            Closing a socket with unread input resets the connection, and the client could lose
            the reply; so the reply is sent, this side is shut, and the rest read away (at most
            DRAIN_LIMIT bytes, within the read timeout).
            """
            self._refuse(status, message)
            self.wfile.flush()
            try:
                self.connection.shutdown(socket.SHUT_WR)
                deadline, drained = time.monotonic() + timeout_s, 0
                while drained < DRAIN_LIMIT and (left := deadline - time.monotonic()) > 0:
                    self.connection.settimeout(left)
                    chunk = self.rfile.read1(65536)
                    if not chunk:
                        break
                    drained += len(chunk)
            except OSError:  # timed out, reset, or closed: the reply is out, nothing more to do
                pass

        def _what(self) -> str:
            return f" ({self.command} {self.path})" if self.command else ""

        def _reply(self, status: HTTPStatus, body: dict) -> None:
            data = json.dumps(body).encode()
            if self.request_version == "HTTP/0.9":  # an answer with a status line, even to a request without one
                self.request_version = "HTTP/1.0"
            self.connection.settimeout(timeout_s)
            self._replying = True
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """http.server's refusals (bad request line, headers, method) as one-line JSON, like every other."""
            status = HTTPStatus(code)
            self._refuse_unread(status, message or status.phrase)

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
            except Exception as exc:  # noqa: BLE001 - a bug must not end the reading of later commands
                log.error("control: command failed: %s", _reason(exc))
                log.debug("control: command failed", exc_info=True)
