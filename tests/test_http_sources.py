"""HTTP(S) and HLS streams through `open_source`, from a real stdlib web server on 127.0.0.1.

It serves a real clip (progressive download) and an HLS playlist cut from it with PyAV's `hls`
muxer, decoded by PyAV as a live StreamSource. The end of the file is a lost stream (a live source
replays it on reconnect); a server that goes away makes the source give up. Loopback only; every
wait is bounded.

Nothing here bounds how long a step takes on this machine: the server logs every request, so
"opening reads only the playlist and its first segment" or "a wrong path is asked for once" is
a fact about the requests, not about seconds. The deadlines that remain (HANG_S) only stop a hang.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest

from fastsam_stream import EventKind, Frame, Pipeline, Prompt, SourceConnectionError, SourceEvent
from fastsam_stream.sources import ReconnectPolicy, SourceState, StreamSettings, StreamSource, open_source

CLIP = "carphone_pristine.mp4"
CLIP_FRAMES = 120
CLIP_SIZE = (176, 144)
CLIP_FPS = 30000 / 1001
CARPHONE_PERSON = [28, 16, 176, 143]  # the driver in carphone_pristine.mp4, frame 0; he stays put
HANG_S = 120  # every run here takes seconds even on a slow, busy machine: this only stops a hang


def _log_requests(handler) -> None:
    """The request line of every response a handler sends, on its server's `requests` list."""
    requests = getattr(handler.server, "requests", None)
    if requests is not None:
        requests.append(f"{handler.command} {handler.path}")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - the stdlib's signature
        pass

    def log_request(self, code="-", size="-") -> None:  # every response, errors too, goes through here
        _log_requests(self)


class HttpServer:
    """http.server on 127.0.0.1 (a free port) serving one folder (or answering with `handler`).

    It serves from a background thread. `requests` lists what it answered, in order ("GET /path").
    """

    def __init__(self, directory: Path | None = None, handler=None) -> None:
        handler = handler or functools.partial(_QuietHandler, directory=str(directory))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.requests = self.requests = []
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.running = True

    def url(self, path: str, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}/{path}"

    def stop(self) -> None:
        """Stop serving and close the listening socket: new connections are refused."""
        if self.running:
            self.running = False
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)


@contextmanager
def serving(directory: Path):
    server = HttpServer(directory)
    try:
        yield server
    finally:
        server.stop()


def _settings(max_attempts: int | None, live: bool | None = None) -> StreamSettings:
    return StreamSettings(
        open_timeout_s=5,
        read_timeout_s=5,
        live=live,
        reconnect=ReconnectPolicy(initial_delay_s=0.05, jitter=0, max_attempts=max_attempts),
    )


