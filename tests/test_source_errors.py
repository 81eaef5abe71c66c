"""Sources that cannot be read say what happened and what to do, in one line (issue #12).

Real bad inputs, built here from ../shared: an MP4 cut off before its index (carphone_pristine.mp4
keeps its `moov` box at the end, as cameras write it), the same clip cut inside its index, a
faststart and a fragmented copy cut in their media data (those are read as far as they go, with
a warning), a FIFO, a socket, a device that is not a camera, and a web server on 127.0.0.1 that
ignores HTTP range requests next to one that answers them. Through the Python API and, where it
costs no model run, through the `fastsam-stream` command: exit status, one stderr line, no
traceback, no password.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import stat
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest

from fastsam_stream import Frame
from fastsam_stream.errors import SourceConnectionError, SourceError
from fastsam_stream.sources import (
    FileSource,
    ReconnectPolicy,
    SourceState,
    StreamSettings,
    StreamSource,
    open_source,
)
from fastsam_stream.sources.http_ranges import no_range_reason
from fastsam_stream.sources.mp4 import file_layout

CLIP = "carphone_pristine.mp4"  # 176×144, 120 frames, index (moov) after the media data
CLIP_FRAMES = 120
HANG_S = 120  # only stops a hang: every step here takes seconds at most


def _one_line(message: str) -> str:
    assert "\n" not in message and "Traceback" not in message, message
    return message


def _cli(cli, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*cli, *args], capture_output=True, text=True, timeout=300)


def _single_error_line(done: subprocess.CompletedProcess) -> str:
    """The one line a failed run prints on stderr (nothing else there: no traceback, no log lines)."""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("fastsam-stream: error: "), done.stderr
    return lines[0]


def _remux(src: Path, dst: Path, movflags: str) -> Path:
    """The same packets in a new MP4 written with `movflags` (faststart: index first; frag_*: fragmented)."""
    with av.open(str(src)) as source, av.open(str(dst), "w", options={"movflags": movflags}) as out:
        in_stream = source.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        for packet in source.demux(in_stream):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            packet.stream = out_stream
            out.mux(packet)
    return dst


def _decode_all(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def clip(videos, tmp_path_factory) -> Path:
    """A writable copy of the clip (the shared one is never touched)."""
    copy = tmp_path_factory.mktemp("clip") / CLIP
    shutil.copyfile(videos / CLIP, copy)
    copy.chmod(0o644)
    return copy


def _cut(src: Path, dst: Path, size: int) -> Path:
    dst.write_bytes(src.read_bytes()[:size])
    return dst


@pytest.fixture(scope="module")
def cut_before_index(clip, tmp_path_factory) -> Path:
    """The clip cut off halfway through its media data: no index was ever written."""
    layout = file_layout(clip)
    kinds = [box.kind for box in layout.boxes]
    assert kinds.index("mdat") < kinds.index("moov"), kinds  # the premise: the index comes last
    mdat = layout.first("mdat")
    return _cut(clip, tmp_path_factory.mktemp("cut") / "cut_before_index.mp4", mdat.start + mdat.size // 2)


# --- an MP4 cut off before its index ------------------------------------------------------------


def test_an_mp4_cut_off_before_its_index_says_so_and_what_to_do(cut_before_index):
    with pytest.raises(SourceError) as raised:
        open_source(cut_before_index)
    message = _one_line(str(raised.value))
    assert message.startswith(f"cannot read {cut_before_index} as a video: it has no index (MP4 'moov' box)")
    assert "the file is cut off" in message and "'mdat' box" in message
    assert "get a complete copy" in message and "untrunc" in message
    assert "Invalid data found" not in message  # FFmpeg's words say nothing to a user here


def test_an_mp4_cut_inside_its_index_says_the_index_is_cut(clip, tmp_path):
    moov = file_layout(clip).first("moov")
    cut = _cut(clip, tmp_path / "cut_in_index.mp4", moov.start + moov.size // 2)
    with pytest.raises(SourceError) as raised:
        FileSource(cut)
    message = _one_line(str(raised.value))
    assert message.startswith(f"cannot read {cut} as a video: its index (MP4 'moov' box) is cut off")
    assert f"it ends {moov.size // 2} bytes into its {moov.size}-byte 'moov' box" in message
    assert message.endswith("get a complete copy")


def test_a_faststart_mp4_cut_in_its_media_is_read_as_far_as_it_goes_with_a_warning(clip, tmp_path, caplog):
    whole = _remux(clip, tmp_path / "faststart.mp4", "faststart")
    kinds = [box.kind for box in file_layout(whole).boxes]
    assert kinds.index("moov") < kinds.index("mdat"), kinds
    cut = _cut(whole, tmp_path / "faststart_cut.mp4", whole.stat().st_size * 2 // 3)
    source = open_source(cut)
    assert source.frame_count == CLIP_FRAMES  # the index still announces every frame
    with caplog.at_level(logging.WARNING, logger="fastsam_stream.sources.file"):
        frames = list(source.frames())
    assert 0 < len(frames) < CLIP_FRAMES
    expected = _decode_all(clip)
    assert all(np.array_equal(f.image, expected[f.index]) for f in frames)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0] == (
        f"{cut}: decoded {len(frames)} of the {CLIP_FRAMES} frames its container announces "
        f"(the file is cut off: {file_layout(cut).cut_note()})"
    )


def test_a_fragmented_mp4_cut_off_plays_up_to_the_cut_with_a_warning(clip, tmp_path, caplog):
    """A fragmented recording (an index per fragment) needs no index at the end: a cut one still plays."""
    whole = _remux(clip, tmp_path / "fragmented.mp4", "frag_every_frame+empty_moov+default_base_moof")
    assert "moof" in {box.kind for box in file_layout(whole).boxes}
    cut = _cut(whole, tmp_path / "fragmented_cut.mp4", whole.stat().st_size // 2)
    source = open_source(cut)
    with caplog.at_level(logging.WARNING, logger="fastsam_stream.sources.file"):
        frames = list(source.frames())
    assert 0 < len(frames) < CLIP_FRAMES
    expected = _decode_all(clip)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert all(np.array_equal(f.image, expected[f.index]) for f in frames)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{cut}: decoded {len(frames)} frames, then the file ends: it is cut off ({_cut_note(cut)})"]


def _cut_note(path: Path) -> str:
    note = file_layout(path).cut_note()
    assert note and re.fullmatch(r"it ends \d+ bytes into its \d+-byte '\w{4}' box", note), note
    return note


def test_the_command_stops_on_an_mp4_without_index_in_one_line(cli, weights, cut_before_index, tmp_path):
    done = _cli(cli, "run", str(cut_before_index), "--weights", str(weights), "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    line = _single_error_line(done)
    assert line.startswith(f"fastsam-stream: error: cannot read {cut_before_index} as a video: it has no index")
    assert not (tmp_path / "out").exists()  # checked before anything was written (or the model loaded)


# --- paths that are not regular files -------------------------------------------------------------

GIVE = "give a video file, an image folder, a stream URL or a camera"


def test_a_fifo_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "camera.mp4"
    os.mkfifo(fifo)
    expected = f"{fifo} is not a regular file (a FIFO): {GIVE}"
    for opening in (open_source, FileSource):  # never opened: a FIFO with no writer would block
        with pytest.raises(SourceError) as raised:
            opening(fifo)
        assert _one_line(str(raised.value)) == expected


def test_a_socket_and_a_device_that_is_not_a_camera_are_named_for_what_they_are(tmp_path):
    path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        with pytest.raises(SourceError) as raised:
            open_source(path)
        assert str(raised.value) == f"{path} is not a regular file (a socket): {GIVE}"
    finally:
        server.close()
    with pytest.raises(SourceError) as raised:
        open_source("/dev/null")
    assert str(raised.value) == f"/dev/null is not a regular file (a character device, not a V4L2 camera): {GIVE}"


def test_a_v4l2_device_under_another_name_is_opened_as_a_camera(tmp_path):
    """A stable camera name (/dev/v4l/by-id/... links to /dev/videoN) is a camera, not "not a regular file".

    A video4linux device node (major 81) with no driver behind it: the camera path tries it and fails.
    """
    node, link = tmp_path / "video250", tmp_path / "usb-Acme_Cam-video-index0"
    try:
        os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(81, 250))
    except OSError as exc:
        pytest.skip(f"cannot make a device node here: {exc.strerror}")
    link.symlink_to(node)
    with pytest.raises(SourceConnectionError) as raised:
        open_source(link, stream=_settings())
    assert str(raised.value).startswith(f"cannot open v4l2:{link}: ")


def test_a_broken_link_and_a_missing_path(tmp_path):
    link = tmp_path / "clip.mp4"
    link.symlink_to(tmp_path / "gone.mp4")
    with pytest.raises(SourceError) as raised:
        open_source(link)
    assert str(raised.value) == f"{link} is a broken symbolic link (to {tmp_path / 'gone.mp4'}): it points at nothing"
    with pytest.raises(SourceError, match=re.escape(f"no such file or folder: {tmp_path / 'missing.mp4'}")):
        open_source(tmp_path / "missing.mp4")


def test_the_command_refuses_a_fifo_in_one_line(cli, weights, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    done = _cli(cli, "run", str(fifo), "--weights", str(weights), "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    assert _single_error_line(done) == f"fastsam-stream: error: {fifo} is not a regular file (a FIFO): {GIVE}"


# --- a web server that cannot seek ----------------------------------------------------------------


class _FileServer:
    """One file over HTTP on 127.0.0.1, answering Range requests (206) or ignoring them (200, the whole file).

    `requests` lists (User-Agent, Range header) of every GET, so a test can tell FFmpeg's from the probe's.
    """

    def __init__(self, data: bytes, ranges: bool) -> None:
        requests: list[tuple[str, str | None]] = []
        self.requests = requests

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args) -> None:  # noqa: A002 - the stdlib's signature
                pass

            def do_GET(self) -> None:
                wanted = self.headers.get("Range")
                requests.append((self.headers.get("User-Agent", ""), wanted))
                start, end = 0, len(data) - 1
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted or "")
                if ranges and match:
                    start = int(match.group(1))
                    end = min(int(match.group(2)), end) if match.group(2) else end
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                else:
                    self.send_response(200)
                if ranges:
                    self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                try:
                    self.wfile.write(data[start : end + 1])
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the reader hung up: FFmpeg seeking, or the probe having what it wanted

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self._server.server_address[1]}/{CLIP}"

    def probes(self) -> list[str | None]:
        return [wanted for agent, wanted in self.requests if agent == "fastsam-stream"]

    def __enter__(self) -> _FileServer:
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _settings(max_attempts: int | None = None, live: bool | None = None) -> StreamSettings:
    return StreamSettings(
        open_timeout_s=5,
        read_timeout_s=5,
        live=live,
        reconnect=ReconnectPolicy(initial_delay_s=0.05, jitter=0, max_attempts=max_attempts),
    )


NO_RANGES = "the server does not answer HTTP range requests"
TO_DO = "download the file and give its path, serve it from a server that supports range requests, or remux it"


@pytest.mark.parametrize("userinfo", ["", "user:secret"])
def test_an_http_mp4_with_its_index_last_on_a_server_without_ranges_says_what_to_do(clip, userinfo):
    with _FileServer(clip.read_bytes(), ranges=False) as server:
        url = server.url(userinfo)
        source = open_source(url, stream=_settings())
        assert isinstance(source, StreamSource) and not source.is_live  # a recording: its failure is an error
        with pytest.raises(SourceError) as raised:
            list(source.frames())
        assert server.probes() == ["bytes=0-4095"]  # asked once, for the first bytes only
    message = _one_line(str(raised.value))
    shown = url.replace("user:secret@", "user:***@")
    assert message.startswith(f"reading {shown} failed at frame 0: ")
    assert NO_RANGES in message and "keeps its index (moov) after its media data" in message
    assert TO_DO in message and "-movflags +faststart" in message
    assert "secret" not in message


def test_live_over_a_server_without_ranges_gives_up_with_the_same_reason_asking_once(clip):
    """`source.live: true` does not help (each connection fails the same way); the reason says why, asked once."""
    with _FileServer(clip.read_bytes(), ranges=False) as server:
        source = open_source(server.url(), stream=_settings(max_attempts=2, live=True))
        items = list(source.frames())
        assert server.probes() == ["bytes=0-4095"]
    assert source.state is SourceState.GAVE_UP
    lost, gave_up = items[1], items[-1]
    assert NO_RANGES in lost.message and TO_DO in lost.message
    assert gave_up.message.startswith(f"{server.url()} opened but sent no frame: ") and NO_RANGES in gave_up.message


def test_the_same_file_from_a_server_with_ranges_plays_whole(clip):
    """What the message advises: a server that answers range requests lets FFmpeg reach the index at the end."""
    with _FileServer(clip.read_bytes(), ranges=True) as server:
        source = open_source(server.url(), stream=_settings())
        frames = [item for item in source.frames() if isinstance(item, Frame)]
        assert server.probes() == []  # nothing failed: nothing to ask
    expected = _decode_all(clip)
    assert [f.index for f in frames] == list(range(CLIP_FRAMES))
    assert all(np.array_equal(f.image, expected[f.index]) for f in frames)


def test_the_range_probe_claims_only_what_it_saw(clip, tmp_path):
    """No claim for a server that answers ranges, a file with its index first, or a server that is gone."""
    faststart = _remux(clip, tmp_path / "faststart.mp4", "faststart")
    with _FileServer(clip.read_bytes(), ranges=True) as server:
        assert no_range_reason(server.url(), timeout=5) is None
    with _FileServer(faststart.read_bytes(), ranges=False) as server:
        assert no_range_reason(server.url(), timeout=5) is None
    with _FileServer(clip.read_bytes(), ranges=False) as server:
        reason = no_range_reason(server.url("user:secret"), timeout=5)
        url = server.url()
    assert reason is not None and reason.startswith(NO_RANGES) and TO_DO in reason
    assert no_range_reason(url, timeout=5) is None  # the server is gone: connection refused, nothing claimed


def test_the_command_stops_on_a_server_without_ranges_in_one_line_without_the_password(cli, weights, clip, tmp_path):
    with _FileServer(clip.read_bytes(), ranges=False) as server:
        url = server.url("user:secret")
        done = _cli(cli, "run", url, "--weights", str(weights), "--out", str(tmp_path / "out"), "--no-video")
    assert done.returncode == 1
    line = _single_error_line(done)
    assert line.startswith(f"fastsam-stream: error: reading {url.replace('secret', '***')} failed at frame 0: ")
    assert NO_RANGES in line and TO_DO in line
    assert "secret" not in done.stderr + done.stdout
