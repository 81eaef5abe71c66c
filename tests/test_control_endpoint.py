"""The control endpoint against malformed requests and broken clients (issues #12, #13): raw sockets, a real server.

Each request that cannot be taken is answered with its status and a one-line JSON error, logs at
most one line and never a traceback; a client that goes away mid-request or mid-reply, or resets
the connection, is closed quietly and counted; and the server answers the next request as
before. Since #13 the endpoint is the server of `serve` (uvicorn, service/): a malformed request
line or header is h11's 400, a method a path does not take 405, and a page of another site can
no longer re-prompt a run (415 for text/plain, 403 for its Origin). The server's read timeout is
set to a fraction of a second here (the default is 10 s): the tests that meet it wait for the
server's answer, never for a clock of their own.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest

import fastsam_stream as fs
from fastsam_stream.config import ServeConfig
from fastsam_stream.errors import ConfigError
from fastsam_stream.pipeline.control import READ_TIMEOUT_S, ControlServer

HANG_S = 60  # only stops a hang: every exchange here ends in well under a second
TIMEOUT_S = 0.3  # the server's read timeout in these tests
LOGGERS = "fastsam_stream"  # every logger of the package (the server's are under fastsam_stream.service)
MAX_BODY = ServeConfig().max_body_kb * 1024


class Targets:
    """Stands in for a pipeline where only GET /targets is asked for (its reply can be made huge)."""

    text_scorer = None

    def __init__(self, ids: list[int] | None = None) -> None:
        self.ids = [1] if ids is None else ids

    def targets(self) -> dict[str, list[int]]:
        return {"clip": self.ids}


@pytest.fixture
def server() -> Iterator[ControlServer]:
    with ControlServer(Targets(), port=0, read_timeout_s=TIMEOUT_S) as running:
        yield running


def _port(server: ControlServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _connect(server: ControlServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", _port(server)), timeout=HANG_S)
    sock.settimeout(HANG_S)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _exchange(server: ControlServer, data: bytes, *, shut_write: bool = False) -> tuple[int, dict, bytes]:
    """Send `data` as it is, read the whole answer: (status, JSON body, raw headers)."""
    with _connect(server) as sock:
        sock.sendall(data)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        raw = _read_all(sock)
    return _parse(raw)


def _parse(raw: bytes) -> tuple[int, dict, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1."), raw[:200]
    text = body.decode()
    assert "\n" not in text, f"the body is not one line: {text!r}"
    return int(status_line.split()[1]), json.loads(text), head


def _reset(sock: socket.socket) -> None:
    """Close with a reset (RST) instead of an orderly close."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG_S  # a hang guard: the server settles within milliseconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _still_answers(server: ControlServer) -> None:
    status, body, _ = _exchange(server, b"GET /targets HTTP/1.0\r\n\r\n")
    assert (status, body) == (200, {"clip": [1]})


