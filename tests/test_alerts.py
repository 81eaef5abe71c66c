"""Webhook alert outputs against a real HTTP receiver on 127.0.0.1.

The receiver (stdlib http.server in a thread) is down, then answers 503, then takes the events:
every event arrives exactly once, in order, signed, with its id header. A tiny queue drops and
counts; a 400 is not retried; close() returns within its bound with the receiver down; the
URL's password never reaches a log. Every wait is on an event or a condition; the deadlines
only keep a broken build from hanging.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import unquote

import pytest
from pydantic import TypeAdapter, ValidationError

from fastsam_stream.alerts import AlertSettings, MqttSettings, RetryPolicy, WebhookSettings, make_alert
from fastsam_stream.alerts.queue import AlertOutput, RetryableError
from fastsam_stream.core import EventKind, PlaceKind, SourceEvent, ZoneEvent, ZoneEventKind
from fastsam_stream.errors import ConfigError

HANG_GUARD_S = 20.0  # only a broken build waits this long
FAST_RETRY = RetryPolicy(initial_delay_s=0.001, max_delay_s=0.01, jitter=0.5)
SECRET = "correct horse battery staple"
QUEUE_LOGGER = "fastsam_stream.alerts.queue"


def zone_event(
    frame: int,
    *,
    kind: ZoneEventKind = ZoneEventKind.ZONE_ENTER,
    place: str = "lane",
    track: int = 1,
    pts: float | None = None,
    source: str = "cam1",
) -> ZoneEvent:
    place_kind = PlaceKind.LINE if kind is ZoneEventKind.LINE_CROSS else PlaceKind.ZONE
    return ZoneEvent(
        source_id=source,
        kind=kind,
        place=place,
        place_kind=place_kind,
        track_id=track,
        frame=frame,
        pts=frame / 10 if pts is None else pts,
        at=1_750_000_000.0 + frame,
        box=(10.0, 20.0, 110.5, 220.25),
        direction="in" if kind is ZoneEventKind.LINE_CROSS else None,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Receiver:
    """A webhook receiver on 127.0.0.1:`port`: answers `refuse_with` until `gate` is set, then `statuses`.

    `requests` holds every request that got a 2xx: (headers, raw body), in arrival order.
    """

    def __init__(self, port: int | None = None, refuse_with: int = 503, statuses: list[int] | None = None) -> None:
        self.port = port or free_port()
        self.refuse_with = refuse_with
        self.statuses = list(statuses or [])  # answered in turn once the gate is open; then 200
        self.gate = threading.Event()
        self.refused = threading.Event()  # set at the first refused request
        self.attempts = 0
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.cond = threading.Condition()
        self.server: HTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.answer(dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:  # the test's output stays quiet
                pass

        HTTPServer.allow_reuse_address = True
        self.server = HTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        with self.cond:
            self.attempts += 1
            if not self.gate.is_set():
                self.refused.set()
                return self.refuse_with
            status = self.statuses.pop(0) if self.statuses else 200
            if 200 <= status < 300:
                self.requests.append((headers, body))
            self.cond.notify_all()
            return status

    def wait_for(self, count: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.requests) >= count, HANG_GUARD_S), (
                f"got {len(self.requests)} of {count} events"
            )

    @property
    def bodies(self) -> list[dict]:
        return [json.loads(body) for _, body in self.requests]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        receiver = Receiver(**kwargs)
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()


class LogWaiter(logging.Handler):
    """Sets `seen` when a record whose message contains `text` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


@pytest.fixture
def log_waiter():
    """Waiters on the queue's log lines, its DEBUG ones (each retry) included."""
    logger = logging.getLogger(QUEUE_LOGGER)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    added: list[LogWaiter] = []

    def make(text: str) -> LogWaiter:
        waiter = LogWaiter(text)
        logger.addHandler(waiter)
        added.append(waiter)
        return waiter

    yield make
    for waiter in added:
        logger.removeHandler(waiter)
    logger.setLevel(level)


def webhook(port: int, path: str = "/hook", **kwargs) -> WebhookSettings:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("timeout_s", 2.0)
    kwargs.setdefault("drain_s", 5.0)
    return WebhookSettings(url=kwargs.pop("url", f"http://127.0.0.1:{port}{path}"), **kwargs)


