"""The part every alert output shares: filter, cooldown, a bounded queue and one delivery thread.

`AlertOutput` is an EventSink: the pipeline hands it every event of its sources, and it keeps the
zone and line events it is configured for. `on_event` never blocks and never does I/O: it puts
the event on a bounded queue and returns, so a slow or dead receiver never slows the frames. One
worker thread per output takes the events in order and hands them to its `Delivery` (a webhook,
an MQTT broker), retrying with exponential backoff and jitter while the receiver is down. An
event is dropped only when the queue is full; drops are counted and logged once per burst.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
from collections import deque
from typing import Protocol

from ..core import FrameResult, SourceEvent, ZoneEvent
from ..errors import ConfigError, error_reason
from ..pipeline.status import OutputCounts
from ..sources.live import ReconnectPolicy
from .settings import AlertOutputSettings

log = logging.getLogger(__name__)

JOIN_MARGIN_S = 1.0  # after the drain: an attempt in flight ends within its timeout, plus this
COOLDOWN_PRUNE_AT = 4096  # cooldown entries kept before the expired ones are swept


class RetryableError(Exception):
    """A delivery attempt failed in a way a later attempt may not: receiver down, 5xx, 429, timeout.

    Args:
        reason: One line, credentials already redacted.
        retry_after_s: The receiver's own hint of when to retry (HTTP Retry-After), if it gave one.
    """

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class RejectedError(Exception):
    """The receiver refused the event itself (an HTTP 4xx other than 408/429): retrying cannot help."""


class Delivery(Protocol):
    """Sends one event to one receiver; the AlertOutput's worker thread is its only caller."""

    label: str
    """What the logs call this output, credentials redacted: "webhook https://host/hook"."""

    def check_reachable(self) -> str | None:
        """Why the receiver cannot be reached now (None: it can); called once, at start."""
        ...

    def send(self, event: ZoneEvent) -> None:
        """Deliver one event, within the output's timeout_s.

        Raises:
            RetryableError: Not delivered; the same event is sent again after a backoff.
            RejectedError: Not delivered, and never will be.
        """
        ...

    def close(self) -> None:
        """Release the connection; called once, after the worker stopped."""
        ...


