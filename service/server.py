"""Uvicorn in a daemon thread, bound at once, quiet on the console, and hard to hang by a client.

`HttpServer(app, host, port)` binds its port in the constructor (a taken port is an OSError there
and then, before the caller loads a model), serves `app` on uvicorn's h11 protocol in a thread of
its own, and stops with `close()`.

Uvicorn itself times out neither a request's head nor its body, answers a malformed request in
plain text, closes a connection whose client half-closed it before answering, and prints its
errors and tracebacks on the console. The protocol here (a subclass of uvicorn's h11 one) adds:

- a deadline of `read_timeout_s` for a request's head (from the connection, or from the first byte
  of a request after the previous one) and for its body (from its head): then a 408 and close;
- a body that ends (the client half-closes) before its Content-Length: a 400, if it still listens;
- a reply to a request refused before its body was read (401, 413, ...): the rest of the body is
  read away before closing, so the client is not reset before it reads the reply;
- every error body is one line of JSON, `{"error": "..."}`;
- a client that goes away (or is sent away) in the middle of a request or a reply is counted in
  `dropped_clients` and logged as one line, never a traceback. A viewer leaving a stream (an
  MJPEG reply, which has no end) is how a stream ends, not a dropped client: logged at DEBUG.

Uvicorn's own loggers are routed to this module's logger (DEBUG, errors at INFO), so nothing of
it reaches the console unless the application's logging asks for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
from http import HTTPStatus
from typing import Any

import h11
import uvicorn
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 10.0  # a request's head, or its body, taking longer than this is answered 408
SHUTDOWN_GRACE_S = 2.0  # close(): how long requests in progress may take to finish before they are cut
START_TIMEOUT_S = 30.0  # only stops a hang: the server starts in milliseconds
DRAIN_LIMIT = 4 << 20  # bytes of a refused request's body read away before closing anyway
WS_MAX_MESSAGE = 64 << 10  # the largest WebSocket message taken from a client (the viewer sends none)
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


MAX_CONNECTIONS = 512


class ClientLog:
    """Counts the clients that went away mid-request or mid-reply; one log line each. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dropped = 0

    @property
    def dropped(self) -> int:
        """Clients dropped so far."""
        with self._lock:
            return self._dropped

    def drop(self, peer: str, why: str) -> None:
        """Count one dropped client and say why, in one line (INFO).

        Args:
            peer: The client's address, "host:port".
            why: What it did, e.g. "sent nothing for 10 s".
        """
        with self._lock:
            self._dropped += 1
        log.info("http: client %s dropped: %s", peer, why)