def messages(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_a_receiver_down_then_up_gets_every_event_once_in_order_signed(receivers, log_waiter, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    receiver = receivers()  # its port is not bound yet: connections are refused
    failed = log_waiter("delivery failed")
    output = make_alert(webhook(receiver.port, secret_env="HOOK_SECRET"))
    events = [zone_event(i, track=i % 3, kind=list(ZoneEventKind)[i % 5]) for i in range(25)]
    for event in events:
        output.on_event(event)
    assert failed.seen.wait(HANG_GUARD_S)

    receiver.start()  # up, but answering 503 until the gate opens
    assert receiver.refused.wait(HANG_GUARD_S)
    receiver.gate.set()
    receiver.wait_for(len(events))
    output.close()

    assert [body["id"] for body in receiver.bodies] == [e.event_id for e in events]  # each once, in order
    assert receiver.bodies == [e.to_json() for e in events]
    for headers, body in receiver.requests:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-FastSAM-Signature"], expected)
        assert unquote(headers["X-FastSAM-Event-Id"]) == json.loads(body)["id"]
        assert headers["Content-Type"] == "application/json"
    assert (output.sent, output.dropped, output.failed, output.unsent) == (len(events), 0, 0, 0)
    assert output.failed_attempts >= 2  # refused connections, then the 503
    # One warning for the outage (unreachable at start), not one per attempt; one when it is over.
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([m for m in warnings if "not reachable at start" in m or "delivery failed" in m]) == 1
    assert len([m for m in warnings if "receiver back" in m]) == 1


def test_cooldown_suppresses_repeats_per_event_place_and_track(receivers):
    receiver = receivers(port=None).start()
    receiver.gate.set()
    output = make_alert(webhook(receiver.port, cooldown_s=5.0))
    sent = [
        zone_event(0, pts=0.0),
        zone_event(1, pts=1.0, track=2),  # another track
        zone_event(2, pts=1.0, kind=ZoneEventKind.ZONE_LEAVE),  # another event
        zone_event(3, pts=1.0, place="dock"),  # another zone
        zone_event(4, pts=1.0, source="cam2"),  # another source's track 1
        zone_event(6, pts=6.0),  # the cooldown is over
    ]
    repeats = [zone_event(5, pts=4.9), zone_event(7, pts=10.9)]  # within 5 s of the one before it went out
    for event in [sent[0], sent[1], sent[2], sent[3], sent[4], repeats[0], sent[5], repeats[1]]:
        output.on_event(event)
    output.close()

    assert [body["id"] for body in receiver.bodies] == [e.event_id for e in sent]
    assert (output.sent, output.suppressed) == (len(sent), len(repeats))


def test_only_the_configured_zone_events_are_sent(receivers):
    receiver = receivers().start()
    receiver.gate.set()
    output = make_alert(webhook(receiver.port, events=["obstacle", "line_cross"]))
    output.write(object())  # frames are not events: ignored
    output.on_event(SourceEvent("cam1", EventKind.CONNECTED, next_frame=0, at=0.0))
    wanted = [zone_event(1, kind=ZoneEventKind.OBSTACLE), zone_event(3, kind=ZoneEventKind.LINE_CROSS, place="door")]
    for event in [zone_event(0), wanted[0], zone_event(2, kind=ZoneEventKind.ZONE_DWELL), wanted[1]]:
        output.on_event(event)
    output.close()

    assert receiver.bodies == [e.to_json() for e in wanted]
    assert receiver.bodies[1]["line"] == "door" and receiver.bodies[1]["direction"] == "in"


def test_a_tiny_queue_with_the_receiver_down_drops_and_counts(receivers, caplog):
    caplog.set_level(logging.WARNING, logger=QUEUE_LOGGER)
    receiver = receivers().start()  # answers 503 until the gate opens
    output = make_alert(webhook(receiver.port, queue_size=2))
    output.on_event(zone_event(0))
    assert receiver.refused.wait(HANG_GUARD_S)  # event 0 is in flight: the queue is empty again
    for frame in range(1, 10):
        output.on_event(zone_event(frame))  # 1 and 2 fit; 3..9 are dropped
    assert output.dropped == 7
    assert len(messages(caplog, "queue full")) == 1  # once for the burst, not per event

    receiver.gate.set()
    receiver.wait_for(3)
    output.on_event(zone_event(10))  # room again: the burst's count is logged
    output.close()

    assert [body["frame"] for body in receiver.bodies] == [0, 1, 2, 10]
    assert (output.sent, output.dropped) == (4, 7)
    assert messages(caplog, "dropped while the queue was full") == [
        f"webhook http://127.0.0.1:{receiver.port}/hook: 7 events dropped while the queue was full (7 in all)"
    ]


@pytest.mark.parametrize("status", [400, 401, 404, 422, 301])
def test_a_refused_event_is_not_retried(receivers, status, caplog):
    caplog.set_level(logging.WARNING, logger=QUEUE_LOGGER)
    receiver = receivers(statuses=[status, 200]).start()
    receiver.gate.set()
    output = make_alert(webhook(receiver.port))
    output.on_event(zone_event(0))
    output.on_event(zone_event(1))
    receiver.wait_for(1)
    output.close()

    assert receiver.attempts == 2  # event 0 once (refused), event 1 once
    assert [body["frame"] for body in receiver.bodies] == [1]
    assert (output.sent, output.failed, output.failed_attempts) == (1, 1, 1)
    assert len(messages(caplog, f"refused, not retried: HTTP {status}")) == 1


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
def test_a_status_that_means_later_is_retried(receivers, status):
    receiver = receivers(statuses=[status, status, 200]).start()
    receiver.gate.set()
    output = make_alert(webhook(receiver.port))
    output.on_event(zone_event(0))
    receiver.wait_for(1)
    output.close()

    assert receiver.attempts == 3
    assert (output.sent, output.failed, output.failed_attempts) == (1, 0, 2)


def test_max_attempts_gives_an_event_up_and_goes_on(receivers):
    receiver = receivers(statuses=[500, 500, 200]).start()
    receiver.gate.set()
    output = make_alert(webhook(receiver.port, retry=FAST_RETRY.model_copy(update={"max_attempts": 2})))
    output.on_event(zone_event(0))
    output.on_event(zone_event(1))
    receiver.wait_for(1)
    output.close()

    assert [body["frame"] for body in receiver.bodies] == [1]
    assert (output.sent, output.failed, output.failed_attempts) == (1, 1, 2)


def test_close_never_hangs_with_the_receiver_down():
    port = free_port()  # nothing listens
    slow_retry = RetryPolicy(initial_delay_s=30.0, max_delay_s=30.0, jitter=0.0)  # the worker sits in its backoff
    output = make_alert(webhook(port, retry=slow_retry, drain_s=0.2, timeout_s=1.0))
    for frame in range(5):
        output.on_event(zone_event(frame))
    started = time.monotonic()
    output.close()
    took = time.monotonic() - started

    assert took < 0.2 + 1.0 + 1.0 + 1.0  # drain_s, then at most an attempt's timeout, the join margin, slack
    assert (output.sent, output.unsent) == (0, 5)
    waiting = output.pending
    output.on_event(zone_event(9))  # after close: ignored, not queued
    assert output.pending == waiting


def test_close_never_hangs_on_a_receiver_that_never_answers():
    with socket.socket() as silent:  # accepts connections (the backlog) and never reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        output = make_alert(webhook(silent.getsockname()[1], drain_s=0.2, timeout_s=0.5))
        output.on_event(zone_event(0))
        started = time.monotonic()
        output.close()
        took = time.monotonic() - started

    assert took < 0.2 + 0.5 + 1.0 + 1.0
    assert (output.sent, output.unsent) == (0, 1)


def test_the_url_password_never_reaches_a_log(receivers, log_waiter, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, httpx's and httpcore's included
    receiver = receivers()
    url = f"http://bob:s3cretpw@127.0.0.1:{receiver.port}/hook?token=t0ken42&x=1"
    failed = log_waiter("delivery failed")
    output = make_alert(webhook(receiver.port, url=url))
    output.on_event(zone_event(0))
    assert failed.seen.wait(HANG_GUARD_S)
    receiver.start()
    receiver.gate.set()
    receiver.wait_for(1)
    output.close()

    headers, _ = receiver.requests[0]
    assert headers["Authorization"] == "Basic Ym9iOnMzY3JldHB3"  # bob:s3cretpw, as basic auth
    assert "s3cretpw" not in caplog.text and "t0ken42" not in caplog.text
    assert "bob:***@127.0.0.1" in caplog.text
    assert "HTTP Request: POST" in caplog.text and "token=***" in caplog.text  # httpx's own line, masked


def test_an_unresolvable_host_at_start_is_one_warning(caplog):
    caplog.set_level(logging.WARNING, logger=QUEUE_LOGGER)
    output = make_alert(webhook(0, url="http://no-such-host.invalid/hook", drain_s=0.0, timeout_s=5.0))
    output.close()  # the check runs first on the delivery thread; close() waits for it

    assert messages(caplog, "not reachable at start") == [
        "webhook http://no-such-host.invalid/hook: receiver not reachable at start (cannot resolve "
        "no-such-host.invalid); events wait in the queue (up to 1000) and are retried"
    ]


def test_a_missing_secret_variable_is_a_config_error(monkeypatch):
    monkeypatch.delenv("FASTSAM_TEST_NO_SUCH_SECRET", raising=False)
    with pytest.raises(ConfigError) as caught:
        make_alert(webhook(free_port(), secret_env="FASTSAM_TEST_NO_SUCH_SECRET"))
    assert str(caught.value) == "alerts webhook secret_env: environment variable FASTSAM_TEST_NO_SUCH_SECRET is not set"


def test_an_id_that_is_not_plain_ascii_is_percent_encoded_in_its_header(receivers):
    receiver = receivers().start()
    receiver.gate.set()
    output = make_alert(webhook(receiver.port))
    event = zone_event(0, place="Einfahrt Süd 50%")
    output.on_event(event)
    receiver.wait_for(1)
    output.close()

    headers, body = receiver.requests[0]
    assert headers["X-FastSAM-Event-Id"] == "cam1:0:zone_enter:Einfahrt%20S%C3%BCd%2050%25:1"
    assert unquote(headers["X-FastSAM-Event-Id"]) == event.event_id == json.loads(body)["id"]


def test_retry_after_is_honoured_within_the_longest_wait():
    class Flaky:
        label = "flaky"
        calls = 0

        def check_reachable(self):
            return None

        def send(self, event):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RetryableError("HTTP 429 Too Many Requests", retry_after_s=3600.0)

        def close(self):
            pass

    settings = webhook(0, retry=RetryPolicy(initial_delay_s=0.0, max_delay_s=0.05, jitter=0.0))
    output = AlertOutput(settings, Flaky())
    assert output._delay(1, RetryableError("", retry_after_s=3600.0)) == 0.05  # capped at max_delay_s
    assert output._delay(1, RetryableError("")) == 0.0
    output.on_event(zone_event(0))
    output.close()
    assert (output.sent, Flaky.calls) == (1, 2)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"kind": "webhook", "url": "ftp://host/x"}, "http:// or https://"),
        ({"kind": "webhook", "url": "http://host:port/x"}, "not a URL"),
        ({"kind": "webhook", "url": "http://h/x", "events": []}, "events is empty"),
        ({"kind": "webhook", "url": "http://h/x", "events": ["zone_entry"]}, "zone_enter"),
        ({"kind": "mqtt", "host": "h", "topic": "a/{camera}"}, "names {camera}"),
        ({"kind": "mqtt", "host": "h", "topic": "a/#"}, "wildcards"),
        ({"kind": "mqtt", "host": "h", "password_env": "P"}, "needs username_env"),
        ({"kind": "mqtt", "host": "h", "qos": 3}, "qos"),
        ({"kind": "smtp", "host": "h"}, "'webhook', 'mqtt'"),
    ],
)
def test_bad_alert_settings_say_what_is_wrong(entry, problem):
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(AlertSettings).validate_python(entry)
    assert problem in str(caught.value)


def test_the_kind_picks_the_settings_class():
    adapter = TypeAdapter(list[AlertSettings])
    webhook_entry, mqtt_entry = adapter.validate_python(
        [{"kind": "webhook", "url": "https://h/x", "cooldown_s": 10}, {"kind": "mqtt", "host": "h"}]
    )
    assert isinstance(webhook_entry, WebhookSettings) and webhook_entry.cooldown_s == 10
    assert isinstance(mqtt_entry, MqttSettings) and mqtt_entry.topic == "fastsam/{source}/{event}"
    for model in (WebhookSettings, MqttSettings, RetryPolicy):
        assert all(field.description for field in model.model_fields.values()), model