def unreachable_reason(host: str, port: int, timeout_s: float) -> str | None:
    """Whether a TCP connection to host:port can be opened now.

    Args:
        host: A name or an address.
        port: The TCP port.
        timeout_s: The longest wait for the connection.

    Returns:
        None when it opened, else why not: "cannot resolve HOST", "connection refused", ...
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except socket.gaierror:
        return f"cannot resolve {host}"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout_s:g} s"
    except OSError as exc:
        return f"{host}:{port}: {error_reason(exc).lower()}"


def event_body(event: ZoneEvent) -> bytes:
    """The JSON body of one event, compact UTF-8 (the bytes that are signed)."""
    return json.dumps(event.to_json(), separators=(",", ":"), ensure_ascii=False).encode()


def secret_from_env(name: str, what: str) -> str:
    """The value of environment variable `name`.

    Args:
        name: The variable.
        what: The setting that names it, for the error: "alerts webhook secret_env".

    Returns:
        Its value.

    Raises:
        ConfigError: It is not set, or empty.
    """
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"{what}: environment variable {name} is {'empty' if value == '' else 'not set'}")
    return value


class AlertOutput:
    """One alert output: an EventSink whose events go, in order, to one receiver off the frame path.

    Args:
        settings: The output's settings (WebhookSettings or MqttSettings).
        delivery: Sends one event to the receiver.
        rng: Draws the backoff's jitter (seeded in tests).

    Attributes:
        sent: Events the receiver took.
        dropped: Events not queued because the queue was full.
        suppressed: Events not queued because of the cooldown.
        failed_attempts: Delivery attempts that failed (each retry of an event counts).
        failed: Events given up: refused by the receiver, or out of retry.max_attempts.
        unsent: Events still queued (or in flight) when close() stopped waiting for the receiver.
    """

    def __init__(self, settings: AlertOutputSettings, delivery: Delivery, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.delivery = delivery
        self.label = delivery.label
        self.sent = self.dropped = self.suppressed = self.failed_attempts = self.failed = self.unsent = 0
        self._events = frozenset(settings.events) if settings.events is not None else None
        self._backoff = ReconnectPolicy(**settings.retry.model_dump(exclude={"max_attempts"}))
        self._rng = rng or random.Random()
        self._queue: deque[ZoneEvent] = deque()
        self._cond = threading.Condition()  # guards the queue, the cooldown, the drop burst and _closing
        self._last_sent: dict[tuple[str, str, str, int], float] = {}  # cooldown key -> pts it was last queued at
        self._burst = 0  # events dropped since the queue was last not full
        self._closing = False  # no new events; the worker stops once the queue is empty
        self._closed = False
        self._in_flight: ZoneEvent | None = None  # taken from the queue, not yet delivered or given up
        self._down = False  # the receiver failed and has not taken an event since (worker thread only)
        self._abort = threading.Event()  # set when the drain time is up: stop waiting for the receiver
        self._thread = threading.Thread(target=self._run, name=f"alert {self.label}", daemon=True)
        self._thread.start()

    def write(self, result: FrameResult) -> None:
        """Ignore frames: an alert output takes only zone and line events."""

    def on_event(self, event: ZoneEvent | SourceEvent) -> None:
        """Queue a zone or line event for delivery; never blocks (no I/O, a short lock).

        Args:
            event: Any event of the sources; SourceEvents and kinds this output does not send are ignored.
        """
        if not isinstance(event, ZoneEvent) or (self._events is not None and event.kind not in self._events):
            return
        with self._cond:
            if self._closing or self._cooling(event):
                return
            full = len(self._queue) >= self.settings.queue_size
            burst, self._burst = self._burst, (self._burst + 1 if full else 0)
            if full:
                self.dropped += 1
            else:
                self._queue.append(event)
                self._cond.notify()
        # Logged outside the lock, once per burst: when it starts, and its count when the queue has room again.
        if full and not burst:
            log.warning(
                "%s: queue full (%d events waiting): dropping new events until the receiver catches up",
                self.label,
                self.settings.queue_size,
            )
        elif not full and burst:
            log.warning("%s: %d events dropped while the queue was full (%d in all)", self.label, burst, self.dropped)

    def _cooling(self, event: ZoneEvent) -> bool:
        """Whether the same event of the same place and track was queued less than cooldown_s ago (under _cond)."""
        cooldown = self.settings.cooldown_s
        if cooldown <= 0:
            return False
        key = (event.source_id, event.kind.value, event.place, event.track_id)
        last = self._last_sent.get(key)
        if last is not None and 0 <= event.pts - last < cooldown:
            self.suppressed += 1
            return True
        if len(self._last_sent) >= COOLDOWN_PRUNE_AT:
            self._prune(event.source_id, event.pts)
        self._last_sent[key] = event.pts
        return False

    def _prune(self, source_id: str, pts: float) -> None:
        """Forget this source's cooldowns that have run out, so a long run's finished tracks do not pile up."""
        cooldown = self.settings.cooldown_s
        expired = [key for key, last in self._last_sent.items() if key[0] == source_id and pts - last >= cooldown]
        for key in expired:
            del self._last_sent[key]

    @property
    def pending(self) -> int:
        """Events waiting in the queue now (not counting one being delivered)."""
        with self._cond:
            return len(self._queue)

    def _run(self) -> None:
        """The worker: warn once if the receiver is unreachable, then deliver the events in order."""
        reason = self.delivery.check_reachable()
        if reason:
            self._down = True
            log.warning(
                "%s: receiver not reachable at start (%s); events wait in the queue (up to %d) and are retried",
                self.label,
                reason,
                self.settings.queue_size,
            )
        while (event := self._next()) is not None:
            if not self._deliver(event):
                return  # aborted by close(), which counts the event in hand as unsent
            self._in_flight = None

    def _next(self) -> ZoneEvent | None:
        """The next event, waiting for one; None once closing with the queue empty, or aborted."""
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue or self._abort.is_set():
                return None
            self._in_flight = self._queue.popleft()
            return self._in_flight

    def counts(self) -> OutputCounts:
        """What it has done so far, for /metrics."""
        return OutputCounts(self.label, self.sent, self.dropped, self.failed)

    def _deliver(self, event: ZoneEvent) -> bool:
        """Send one event, retrying while the receiver is down.

        Returns:
            False when close() aborted the wait for the receiver (the event is not delivered); True when
            it was delivered, refused or given up.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                self.delivery.send(event)
            except RejectedError as exc:
                self.failed_attempts += 1
                self.failed += 1
                log.warning("%s: event %s refused, not retried: %s", self.label, event.event_id, exc)
                return True
            except RetryableError as exc:
                self.failed_attempts += 1
                if self._gives_up(event, attempt, exc):
                    return True
                if self._abort.wait(self._delay(attempt, exc)):
                    return False
                continue
            except Exception as exc:  # noqa: BLE001 - a bug or a library's refusal must not end the thread
                self.failed_attempts += 1
                self.failed += 1
                log.warning(
                    "%s: event %s could not be sent, not retried: %s: %s",
                    self.label,
                    event.event_id,
                    type(exc).__name__,
                    exc,
                )
                log.debug("%s: sending %s failed", self.label, event.event_id, exc_info=True)
                return True
            self.sent += 1
            if self._down:
                self._down = False
                log.warning(
                    "%s: receiver back, delivering again (%d failed attempts in all)", self.label, self.failed_attempts
                )
            return True

    def _gives_up(self, event: ZoneEvent, attempt: int, exc: RetryableError) -> bool:
        """Log a failed attempt (a warning once per outage); True when the event is out of attempts."""
        max_attempts = self.settings.retry.max_attempts
        if max_attempts is not None and attempt >= max_attempts:
            self.failed += 1
            log.warning("%s: event %s given up after %d attempts: %s", self.label, event.event_id, attempt, exc)
            return True
        # One line per outage, not per attempt: the line when it is back says how many failed.
        level = logging.DEBUG if self._down else logging.WARNING
        self._down = True
        log.log(level, "%s: delivery failed (%s); retrying with backoff (attempt %d)", self.label, exc, attempt)
        return False

    def _delay(self, attempt: int, exc: RetryableError) -> float:
        """Seconds to wait before the next attempt: the backoff, or the receiver's hint if longer (capped)."""
        delay = self._backoff.delay(attempt, self._rng)
        if exc.retry_after_s is not None:
            delay = max(delay, min(exc.retry_after_s, self._backoff.max_delay_s))
        return delay

    def close(self) -> None:
        """Stop taking events, deliver what is queued for up to drain_s, then stop; never hangs.

        What the receiver did not take by then is counted in `unsent` and logged.
        """
        if self._closed:
            return
        self._closed = True
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(self.settings.drain_s)
        self._abort.set()  # wakes a backoff wait; an attempt in flight ends within its timeout
        self._thread.join(self.settings.timeout_s + JOIN_MARGIN_S)
        if self._thread.is_alive():
            log.warning("%s: delivery thread still busy after the drain time; leaving it behind", self.label)
        self.delivery.close()
        with self._cond:
            self.unsent = len(self._queue) + (self._in_flight is not None)
            burst = self._burst
        if burst:
            log.warning("%s: %d events dropped while the queue was full (%d in all)", self.label, burst, self.dropped)
        if self.unsent:
            log.warning(
                "%s: %d events not delivered within drain_s=%g s (receiver down)",
                self.label,
                self.unsent,
                self.settings.drain_s,
            )
        log.info(
            "%s: %d events sent, %d dropped, %d failed, %d failed attempts",
            self.label,
            self.sent,
            self.dropped,
            self.failed,
            self.failed_attempts,
        )
