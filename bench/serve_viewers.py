"""The pipeline's frames/s under `fastsam-stream serve` with no viewer and with three MJPEG viewers, in one run.

    .venv/bin/python bench/serve_viewers.py [--weights PATH] [--source SOURCE] [--viewers 3] [--seconds 20]
        [--rounds 3] [--device cpu] [--imgsz 640]

One `serve` process reads a real clip (vtest.avi, looped for ever through FFmpeg's lavfi `movie`
source) with `--drop-policy block`, so the pipeline runs flat out and its frames/s is its
capacity. The phases alternate, none / viewers / none / viewers ..., each `--seconds` long, so a
drift of the machine (another process, the clock) falls on both alike. In a viewers phase,
`--viewers` clients read `/api/streams/{id}/mjpeg` as fast as it comes, as browsers would. The
frames/s of a phase is the stream's frame count from `/api/streams` at its end minus at its
start, over the time between. It prints each phase, the mean of each kind, and their ratio (the
issue asks for within 10%), and the JPEG encodings the viewers caused (frames they were shown).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
START_S = 300  # only stops a hang: the model loads and the first frames come in seconds
WARMUP_FRAMES = 10  # the first frames are slow (the model warms up): measuring starts after them


def lavfi_loop(path: Path) -> str:
    """The `lavfi:` source that plays `path` in a loop for ever (quoted for FFmpeg's two levels of escaping)."""
    quoted = "'" + str(path).replace("'", "'\\''") + "'"
    return "lavfi:movie=" + re.sub(r"([\\'\[\],;])", r"\\\1", quoted) + ":loop=0"


def start_serve(args: argparse.Namespace, out: Path) -> tuple[subprocess.Popen, str]:
    """Start `fastsam-stream serve` on a free port; returns the process and its URL (from its first line)."""
    command = [
        str(Path(sys.executable).parent / "fastsam-stream"),
        "serve",
        args.source,
        "--port",
        "0",
        "--out",
        str(out),
        "--weights",
        args.weights,
        "--device",
        args.device,
        "--imgsz",
        str(args.imgsz),
        "--drop-policy",
        "block",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + START_S
    for line in process.stderr:
        found = re.search(r"serving on (http://\S+)", line)
        if found:
            threading.Thread(target=lambda: process.stderr.read(), daemon=True).start()  # keep the pipe drained
            return process, found.group(1)
        if time.monotonic() > deadline:
            break
    process.kill()
    raise SystemExit(f"serve did not start: {process.stderr.read() if process.poll() is not None else 'timed out'}")


def get_json(url: str, path: str) -> object:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", path, headers={"Accept": "application/json"})
        response = connection.getresponse()
        return json.loads(response.read())
    finally:
        connection.close()


def frames_of(url: str, stream: str | None) -> tuple[str, int]:
    """(stream id, frames so far) of the given stream, or of the only one."""
    streams = get_json(url, "/api/streams")
    for entry in streams:
        if stream is None or entry["id"] == stream:
            return entry["id"], int(entry["frames"])
    raise SystemExit(f"no stream {stream!r} in {streams}")


class MjpegViewer(threading.Thread):
    """A client reading a stream's MJPEG as fast as it comes, counting the frames it gets, until stopped."""

    def __init__(self, url: str, stream: str) -> None:
        super().__init__(daemon=True)
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.path = f"/api/streams/{stream}/mjpeg"
        self.frames = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        marker = b"Content-Type: image/jpeg"  # once per part; the body may come chunked
        tail = b""
        try:
            self.connection.request("GET", self.path)
            response = self.connection.getresponse()
            while not self.stopping.is_set():
                data = response.read1(1 << 16)
                if not data:
                    return
                window = tail + data
                self.frames += window.count(marker)  # tail is too short to hold a whole marker itself
                tail = window[-(len(marker) - 1) :]
        except (OSError, http.client.HTTPException):
            if not self.stopping.is_set():
                raise

    def stop(self) -> None:
        self.stopping.set()
        if self.connection.sock is not None:
            self.connection.sock.close()
        self.join(timeout=10)


def phase(url: str, stream: str, viewers: int, seconds: float) -> tuple[float, int]:
    """Frames/s of one phase with `viewers` MJPEG clients, and the frames they were shown between them."""
    clients = [MjpegViewer(url, stream) for _ in range(viewers)]
    for client in clients:
        client.start()
    _, before = frames_of(url, stream)
    started = time.monotonic()
    time.sleep(seconds)  # the measuring window itself, not a wait for something to happen
    _, after = frames_of(url, stream)
    elapsed = time.monotonic() - started
    for client in clients:
        client.stop()
    return (after - before) / elapsed, sum(c.frames for c in clients)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(SHARED / "models/yolov8n-seg-int8dq.pt"))
    parser.add_argument("--source", default=lavfi_loop(SHARED / "media/videos/vtest.avi"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--viewers", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=3, help="none/viewers pairs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        process, url = start_serve(args, Path(out))
        try:
            deadline = time.monotonic() + START_S
            stream, frames = None, 0
            while frames < WARMUP_FRAMES:  # polled: the model loads, then frames come
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("serve made no frames")
                try:
                    stream, frames = frames_of(url, None)
                except (OSError, SystemExit, ValueError):
                    pass
                time.sleep(0.2)
            print(
                f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, device {args.device}, "
                f"imgsz {args.imgsz}, stream {stream}, {args.seconds:g} s per phase"
            )
            results: dict[int, list[float]] = {0: [], args.viewers: []}
            for round_ in range(args.rounds):
                for viewers in (0, args.viewers):
                    fps, shown = phase(url, stream, viewers, args.seconds)
                    results[viewers].append(fps)
                    print(f"round {round_ + 1}, {viewers} viewers: {fps:.2f} frames/s, {shown} frames shown to viewers")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
    none, some = statistics.mean(results[0]), statistics.mean(results[args.viewers])
    print(
        f"mean: no viewer {none:.2f} frames/s, {args.viewers} viewers {some:.2f} frames/s, "
        f"ratio {some / none:.3f} ({(some / none - 1) * 100:+.1f}%)"
    )


if __name__ == "__main__":
    main()
