"""A real RTSP server on 127.0.0.1 for tests: start it, kill it mid-stream, restart it.

The server is ``tests/rtsp_server.py`` run by Debian's ``/usr/bin/python3`` (GStreamer's RTSP
server through PyGObject, which the project's virtual environment does not have). Usage::

    from rtsp import RtspServer, rtsp_available

    ok, why = rtsp_available()
    if not ok:
        pytest.skip(why)
    with RtspServer(clip, width=320, height=240) as server:
        container = av.open(server.url, options={"rtsp_transport": "tcp"}, timeout=(5, 5))
        ...
        server.kill()                  # a crashed camera: the TCP connection drops
        server.restart(width=256, height=192)   # same port, new resolution

Importable from tests as ``rtsp`` (pytest puts ``tests/`` on ``sys.path``: it has no
``__init__.py``).
"""

from __future__ import annotations

import functools
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
# Bounds on waits that end in well under a second (the server starting, a killed server's port
# coming free): they only stop a hang, so they are generous for a slow, busy machine.
READY_TIMEOUT_S = 60.0
PORT_FREE_S = 30.0
SERVER_SCRIPT = Path(__file__).resolve().with_name("rtsp_server.py")
HOST = "127.0.0.1"

_PROBE = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("x264enc", "rtph264pay", "decodebin", "videoconvert", "videoscale", "qtdemux", "avdec_h264")
           if Gst.ElementFactory.find(e) is None]
print(" ".join(missing))
"""


@functools.cache
def rtsp_available() -> tuple[bool, str]:
    """(True, "") when this machine can run the test RTSP server, else (False, why)."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return False, f"{SYSTEM_PYTHON} is missing (the RTSP test server needs Debian's python3-gi)"
    try:
        r = subprocess.run([SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"cannot probe GStreamer with {SYSTEM_PYTHON}: {e}"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return False, (
            f"{SYSTEM_PYTHON} cannot load GStreamer's RTSP server ({last}); "
            "install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp"
        )
    missing = r.stdout.split()
    if missing:
        return False, (
            f"GStreamer elements missing: {', '.join(missing)}; "
            "install gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-libav"
        )
    return True, ""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class RtspServerError(RuntimeError):
    pass


class RtspServer:
    """``tests/rtsp_server.py`` as a subprocess serving ``clip`` at ``rtsp://127.0.0.1:PORT/stream``.

    ``port=None`` lets the first ``start()`` pick a free port; ``restart()`` reuses it.
    ``width``/``height`` scale the stream (both or neither; even numbers); ``None`` keeps the
    clip's size. ``loop=True`` repeats the clip forever with continuous timestamps; with
    ``loop=False`` the stream ends with the clip. Each client gets its own pipeline (the clip
    from its first frame) unless ``shared=True``.
    """

    def __init__(
        self,
        clip: Path | str,
        port: int | None = None,
        width: int | None = None,
        height: int | None = None,
        loop: bool = True,
        *,
        path: str = "/stream",
        shared: bool = False,
        key_int: int = 10,
        ready_timeout: float = READY_TIMEOUT_S,
    ):
        if (width is None) != (height is None):
            raise ValueError("RtspServer: give width and height together, or neither")
        self.clip = Path(clip)
        self.port = port
        self.width = width
        self.height = height
        self.loop = loop
        self.path = path if path.startswith("/") else "/" + path
        self.shared = shared
        self.key_int = key_int
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self._stderr = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RtspServerError("the server has no port yet: start() it first")
        return f"rtsp://{HOST}:{self.port}{self.path}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _command(self) -> list[str]:
        cmd = [
            SYSTEM_PYTHON,
            str(SERVER_SCRIPT),
            "--file",
            str(self.clip),
            "--port",
            str(self.port or 0),
            "--path",
            self.path,
            "--key-int",
            str(self.key_int),
        ]
        if self.width is not None:
            cmd += ["--width", str(self.width), "--height", str(self.height)]
        if self.loop:
            cmd.append("--loop")
        if self.shared:
            cmd.append("--shared")
        return cmd

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()

    def start(self) -> RtspServer:
        """Spawn the server and wait (at most ``ready_timeout`` s) until it listens."""
        if self.running:
            raise RtspServerError(f"already running at {self.url}")
        ok, why = rtsp_available()
        if not ok:
            raise RtspServerError(why)
        if self._stderr is not None:
            self._stderr.close()
        # a file, not a pipe: nobody drains it while the test runs, and it survives a kill
        self._stderr = tempfile.TemporaryFile()
        env = dict(os.environ)
        for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):  # keep the venv out of Debian's python
            env.pop(var, None)
        self.proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        line = self._read_ready_line()
        if not line or not line.startswith("READY "):
            try:  # None: no line in time; "" (EOF) or another line: the server is on its way out
                exited = self.proc.wait(1.0 if line is None else 5.0)
            except subprocess.TimeoutExpired:
                exited = None
            self._reap()
            what = (
                f"exited with status {exited} before it was ready"
                if exited is not None
                else f"was not ready within {self.ready_timeout:g} s (killed)"
            )
            raise RtspServerError(
                f"the RTSP test server {what}; stdout {line!r}; command: {' '.join(self._command())}\n"
                f"stderr:\n{self._stderr_text() or '(empty)'}"
            )
        url = line.split(None, 1)[1]  # READY rtsp://127.0.0.1:PORT/PATH
        self.port = int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        return self

    def _read_ready_line(self) -> str | None:
        """The server's first line of stdout ("" at EOF); None if none came within ``ready_timeout``."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + self.ready_timeout
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
        return data.split(b"\n", 1)[0].decode(errors="replace").strip()

    def _reap(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def kill(self) -> None:
        """SIGKILL: the camera dies mid-stream, connections drop without an RTSP TEARDOWN or RTCP BYE."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self._reap()

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM and wait for a clean exit (SIGKILL after ``timeout`` s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._reap()

    def restart(self, width: int | None = None, height: int | None = None, *, kill: bool = False) -> RtspServer:
        """Stop (or ``kill``) and start again on the same port, at ``width``x``height`` if given."""
        if kill:
            self.kill()
        else:
            self.stop()
        if (width is None) != (height is None):
            raise ValueError("RtspServer.restart: give width and height together, or neither")
        if width is not None:
            self.width, self.height = width, height
        deadline = time.monotonic() + PORT_FREE_S
        while True:
            try:
                return self.start()
            except RtspServerError as e:  # the port still taken: retry until it is free, nothing else
                if "cannot listen" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        self.stop()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    @property
    def stderr(self) -> str:
        """What the server printed to stderr so far (this run)."""
        return self._stderr_text()

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._reap()
        except Exception:  # noqa: BLE001 - a finalizer, maybe at interpreter exit: best effort, it must not raise
            pass


__all__ = ["RtspServer", "RtspServerError", "free_port", "rtsp_available", "SYSTEM_PYTHON"]

if __name__ == "__main__":  # python tests/rtsp.py CLIP: serve until Ctrl-C
    with RtspServer(sys.argv[1], port=int(sys.argv[2]) if len(sys.argv) > 2 else None) as srv:
        print(srv.url, flush=True)
        try:
            srv.proc.wait()
        except KeyboardInterrupt:
            pass
