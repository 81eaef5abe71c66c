"""Re-prompting a running pipeline: JSON commands over HTTP on 127.0.0.1, or one per line on stdin.

    {"op": "add", "source": "cam", "box": [x1, y1, x2, y2]}   # the keys of the config's `prompt`
    {"op": "replace", "text": "a red car", "frame": 120}      # every target is replaced
    {"op": "drop", "ids": [3]}                                # no ids: every target

A command applies to the frame it names or, when that has passed (or it names none), to the
next frame of its source (no source: every source). What it did is an event in the outputs:
targets_changed (with the ids added and dropped) or prompt_failed. HTTP (`run --control-port`):
`POST /commands` with one command as a JSON body (`Content-Type: application/json`) answers 202
(queued) or 400 (the reason); `GET /targets` lists each source's target ids. It is the server of
`fastsam-stream serve` (service/), so a request it cannot take is answered with its status and
a one-line JSON error, a client that goes away is closed and counted, and neither ever prints a
traceback. There is no token in a run, which is why it only listens on loopback.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Literal, TextIO

from pydantic import ValidationError, model_validator

from ..config import PromptConfig, ServeConfig, one_line
from ..errors import PromptError
from .prompts import read_mask

if TYPE_CHECKING:
    from .runner import Pipeline

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 10.0  # a request whose head, or body, takes longer than this to arrive is answered 408
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
    """The HTTP endpoint of `run --control-port`: service/app.py's app on service/server.py's server.

    The same code as `fastsam-stream serve`, over a plain pipeline (service.core.for_run): POST
    /commands and GET /targets, and the /api/streams routes (a run takes no new sources: adding
    one is 409; it shows no frames). It serves in a daemon thread until `close()` (or the `with`
    block ends), and may start before its pipeline exists: the command line binds the port before
    the model loads, so a taken port fails at once; until `pipeline` is set it answers 503.

    Every refusal is a status and a one-line JSON error, logged as one line (INFO): a POST that
    is not `Content-Type: application/json` 415 (a page on another site can send text/plain
    unasked), another site's Origin or a Host that is not this server's 403, a body without a
    Content-Length 411, over the size limit 413, a request that is not HTTP or not a valid
    command 400, a head or body that stops arriving for `read_timeout_s` 408. A client that goes
    away mid-request or mid-reply (or is too slow) is closed without a traceback and counted in
    `dropped_clients`. There is no token in a run, which is why it only listens on loopback.

    Args:
        pipeline: The pipeline to re-prompt; None until it is built (set the attribute then).
        port: The port; 0 lets the system pick one (see `url`).
        host: The interface; keep 127.0.0.1 (there is no token: another is refused).
        read_timeout_s: How long a request's head, then its body, may take to arrive; then it
            is answered 408 and closed.

    Raises:
        ConfigError: `host` is not loopback.
        OSError: The port cannot be bound (taken).
        ValueError: read_timeout_s is not positive.
    """

    def __init__(
        self,
        pipeline: Pipeline | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        from ..service.app import make_app  # starlette and uvicorn load only when a run listens
        from ..service.core import for_run
        from ..service.security import check_bind
        from ..service.server import HttpServer

        if not read_timeout_s > 0:
            raise ValueError(f"read_timeout_s must be > 0, got {read_timeout_s}")
        check_bind(host, None)
        self.read_timeout_s = read_timeout_s
        self._service = for_run(pipeline, ServeConfig(host=host, port=port, read_timeout_s=read_timeout_s))
        self._http = HttpServer(make_app(self._service), host, port, read_timeout_s)

    @property
    def pipeline(self) -> Pipeline | None:
        """The pipeline it re-prompts; None until it is built (503 until then)."""
        return self._service.pipeline

    @pipeline.setter
    def pipeline(self, pipeline: Pipeline | None) -> None:
        self._service.pipeline = pipeline

    @property
    def url(self) -> str:
        """Where it listens, e.g. http://127.0.0.1:8765 (the port the system gave, when asked for port 0)."""
        return self._http.url

    @property
    def dropped_clients(self) -> int:
        """Connections that ended before their request was answered: the client closed or reset it, or was too slow."""
        return self._http.dropped_clients

    def close(self) -> None:
        """Stop serving and release the port; waits for the serving thread to end."""
        self._http.close()

    def __enter__(self) -> ControlServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
