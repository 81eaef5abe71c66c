"""Alert outputs: zone and line events sent to webhooks and MQTT brokers, off the frame path.

`make_alert(settings)` builds one output from an entry of config section `alerts`. An output is
an EventSink: hand it to the pipeline with the other sinks, and it takes the ZoneEvents it is
configured for (and ignores frames and stream events), delivering them from its own thread.
"""

from __future__ import annotations

from .queue import AlertOutput, Delivery, RejectedError, RetryableError
from .settings import AlertOutputSettings, AlertSettings, MqttSettings, RetryPolicy, WebhookSettings

__all__ = [
    "AlertOutput",
    "AlertOutputSettings",
    "AlertSettings",
    "Delivery",
    "MqttSettings",
    "RejectedError",
    "RetryPolicy",
    "RetryableError",
    "WebhookSettings",
    "make_alert",
]


def make_alert(settings: WebhookSettings | MqttSettings) -> AlertOutput:
    """Build and start one alert output.

    Args:
        settings: One entry of config section `alerts`.

    Returns:
        The output, its delivery thread running (and, for MQTT, connecting in the background).

    Raises:
        ConfigError: An environment variable the settings name (secret_env, username_env,
            password_env) is not set.
    """
    # Imported here: httpx and paho load only when an output of their kind is configured.
    if isinstance(settings, WebhookSettings):
        from .webhook import WebhookDelivery

        return AlertOutput(settings, WebhookDelivery(settings))
    from .mqtt import MqttDelivery

    return AlertOutput(settings, MqttDelivery(settings))
