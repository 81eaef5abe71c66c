"""Who may talk to the service, and how: a pure-ASGI guard in front of every route.

`Guard` refuses, before any route runs, with a one-line JSON error and one log line (INFO):

- a `Host` that is not this server's address, on a loopback bind (403): a page on another site
  whose name was re-pointed at 127.0.0.1 (DNS rebinding) would send its own name;
- a request from another site (403): an `Origin` that is neither this server's nor one of
  `serve.cors_origins`, or, without one, `Sec-Fetch-Site: cross-site` other than a navigation;
- a request without the token, when there is one (401; a browser asking for a viewer page is sent
  to /login instead): `Authorization: Bearer TOKEN`, or the cookie POST /login sets, compared in
  constant time. /healthz, /login and the static files are open; /metrics only with
  `serve.metrics_open`;
- a state-changing request whose body is not JSON (415: a page on another site can POST
  text/plain without asking, never application/json); a body without a Content-Length, or a
  chunked one (411); a body over `serve.max_body_kb` (413).

The token never appears in a log line or an answer. Not Starlette's BaseHTTPMiddleware, which
buffers streaming replies: this wraps the ASGI callable and passes streams through untouched.
A body that arrives too slowly or ends early is the server's to answer (service/server.py).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from pydantic import SecretStr
from starlette.datastructures import Headers

from ..config import ServeConfig
from ..errors import ConfigError

log = logging.getLogger(__name__)

SESSION_COOKIE = "fastsam_stream_session"
SESSION_MAX_AGE_S = 30 * 24 * 3600  # a wall display's browser stays logged in for a month
OPEN_PATHS = frozenset({"/healthz", "/login", "/favicon.ico"})
OPEN_PREFIXES = ("/static/",)  # the viewer's own code and style: package data, nothing private
PAGE_PREFIXES = ("/streams/",)  # with "/": pages a browser is sent to /login for, rather than a 401
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),  # no page may frame the viewer and steer its clicks
    (b"referrer-policy", b"no-referrer"),
]


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is this machine only.

    Args:
        host: The host to listen on, e.g. "127.0.0.1", "localhost", "::1", "0.0.0.0".

    Returns:
        True for localhost and loopback addresses (127.0.0.0/8, ::1).
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | SecretStr | None) -> None:
    """Refuse to listen beyond this machine without a token.

    Args:
        host: The interface to listen on.
        token: The token requests must carry, if any.

    Raises:
        ConfigError: `host` is not loopback and there is no token (one line, saying what to do).
    """
    if not is_loopback(host) and not _secret(token):
        raise ConfigError(
            f"listening on {host} lets other machines in, which needs a token: "
            "give --token TOKEN (or set FASTSAM_STREAM_TOKEN), or listen on 127.0.0.1"
        )


def _secret(token: str | SecretStr | None) -> str:
    if isinstance(token, SecretStr):
        return token.get_secret_value()
    return token or ""


class Auth:
    """The token check: `Authorization: Bearer TOKEN`, or the session cookie POST /login sets.

    The cookie holds an HMAC of the token, not the token: changing the token logs every browser
    out, and a cookie read off a disk does not give the token away.

    Args:
        token: The token; None or empty: no check.
    """

    def __init__(self, token: str | SecretStr | None) -> None:
        secret = _secret(token)
        self._token = secret.encode()
        self._session = hmac.new(self._token, b"fastsam-stream viewer session", hashlib.sha256).hexdigest().encode()

    @property
    def required(self) -> bool:
        """Whether requests need the token."""
        return bool(self._token)

    def matches(self, candidate: str) -> bool:
        """Whether `candidate` is the token (constant time)."""
        return self.required and hmac.compare_digest(candidate.encode(), self._token)

    def allows(self, headers: Headers) -> bool:
        """Whether a request with these headers carries the token (Bearer) or the session cookie."""
        if not self.required:
            return True
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self._token):
            return True
        session = _cookies(headers).get(SESSION_COOKIE, "")
        return hmac.compare_digest(session.encode(), self._session)

    def login_cookie(self) -> str:
        """The Set-Cookie value of a successful login."""
        return (
            f"{SESSION_COOKIE}={self._session.decode()}; Path=/; Max-Age={SESSION_MAX_AGE_S}; HttpOnly; SameSite=Strict"
        )

    @staticmethod
    def logout_cookie() -> str:
        """The Set-Cookie value that forgets the session."""
        return f"{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"


def _cookies(headers: Headers) -> dict[str, str]:
    found: dict[str, str] = {}
    for header in headers.getlist("cookie"):
        for part in header.split(";"):
            name, _, value = part.strip().partition("=")
            found.setdefault(name, value)
    return found


class Guard:
    """The ASGI guard in front of the app (see the module docstring).

    Args:
        app: The ASGI app it guards.
        settings: The serve settings: host, metrics_open, cors_origins, max_body_kb.
        auth: The token check.
    """

    def __init__(self, app: Any, settings: ServeConfig, auth: Auth) -> None:
        self.app = app
        self.auth = auth
        self.loopback = is_loopback(settings.host)
        self.bound_names = LOOPBACK_NAMES | {settings.host.strip("[]").lower()}
        self.metrics_open = settings.metrics_open
        self.cors_origins = frozenset(origin.rstrip("/").lower() for origin in settings.cors_origins)
        self.max_body = settings.max_body_kb * 1024

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Refuse the request (see `refusal`), or pass it on with the security headers on its reply."""
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        if refusal is not None:
            status, message, headers = refusal
            log.info("http: %d from %s (%s): %s", status, _peer(scope), _what(scope), message)
            return await _refuse(scope, send, status, message, headers)
        if scope["type"] == "http":
            send = _with_security_headers(send)
        await self.app(scope, receive, send)

    def refusal(self, scope: dict) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        """Why a request is refused: (status, one-line message, extra headers), or None to let it in."""
        headers = Headers(scope=scope)
        host = headers.get("host")
        if host is not None and not self._host_ok(host, scope):
            return 403, f"Host {host[:80]!r} is not this server's address: use the address it listens on", []
        cross_site = self._cross_site(headers, scope)
        if cross_site:
            return 403, cross_site, []
        method = scope.get("method", "GET")
        if method == "OPTIONS" and self.cors_origins and "access-control-request-method" in headers:
            return None  # a CORS preflight from an allowed origin: the CORS middleware answers it
        if not self._open(scope["path"]) and not self.auth.allows(headers):
            return self._unauthorized(scope, headers)
        if scope["type"] == "http":
            return self._body_refusal(method, headers)
        return None

    def _host_ok(self, host: str, scope: dict) -> bool:
        name, port = _split_host(host)
        server = scope.get("server")
        if port is not None and server is not None and server[1] is not None and port != server[1]:
            return False
        if port is None and server is not None and server[1] not in (None, 80):
            return False
        # Beyond loopback there is a token, which a rebound name cannot get: any name is taken.
        return not self.loopback or name in self.bound_names

    def _cross_site(self, headers: Headers, scope: dict) -> str:
        origin = headers.get("origin")
        if origin is not None:
            origin = origin.rstrip("/").lower()
            own = f"{'https' if scope.get('scheme') in ('https', 'wss') else 'http'}://{headers.get('host', '')}"
            if origin != own.lower() and origin not in self.cors_origins:
                return f"requests from other sites are refused (Origin {origin[:80]!r})"
            return ""
        fetch_site, mode = headers.get("sec-fetch-site"), headers.get("sec-fetch-mode")
        if fetch_site == "cross-site" and mode != "navigate":
            return "requests from other sites are refused (Sec-Fetch-Site: cross-site)"
        return ""

    def _open(self, path: str) -> bool:
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return True
        return path == "/metrics" and self.metrics_open

    def _unauthorized(self, scope: dict, headers: Headers) -> tuple[int, str, list[tuple[bytes, bytes]]]:
        path = scope["path"]
        is_page = path == "/" or path.startswith(PAGE_PREFIXES)
        if (
            scope["type"] == "http"
            and scope.get("method") == "GET"
            and is_page
            and "text/html" in headers.get("accept", "")
        ):
            where = "/login?next=" + quote(path, safe="/")
            return 303, "log in first", [(b"location", where.encode())]
        return (
            401,
            "this server needs its token: Authorization: Bearer TOKEN, or log in at /login",
            [(b"www-authenticate", b'Bearer realm="fastsam-stream"')],
        )

    def _body_refusal(self, method: str, headers: Headers) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        length, chunked = headers.get("content-length"), "transfer-encoding" in headers
        has_body = chunked or (length is not None and length.strip() != "0")
        if method != "POST" and not has_body:  # a PUT, PATCH or DELETE from another site is never sent unasked
            return None
        media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            shown = f"not {media_type!r}" if media_type else "none was given"
            return 415, f"send the body as JSON with Content-Type: application/json ({shown})", []
        if chunked or length is None:
            return 411, "send the body with a Content-Length (chunked bodies are not read)", []
        if int(length) > self.max_body:  # h11 has checked it is one number
            return 413, f"a request body is at most {self.max_body} bytes, not {int(length)}", []
        return None


def _split_host(host: str) -> tuple[str, int | None]:
    """("name", port or None) of a Host header; IPv6 without its brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    try:
        return name, int(port) if port else None
    except ValueError:
        return name, -1  # not a port: matches none


def _peer(scope: dict) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"


def _what(scope: dict) -> str:
    method = scope.get("method", "WEBSOCKET") if scope["type"] == "http" else "WEBSOCKET"
    return f"{method} {scope.get('path', '')[:100]}"


def _with_security_headers(send: Any) -> Any:
    async def send_with_headers(message: dict) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
        await send(message)

    return send_with_headers


async def _refuse(scope: dict, send: Any, status: int, message: str, headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Answer a refused request: a one-line JSON error (a WebSocket is closed before it opens: HTTP 403)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": HTTPStatus(status).phrase})
        return
    body = json.dumps({"error": " ".join(message.split())}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
