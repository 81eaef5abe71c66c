"""Why an http(s) file opens and then fails its first read: a server that cannot seek.

An MP4 written by a camera keeps its index (`moov`) after its media data. FFmpeg reads the index
first and then needs to go back to the media data, which over HTTP is a range request. A server
that ignores `Range` (Python's `http.server`, some embedded and proxy servers) sends the whole
file again instead, and FFmpeg reports only "Input/output error". Asking the server for the first
bytes with a `Range` header settles both facts: a `200` with the whole file means no range
requests, and those bytes show where the index is.
"""

from __future__ import annotations

import base64
import http.client
import ssl
from urllib.parse import unquote, urlsplit

from .mp4 import head_layout

PROBE_BYTES = 4096
REMUX = "ffmpeg -i IN.mp4 -c copy -movflags +faststart OUT.mp4"


def no_range_reason(url: str, timeout: float) -> str | None:
    """Why the http(s) file at `url` cannot be read by FFmpeg, when that is a server that cannot seek.

    One GET with `Range: bytes=0-4095`; only its first bytes are read.

    Args:
        url: The http(s) URL (credentials in it are sent as basic authentication, as FFmpeg does).
        timeout: Seconds for the connection and each read.

    Returns:
        A clause saying what happened and what to do, or None when the server answers range
        requests, the file keeps its index first, or the server cannot be asked (nothing is claimed).
    """
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:  # a URL FFmpeg took and Python's parser does not: claim nothing
        return None
    if scheme not in ("http", "https") or not host:
        return None
    headers = {"Range": f"bytes=0-{PROBE_BYTES - 1}", "User-Agent": "fastsam-stream", "Accept-Encoding": "identity"}
    if parts.username is not None:
        userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode("ascii")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if scheme == "https":
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
        if response.status != 200:  # 206: ranges work, so the failure is something else; others: not ours to judge
            return None
        head = response.read(PROBE_BYTES)  # the whole file is on its way: take its start, then hang up
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        connection.close()
    layout = head_layout(head)
    if layout is None or not layout.media_before_index:
        return None
    return (
        "the server does not answer HTTP range requests (it sent the whole file when asked for its first bytes), "
        "and this MP4 keeps its index (moov) after its media data, which a reader can only reach by seeking; "
        "download the file and give its path, serve it from a server that supports range requests, or remux it "
        f"with the index first ({REMUX})"
    )
