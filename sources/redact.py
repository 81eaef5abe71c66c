"""Keep credentials out of logs, errors and outputs: `rtsp://user:pass@host/x` → `rtsp://user:***@host/x`.

Deliberately not `urllib.parse`: FFmpeg accepts URLs that Python's parser rejects or reads
differently (a `[` or `#` in a password), and a redactor that gives up on those would print
them whole. So the rules are textual and err towards masking too much:
- everything between the first `user:` and the last `@` is the password;
- the value of any secret-looking `key=value` pair, in the query or the path (cameras such as
  Dahua's take `/user=admin&password=...` in the path), is masked.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"
_SECRET_KEYS = r"password|passwd|pass|pwd|token|access_token|auth|key|apikey|api_key|secret|signature|sig"
_SCHEME = re.compile(r"^[A-Za-z][\w+.-]*:/+")
_USERINFO = re.compile(r"^(?P<user>[^:/@\s]*):(?P<password>.*)@(?P<tail>[^@]*)$", re.S)
_SECRET_PAIR = re.compile(rf"(?i)(?P<key>(?<![\w])(?:{_SECRET_KEYS}))=(?P<value>[^&/;?#\s]*)")


def _userinfo(url: str) -> tuple[str, re.Match | None]:
    """(scheme and slashes, the user:password@ match of the rest, if it has a password)."""
    scheme = _SCHEME.match(url)
    head = scheme.group(0) if scheme else ""
    match = _USERINFO.match(url[len(head) :])
    return head, match if match and match.group("password") else None


def redact_url(url: str) -> str:
    """The URL (or anything that looks like one) with its password and secret values replaced by ***."""
    head, match = _userinfo(url)
    if match:
        url = f"{head}{match.group('user')}:{MASK}@{match.group('tail')}"
    return _SECRET_PAIR.sub(lambda m: f"{m.group('key')}={MASK}" if m.group("value") else m.group(0), url)


def secrets_of(url: str) -> list[str]:
    """The secret strings in a URL (raw and percent-decoded), longest first, for scrubbing free text."""
    found = []
    _, match = _userinfo(url)
    if match:
        found.append(match.group("password"))
    found += [m.group("value") for m in _SECRET_PAIR.finditer(url) if m.group("value")]
    found += [unquote(s) for s in found]
    return sorted({s for s in found if s}, key=len, reverse=True)


class Redactor:
    """Scrubs one source's URL and secrets from any text (exception messages from FFmpeg included)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.display = redact_url(url)
        self._secrets = secrets_of(url)

    def __call__(self, text: str) -> str:
        """`text` with the URL shown redacted and every secret of it masked, safe to print or log."""
        text = text.replace(self.url, self.display)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text
