"""Sending one control command to a running ControlServer, as a client would: JSON, with its content type.

Importable from tests as ``commands_http`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

HANG_S = 300  # only stops a hang


def post_command(url: str, command: dict) -> tuple[int, dict]:
    """POST `command` to `url` + /commands; returns the status and the JSON answer."""
    request = urllib.request.Request(
        url + "/commands",
        data=json.dumps(command).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=HANG_S) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