class HttpServer:
    """An ASGI app served by uvicorn in a daemon thread, from construction until `close()`.

    Args:
        app: The ASGI application (service/app.py's `make_app`).
        host: The interface to listen on.
        port: The port; 0 lets the system pick one (see `url`).
        read_timeout_s: How long a request's head may take to arrive (from the connection, or
            from the first byte after the previous request), and then its body; then 408.

    Raises:
        OSError: The port cannot be bound (taken, or not an address of this machine).
        ValueError: read_timeout_s is not positive.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, read_timeout_s: float = READ_TIMEOUT_S):
        if not read_timeout_s > 0:
            raise ValueError(f"read_timeout_s must be > 0, got {read_timeout_s}")
        self.read_timeout_s = read_timeout_s
        self.clients = ClientLog()
        _route_uvicorn_logs()
        self._socket = _bind(host, port)
        self._host = host
        self._port = self._socket.getsockname()[1]
        self._app = _Stoppable(app)
        config = uvicorn.Config(
            self._app,
            http=_protocol_class(self.clients, read_timeout_s),
            ws="websockets-sansio",
            ws_max_size=WS_MAX_MESSAGE,
            loop="asyncio",
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,  # type: ignore[arg-type]  # uvicorn takes any number
            # Past this many open connections and requests, uvicorn answers 503: idle or slow clients
            # cannot exhaust the process (viewers hold one connection per stream they watch).
            limit_concurrency=MAX_CONNECTIONS,
        )
        self._server = _Server(config, self._app)
        self._thread = threading.Thread(target=self._serve, name="http-server", daemon=True)
        self._thread.start()
        if not self._server.started_event.wait(START_TIMEOUT_S) or self._server.failed is not None:
            self.close()
            raise OSError(f"the HTTP server did not start: {self._server.failed or 'timed out'}")

    def _serve(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # noqa: BLE001 - a thread's end: said in one line, never a traceback
            self._server.failed = _reason(exc)
            log.error("http: the server stopped: %s", _reason(exc))
            log.debug("http: the server stopped", exc_info=True)
        finally:
            self._server.started_event.set()  # never leave the constructor waiting
            self._socket.close()

    @property
    def url(self) -> str:
        """Where it listens, e.g. http://127.0.0.1:8000 (the port the system gave, when asked for port 0)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self._port

    @property
    def dropped_clients(self) -> int:
        """Connections that ended mid-request or mid-reply: the client closed or reset them, or was too slow."""
        return self.clients.dropped

    def close(self) -> None:
        """Stop serving and release the port.

        Requests in progress get SHUTDOWN_GRACE_S to finish; streams (MJPEG, WebSocket) end at
        once. Returns when the serving thread has ended (or, should it hang, after a bound).
        """
        self._server.should_exit = True
        self._server.wake()
        if self._thread is not threading.current_thread():
            self._thread.join(SHUTDOWN_GRACE_S + START_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("http: the server did not stop within %g s", SHUTDOWN_GRACE_S + START_TIMEOUT_S)

    def __enter__(self) -> HttpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Server(uvicorn.Server):
    """Uvicorn's server that says when it listens, and ends streams and lingering connections on exit."""

    def __init__(self, config: uvicorn.Config, app: _Stoppable) -> None:
        super().__init__(config)
        self.app = app
        self.started_event = threading.Event()
        self.failed: str | None = None
        self.stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.set_exception_handler(_loop_error)
        self.stopping = self.app.stopping = asyncio.Event()
        await super().startup(sockets=sockets)
        self.started_event.set()

    def wake(self) -> None:
        """From any thread: end the streams now rather than at the next tick of the serving loop."""
        loop, stopping = self._loop, self.stopping
        if loop is not None and stopping is not None:
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:  # the loop is closed: it has stopped already
                pass

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.stopping is not None:
            self.stopping.set()
        await super().shutdown(sockets=sockets)
        for connection in list(self.server_state.connections):  # what outlived the grace period
            getattr(connection.transport, "real", connection.transport).close()


class _Stoppable:
    """The app, whose `receive` says the client is gone once the server stops, so streams end."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.stopping: asyncio.Event | None = None  # set by _Server.startup, on the serving loop

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and self.stopping is not None:
            receive = _or_stop(receive, self.stopping, scope["type"])
        await self.app(scope, receive, send)


def _or_stop(receive: Any, stopping: asyncio.Event, kind: str) -> Any:
    gone = {"type": "http.disconnect"} if kind == "http" else {"type": "websocket.disconnect", "code": 1001}

    async def receive_or_stop() -> dict:
        if stopping.is_set():
            return gone
        got = asyncio.ensure_future(receive())
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({got, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not got.done():
                got.cancel()
        return got.result() if got.done() and not got.cancelled() else gone

    return receive_or_stop


class _Connection(h11.Connection):
    """h11's connection that also notes how much of a request's body came, and whether the reply is a stream."""

    def __init__(self) -> None:
        super().__init__(h11.SERVER, DEFAULT_MAX_INCOMPLETE_EVENT_SIZE)
        self.body_expected: int | None = None  # the request's Content-Length (None: chunked, or none)
        self.body_got = 0
        self.reply_streams = False  # the reply has no Content-Length: a stream (MJPEG) that ends when the client goes
        self.error = ""  # why the last request could not be parsed

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            self.error = _said(exc)
            raise
        if isinstance(event, h11.Request):
            lengths = [value for name, value in event.headers if name == b"content-length"]
            self.body_expected = int(lengths[0]) if lengths else None
            self.body_got = 0
            self.reply_streams = False
        elif isinstance(event, h11.Data):
            self.body_got += len(event.data)
        return event

    def send(self, event: Any) -> bytes | None:
        if isinstance(event, h11.Response):
            self.reply_streams = not any(name == b"content-length" for name, _ in event.headers)
            if self.their_state is h11.SEND_BODY and not any(name == b"connection" for name, _ in event.headers):
                # Answered before its body came (a refusal): the rest is read away and the
                # connection closed, which the client must be told, or it would send its next
                # request on it.
                event = h11.Response(
                    status_code=event.status_code,
                    headers=[*event.headers, (b"connection", b"close")],
                    reason=event.reason,
                    http_version=event.http_version,
                )
        return super().send(event)

    @property
    def body_progress(self) -> str:
        """e.g. "7 of the 100", for messages about a body cut short."""
        expected = "?" if self.body_expected is None else str(self.body_expected)
        return f"{self.body_got} of the {expected}"


def _protocol_class(clients: ClientLog, read_timeout_s: float) -> type[H11Protocol]:
    class Protocol(_Protocol):
        pass

    Protocol.clients = clients
    Protocol.read_timeout_s = read_timeout_s
    return Protocol


class _Protocol(H11Protocol):
    """Uvicorn's h11 protocol with deadlines, one-line JSON errors, and dropped clients counted (see the module)."""

    clients: ClientLog
    read_timeout_s: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.access_log = False  # one line per request is not for the console, nor for our log
        self.conn: _Connection = _Connection()
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting = ""  # what the deadline is for: "head", "body", "drain" or nothing
        self._settled = False  # counted as dropped, or answered here: nothing more to count
        self._draining = 0  # bytes of a refused body read away so far (while _waiting == "drain")
        self._eof = False  # the client closed its side: close once the reply is out
        self._answered = 0  # replies completed on this connection
        self._flushing = False  # closing: the asyncio transport sends what it holds, then closes

    # --- the connection's life ---

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_Lingering(transport, self))  # type: ignore[arg-type]
        if self.client is None:  # reset before it was looked at: the address asyncio noted on accepting
            peer = transport.get_extra_info("peername")
            self.client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else None
        self._watch()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._cancel()
        self.transport = self.transport.real  # type: ignore[attr-defined]  # the WebSocket protocol's own
        super().handle_websocket_upgrade(event)

    def data_received(self, data: bytes) -> None:
        if self._waiting == "drain":
            self._draining += len(data)
            if self._draining > DRAIN_LIMIT:
                self._close()
            return
        super().data_received(data)
        self._watch()

    def eof_received(self) -> bool | None:
        """The client closed its side: answer what can still be answered, else close."""
        self._eof = True
        cycle = self.cycle
        if self._waiting == "drain" or self.transport.is_closing():
            return None
        if cycle is not None and not cycle.response_complete:
            if self.conn.their_state is h11.SEND_BODY and not cycle.response_started:
                progress = self.conn.body_progress
                self._drop(f"closed the connection after {progress} body bytes announced")
                self._answer(HTTPStatus.BAD_REQUEST, f"the body ended after {progress} bytes of its Content-Length")
            else:  # the request is in: the reply still goes out, then the connection closes
                cycle.keep_alive = False
            return True
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self._drop("closed the connection in the middle of its request")
        self._cancel()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self._waiting = ""
        if not self._settled:
            why = self._lost_mid_exchange(exc)
            if why:
                self._drop(why)
        super().connection_lost(exc)

    def _lost_mid_exchange(self, exc: Exception | None) -> str:
        """Why a connection lost now is a dropped client ("" when it is not)."""
        cycle, how = self.cycle, "reset the connection" if exc is not None else "closed the connection"
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started and self.conn.reply_streams:
                log.debug("http: %s left a stream (%s)", self._peer(), how)
                return ""
            if cycle.response_started:
                return f"{how} in the middle of the reply"
            if self.conn.their_state is h11.SEND_BODY:
                return f"{how} after {self.conn.body_progress} body bytes announced"
            return f"{how} before its reply"
        if (
            exc is not None
            and cycle is not None
            and (self._flushing or (self.flow is not None and self.flow.write_paused))
        ):
            return f"{how} in the middle of the reply"  # the reply was still on its way out
        if exc is not None and self.conn.their_state is h11.IDLE and (self.conn.trailing_data[0] or not self._answered):
            return f"{how} in the middle of its request"  # (a reset can take the bytes that came before it along)
        return ""

    def on_response_complete(self) -> None:
        self._answered += 1
        super().on_response_complete()
        if self.transport.is_closing() or self._waiting == "drain":
            return
        if self.conn.their_state is h11.SEND_BODY:  # answered before its body came (a refusal)
            self._linger()
        elif self._eof:
            self._close()
        else:  # idle: uvicorn's keep-alive timeout closes it; the next request's head is timed from its first byte
            self._cancel()

    def close_asked(self) -> None:
        """Uvicorn closes the connection: with a refused body still coming, read it away first."""
        cycle = self.cycle
        refused_unread = cycle is not None and cycle.response_complete and self.conn.their_state is h11.SEND_BODY
        if refused_unread and not self._settled and self._waiting != "drain":
            self._linger()
        elif self._waiting != "drain":
            self._close()

    def _linger(self) -> None:
        """Read the rest of a refused request's body away, then close.

        Closing with unread input resets the connection, and the client could lose the reply;
        so this side is shut, and what still comes is discarded (up to DRAIN_LIMIT bytes, for
        at most read_timeout_s).
        """
        self._unset_keepalive_if_required()
        self._cancel()
        self._waiting, self._draining = "drain", 0
        self._deadline = self.loop.call_later(self.read_timeout_s, self._close)
        try:
            self.transport.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            self._close()

    def _close(self) -> None:
        self._cancel()
        self._waiting = ""
        self._flushing = True  # a reset from now on cut what was still being sent
        self.transport.real.close()  # type: ignore[attr-defined]

    # --- deadlines ---

    def _watch(self) -> None:
        """Keep the deadline of what the connection waits for now: a request's head, or its body."""
        if self.transport.is_closing():
            return self._cancel()
        cycle, theirs = self.cycle, self.conn.their_state
        if theirs is h11.IDLE and (cycle is None or cycle.response_complete):
            waiting = "head"
        elif theirs is h11.SEND_BODY and cycle is not None and not cycle.response_started:
            waiting = "body"
        else:
            waiting = ""
        if waiting != self._waiting and self._waiting != "drain":
            self._cancel()
            if waiting:
                self._waiting = waiting
                self._deadline = self.loop.call_later(self.read_timeout_s, self._timed_out)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._waiting != "drain":
            self._waiting = ""

    def _timed_out(self) -> None:
        waiting, self._deadline, self._waiting = self._waiting, None, ""
        if self.transport.is_closing():
            return
        limit = f"{self.read_timeout_s:g} s"
        cycle = self.cycle
        if waiting == "head" and self.conn.their_state is h11.IDLE:
            sent = "part of a request, then nothing" if self.conn.trailing_data[0] else "nothing"
            self._drop(f"sent {sent} for {limit}")
            self._answer(HTTPStatus.REQUEST_TIMEOUT, f"the request did not arrive within {limit}")
        elif waiting == "body" and cycle is not None and not cycle.response_started:
            progress = self.conn.body_progress
            self._drop(f"sent {progress} body bytes announced, then nothing for {limit}")
            self._answer(
                HTTPStatus.REQUEST_TIMEOUT,
                f"the body did not arrive within {limit} ({progress.replace(' the ', ' ')} bytes)",
            )

    # --- answers ---

    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot parse: a one-line JSON 400 (uvicorn's is plain text), one log line."""
        why = self.conn.error or "malformed"
        log.info("http: 400 from %s: not a valid HTTP request (%s)", self._peer(), why)
        self._answer(HTTPStatus.BAD_REQUEST, f"not a valid HTTP request: {why}")

    def _answer(self, status: HTTPStatus, message: str) -> None:
        """Answer here, outside the app, and close: a JSON error, then the app hears the client is gone."""
        self._settled = True
        self._cancel()
        body = json.dumps({"error": message}).encode()
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.response_started = cycle.response_complete = True  # the app's own reply would come too late
            cycle.disconnected = True
            cycle.message_event.set()  # an app waiting for the body hears the client went away
        self._close()

    def _drop(self, why: str) -> None:
        if not self._settled:
            self._settled = True
            self.clients.drop(self._peer(), why)

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "?"


class _Lingering:
    """A connection's transport whose `close()` asks the protocol first (see `_Protocol.close_asked`)."""

    def __init__(self, real: asyncio.Transport, protocol: _Protocol) -> None:
        self.real = real
        self._protocol = protocol

    def close(self) -> None:
        self._protocol.close_asked()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, bound now (so a taken port is an OSError here)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"no address for {host!r}")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
        )  # a port in TIME_WAIT is free; one listened on is not
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


