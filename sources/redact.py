"""Keep credentials out of logs, errors and outputs: `rtsp://user:pass@host/x` → `rtsp://user:***@host/x`."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

_SECRET_PARAMS = {"password", "passwd", "pass", "pwd", "token", "access_token", "auth", "key", "apikey", "api_key",
                  "secret", "signature", "sig"}
MASK = "***"


def redact_url(url: str) -> str:
    """The URL with its password and secret-looking query values replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        name = user.split(":", 1)[0]
        netloc = f"{name}:{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
            query = urlencode([(k, MASK if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def secrets_of(url: str) -> list[str]:
    """The secret strings in a URL (raw and percent-decoded), longest first, for scrubbing free text."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = []
    if parts.password:
        found += [parts.netloc.rpartition("@")[0].split(":", 1)[-1], parts.password]
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() in _SECRET_PARAMS and v]
    found += [unquote(s) for s in found]
    return sorted({s for s in found if s}, key=len, reverse=True)


class Redactor:
    """Scrubs one source's URL and secrets from any text (exception messages from FFmpeg included)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.display = redact_url(url)
        self._secrets = secrets_of(url)

    def __call__(self, text: str) -> str:
        text = text.replace(self.url, self.display)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text
