"""MQTT alert outputs against a real broker: Debian's mosquitto, started by the test on 127.0.0.1.

A paho subscriber receives the events in order on their formatted topics; with the broker down
when the output starts, the events wait in the queue and arrive after paho reconnects. Skipped
when mosquitto is not installed (apt-get install mosquitto), unless FASTSAM_STREAM_REQUIRE_MQTT
is set, as CI does: then a missing broker fails the run.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from test_alerts import FAST_RETRY, HANG_GUARD_S, QUEUE_LOGGER, LogWaiter, free_port, zone_event

from fastsam_stream.alerts import MqttSettings, make_alert
from fastsam_stream.alerts.mqtt import topic_of
from fastsam_stream.core import ZoneEventKind

REQUIRE_ENV = "FASTSAM_STREAM_REQUIRE_MQTT"
SUBSCRIBER_ID = "fastsam-stream-test-subscriber"


def mosquitto_path() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    debian = Path("/usr/sbin/mosquitto")  # Debian installs it outside a normal user's PATH
    return str(debian) if os.access(debian, os.X_OK) else None


@pytest.fixture(scope="module")
def mosquitto() -> str:
    path = mosquitto_path()
    if path is None:
        if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
            pytest.fail(f"{REQUIRE_ENV} is set but mosquitto is not installed: apt-get install mosquitto")
        pytest.skip(f"mosquitto is not installed (apt-get install mosquitto); set {REQUIRE_ENV}=1 to fail instead")
    return path


class Broker:
    """mosquitto on 127.0.0.1:`port`, anonymous, its sessions persisted in `folder` across a restart."""

    def __init__(self, executable: str, folder: Path, port: int) -> None:
        self.executable = executable
        self.port = port
        self.config = folder / "mosquitto.conf"
        # `user`: run as root, mosquitto would switch to user "mosquitto", who cannot write the test's folder.
        self.config.write_text(
            f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {folder}/\nlog_dest stderr\n"
        )
        self.process: subprocess.Popen | None = None
        self.log: list[str] = []

    def start(self) -> Broker:
        self.process = subprocess.Popen(
            [self.executable, "-c", str(self.config)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        running = threading.Event()
        threading.Thread(target=self._read_log, args=(self.process, running), daemon=True).start()
        assert running.wait(HANG_GUARD_S), f"mosquitto did not start: {self.log}"
        assert self.process.poll() is None, f"mosquitto exited: {self.log}"
        return self

    def _read_log(self, process: subprocess.Popen, running: threading.Event) -> None:
        for line in process.stderr:
            self.log.append(line.rstrip())
            if " running" in line:  # "mosquitto version 2.0.11 running": listening
                running.set()
        running.set()  # it exited: start() reports the log

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # a clean stop saves the subscriber's session
            self.process.wait(HANG_GUARD_S)
        self.process = None


@pytest.fixture
def broker(mosquitto, tmp_path):
    broker = Broker(mosquitto, tmp_path, free_port())
    yield broker
    broker.stop()


class Subscriber:
    """A paho client subscribed to fastsam/#, with a session the broker keeps while it is away."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, dict]] = []
        self.cond = threading.Condition()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=SUBSCRIBER_ID, clean_session=False, protocol=mqtt.MQTTv311
        )
        self.client.on_connect = lambda client, *_: client.subscribe("fastsam/#", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(HANG_GUARD_S)

    def _on_message(self, client, userdata, message) -> None:
        with self.cond:
            self.messages.append((message.topic, json.loads(message.payload)))
            self.cond.notify_all()

    def wait_for(self, count: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.messages) >= count, HANG_GUARD_S), (
                f"got {len(self.messages)} of {count} events"
            )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscribers():
    made: list[Subscriber] = []

    def make(port: int) -> Subscriber:
        made.append(Subscriber(port))
        return made[-1]

    yield make
    for subscriber in made:
        subscriber.close()


def mqtt_settings(port: int, **kwargs) -> MqttSettings:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("timeout_s", 2.0)
    return MqttSettings(host="127.0.0.1", port=port, **kwargs)


def mixed_events(count: int) -> list:
    kinds = list(ZoneEventKind)
    return [zone_event(i, kind=kinds[i % len(kinds)], place=f"p{i % 2}", track=i % 4) for i in range(count)]


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_a_subscriber_gets_every_event_in_order_on_its_topic(broker, subscribers, qos):
    broker.start()
    subscriber = subscribers(broker.port)
    output = make_alert(mqtt_settings(broker.port, qos=qos, topic="fastsam/{source}/{event}/{zone}"))
    events = mixed_events(30)
    for event in events:
        output.on_event(event)
    subscriber.wait_for(len(events))
    output.close()

    assert [payload for _, payload in subscriber.messages] == [e.to_json() for e in events]
    assert [topic for topic, _ in subscriber.messages] == [f"fastsam/cam1/{e.kind.value}/{e.place}" for e in events]
    assert (output.sent, output.dropped, output.failed, output.unsent) == (len(events), 0, 0, 0)


def test_a_broker_down_at_start_gets_the_events_after_reconnecting(broker, subscribers, caplog):
    caplog.set_level(logging.INFO)
    broker.start()
    subscriber = subscribers(broker.port)  # its session (and subscription) outlives the restart
    broker.stop()

    waiter = LogWaiter("delivery failed")
    queue_log = logging.getLogger(QUEUE_LOGGER)
    queue_log.addHandler(waiter)
    level = queue_log.level
    queue_log.setLevel(logging.DEBUG)
    try:
        output = make_alert(mqtt_settings(broker.port))
        events = mixed_events(12)
        for event in events:
            output.on_event(event)
        assert waiter.seen.wait(HANG_GUARD_S)  # an attempt failed: the broker is down
    finally:
        queue_log.removeHandler(waiter)
        queue_log.setLevel(level)

    broker.start()
    subscriber.wait_for(len(events))
    output.close()

    assert [payload["id"] for _, payload in subscriber.messages] == [e.event_id for e in events]
    assert (output.sent, output.dropped, output.unsent) == (len(events), 0, 0)
    assert output.failed_attempts >= 1
    assert len([r for r in caplog.records if "not reachable at start" in r.getMessage()]) == 1
    assert len([r for r in caplog.records if "receiver back" in r.getMessage()]) == 1


def test_close_never_hangs_with_the_broker_down():
    output = make_alert(mqtt_settings(free_port(), drain_s=0.2, timeout_s=0.5))
    for frame in range(3):
        output.on_event(zone_event(frame))
    started = time.monotonic()
    output.close()
    took = time.monotonic() - started

    assert took < 0.2 + 0.5 + 1.0 + 2.0  # drain_s, an attempt's timeout, the join margin, paho's loop_stop
    assert (output.sent, output.unsent) == (0, 3)


def test_the_topic_names_source_event_and_zone():
    event = zone_event(7, kind=ZoneEventKind.LINE_CROSS, place="door", source="gate-2")
    assert topic_of("site/{source}/{zone}/{event}", event) == "site/gate-2/door/line_cross"
    assert topic_of("fastsam/{source}/{event}", event) == "fastsam/gate-2/line_cross"


def test_missing_credentials_are_a_config_error(monkeypatch):
    from fastsam_stream.errors import ConfigError

    monkeypatch.delenv("FASTSAM_TEST_NO_SUCH_USER", raising=False)
    with pytest.raises(ConfigError, match="FASTSAM_TEST_NO_SUCH_USER is not set"):
        make_alert(mqtt_settings(free_port(), username_env="FASTSAM_TEST_NO_SUCH_USER"))
