"""The HTTP surface of `fastsam-stream serve` (and of `run --control-port`): a Starlette app over a Service.

    GET    /                               the viewer: every stream in a grid (static/index.html)
    GET    /streams/{id}                   one stream, large (static/stream.html)
    GET    /login, POST /login, /logout    the login page; POST {"token": ...} sets the session cookie
    GET    /api/streams                    every stream's status (a JSON list)
    POST   /api/streams                    {"path": ..., "id": ..., prompt keys}: add a source (201)
    GET    /api/streams/{id}               one stream's status
    DELETE /api/streams/{id}               remove it, its outputs finalised: {"removed", "summary"}
    POST   /api/streams/{id}/commands      a control command (add / replace / drop) for it (202)
    GET    /api/streams/{id}/frame.jpg     its latest annotated frame
    GET    /api/streams/{id}/mjpeg         its frames as multipart MJPEG (an <img> shows it)
    WS     /api/streams/{id}/ws            its events, and each frame's tracks, as JSON messages
    GET    /metrics                        Prometheus exposition
    GET    /healthz, /readyz               up; ready (the model loaded and a source streams) or 503
    POST   /commands, GET /targets         the control endpoint of `run --control-port` (#5)

Every error is `{"error": "one line"}` with its status: an unknown stream 404, a conflict 409, a
service still starting 503, a bad request (JSON, command, prompt, source, config) 400, anything
else 500, logged as one line (the traceback only at DEBUG). The Service's blocking calls run in
worker threads, never on the event loop. security.Guard stands in front of every route.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..errors import (
    ConfigError,
    PromptError,
    ServiceStartingError,
    SourceError,
    StreamConflictError,
    UnknownStreamError,
)
from ..pipeline.control import parse_command
from .frames import MJPEG_BOUNDARY
from .metrics import exposition, metrics_registry
from .security import Auth, Guard

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
NO_STORE = {"cache-control": "no-store"}  # frames and states are of this moment only
ERROR_STATUS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], int], ...] = (
    (UnknownStreamError, 404),
    (StreamConflictError, 409),
    (ServiceStartingError, 503),
    ((PromptError, ConfigError, SourceError), 400),
    (TimeoutError, 504),  # a stream's outputs not final within the removal's bound
)


class BadRequestError(Exception):
    """The request itself is wrong (not JSON, a key missing): 400 with this message."""


def make_app(service: Any) -> Starlette:
    """The app serving `service` (a `service.core.Service`, or anything with its interface).

    Args:
        service: What the routes call: settings, hub, ready, streams, stream, add_stream,
            remove_stream, command, targets, metrics (see spec: service/core.py).

    Returns:
        The Starlette app, with the security guard (and CORS, when `serve.cors_origins` is set) in
        front. Without a frame hub (`run --control-port`) there is nothing to view: no viewer pages.
    """
    settings = service.settings
    auth = Auth(settings.token)
    routes = _Routes(service, auth)
    middleware = [Middleware(Guard, settings=settings, auth=auth)]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["authorization", "content-type"],
            )
        )
    viewer = (
        [
            Route("/", routes.page("index.html")),
            Route("/streams/{stream_id}", routes.page("stream.html")),
            Route("/login", routes.page("login.html"), methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static"),
        ]
        if service.hub is not None
        else []
    )
    return Starlette(
        routes=[
            *viewer,
            Route("/login", routes.login, methods=["POST"]),
            Route("/logout", routes.logout, methods=["POST"]),
            Route("/healthz", routes.healthz),
            Route("/readyz", routes.readyz),
            Route("/metrics", routes.metrics),
            Route("/api/streams", routes.list_streams, methods=["GET"]),
            Route("/api/streams", routes.add_stream, methods=["POST"]),
            Route("/api/streams/{stream_id}", routes.get_stream, methods=["GET"]),
            Route("/api/streams/{stream_id}", routes.remove_stream, methods=["DELETE"]),
            Route("/api/streams/{stream_id}/commands", routes.stream_command, methods=["POST"]),
            Route("/api/streams/{stream_id}/frame.jpg", routes.frame),
            Route("/api/streams/{stream_id}/mjpeg", routes.mjpeg),
            WebSocketRoute("/api/streams/{stream_id}/ws", routes.updates),
            Route("/commands", routes.command, methods=["POST"]),
            Route("/targets", routes.targets, methods=["GET"]),
        ],
        middleware=middleware,
        exception_handlers={HTTPException: _http_error},
    )


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The answer for an error: `{"error": message}` on one line, with `status`.

    Args:
        status: The HTTP status.
        message: What went wrong (newlines are folded).
        headers: More headers.

    Returns:
        The response.
    """
    return JSONResponse({"error": " ".join(message.split())}, status, headers=headers)