class _ToOurLogger(logging.Handler):
    """Uvicorn's records, re-said by this module's logger: DEBUG, errors at INFO; the traceback only at DEBUG."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = " ".join(record.getMessage().split())
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is not worth a traceback
            message = str(record.msg)
        level = logging.INFO if record.levelno >= logging.ERROR else logging.DEBUG
        log.log(level, "uvicorn: %s", message)
        if record.exc_info and log.isEnabledFor(logging.DEBUG):
            log.debug("uvicorn: %s", message, exc_info=record.exc_info)


def _route_uvicorn_logs() -> None:
    """Send uvicorn's loggers to ours instead of the console (once per process: the loggers are global)."""
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.propagate = False
        if not any(isinstance(handler, _ToOurLogger) for handler in logger.handlers):
            logger.handlers = [_ToOurLogger()]


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """The serving loop's unhandled errors (asyncio's): one line (INFO), the traceback at DEBUG."""
    exc = context.get("exception")
    message = context.get("message", "error")
    log.info("http: %s%s", message, f": {_reason(exc)}" if exc is not None else "")
    if exc is not None:
        log.debug("http: %s", message, exc_info=exc)


def _said(error: h11.RemoteProtocolError) -> str:
    """h11's reason, short and on one line (its messages quote the offending bytes as a bytearray's repr)."""
    text = re.sub(r"bytearray\(b(['\"])(.*?)\1\)", r"\2", " ".join(str(error).split()))
    return (text[:120] + "...") if len(text) > 120 else text or "malformed"


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
