"""The HTTP surface of `serve` (issue #13): the app, its guard and its server, with real uvicorn on 127.0.0.1.

The service behind the app is a stand-in (the routes' logic is what is tested here; the real
Service has its own tests), and so is the frame hub. Requests go through httpx, raw sockets where
the request must be malformed or slow, and the websockets client. The server's read timeout is a
fraction of a second, set here; the tests that meet it wait for the server's answer, never for a
clock of their own (every deadline below is a hang guard).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from fastsam_stream.config import ServeConfig
from fastsam_stream.errors import (
    ConfigError,
    PromptError,
    ServiceStartingError,
    SourceError,
    StreamConflictError,
    UnknownStreamError,
)
from fastsam_stream.pipeline.status import HistogramSnapshot, PipelineMetrics, StreamState, StreamStatus
from fastsam_stream.service.app import make_app
from fastsam_stream.service.security import SESSION_COOKIE, check_bind, is_loopback
from fastsam_stream.service.server import HttpServer

HANG_S = 60  # only stops a hang: every exchange here ends in well under a second
TIMEOUT_S = 0.3  # the server's read timeout in these tests
TOKEN = "s3cret-token-for-tests"
JSON = {"content-type": "application/json"}
LOGGERS = ("fastsam_stream",)  # uvicorn's loggers only reach ours (pytest also listens to them directly)


class FakeHub:
    """Stands in for service/frames.FrameHub: one JPEG for "cam", streams that never end by themselves."""

    def __init__(self) -> None:
        self.jpeg = b"\xff\xd8fake-jpeg\xff\xd9"

    def latest_jpeg(self, stream_id: str) -> bytes | None:
        return self.jpeg if stream_id == "cam" else None

    async def mjpeg(self, stream_id: str):
        yield b"--frame\r\n"
        yield (
            b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(self.jpeg) + self.jpeg + b"\r\n--frame\r\n"
        )
        await anyio.sleep_forever()  # only the server's close (or the client) ends it

    async def updates(self, stream_id: str):
        yield {"stream": stream_id, "frame": 7, "tracks": [], "targets": [1]}
        await anyio.sleep_forever()


def _status(stream_id: str, state: StreamState = StreamState.STREAMING) -> StreamStatus:
    return StreamStatus(stream_id, state, frames=12, fps=9.5, targets=(1,))


def _histogram() -> HistogramSnapshot:
    return HistogramSnapshot((0.1, 1.0), (3, 4, 4), 0.5)


@dataclass
class FakeService:
    """Stands in for service/core.Service: streams in a dict; `fail` makes the next call raise."""

    settings: ServeConfig
    hub: FakeHub | None = field(default_factory=FakeHub)
    streams_by_id: dict[str, StreamStatus] = field(default_factory=lambda: {"cam": _status("cam")})
    fail: BaseException | None = None
    calls: list[tuple] = field(default_factory=list)

    def _maybe_fail(self) -> None:
        if self.fail is not None:
            raise self.fail

    def gpu_memory(self) -> list:
        return []

    def ready(self) -> tuple[bool, str]:
        return (True, "") if self.streams_by_id else (False, "no source is streaming")

    def streams(self) -> list[StreamStatus]:
        self._maybe_fail()
        return list(self.streams_by_id.values())

    def stream(self, stream_id: str) -> StreamStatus:
        self._maybe_fail()
        if stream_id not in self.streams_by_id:
            raise UnknownStreamError(f"no stream {stream_id!r}")
        return self.streams_by_id[stream_id]

    def add_stream(self, path: str, stream_id: str | None, prompt: dict | None) -> StreamStatus:
        self._maybe_fail()
        self.calls.append(("add", path, stream_id, prompt))
        stream_id = stream_id or "new"
        if stream_id in self.streams_by_id:
            raise StreamConflictError(f"a stream {stream_id!r} exists already")
        self.streams_by_id[stream_id] = _status(stream_id, StreamState.CONNECTING)
        return self.streams_by_id[stream_id]

    def remove_stream(self, stream_id: str) -> dict:
        self.stream(stream_id)
        del self.streams_by_id[stream_id]
        return {"frames": 12}

    def command(self, command, stream_id: str | None) -> str:
        self._maybe_fail()
        if stream_id is not None:
            self.stream(stream_id)
        self.calls.append(("command", command.op, stream_id))
        return f"{command.op} queued for {stream_id or 'every source'}"

    def targets(self) -> dict[str, list[int]]:
        self._maybe_fail()
        return {sid: list(status.targets) for sid, status in self.streams_by_id.items()}

    def metrics(self) -> PipelineMetrics | None:
        streams = tuple(self.streams_by_id.values())
        return PipelineMetrics(streams, _histogram(), _histogram(), {"intake": 0, "prepared": 0, "results": 0})


@contextmanager
def serving(**settings) -> Iterator[tuple[HttpServer, FakeService, httpx.Client]]:
    config = ServeConfig(**{"read_timeout_s": TIMEOUT_S, "port": 0, **settings})
    service = FakeService(config)
    with HttpServer(make_app(service), config.host, 0, config.read_timeout_s) as server:
        with httpx.Client(base_url=server.url, timeout=HANG_S) as client:
            yield server, service, client


@pytest.fixture
def open_server():
    with serving() as running:
        yield running


@pytest.fixture
def token_server():
    with serving(token=TOKEN) as running:
        yield running


def _one_line_error(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert "\n" not in response.text, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"], body
    return body["error"]


def _raw(server: HttpServer, data: bytes, *, shut_write: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=HANG_S) as sock:
        sock.settimeout(HANG_S)
        sock.sendall(data)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        return _read_all(sock)


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _parse(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), raw[:200]
    assert b"\n" not in body, body
    return int(head.split()[1]), json.loads(body)


def _post_raw(server: HttpServer, body: bytes, *headers: str, path: str = "/commands") -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _quiet(capfd, caplog, requests: int) -> None:
    """Nothing on stderr; at most one log line (INFO or above) per request; never a traceback."""
    err = capfd.readouterr().err
    assert not err.strip(), err
    ours = [r for r in caplog.records if r.name.startswith(LOGGERS) and r.levelno >= logging.INFO]
    assert len(ours) <= requests, [r.getMessage() for r in ours]
    assert all(r.exc_info is None for r in ours), [r.getMessage() for r in ours if r.exc_info]
    assert all("\n" not in r.getMessage() for r in ours)


def _eventually(check, what: str) -> None:
    deadline = time.monotonic() + HANG_S  # a hang guard: the server settles within milliseconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


# --- the token ------------------------------------------------------------------------------------


def test_with_a_token_a_request_without_it_is_401_and_with_it_200(token_server, caplog):
    caplog.set_level(logging.DEBUG)
    _, _, client = token_server
    refused = client.get("/api/streams")
    assert refused.status_code == 401 and "token" in _one_line_error(refused)
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/api/streams", headers={"authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/api/streams", headers={"authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and [s["id"] for s in ok.json()] == ["cam"]
    assert all(TOKEN not in r.getMessage() for r in caplog.records)  # never logged


def test_the_login_cookie_stands_for_the_token(token_server, caplog):
    caplog.set_level(logging.DEBUG)
    _, _, client = token_server
    wrong = client.post("/login", json={"token": "nope"})
    assert wrong.status_code == 401 and SESSION_COOKIE not in client.cookies
    login = client.post("/login", json={"token": TOKEN})
    assert login.status_code == 200, login.text
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    assert client.get("/api/streams").status_code == 200  # the cookie, no Authorization
    assert client.post("/logout", headers=JSON, content=b"{}").status_code == 200
    client.cookies.clear()
    assert client.get("/api/streams").status_code == 401
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


def test_healthz_static_and_login_are_open_and_pages_send_a_browser_to_login(token_server):
    _, _, client = token_server
    assert client.get("/healthz").status_code == 200
    assert client.get("/login").status_code in (200, 404)  # 404 only while the viewer's files are missing
    assert client.get("/static/nothing-here.css").status_code == 404  # open, not 401
    page = client.get("/streams/cam", headers={"accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/streams/cam"
    assert client.get("/readyz").status_code == 401


def test_metrics_need_the_token_unless_metrics_open():
    with serving(token=TOKEN) as (_, _, client):
        assert client.get("/metrics").status_code == 401
        scrape = client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    with serving(token=TOKEN, metrics_open=True) as (_, _, client):
        open_scrape = client.get("/metrics")
    for response in (scrape, open_scrape):
        assert response.status_code == 200
        names = {family.name for family in text_string_to_metric_families(response.text)}
        assert "fastsam_stream_frames" in names, names


def test_without_a_token_everything_is_open_on_loopback(open_server):
    _, _, client = open_server
    assert client.get("/api/streams").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.post("/login", json={"token": "anything"}).status_code == 200


@pytest.mark.parametrize(
    ("host", "token", "refused"),
    [
        ("0.0.0.0", None, True),
        ("192.168.1.20", "", True),
        ("::", None, True),
        ("0.0.0.0", TOKEN, False),
        ("127.0.0.1", None, False),
        ("localhost", None, False),
        ("::1", None, False),
    ],
)
def test_listening_beyond_loopback_needs_a_token(host, token, refused):
    if refused:
        with pytest.raises(ConfigError) as raised:
            check_bind(host, token)
        message = str(raised.value)
        assert "\n" not in message and "--token" in message and host in message, message
    else:
        check_bind(host, token)
    assert is_loopback(host) != (host in ("0.0.0.0", "192.168.1.20", "::"))


# --- other sites ----------------------------------------------------------------------------------


def test_a_host_that_is_not_this_servers_address_is_refused(open_server, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    server, service, client = open_server
    port = server.port
    for host in (f"evil.example:{port}", "127.0.0.1:1", "evil.example"):
        refused = client.get("/api/streams", headers={"host": host})
        assert refused.status_code == 403 and "Host" in _one_line_error(refused), host
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert client.get("/api/streams", headers={"host": host}).status_code == 200, host
    _quiet(capfd, caplog, requests=6)


def test_a_page_of_another_site_cannot_post_a_command(open_server, capfd, caplog):
    """The attack of the issue: text/plain with Origin evil.example was 202 Accepted."""
    caplog.set_level(logging.DEBUG)
    server, service, client = open_server
    command = b'{"op": "drop"}'
    evil = client.post(
        "/commands", content=command, headers={"content-type": "text/plain", "origin": "http://evil.example"}
    )
    assert evil.status_code == 403, evil.text
    plain = client.post("/commands", content=command, headers={"content-type": "text/plain"})
    assert plain.status_code == 415 and "application/json" in _one_line_error(plain)
    form = client.post("/commands", data={"op": "drop"})
    assert form.status_code == 415
    no_cors = client.get("/api/streams", headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"})
    assert no_cors.status_code == 403
    same = client.post("/commands", content=command, headers={**JSON, "origin": server.url})
    assert same.status_code == 202, same.text
    assert service.calls == [("command", "drop", None)]  # only the last one
    _quiet(capfd, caplog, requests=6)


def test_cors_only_for_the_origins_asked_for():
    with serving() as (_, _, client):
        plain = client.get("/api/streams", headers={"origin": "http://dash.example"})
        assert plain.status_code == 403 and "access-control-allow-origin" not in plain.headers
    with serving(cors_origins=["http://dash.example"]) as (_, _, client):
        allowed = client.get("/api/streams", headers={"origin": "http://dash.example"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "http://dash.example"
        preflight = client.options(
            "/commands",
            headers={
                "origin": "http://dash.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type",
            },
        )
        assert preflight.status_code == 200 and "POST" in preflight.headers["access-control-allow-methods"]
        assert client.get("/api/streams", headers={"origin": "http://evil.example"}).status_code == 403


def test_a_websocket_from_another_site_or_without_the_token_is_refused(token_server):
    server, _, _ = token_server
    url = server.url.replace("http", "ws") + "/api/streams/cam/ws"
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for headers, origin in (({}, None), (bearer, "http://evil.example")):
        with pytest.raises(Exception, match="403"):
            ws_connect(url, additional_headers=headers, origin=origin, open_timeout=HANG_S).close()
    with ws_connect(url, additional_headers=bearer, origin=server.url, open_timeout=HANG_S) as ws:
        assert json.loads(ws.recv(timeout=HANG_S))["frame"] == 7


# --- bodies ---------------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413(capfd, caplog):
    caplog.set_level(logging.DEBUG)
    with serving(max_body_kb=1) as (server, _, client):
        big = client.post("/api/streams", content=b"x" * 2048, headers=JSON)
        assert big.status_code == 413 and "1024 bytes" in _one_line_error(big)
        # sent whole, unread: the reply still arrives (the rest is read away, not reset)
        status, body = _parse(
            _raw(server, _post_raw(server, b"x" * 200_000, "Content-Type: application/json", "Content-Length: 200000"))
        )
        assert status == 413, body
        assert server.dropped_clients == 0
    _quiet(capfd, caplog, requests=2)


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        (b'{"op": "add", "box": [1, 2', "/commands", "bad command: "),
        (b"\x00\xffgarbage", "/api/streams", "bad JSON: "),
        (b"[1, 2]", "/api/streams", "send a JSON object"),
        (b'{"id": "cam2"}', "/api/streams", '"path"'),
        (b'{"op": "fly"}', "/api/streams/cam/commands", "bad command: "),
        (b'{"token": 3}', "/login", '{"token": "..."}'),
    ],
)
def test_bad_json_is_400_in_one_line(open_server, capfd, caplog, body, path, message):
    caplog.set_level(logging.DEBUG)
    _, service, client = open_server
    response = client.post(path, content=body, headers=JSON)
    assert response.status_code == 400 and message in _one_line_error(response), response.text
    assert not service.calls
    _quiet(capfd, caplog, requests=1)


def test_a_body_without_a_content_length_is_411(open_server):
    server, _, _ = open_server
    chunked = _post_raw(
        server,
        b'e\r\n{"op": "drop"}\r\n0\r\n\r\n',
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
        "Connection: close",
    )
    assert _parse(_raw(server, chunked))[0] == 411
    none = _post_raw(server, b"", "Content-Type: application/json", "Connection: close")
    assert _parse(_raw(server, none))[0] == 411


# --- slow and broken clients ----------------------------------------------------------------------


@pytest.mark.parametrize("sent", [b"", b"POST /commands HTTP/1.1\r\nContent-Length: 14\r\n"])
def test_headers_that_do_not_arrive_in_time_are_408(open_server, capfd, caplog, sent):
    caplog.set_level(logging.DEBUG)
    server, _, client = open_server
    with socket.create_connection(("127.0.0.1", server.port), timeout=HANG_S) as sock:
        sock.settimeout(HANG_S)
        sock.sendall(sent)
        status, body = _parse(_read_all(sock))  # the server's timeout ends the wait
    assert status == 408 and "did not arrive within 0.3 s" in body["error"], body
    assert server.dropped_clients == 1
    assert client.get("/healthz").status_code == 200
    _quiet(capfd, caplog, requests=2)


def test_a_body_shorter_than_its_content_length_is_408_then_400_if_the_client_closes(open_server, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    server, service, _ = open_server
    request = _post_raw(server, b'{"op": ', "Content-Type: application/json", "Content-Length: 100")
    status, body = _parse(_raw(server, request))  # and then nothing
    assert status == 408 and "did not arrive within 0.3 s (7 of 100 bytes)" in body["error"], body
    status, body = _parse(_raw(server, request, shut_write=True))
    assert status == 400 and "ended after 7 of the 100 bytes" in body["error"], body
    assert server.dropped_clients == 2 and not service.calls
    _quiet(capfd, caplog, requests=2)


@pytest.mark.parametrize(
    "sent",
    [
        b"POST /comm",  # in the request line
        b"POST /commands HTTP/1.1\r\nContent-Le",  # in the headers
        b"POST /commands HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n",  # before the blank line
    ],
)
def test_a_client_closing_mid_request_is_counted_without_a_traceback(open_server, capfd, caplog, sent):
    caplog.set_level(logging.DEBUG)
    server, _, client = open_server
    assert _raw(server, sent, shut_write=True) == b""  # no answer to half a request: the server just closes
    assert server.dropped_clients == 1
    assert client.get("/healthz").status_code == 200
    _quiet(capfd, caplog, requests=2)


def test_a_malformed_request_is_a_one_line_400(open_server, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    server, _, _ = open_server
    status, body = _parse(_raw(server, b"hello there\r\n\r\n"))
    assert status == 400 and body["error"].startswith("not a valid HTTP request"), body
    assert server.dropped_clients == 0
    _quiet(capfd, caplog, requests=1)


# --- routes and errors ----------------------------------------------------------------------------


def test_streams_are_listed_added_and_removed(open_server):
    _, service, client = open_server
    assert client.get("/api/streams/cam").json()["state"] == "streaming"
    added = client.post("/api/streams", json={"path": "rtsp://u:p@cam/1", "id": "door", "box": [1, 2, 3, 4]})
    assert added.status_code == 201 and added.headers["location"] == "/api/streams/door"
    assert added.json()["id"] == "door" and "rtsp" not in added.text
    assert service.calls[-1] == ("add", "rtsp://u:p@cam/1", "door", {"box": [1, 2, 3, 4]})
    removed = client.delete("/api/streams/door")
    assert removed.status_code == 200 and removed.json() == {"removed": "door", "summary": {"frames": 12}}
    command = client.post("/api/streams/cam/commands", json={"op": "drop", "ids": [1]})
    assert command.status_code == 202 and command.json() == {"queued": "drop queued for cam"}
    assert client.get("/targets").json() == {"cam": [1]}
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (UnknownStreamError("no stream 'x'"), 404),
        (StreamConflictError("a stream 'cam' exists already"), 409),
        (ServiceStartingError("the model is loading"), 503),
        (PromptError("box 1,2,3 is not a box"), 400),
        (SourceError("cannot open nothing.mp4"), 400),
        (ConfigError("source.fps: must be > 0"), 400),
        (RuntimeError("a bug\nover two lines"), 500),
    ],
)
def test_each_error_has_its_status_and_one_line(open_server, capfd, caplog, error, status):
    caplog.set_level(logging.INFO)
    _, service, client = open_server
    service.fail = error
    for response in (client.get("/api/streams"), client.post("/api/streams", json={"path": "x"})):
        assert response.status_code == status and "\n" not in _one_line_error(response)
    _quiet(capfd, caplog, requests=2)


def test_unknown_paths_and_methods_and_streams_are_one_line_json(open_server):
    _, _, client = open_server
    assert client.get("/nothing").status_code == 404 and _one_line_error(client.get("/nothing"))
    wrong_method = client.put("/commands", json={})
    assert wrong_method.status_code == 405 and "POST" in _one_line_error(wrong_method)
    assert client.get("/api/streams/nope").status_code == 404
    assert client.get("/api/streams/nope/frame.jpg").status_code == 404
    assert client.delete("/api/streams/nope").status_code == 404


def test_frames_as_jpeg_and_mjpeg_and_tracks_over_a_websocket(open_server):
    server, _, client = open_server
    still = client.get("/api/streams/cam/frame.jpg")
    assert still.status_code == 200 and still.headers["content-type"] == "image/jpeg"
    assert still.content == FakeHub().jpeg
    with client.stream("GET", "/api/streams/cam/mjpeg") as stream:
        assert stream.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
        received = b""
        for chunk in stream.iter_raw():
            received += chunk
            if FakeHub().jpeg in received:
                break
    assert received.startswith(b"--frame\r\n")
    with ws_connect(server.url.replace("http", "ws") + "/api/streams/cam/ws", open_timeout=HANG_S) as ws:
        assert json.loads(ws.recv(timeout=HANG_S)) == {"stream": "cam", "frame": 7, "tracks": [], "targets": [1]}


def test_a_taken_port_fails_at_once():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            HttpServer(make_app(FakeService(ServeConfig())), "127.0.0.1", taken.getsockname()[1])


def test_close_ends_open_streams_and_releases_the_port(capfd, caplog):
    """An MJPEG viewer and a WebSocket are connected, and their streams never end by themselves."""
    caplog.set_level(logging.DEBUG)
    with serving() as (server, _, _), ExitStack() as viewers:
        port = server.port
        mjpeg = viewers.enter_context(socket.create_connection(("127.0.0.1", port), timeout=HANG_S))
        mjpeg.sendall(f"GET /api/streams/cam/mjpeg HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert mjpeg.recv(65536).startswith(b"HTTP/1.1 200")
        ws = viewers.enter_context(
            ws_connect(server.url.replace("http", "ws") + "/api/streams/cam/ws", open_timeout=HANG_S)
        )
        ws.recv(timeout=HANG_S)
        closing = threading.Thread(target=server.close)
        closing.start()
        closing.join(HANG_S)
        assert not closing.is_alive(), "close() hung with viewers connected"
        mjpeg.settimeout(HANG_S)
        _read_all(mjpeg)  # ends: the server closed it
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=HANG_S)
    with socket.socket() as again:  # released: it can be listened on again (its closed connections may linger)
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()
    err = capfd.readouterr().err
    assert not err.strip(), err
    assert all(r.exc_info is None for r in caplog.records if r.levelno >= logging.INFO)
