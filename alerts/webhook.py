"""Webhook alert output: each event POSTed as JSON to an HTTP(S) receiver, signed when a secret is set.

The request:
    POST <url>
    Content-Type: application/json
    X-FastSAM-Event-Id: <the body's "id", percent-encoded where not plain ASCII>
    X-FastSAM-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes, key: the secret>   (secret_env set)

    {"id": ..., "source": ..., "event": ..., "zone" or "line": ..., "track": ..., ...}   (ZoneEvent.to_json())

A 2xx delivers the event. 408, 429 and 5xx, a timeout or a refused connection are retried with
backoff (429's and 503's Retry-After honoured up to retry.max_delay_s); any other status is the
receiver refusing the event: logged, counted in `failed`, not retried. A user:password in the
URL is sent as basic auth and shown as *** in every log line.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from urllib.parse import quote, urlsplit

import httpx

from ..core import ZoneEvent
from ..sources.redact import Redactor, redact_url
from .queue import RejectedError, RetryableError, event_body, secret_from_env, unreachable_reason
from .settings import WebhookSettings

RETRIED_STATUSES = frozenset({408, 429})  # the 4xx that mean "later", not "never"
EVENT_ID_SAFE = "!#$&'()*+,/:;=?@[]~"  # kept as they are in the id header; quote() keeps letters, digits, _.-~
URL_LOGGING_LIBRARIES = ("httpx",)  # log the request URL (at INFO): its secrets are masked there too


def sign(secret: bytes, body: bytes) -> str:
    """The X-FastSAM-Signature value of a body: what a receiver recomputes to check it.

    Args:
        secret: The shared secret's bytes (UTF-8 of the environment variable's value).
        body: The exact bytes of the request body.

    Returns:
        "sha256=" and the hex HMAC-SHA256 of the body.
    """
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class _RedactArgs(logging.Filter):
    """Masks URL secrets in the arguments of httpx's own request log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_url(str(arg)) if isinstance(arg, httpx.URL) else arg for arg in record.args)
        return True


def _redact_library_logs() -> None:
    """Install the filter on httpx's logger, once per process (loggers are global; the filter has no state)."""
    for name in URL_LOGGING_LIBRARIES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactArgs) for f in logger.filters):
            logger.addFilter(_RedactArgs())


def _retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds, when it is a number (an HTTP date is ignored)."""
    try:
        return max(float(response.headers.get("retry-after", "")), 0.0)
    except ValueError:
        return None


class WebhookDelivery:
    """POSTs events to one URL over one httpx Client (kept-alive connection).

    Args:
        settings: The webhook's settings.

    Raises:
        ConfigError: secret_env names a variable that is not set.
    """

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self.label = f"webhook {redact_url(settings.url)}"
        self._redact = Redactor(settings.url)
        self._secret = (
            secret_from_env(settings.secret_env, "alerts webhook secret_env").encode() if settings.secret_env else None
        )
        url = httpx.URL(settings.url)
        # The password goes in the Authorization header, so no library logs it as part of the URL.
        auth = httpx.BasicAuth(url.username, url.password) if url.userinfo else None
        self._url = url.copy_with(username=None, password=None) if url.userinfo else url
        _redact_library_logs()
        self._client = httpx.Client(timeout=settings.timeout_s, auth=auth, follow_redirects=False)

    def check_reachable(self) -> str | None:
        """Why the receiver's host and port cannot be reached now (None: a TCP connection opened)."""
        parts = urlsplit(self.settings.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        reason = unreachable_reason(parts.hostname or "", port, self.settings.timeout_s)
        return self._redact(reason) if reason else None

    def send(self, event: ZoneEvent) -> None:
        """POST one event.

        Args:
            event: The event; its JSON is the body.

        Raises:
            RetryableError: No answer, a timeout, 408, 429 or 5xx.
            RejectedError: Any other status outside 2xx.
        """
        body = event_body(event)
        headers = {"Content-Type": "application/json", "X-FastSAM-Event-Id": quote(event.event_id, safe=EVENT_ID_SAFE)}
        if self._secret is not None:
            headers["X-FastSAM-Signature"] = sign(self._secret, body)
        try:
            response = self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise RetryableError(
                self._redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            ) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        reason = f"HTTP {status} {response.reason_phrase}".strip()
        if status in RETRIED_STATUSES or status >= 500:
            raise RetryableError(reason, _retry_after(response))
        raise RejectedError(reason)

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()
