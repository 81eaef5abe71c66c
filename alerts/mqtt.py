"""MQTT alert output: each event published as JSON (ZoneEvent.to_json()) to a broker, in order.

paho-mqtt runs its own network thread (loop_start) and reconnects by itself with its backoff
(reconnect_delay_set, from the output's retry settings). The AlertOutput's worker publishes one
event at a time and waits for the broker to take it (the PUBACK/PUBCOMP at qos 1/2) before the
next, so the events arrive in order. While the broker is away the worker's attempts fail and
back off like a webhook's, and the bounded queue fills; an event published just before a
connection dropped stays with paho, which sends it again (flagged DUP) once reconnected, and the
worker waits for that instead of publishing it twice.
"""

from __future__ import annotations

import logging
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ..core import ZoneEvent
from .queue import RetryableError, event_body, secret_from_env, unreachable_reason
from .settings import MqttSettings

MIN_RECONNECT_DELAY_S = 0.05  # paho doubles from here: a zero would reconnect in a busy loop

log = logging.getLogger(__name__)


def topic_of(template: str, event: ZoneEvent) -> str:
    """The topic an event is published to.

    Args:
        template: MqttSettings.topic, e.g. "fastsam/{source}/{event}".
        event: The event.

    Returns:
        The template with {source}, {event} and {zone} (the zone's or line's name) filled in.
    """
    return template.format(source=event.source_id, event=event.kind.value, zone=event.place)


class MqttDelivery:
    """Publishes events over one paho-mqtt client, connected (and reconnected) in the background.

    Args:
        settings: The broker, topic and qos.

    Raises:
        ConfigError: username_env or password_env names a variable that is not set.
    """

    def __init__(self, settings: MqttSettings) -> None:
        self.settings = settings
        self.label = f"mqtt {settings.host}:{settings.port}"
        self._connected = threading.Event()
        self._acked_cond = threading.Condition()  # guards _acked: paho's thread adds, the worker takes
        self._acked: set[int] = set()  # message ids the broker has taken
        self._pending: tuple[ZoneEvent, int] | None = None  # published, not yet acknowledged (the worker's)
        self._why = ""  # why it is not connected, when the broker or the connection said
        self._client = self._make_client(settings)
        self._client.connect_async(settings.host, settings.port, keepalive=settings.keepalive_s)
        self._client.loop_start()

    def _make_client(self, settings: MqttSettings) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id, protocol=mqtt.MQTTv311)
        if settings.username_env:
            password = (
                secret_from_env(settings.password_env, "alerts mqtt password_env") if settings.password_env else None
            )
            client.username_pw_set(secret_from_env(settings.username_env, "alerts mqtt username_env"), password)
        if settings.tls:
            client.tls_set()
        retry = settings.retry
        client.reconnect_delay_set(max(retry.initial_delay_s, MIN_RECONNECT_DELAY_S), max(retry.max_delay_s, 1.0))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # paho's VERSION2 signature
        if reason_code.is_failure:
            # Said once per reason (paho retries a refusal, e.g. bad credentials, forever).
            if str(reason_code) != self._why:
                log.warning("%s: the broker refused the connection: %s", self.label, reason_code)
            self._why = str(reason_code)
            return
        self._why = ""
        self._connected.set()
        log.info("%s: connected", self.label)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected:
            self._why = f"disconnected: {reason_code}"
            log.info("%s: disconnected (%s); paho reconnects", self.label, reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._acked_cond:
            self._acked.add(mid)
            self._acked_cond.notify_all()

    def check_reachable(self) -> str | None:
        """Why the broker's host and port cannot be reached now (None: a TCP connection opened)."""
        return unreachable_reason(self.settings.host, self.settings.port, self.settings.timeout_s)

    def send(self, event: ZoneEvent) -> None:
        """Publish one event and wait for the broker to take it.

        Args:
            event: The event; its JSON is the payload.

        Raises:
            RetryableError: Not connected, or the broker has not acknowledged it within timeout_s
                (then the next call waits for the same message instead of publishing it again).
        """
        if self._pending is None or self._pending[0] is not event:
            self._pending = (event, self._publish(event))
        mid = self._pending[1]
        with self._acked_cond:
            if not self._acked_cond.wait_for(lambda: mid in self._acked, self.settings.timeout_s):
                if self.settings.qos == 0:  # paho does not keep a qos 0 message lost with its connection: send again
                    self._pending = None
                raise RetryableError(
                    "the broker has not acknowledged it yet" if self._connected.is_set() else "disconnected"
                )
            self._acked.discard(mid)
        self._pending = None

    def _publish(self, event: ZoneEvent) -> int:
        """Hand one event to paho; its message id.

        Raises:
            RetryableError: Not connected, or paho did not keep the message.
        """
        if not self._connected.is_set():
            raise RetryableError(f"not connected to the broker{': ' + self._why if self._why else ''}")
        info = self._client.publish(
            topic_of(self.settings.topic, event), event_body(event), qos=self.settings.qos, retain=self.settings.retain
        )
        # At qos 1/2 a message published as the connection drops (NO_CONN) stays queued in paho and is sent on
        # reconnect; at qos 0, or refused outright, it is gone and has to be published again.
        kept = info.rc == mqtt.MQTT_ERR_SUCCESS or (info.rc == mqtt.MQTT_ERR_NO_CONN and self.settings.qos > 0)
        if not kept:
            raise RetryableError(f"publish failed: {mqtt.error_string(info.rc)}")
        return info.mid

    def close(self) -> None:
        """Disconnect and stop paho's network thread."""
        self._client.disconnect()
        self._client.loop_stop()