def _answering(endpoint: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """Map what a route raises to its status and one-line JSON error (see the module docstring)."""

    @functools.wraps(endpoint)
    async def answered(self: _Routes, request: Request) -> Response:
        try:
            return await endpoint(self, request)
        except ClientDisconnect:  # the server has answered (408/400) or the client is gone: nobody listens
            return Response(status_code=400)
        except BadRequestError as exc:
            return _refused(request, 400, str(exc))
        except Exception as exc:  # noqa: BLE001 - every error is an answer, never a traceback
            for kinds, status in ERROR_STATUS:
                if isinstance(exc, kinds):
                    return _refused(request, status, str(exc) or type(exc).__name__)
            reason = _reason(exc)
            log.error("http: %s %s failed: %s", request.method, request.url.path, reason)
            log.debug("http: %s %s failed", request.method, request.url.path, exc_info=True)
            return error(500, reason)

    return answered


def _refused(request: Request, status: int, message: str) -> JSONResponse:
    log.info("http: %d from %s (%s %s): %s", status, _peer(request), request.method, request.url.path, message)
    return error(status, message)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such path, method not allowed) as one-line JSON, like every other."""
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if exc.status_code == 404:
        message = f"no such path {path[:100]!r}: see the API table in the README (Serve)"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not taken on {path[:100]} (only {allowed})"
    else:
        message = exc.detail
    response = _refused(request, exc.status_code, message)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def _json(request: Request) -> Any:
    """The request's body, parsed: BadRequestError (one line) when it is not JSON."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"bad JSON: {' '.join(str(exc).split())}") from None


