"""Reaching Ray: the optional import, a cluster of this machine's own or one by address, the workers' room.

An address that does not answer fails within `cluster.connect_timeout_s`, in one line, before
Ray itself is asked (its own connection retries take minutes).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from urllib.parse import urlsplit

from ..errors import ClusterError, error_reason
from ..sources.redact import redact_url
from .settings import LOCAL, ClusterSettings

RAY_MISSING = "--ray needs Ray: install fastsam-stream with its [ray] extra (pip install 'fastsam-stream[ray]')"
RAY_CLIENT_PORT = 10001
"""Where `ray start --head` serves Ray Client (ray://HOST:10001)."""
GCS_PORT = 6379
"""Where a Ray head serves its cluster address (HOST:6379)."""


def import_ray() -> ModuleType:
    """Ray, or a one-line ClusterError naming the [ray] extra."""
    try:
        import ray
    except ImportError:
        raise ClusterError(RAY_MISSING) from None
    return ray


@dataclass
class Connection:
    """Ray, connected. `started_here`: this run started the cluster (or the client) and shuts it down."""

    ray: ModuleType
    started_here: bool

    def close(self) -> None:
        """Leave the cluster (shutting a local one down) if this run joined it."""
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()


def host_and_port(address: str) -> tuple[str, int] | None:
    """The (host, port) an address names, to try before Ray does; None for `auto`."""
    if address == "auto":
        return None
    if "://" in address:
        parts = urlsplit(address)
        return parts.hostname or "", parts.port or RAY_CLIENT_PORT
    host, _, port = address.rpartition(":")
    if not host:
        return address, GCS_PORT
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ClusterError(f"cluster address {redact_url(address)!r}: the port must be a number") from None


def connect(settings: ClusterSettings) -> Connection:
    """Join the cluster `settings.address` names, or start one on this machine ('local').

    A Ray already initialised in this process (a test's local cluster) is used as it is.

    Raises:
        ClusterError: Ray is missing, or the address does not answer within the timeout.
    """
    ray = import_ray()
    if ray.is_initialized():
        return Connection(ray, started_here=False)
    address = settings.address or LOCAL
    if address == LOCAL:
        # Room for every worker even on a small machine: Ray only counts CPUs, it does not pin them.
        cpus = max(os.cpu_count() or 1, math.ceil(settings.workers * settings.cpus_per_worker))
        ray.init(
            address=LOCAL, num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
        )
        return Connection(ray, started_here=True)
    target = host_and_port(address)
    shown = redact_url(address)
    if target is not None:
        try:
            socket.create_connection(target, timeout=settings.connect_timeout_s).close()
        except OSError as exc:
            raise ClusterError(
                f"cannot reach the Ray cluster at {shown}: {error_reason(exc)} "
                f"(within {settings.connect_timeout_s:g} s; start it with `ray start --head`)"
            ) from None
    _join(ray, address, settings.connect_timeout_s, shown)
    return Connection(ray, started_here=True)


def _join(ray: ModuleType, address: str, timeout_s: float, shown: str) -> None:
    """ray.init(address) within `timeout_s`, quietly.

    Something that takes the connection but is not Ray (or a head that does not answer) keeps Ray
    retrying, a warning line on stderr per try, from its C++ core (no Python logger to quiet).
    Meanwhile stderr goes nowhere: this runs before the pipeline, nothing else writes. When Ray is
    still trying at the timeout, it goes on in its thread until the process ends: file descriptor 2
    then stays muted, and Python's stderr (the error line, the log) moves to a copy of the real one.
    """
    failure: list[BaseException] = []

    def join() -> None:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=join, name="ray.init", daemon=True)
    with _stderr_muted() as muted:
        thread.start()
        thread.join(timeout_s)
        muted.keep = thread.is_alive()
    if thread.is_alive():
        raise ClusterError(f"the Ray cluster at {shown} did not answer within {timeout_s:g} s (is it a Ray head?)")
    if failure:
        exc = failure[0]
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ClusterError(f"cannot join the Ray cluster at {shown}: {first}")


@dataclass
class _Muted:
    keep: bool = False  # leave file descriptor 2 muted on the way out (Python's stderr moves to a copy)


@contextmanager
def _stderr_muted() -> Iterator[_Muted]:
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    muted = _Muted()
    try:
        os.dup2(null, 2)
        yield muted
    finally:
        if muted.keep:
            _python_stderr_to(saved)
        else:
            os.dup2(saved, 2)
            os.close(saved)
        os.close(null)


def _python_stderr_to(fd: int) -> None:
    """Point sys.stderr, and the log handlers writing to it, at `fd` (a copy of the real stderr)."""
    old = sys.stderr
    new = open(fd, "w", buffering=1, encoding=old.encoding, errors=old.errors)  # noqa: SIM115 - lives on
    sys.stderr = new
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is old:
            handler.setStream(new)


def check_room(ray: ModuleType, settings: ClusterSettings) -> None:
    """Refuse at once a cluster that can never place every worker (Ray would wait for ever).

    Raises:
        ClusterError: Fewer CPUs or GPUs in the whole cluster than the workers reserve.
    """
    total = ray.cluster_resources()
    for resource, each in (("CPU", settings.cpus_per_worker), ("GPU", settings.gpus_per_worker)):
        needed = settings.workers * each
        have = float(total.get(resource, 0.0))
        if needed > have + 1e-9:
            raise ClusterError(
                f"the cluster has {have:g} {resource}s, and {settings.workers} workers of {each:g} {resource} "
                f"need {needed:g}: lower --workers or cluster.{resource.lower()}s_per_worker, or add nodes"
            )
