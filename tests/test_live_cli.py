"""The command line against live sources that misbehave at the start.

A server that accepts the connection and never answers. Loopback only; every wait is bounded, and
no bound is on this machine's speed: the waits below only stop a hang.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading

import pytest

HANG_S = 60  # starting the command line and reaching the server takes seconds on any machine
NEVER_S = 3600  # an open timeout that no run of these tests reaches


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections and never sends a byte."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.connected = threading.Event()
        self._clients: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            while True:
                client, _ = self._socket.accept()
                self._clients.append(client)  # held open, never answered
                self.connected.set()
        except OSError:
            return  # closed

    def close(self) -> None:
        self._socket.close()
        for client in self._clients:
            client.close()


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


def test_ctrl_c_while_the_first_connection_hangs_exits_130_at_once(cli, silent_server, tmp_path):
    url = f"rtsp://admin:hunter2@127.0.0.1:{silent_server.port}/x"
    config = _config(tmp_path, open_timeout_s=NEVER_S)
    proc = subprocess.Popen(
        [*cli, "run", url, "--out", str(tmp_path), "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert silent_server.connected.wait(HANG_S), "the run never connected to the silent server"
    proc.send_signal(signal.SIGINT)
    # The open would wait an hour: ending at all (the bound only stops a hang) proves the interrupt was taken.
    _, stderr = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 130, stderr
    assert stderr == "fastsam-stream: interrupted\n"


def test_a_server_that_never_answers_is_a_timeout_in_one_line(cli, silent_server, tmp_path):
    done = subprocess.run(
        [
            *cli,
            "run",
            f"rtsp://admin:hunter2@127.0.0.1:{silent_server.port}/x",
            "--out",
            str(tmp_path),
            "--config",
            str(_config(tmp_path, open_timeout_s=1.5)),
        ],
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"fastsam-stream: error: cannot open rtsp://admin:***@127.0.0.1:{silent_server.port}/x: no answer within 1.5 s"
    )
    assert done.stderr.count("\n") == 1 and "hunter2" not in done.stderr


def _config(tmp_path, **source):
    path = tmp_path / "c.yaml"
    path.write_text("source:\n" + "".join(f"  {k}: {v}\n" for k, v in source.items()))
    return path