class _Routes:
    """The endpoints, over one service."""

    def __init__(self, service: Any, auth: Auth) -> None:
        self.service = service
        self.auth = auth
        self.registry = metrics_registry(service.metrics, service.gpu_memory)

    # --- pages, login, probes ---

    def page(self, name: str) -> Callable[[Request], Awaitable[Response]]:
        """An endpoint serving static/NAME (the viewer's pages are files, with no templating)."""
        path = STATIC_DIR / name

        async def serve_page(request: Request) -> Response:
            if not path.is_file():
                return _refused(request, 404, f"the viewer's {name} is missing from this installation")
            return FileResponse(path, media_type="text/html", headers={"cache-control": "no-cache"})

        return serve_page

    @_answering
    async def login(self, request: Request) -> Response:
        """POST /login {"token": ...}: the session cookie when it is the token, else 401."""
        body = await _json(request)
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str):
            raise BadRequestError('send {"token": "..."}')
        if not self.auth.required:
            return JSONResponse({"ok": True})
        if not self.auth.matches(token):
            return _refused(request, 401, "wrong token")
        log.info("http: %s logged in", _peer(request))
        return JSONResponse({"ok": True}, headers={"set-cookie": self.auth.login_cookie(), **NO_STORE})

    @_answering
    async def logout(self, request: Request) -> Response:
        """POST /logout: the session cookie is forgotten."""
        return JSONResponse({"ok": True}, headers={"set-cookie": self.auth.logout_cookie()})

    async def healthz(self, request: Request) -> Response:
        """200 while the process is up."""
        return JSONResponse({"ok": True}, headers=NO_STORE)

    @_answering
    async def readyz(self, request: Request) -> Response:
        """200 once the model is loaded and a source streams, else 503 with the reason."""
        ready, reason = await run_in_threadpool(self.service.ready)
        if not ready:
            return error(503, reason or "not ready", headers=NO_STORE)
        return JSONResponse({"ready": True}, headers=NO_STORE)

    @_answering
    async def metrics(self, request: Request) -> Response:
        """Prometheus exposition (OpenMetrics when the scraper asks for it)."""
        body, content_type = await run_in_threadpool(exposition, self.registry, request.headers.get("accept"))
        return Response(body, headers={"content-type": content_type, **NO_STORE})

    # --- streams ---

    @_answering
    async def list_streams(self, request: Request) -> Response:
        """Every stream's status."""
        streams = await run_in_threadpool(self.service.streams)
        return JSONResponse([status.to_json() for status in streams], headers=NO_STORE)

    @_answering
    async def get_stream(self, request: Request) -> Response:
        """One stream's status."""
        status = await run_in_threadpool(self.service.stream, request.path_params["stream_id"])
        return JSONResponse(status.to_json(), headers=NO_STORE)

    @_answering
    async def add_stream(self, request: Request) -> Response:
        """Add a source: {"path": ..., "id": ... (optional), and the keys of a config prompt (optional)}."""
        body = await _json(request)
        if not isinstance(body, dict):
            raise BadRequestError('send a JSON object: {"path": SOURCE, "id": NAME, and optional prompt keys}')
        path, stream_id = body.pop("path", None), body.pop("id", None)
        if not isinstance(path, str) or not path.strip():
            raise BadRequestError('give the source as "path": a file, folder, URL, camera or lavfi: graph')
        if stream_id is not None and not isinstance(stream_id, str):
            raise BadRequestError('"id" is the stream\'s name: a string')
        status = await run_in_threadpool(self.service.add_stream, path, stream_id, body or None)
        log.info("http: stream %s added", status.id)
        location = f"/api/streams/{quote(status.id, safe='')}"
        return JSONResponse(status.to_json(), 201, headers={"location": location, **NO_STORE})

    @_answering
    async def remove_stream(self, request: Request) -> Response:
        """Remove a stream; answers once its outputs are final, with its summary."""
        stream_id = request.path_params["stream_id"]
        summary = await run_in_threadpool(self.service.remove_stream, stream_id)
        log.info("http: stream %s removed", stream_id)
        return JSONResponse({"removed": stream_id, "summary": summary})

    @_answering
    async def stream_command(self, request: Request) -> Response:
        """A control command for this stream (its `source`, if any, is overridden)."""
        return await self._command(request, request.path_params["stream_id"])

    @_answering
    async def command(self, request: Request) -> Response:
        """POST /commands: a control command for its `source`, or every source (run --control-port's path)."""
        return await self._command(request, None)

    async def _command(self, request: Request, stream_id: str | None) -> Response:
        command = parse_command(await request.body())
        queued = await run_in_threadpool(self.service.command, command, stream_id)
        log.info("control: %s", queued)
        return JSONResponse({"queued": queued}, 202)

    @_answering
    async def targets(self, request: Request) -> Response:
        """GET /targets: each source's target ids."""
        return JSONResponse(await run_in_threadpool(self.service.targets), headers=NO_STORE)

    # --- frames ---

    async def _hub_for(self, stream_id: str) -> Any:
        """The frame hub, once the stream is known to exist (UnknownStreamError otherwise)."""
        await run_in_threadpool(self.service.stream, stream_id)
        hub = self.service.hub
        if hub is None:
            raise UnknownStreamError(f"this server shows no frames of {stream_id!r} (fastsam-stream serve does)")
        return hub

    @_answering
    async def frame(self, request: Request) -> Response:
        """The stream's latest annotated frame as JPEG (404 while it has none)."""
        stream_id = request.path_params["stream_id"]
        hub = await self._hub_for(stream_id)
        jpeg = await run_in_threadpool(hub.latest_jpeg, stream_id)
        if jpeg is None:
            return _refused(request, 404, f"stream {stream_id!r} has no frame yet")
        return Response(jpeg, media_type="image/jpeg", headers=NO_STORE)

    @_answering
    async def mjpeg(self, request: Request) -> Response:
        """The stream's frames as they come, one JPEG part each; it ends when the stream is removed."""
        stream_id = request.path_params["stream_id"]
        hub = await self._hub_for(stream_id)
        return StreamingResponse(
            hub.mjpeg(stream_id), media_type=f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}", headers=NO_STORE
        )

    async def updates(self, websocket: WebSocket) -> None:
        """WS: the stream's events and each newer frame's tracks, one JSON message each, until either side ends."""
        stream_id = websocket.path_params["stream_id"]
        try:
            hub = await self._hub_for(stream_id)
        except Exception as exc:  # noqa: BLE001 - an unknown stream, or a service not ready: refused (HTTP 403)
            log.info("http: WebSocket for %r refused: %s", stream_id, _reason(exc))
            await websocket.close(code=1008)
            return
        await websocket.accept()
        async with anyio.create_task_group() as group:

            async def pump() -> None:
                try:
                    async for update in hub.updates(stream_id):
                        await websocket.send_text(json.dumps(update))
                except (WebSocketDisconnect, OSError, RuntimeError) as exc:  # the client went away mid-send
                    log.debug("http: WebSocket for %r ended: %s", stream_id, _reason(exc))
                group.cancel_scope.cancel()  # the stream was removed, the hub closed, or the client left

            group.start_soon(pump)
            try:
                while (await websocket.receive())["type"] != "websocket.disconnect":
                    pass  # the page sends nothing; what it might send is ignored
            except (WebSocketDisconnect, OSError, RuntimeError) as exc:
                log.debug("http: WebSocket for %r ended: %s", stream_id, _reason(exc))
            group.cancel_scope.cancel()
        if websocket.client_state.name == "CONNECTED" and websocket.application_state.name == "CONNECTED":
            try:
                await websocket.close(code=1001)
            except (OSError, RuntimeError):
                pass


def _peer(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else "?"


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