def _post(body: bytes, *headers: str, json_type: bool = True) -> Callable[[ControlServer], bytes]:
    """A POST /commands, as sent to a server (its Host names the server's port)."""

    def request(server: ControlServer) -> bytes:
        typed = ["Content-Type: application/json"] if json_type else []
        lines = ["POST /commands HTTP/1.1", f"Host: 127.0.0.1:{_port(server)}", "Connection: close", *typed, *headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    return request


def _quiet(capfd, caplog, requests: int) -> None:
    """Nothing on stderr; at most one log line (INFO or above) per request, none with a traceback."""
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err and not err.strip(), err
    lines = [r for r in caplog.records if r.name.startswith(LOGGERS) and r.levelno >= logging.INFO]
    assert len(lines) <= requests, [r.getMessage() for r in lines]
    assert all(r.exc_info is None for r in caplog.records), [r.getMessage() for r in caplog.records if r.exc_info]
    assert all("\n" not in r.getMessage() for r in lines)


MALFORMED = {
    "no Content-Length": (_post(b'{"op": "drop"}'), 411),
    "Content-Length not a number": (_post(b'{"op": "drop"}', "Content-Length: fourteen"), 400),
    "Content-Length negative": (_post(b'{"op": "drop"}', "Content-Length: -14"), 400),
    "Content-Length with an underscore": (_post(b'{"op": "drop"}', "Content-Length: 1_4"), 400),
    "two Content-Lengths": (_post(b'{"op": "drop"}', "Content-Length: 14", "Content-Length: 4"), 400),
    "chunked": (_post(b'e\r\n{"op": "drop"}\r\n0\r\n\r\n', "Transfer-Encoding: chunked"), 411),
    "too big, announced": (_post(b"", f"Content-Length: {10 * MAX_BODY}"), 413),
    "too big, sent": (_post(b"x" * (MAX_BODY + 1), f"Content-Length: {MAX_BODY + 1}"), 413),
    "not JSON": (_post(b"\x00\xffgarbage", "Content-Length: 9"), 400),
    "JSON, not a command": (_post(b'{"op": "fly"}', "Content-Length: 13"), 400),
    "text/plain": (_post(b'{"op": "drop"}', "Content-Length: 14", "Content-Type: text/plain", json_type=False), 415),
    "no Content-Type": (_post(b'{"op": "drop"}', "Content-Length: 14", json_type=False), 415),
    "the issue's attack: text/plain from another site": (
        _post(
            b'{"op": "drop"}',
            "Content-Length: 14",
            "Content-Type: text/plain",
            "Origin: http://evil.example",
            json_type=False,
        ),
        403,
    ),
    "another site's Origin, even as JSON": (
        _post(b'{"op": "drop"}', "Content-Length: 14", "Origin: http://evil.example"),
        403,
    ),
    "a Host that is not the server (DNS rebinding)": (
        lambda server: b"GET /targets HTTP/1.1\r\nHost: evil.example:%d\r\n\r\n" % _port(server),
        403,
    ),
    "a request line that is not HTTP": (lambda _: b"hello there\r\n\r\n", 400),
    "binary noise": (lambda _: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 \x00\r\n\r\n", 400),
    "a header line that is not one": (lambda _: b"POST /commands HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    "a method the path does not take": (
        lambda server: b"PUT /commands HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % _port(server),
        405,
    ),
    "no HTTP version": (lambda _: b"GET /nothing\r\n\r\n", 400),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_request_is_answered_with_a_one_line_json_error(server, capfd, caplog, name):
    caplog.set_level(logging.DEBUG, logger=LOGGERS)
    request, expected = MALFORMED[name]
    status, body, head = _exchange(server, request(server))
    assert status == expected, body
    assert set(body) == {"error"} and body["error"], body
    assert b"content-type: application/json" in head.lower()
    _still_answers(server)
    assert server.dropped_clients == 0  # answered in full: not a dropped client
    _quiet(capfd, caplog, requests=2)


def test_a_body_shorter_than_its_content_length_is_408_after_the_read_timeout(server, capfd, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGERS)
    status, body, _ = _exchange(server, _post(b'{"op": ', "Content-Length: 100")(server))  # and then nothing
    assert status == 408 and "did not arrive within 0.3 s (7 of 100 bytes)" in body["error"], body
    assert server.dropped_clients == 1
    _still_answers(server)
    _quiet(capfd, caplog, requests=2)


@pytest.mark.parametrize("sent", [b"", b"POST /commands HTTP/1.1\r\nContent-Length: 14\r\n"])
def test_a_client_that_stops_sending_is_408_after_the_read_timeout(server, capfd, caplog, sent):
    caplog.set_level(logging.DEBUG, logger=LOGGERS)
    with _connect(server) as sock:
        sock.sendall(sent)
        status, body, _ = _parse(_read_all(sock))
    assert status == 408, body
    assert server.dropped_clients == 1
    _still_answers(server)
    _quiet(capfd, caplog, requests=2)


@pytest.mark.parametrize(
    "sent",
    [
        b"POST /comm",  # in the request line
        b"POST /commands HTTP/1.1\r\nContent-Le",  # in the headers
        b"POST /commands HTTP/1.1\r\nContent-Length: 100\r\n",  # before the blank line
    ],
)
def test_a_client_closing_mid_request_is_closed_quietly_and_counted(server, capfd, caplog, sent):
    caplog.set_level(logging.DEBUG, logger=LOGGERS)
    with _connect(server) as sock:
        sock.sendall(sent)
        sock.shutdown(socket.SHUT_WR)
        assert _read_all(sock) == b""  # no answer to half a request: the server just closes
    assert server.dropped_clients == 1
    _still_answers(server)
    _quiet(capfd, caplog, requests=2)


def test_a_client_closing_mid_body_is_counted_and_told_if_it_still_listens(server, capfd, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGERS)
    status, body, _ = _exchange(server, _post(b'{"op": ', "Content-Length: 100")(server), shut_write=True)
    assert status == 400 and "ended after 7 of the 100 bytes" in body["error"], body
    assert server.dropped_clients == 1
    _still_answers(server)
    _quiet(capfd, caplog, requests=2)


@pytest.mark.parametrize(
    "sent",
    [
        _post(b'{"op": ', "Content-Length: 100"),  # mid-body
        lambda _: b"POST /comm",  # mid request line
    ],
    ids=["mid-body", "mid request line"],
)
def test_a_client_resetting_mid_request_is_closed_quietly_and_counted(server, capfd, caplog, sent):
    caplog.set_level(logging.DEBUG, logger=LOGGERS)
    sock = _connect(server)
    sock.sendall(sent(server))
    _reset(sock)
    _eventually(lambda: server.dropped_clients == 1, "the reset client was not counted")
    _still_answers(server)
    _quiet(capfd, caplog, requests=2)


def test_a_client_going_away_mid_reply_is_closed_quietly_and_counted(capfd, caplog):
    """The reply is far bigger than the socket buffers, and the client resets after its first bytes."""
    caplog.set_level(logging.DEBUG, logger=LOGGERS)
    huge = Targets(list(range(10**7, 10**7 + 4_000_000)))  # about 36 MB of JSON
    with ControlServer(huge, port=0, read_timeout_s=TIMEOUT_S) as server:
        sock = _connect(server)
        sock.sendall(b"GET /targets HTTP/1.0\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        _reset(sock)
        _eventually(lambda: server.dropped_clients == 1, "the client gone mid-reply was not counted")
        huge.ids = [1]
        _still_answers(server)
    _quiet(capfd, caplog, requests=2)


class Broken(Targets):
    def targets(self) -> dict[str, list[int]]:
        raise RuntimeError("a bug in the pipeline\nover two lines")


def test_a_failing_handler_is_a_one_line_500_not_a_traceback(capfd, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGERS)
    with ControlServer(Broken(), port=0, read_timeout_s=TIMEOUT_S) as server:
        status, body, _ = _exchange(server, b"GET /targets HTTP/1.0\r\n\r\n")
        assert server.dropped_clients == 0
    assert status == 500 and body == {"error": "RuntimeError: a bug in the pipeline over two lines"}, body
    [line] = [r for r in caplog.records if r.name.startswith(LOGGERS) and r.levelno >= logging.INFO]
    assert "GET /targets failed: RuntimeError: a bug in the pipeline over two lines" in line.getMessage()
    err = capfd.readouterr().err
    assert not err.strip(), err
    assert all(r.exc_info is None for r in caplog.records if r.levelno >= logging.INFO)


def test_a_run_takes_no_new_sources_and_answers_503_until_its_pipeline_is_set(capfd, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGERS)
    with ControlServer(None, port=0, read_timeout_s=TIMEOUT_S) as server:
        host = f"Host: 127.0.0.1:{_port(server)}"
        starting = _exchange(server, b"GET /targets HTTP/1.0\r\n\r\n")
        server.pipeline = Targets()
        head = f"POST /api/streams HTTP/1.0\r\n{host}\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n"
        add = _exchange(server, head.encode() + b'{"path": "x"} ')
        listed = _exchange(server, b"GET /targets HTTP/1.0\r\n\r\n")
    assert starting[0] == 503 and starting[1]["error"].startswith("the pipeline is still starting"), starting
    assert add[0] == 409 and "serve" in add[1]["error"], add
    assert listed[:2] == (200, {"clip": [1]})
    _quiet(capfd, caplog, requests=3)


def test_a_run_listens_on_loopback_only():
    with pytest.raises(ConfigError, match="needs a token"):
        ControlServer(Targets(), port=0, host="0.0.0.0")


def test_the_read_timeout_is_a_setting_with_a_default():
    assert READ_TIMEOUT_S == 10
    with ControlServer(Targets(), port=0) as server:
        assert server.read_timeout_s == READ_TIMEOUT_S
    with pytest.raises(ValueError, match="read_timeout_s"):
        ControlServer(Targets(), port=0, read_timeout_s=0)


def test_text_without_clip_gives_the_command_line_advice(videos, capfd, caplog):
    """Over the control port the run was started from the command line: say what to start it with there."""
    source = fs.FileSource(videos / "carphone_pristine.mp4")
    pipeline = fs.Pipeline(source, segmenter=None)  # never run: the command is refused when queued
    try:
        with ControlServer(pipeline, port=0, read_timeout_s=TIMEOUT_S) as server:
            body = b'{"op": "add", "text": "a phone"}'
            status, reply, _ = _exchange(server, _post(body, f"Content-Length: {len(body)}")(server))
    finally:
        source.close()
    assert status == 400, reply
    error = reply["error"]
    assert "CLIP" in error and "--clip-weights PATH" in error and "clip.enabled: true" in error, error
    assert "Text prompts" in error and "text_scorer" not in error, error
    _quiet(capfd, caplog, requests=1)