def _decode_bgr(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def clip(videos) -> Path:
    return videos / CLIP


@pytest.fixture(scope="module")
def web_root(clip, tmp_path_factory) -> Path:
    """The clip as a web server would host it for progressive download.

    The same packets, remuxed with its index (moov) first. carphone_pristine.mp4 keeps its moov at
    the end, which a reader can only reach by seeking, and http.server does not answer Range
    requests: served as it is, FFmpeg opens it and then fails the first read ("Input/output error").
    """
    root = tmp_path_factory.mktemp("web")
    with av.open(str(clip)) as src, av.open(str(root / CLIP), "w", options={"movflags": "faststart"}) as out:
        in_stream = src.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        for packet in src.demux(in_stream):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            packet.stream = out_stream
            out.mux(packet)
    return root


@pytest.fixture(scope="module")
def hls_root(clip, tmp_path_factory) -> Path:
    """An HLS VOD playlist with ~1 s MPEG-TS segments, made by PyAV's hls muxer.

    From the clip's frames re-encoded with libx264 (the clip has a single keyframe, so a remux
    would be one segment).
    """
    if "libx264" not in av.codecs_available:
        pytest.fail("PyAV has no libx264 encoder: the HLS test needs it to cut segments")
    root = tmp_path_factory.mktemp("hls")
    options = {"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod"}
    with av.open(str(clip)) as src, av.open(str(root / "live.m3u8"), "w", format="hls", options=options) as out:
        rate = src.streams.video[0].average_rate
        stream = out.add_stream(
            "libx264", rate=rate, options={"preset": "ultrafast", "crf": "18", "g": "30", "sc_threshold": "0"}
        )
        stream.width, stream.height, stream.pix_fmt = *CLIP_SIZE, "yuv420p"
        for i, decoded in enumerate(src.decode(video=0)):
            frame = av.VideoFrame.from_ndarray(decoded.to_ndarray(format="yuv420p"), format="yuv420p")
            frame.pts, frame.time_base = i, 1 / rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return root


def _kinds(items) -> list[str]:
    return ["frame" if isinstance(i, Frame) else i.kind.value for i in items]


def _collapse(kinds: list[str]) -> list[str]:
    """Runs of frames as one "frames×N" entry, for readable sequence assertions."""
    out: list[str] = []
    for kind in kinds:
        if kind == "frame" and out and out[-1].startswith("frames×"):
            out[-1] = f"frames×{int(out[-1][7:]) + 1}"
        else:
            out.append("frames×1" if kind == "frame" else kind)
    return out


def test_an_http_file_is_read_once_like_a_file(web_root, clip):
    """A URL whose container knows its duration is a recording.

    Every frame, no drop policy, and its end is the end (no lost stream, no replay).
    """
    with serving(web_root) as server:
        source = open_source(server.url(CLIP), stream=_settings(max_attempts=None))
        assert isinstance(source, StreamSource) and not source.is_live and source.frame_count == CLIP_FRAMES
        items = list(source.frames())
    assert _collapse(_kinds(items)) == ["connected", f"frames×{CLIP_FRAMES}"]
    assert source.state is SourceState.STOPPED
    expected = _decode_bgr(clip)
    assert all(np.array_equal(f.image, expected[f.index]) for f in items[1:])


def test_a_live_http_stream_replays_on_reconnect_and_gives_up_when_the_server_goes(web_root, clip):
    """The same URL forced live (`source.live: true`, e.g. a camera that serves a file in a loop).

    Its end is a lost stream, the reconnect plays it again, and a server gone makes it give up.
    """
    max_attempts = 3
    with serving(web_root) as server:
        url = server.url(CLIP)
        source = open_source(url, stream=_settings(max_attempts, live=True))
        assert isinstance(source, StreamSource) and source.is_live and source.frame_count is None
        assert source.source_id == f"127.0.0.1-{server.port}-{CLIP}"
        assert float(source.fps) == pytest.approx(CLIP_FPS)

        items: list[Frame | SourceEvent] = []
        deadline = time.monotonic() + HANG_S
        for item in source.frames():
            items.append(item)
            assert time.monotonic() < deadline, f"the stream did not end within {HANG_S} s"
            if isinstance(item, SourceEvent) and item.kind is EventKind.LOST and item.next_frame == 2 * CLIP_FRAMES:
                server.stop()  # the reader waits at this event: its reconnect attempts all meet a closed port

    assert _collapse(_kinds(items)) == [
        "connected",
        f"frames×{CLIP_FRAMES}",
        "lost",
        "reconnected",
        f"frames×{CLIP_FRAMES}",
        "lost",
        "gave_up",
    ]
    events = [i for i in items if isinstance(i, SourceEvent)]
    connected, lost, reconnected, lost_again, gave_up = events
    assert (connected.width, connected.height) == (reconnected.width, reconnected.height) == CLIP_SIZE
    assert connected.fps == pytest.approx(CLIP_FPS, abs=0.01)
    assert [e.next_frame for e in events] == [0, CLIP_FRAMES, CLIP_FRAMES, 2 * CLIP_FRAMES, 2 * CLIP_FRAMES]
    assert lost.message and lost.attempt == 0
    assert reconnected.attempt == 1 and reconnected.outage_s > 0
    assert gave_up.attempt == max_attempts
    assert gave_up.message.startswith(f"cannot open {url}") and "refused" in gave_up.message.lower()
    assert source.state is SourceState.GAVE_UP

    # Indexes keep counting across the reconnect; pts never goes back, and within a connection
    # it is the clip's own clock.
    frames = [i for i in items if isinstance(i, Frame)]
    assert [f.index for f in frames] == list(range(2 * CLIP_FRAMES))
    pts = np.array([f.pts for f in frames])
    assert np.all(np.diff(pts) > 0)
    for connection in (pts[:CLIP_FRAMES], pts[CLIP_FRAMES:]):
        assert np.diff(connection) == pytest.approx(1 / CLIP_FPS, abs=1e-3)
    assert pts[CLIP_FRAMES] - pts[CLIP_FRAMES - 1] > 0  # the outage is time on the timeline

    # Both connections delivered exactly the clip's pictures, in order: the reconnect replayed it.
    expected = _decode_bgr(clip)
    assert len(expected) == CLIP_FRAMES
    for i, frame in enumerate(frames):
        assert frame.image.shape == (CLIP_SIZE[1], CLIP_SIZE[0], 3)
        assert np.array_equal(frame.image, expected[i % CLIP_FRAMES]), (
            f"frame {frame.index} is not clip frame {i % CLIP_FRAMES}"
        )


def test_hls_playlist_over_http_delivers_every_frame_before_the_stream_ends(hls_root, clip):
    segments = sorted(p.name for p in hls_root.glob("*.ts"))
    assert len(segments) >= 3, f"the hls muxer cut {segments}: the test wants a multi-segment playlist"
    playlist = (hls_root / "live.m3u8").read_text()
    assert "#EXT-X-ENDLIST" in playlist and all(s in playlist for s in segments)

    with serving(hls_root) as server:
        recording = open_source(server.url("live.m3u8"), stream=_settings(max_attempts=None))
        assert not recording.is_live  # a finished (ENDLIST) playlist is read like a file unless forced live
        recording.close()
        del server.requests[:]
        source = open_source(server.url("live.m3u8"), stream=_settings(max_attempts=0, live=True))
        assert isinstance(source, StreamSource)
        # Opening reads the playlist and the first segment, not the stream: the frames come as
        # the segments do.
        at_open = list(server.requests)
        assert at_open[0] == "GET /live.m3u8" and set(at_open) <= {"GET /live.m3u8", f"GET /{segments[0]}"}, at_open
        assert float(source.fps) == pytest.approx(CLIP_FPS)

        items = []
        deadline = time.monotonic() + HANG_S
        for item in source.frames():
            items.append(item)
            assert time.monotonic() < deadline, f"the HLS stream did not end within {HANG_S} s"
        later = [r for r in server.requests[len(at_open) :] if r.endswith(".ts")]
        assert later == [f"GET /{s}" for s in segments[1:]], later  # each further segment once, in order

    assert _collapse(_kinds(items)) == ["connected", f"frames×{CLIP_FRAMES}", "lost", "gave_up"]
    connected = items[0]
    assert (connected.width, connected.height) == CLIP_SIZE and connected.fps == pytest.approx(CLIP_FPS, abs=0.01)
    assert items[-1].attempt == 0 and "max_attempts 0" in items[-1].message

    frames = [i for i in items if isinstance(i, Frame)]
    assert [f.index for f in frames] == list(range(CLIP_FRAMES))
    pts = np.array([f.pts for f in frames])
    assert np.diff(pts) == pytest.approx(1 / CLIP_FPS, abs=1e-3)  # across segment boundaries too
    # Re-encoded, so close rather than equal: each frame is its own clip frame, not a neighbour.
    expected = _decode_bgr(clip)
    errors = [np.abs(f.image.astype(np.int16) - expected[f.index]).mean() for f in frames]
    assert max(errors) < 5, f"worst mean abs difference {max(errors):.2f}"
    shifted = [np.abs(f.image.astype(np.int16) - expected[(f.index + 15) % CLIP_FRAMES]).mean() for f in frames]
    assert all(e < s for e, s in zip(errors, shifted, strict=True))


@pytest.mark.parametrize("userinfo", ["", "user:secret"])
def test_a_wrong_http_path_fails_at_open_in_one_line_without_the_password(web_root, userinfo):
    with serving(web_root) as server:
        url = server.url("no/such/clip.mp4", userinfo)
        # max_attempts=None retries a lost stream for ever: were a failed open retried, it would
        # never return (the thread's bound only stops that hang) and the server would be asked again.
        raised = _opened_in_a_thread(url, _settings(max_attempts=None))
        assert server.requests == ["GET /no/such/clip.mp4"]  # fails at once: asked once, no reconnecting at open
    assert isinstance(raised, SourceConnectionError), raised
    message = str(raised)
    assert "\n" not in message
    assert "404" in message
    shown = url.replace("user:secret@", "user:***@")
    assert shown in message
    assert "secret" not in message


def _opened_in_a_thread(url: str, settings: StreamSettings):
    """`open_source(url)`'s source or the exception it raised; the thread's bound only stops a hang."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(open_source(url, stream=settings))
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            outcome.append(exc)

    opener = threading.Thread(target=run, daemon=True)
    opener.start()
    opener.join(HANG_S)
    assert not opener.is_alive(), f"opening {url} did not return within {HANG_S} s"
    return outcome[0]


def test_a_closed_http_port_fails_at_open(web_root):
    server = HttpServer(web_root)
    url = server.url(CLIP)
    server.stop()
    with pytest.raises(SourceConnectionError, match="refused") as raised:
        open_source(url, stream=_settings(max_attempts=None))
    assert url in str(raised.value) and "\n" not in str(raised.value)


def test_an_http_stream_that_stalls_is_lost_after_the_read_timeout(web_root, clip):
    """The server sends half the file and then holds the connection open, sending nothing.

    No error and no end of file, only silence, which the read timeout turns into a lost stream.
    """
    data = (web_root / CLIP).read_bytes()
    release = threading.Event()

    class Stalling(BaseHTTPRequestHandler):
        def log_message(self, format, *args) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            # Held open and silent until the test is done. Should the read timeout not work, the
            # connection ends after HANG_S instead, and the lost event says "ended", not "no data".
            release.wait(HANG_S)

    read_timeout = 0.5
    server = HttpServer(handler=Stalling)
    try:
        settings = StreamSettings(
            open_timeout_s=5, read_timeout_s=read_timeout, live=True, reconnect=ReconnectPolicy(max_attempts=0)
        )
        source = open_source(server.url(CLIP), stream=settings)
        started, items, lost_after = time.monotonic(), [], None
        for item in source.frames():
            items.append(item)
            if isinstance(item, SourceEvent) and item.kind is EventKind.LOST:
                lost_after = time.monotonic() - started
    finally:
        release.set()
        server.stop()

    kinds = _collapse(_kinds(items))
    assert kinds[0] == "connected" and kinds[-2:] == ["lost", "gave_up"], kinds
    frames = [i for i in items if isinstance(i, Frame)]
    assert 0 < len(frames) < CLIP_FRAMES  # half a file: some frames, not all
    assert lost_after >= read_timeout  # a lower bound, true on any machine: the stall lasted the read timeout
    lost = next(i for i in items if isinstance(i, SourceEvent) and i.kind is EventKind.LOST)
    assert lost.message == f"no data for {read_timeout:g} s"  # the read timeout ended it, not the server
    expected = _decode_bgr(clip)
    assert all(np.array_equal(f.image, expected[f.index]) for f in frames)


def test_a_server_that_accepts_but_never_sends_a_frame_counts_as_failed_attempts(clip):
    """A clip that opens and then fails its first read, on every connection: the source gives up.

    The original clip keeps its index at the end and http.server cannot seek, so every connection
    opens and then fails its first read. Those are failed attempts: backoff and max_attempts apply,
    and the source gives up instead of 'reconnecting' in a tight loop.
    """
    with serving(clip.parent) as server:
        source = open_source(server.url(CLIP), stream=_settings(max_attempts=3, live=True))
        items = list(source.frames())
    kinds = _kinds(items)
    assert kinds == ["connected", "lost", "gave_up"], kinds
    gave_up = items[-1]
    assert gave_up.attempt == 3 and "opened but sent no frame" in gave_up.message
    assert source.state is SourceState.GAVE_UP


class _Recorder:
    def __init__(self) -> None:
        self.results: list = []
        self.events: list[SourceEvent] = []

    def write(self, result) -> None:
        self.results.append(result)

    def on_event(self, event: SourceEvent) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


def test_pipeline_over_an_http_stream_segments_the_driver_and_gives_up_at_the_end(web_root, segmenter):
    recorder = _Recorder()
    with serving(web_root) as server:
        source = open_source(server.url(CLIP), source_id="web", stream=_settings(max_attempts=0, live=True))
        pipeline = Pipeline(source, segmenter, prompt=Prompt(boxes=CARPHONE_PERSON), sinks=[recorder])
        deadline = time.monotonic() + HANG_S
        for _ in pipeline:
            assert time.monotonic() < deadline, f"the run did not end within {HANG_S} s"

    summary = pipeline.summary.sources["web"]
    assert pipeline.summary.gave_up == ["web"] and summary.gave_up
    assert not pipeline.summary.interrupted
    assert summary.frames == len(recorder.results) >= 1
    assert summary.frames + summary.dropped == CLIP_FRAMES
    kinds = [e.kind for e in recorder.events if e.kind is not EventKind.TARGETS_CHANGED]  # the prompt's own event
    assert kinds == [EventKind.CONNECTED, EventKind.LOST, EventKind.GAVE_UP]
    indexes = [r.frame.index for r in recorder.results]
    assert all(b > a for a, b in itertools.pairwise(indexes))
    assert indexes[-1] == CLIP_FRAMES - 1  # dropping keeps the newest: the clip's last frame is segmented
    assert sum(r.dropped_before for r in recorder.results) == summary.dropped
    found = sum(r.target_found for r in recorder.results)
    assert found == summary.frames_with_target and found >= 0.8 * len(recorder.results)
    assert len({t.id for r in recorder.results for t in r.tracks if t.is_target}) == 1


def test_pipeline_over_an_http_file_segments_every_frame(web_root, segmenter):
    """What `fastsam-stream run http://host/clip.mp4` does: the whole clip, once, nothing dropped."""
    recorder = _Recorder()
    with serving(web_root) as server:
        source = open_source(server.url(CLIP), source_id="web", stream=_settings(max_attempts=None))
        summary = Pipeline(source, segmenter, prompt=Prompt(boxes=CARPHONE_PERSON), sinks=[recorder]).run()
    assert [r.frame.index for r in recorder.results] == list(range(CLIP_FRAMES))
    assert summary.dropped == 0 and not summary.gave_up
    assert summary.frames_with_target >= 0.9 * CLIP_FRAMES
