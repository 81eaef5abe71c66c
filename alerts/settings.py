"""Settings of the alert outputs: config section `alerts`, a list of webhooks and MQTT brokers.

Each entry is discriminated by `kind`. Both kinds share the filter (`events`), the per-track
cooldown, the bounded queue and the retry backoff (`AlertOutputSettings`).
"""

from __future__ import annotations

import string
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from ..core import ZoneEventKind
from ..settings import Fraction01, Settings

TOPIC_FIELDS = ("source", "event", "zone")
"""The placeholders an MQTT topic may hold: the source's id, the event's kind, the zone's (or line's) name."""


class RetryPolicy(Settings):
    """How an alert output retries while its receiver is down: exponential backoff with jitter.

    The same keys and delays as `source.reconnect` (sources.live.ReconnectPolicy, whose `delay`
    computes them), without the keys that only a connection has.
    """

    initial_delay_s: float = Field(0.5, ge=0, description="seconds before the first retry of an event")
    max_delay_s: float = Field(30.0, ge=0, description="the longest wait between retries")
    multiplier: float = Field(2.0, ge=1.0, description="each wait is the previous one times this")
    # Outputs that failed together (one receiver down) do not all retry on the same instant.
    jitter: Fraction01 = Field(0.25, description="fraction of the delay drawn uniformly in ±jitter")
    # Default never: the queue bounds what waits, and a receiver back up gets every event in order.
    max_attempts: int | None = Field(
        None, ge=1, description="give one event up after this many failed attempts (default: retry until delivered)"
    )


class AlertOutputSettings(Settings):
    """What every alert output has: the event filter, the cooldown, the queue and the retries."""

    events: list[ZoneEventKind] | None = Field(
        None, description="the events to send (zone_enter, zone_leave, zone_dwell, line_cross, obstacle); default all"
    )
    # Per (source, event, zone or line, track), in the source's own time (pts): the same on a file read
    # faster than real time as on a camera.
    cooldown_s: float = Field(
        0.0, ge=0, description="send an event again for the same event, zone or line and track only after this long"
    )
    queue_size: int = Field(
        1000, ge=1, description="events waiting for delivery; when full, new events are dropped (counted and logged)"
    )
    timeout_s: float = Field(5.0, gt=0, description="seconds one delivery attempt may take")
    drain_s: float = Field(5.0, ge=0, description="at the end of a run, seconds to keep delivering what is queued")
    retry: RetryPolicy = Field(RetryPolicy(), description="backoff while the receiver is down")

    @field_validator("events")
    @classmethod
    def _some_events(cls, events: list[ZoneEventKind] | None) -> list[ZoneEventKind] | None:
        if events is not None and not events:
            raise ValueError("events is empty: leave it out to send every event")
        return events


class WebhookSettings(AlertOutputSettings):
    """An HTTP(S) endpoint that receives each event as a JSON POST."""

    kind: Literal["webhook"] = Field("webhook", description="an HTTP(S) POST of each event")
    url: str = Field(description="the receiver's http(s) URL; user:password@ in it is sent as basic auth")
    secret_env: str | None = Field(
        None,
        description="environment variable holding a shared secret: each POST then carries "
        "X-FastSAM-Signature: sha256=<hex HMAC-SHA256 of the body>",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("a webhook url is http:// or https:// with a host")
        return url


class MqttSettings(AlertOutputSettings):
    """An MQTT broker that receives each event as a JSON message."""

    kind: Literal["mqtt"] = Field("mqtt", description="an MQTT publish of each event")
    host: str = Field(description="the broker's host name or address")
    port: int = Field(1883, ge=1, le=65535, description="the broker's port")
    topic: str = Field(
        "fastsam/{source}/{event}",
        description="the topic; {source}, {event} and {zone} (the zone's or line's name) are filled in",
    )
    qos: Literal[0, 1, 2] = Field(
        1, description="MQTT quality of service: 1 and 2 wait for the broker's acknowledgement"
    )
    retain: bool = Field(False, description="ask the broker to keep the last event of each topic for new subscribers")
    username_env: str | None = Field(None, description="environment variable holding the broker's user name")
    password_env: str | None = Field(None, description="environment variable holding the broker's password")
    tls: bool = Field(False, description="connect over TLS, checking the broker's certificate against the system's")
    client_id: str = Field("", description="the MQTT client id (default: one the broker assigns)")
    keepalive_s: int = Field(60, ge=5, description="seconds between keep-alive pings")

    @field_validator("topic")
    @classmethod
    def _known_fields(cls, topic: str) -> str:
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(topic) if name is not None]
        except ValueError as exc:
            raise ValueError(f"bad topic {topic!r}: {exc}") from None
        unknown = sorted(set(names) - set(TOPIC_FIELDS))
        if unknown:
            raise ValueError(f"topic {topic!r} names {{{unknown[0]}}}; it may use {{source}}, {{event}}, {{zone}}")
        if not topic or "+" in topic or "#" in topic:
            raise ValueError(f"topic {topic!r} must be a non-empty topic without the wildcards + and #")
        return topic

    @model_validator(mode="after")
    def _user_with_password(self) -> MqttSettings:
        if self.password_env and not self.username_env:
            raise ValueError("password_env needs username_env: MQTT sends a password only with a user name")
        return self


AlertSettings = Annotated[WebhookSettings | MqttSettings, Field(discriminator="kind")]
"""One entry of config section `alerts`: a webhook or an MQTT broker, told apart by `kind`."""
