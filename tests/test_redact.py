"""Credentials never reach logs, errors or outputs.

URL redaction, secret scrubbing of free text, and the error a user sees when a stream with a
password in its URL cannot be reached.
"""

from __future__ import annotations

import socket
import traceback

import pytest

from fastsam_stream.errors import SourceConnectionError
from fastsam_stream.sources import StreamSettings, open_source
from fastsam_stream.sources.redact import MASK, Redactor, redact_url, secrets_of

HIKVISION = "rtsp://admin:s3cr3t@10.0.0.5:554/Streaming/101"


def test_the_password_is_masked_and_the_user_kept():
    assert redact_url(HIKVISION) == "rtsp://admin:***@10.0.0.5:554/Streaming/101"
    assert secrets_of(HIKVISION) == ["s3cr3t"]


def test_a_percent_encoded_password_is_scrubbed_in_both_forms():
    url = "rtsp://viewer:p%40ss@cam.local/live"
    assert redact_url(url) == "rtsp://viewer:***@cam.local/live"
    assert secrets_of(url) == ["p%40ss", "p@ss"]  # longest first, so the raw form goes before its decoded part
    redact = Redactor(url)
    text = "auth failed for viewer with p@ss (sent as p%40ss)"
    scrubbed = redact(text)
    assert "p@ss" not in scrubbed and "p%40ss" not in scrubbed and "40ss" not in scrubbed
    assert scrubbed == f"auth failed for viewer with {MASK} (sent as {MASK})"


def test_a_password_holding_an_unencoded_at_sign_is_masked_whole():
    url = "rtsp://admin:p@ss@10.0.0.5/x"
    assert redact_url(url) == "rtsp://admin:***@10.0.0.5/x"
    assert "p@ss" in secrets_of(url)


@pytest.mark.parametrize(
    "url",
    [
        "rtsp://10.0.0.5:554/Streaming/101",
        "rtsp://admin@10.0.0.5/x",  # a user name alone is not a secret
        "http://cam.local/live.m3u8?x=1&quality=hd",
        "/videos/clip.mp4",
    ],
)
def test_a_url_without_credentials_is_unchanged(url):
    assert redact_url(url) == url
    assert secrets_of(url) == []
    assert Redactor(url)(f"cannot open {url}") == f"cannot open {url}"


def test_secret_query_values_are_masked_and_others_kept():
    url = "https://cam.example.com/live.m3u8?token=abc123&x=1"
    assert redact_url(url) == "https://cam.example.com/live.m3u8?token=***&x=1"
    assert secrets_of(url) == ["abc123"]
    both = "rtsp://u:pw9@h/x?access_token=tok456&channel=2&API_KEY=k789"
    redacted = redact_url(both)
    assert all(s not in redacted for s in ("pw9", "tok456", "k789"))
    assert "channel=2" in redacted and "u:***@h" in redacted


def test_a_redactor_scrubs_an_ffmpeg_error_holding_the_full_url():
    redact = Redactor(HIKVISION)
    ffmpeg = (
        f"[rtsp @ 0x5581c0a3e2c0] method DESCRIBE failed: 401 Unauthorized\n"
        f"{HIKVISION}: Server returned 401 Unauthorized (authorization failed)"
    )
    scrubbed = redact(ffmpeg)
    assert "s3cr3t" not in scrubbed
    assert "rtsp://admin:***@10.0.0.5:554/Streaming/101: Server returned 401" in scrubbed
    assert "method DESCRIBE failed: 401 Unauthorized" in scrubbed
    assert redact.display == "rtsp://admin:***@10.0.0.5:554/Streaming/101"


def _closed_port() -> int:
    """A port nothing listens on: bound to learn a free number, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_stream_fails_with_a_redacted_connection_error():
    port = _closed_port()
    url = f"rtsp://user:hunter2@127.0.0.1:{port}/x"
    with pytest.raises(SourceConnectionError) as caught:
        open_source(url, stream=StreamSettings(open_timeout_s=2, read_timeout_s=2))
    message = str(caught.value)
    assert "hunter2" not in message and "user:hunter2@" not in message
    assert "127.0.0.1" in message and "user:***@" in message
    # What a log with the traceback would show: the PyAV error (it holds the raw URL) is not chained in.
    shown = "".join(traceback.format_exception(caught.type, caught.value, caught.tb))
    assert "hunter2" not in shown
