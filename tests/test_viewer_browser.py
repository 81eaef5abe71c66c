"""The viewer in a real browser: headless Chromium (Debian's, through Playwright) against a real `fastsam-stream serve`.

The service runs as a user starts it, on a live source: FFmpeg's lavfi `movie` plays a real
clip (the SAM 2 dog) in a loop for ever, at its own pace (`realtime`), through the camera
source's code path; the model is the real one from ../shared/models. The grid must show that
stream's frames moving and follow streams joining and leaving; a click on an object in the
one-stream view, at a display size other than the source's, must make it a target: the page
sends source pixels, and the target is in /api/streams, events.jsonl (targets_changed) and
tracks.jsonl. A screenshot of that view goes to $FASTSAM_STREAM_SCREENSHOT (the README's), or
the test's own folder.

Every wait is for a condition; HANG_S only stops a hang (the CPU model makes a few frames a
second on a busy machine, and loading it takes seconds).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
HANG_S = 120  # only stops a hang
SOURCE_WIDTH, SOURCE_HEIGHT = 640, 360  # the clip scaled in the lavfi graph (01_dog.mp4 is 1280x720)
VIEWPORT = {"width": 1100, "height": 760}  # the frame is shown at another size than its own


def _lavfi_live(path: Path) -> str:
    """A live camera playing `path` for ever at its frame rate: timestamps run on across loops, paced by `realtime`.

    The path is quoted for the option value, then escaped for the filter graph (FFmpeg's two
    levels of escaping), so any file name works.
    """
    quoted = "'" + str(path).replace("'", "'\\''") + "'"
    movie = "movie=" + re.sub(r"([\\'\[\],;])", r"\\\1", quoted)
    return f"lavfi:{movie}:loop=0,setpts=N/FRAME_RATE/TB,fps=10,scale={SOURCE_WIDTH}:{SOURCE_HEIGHT},realtime"


def _until(condition, what: str, timeout: float = HANG_S, every: float = 0.1):
    """Poll `condition()` until it returns something true, and return that; HANG_S only stops a hang."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(every)


class Served:
    """A running `fastsam-stream serve`: its URL, output folder and stderr so far."""

    def __init__(self, process: subprocess.Popen, out: Path) -> None:
        self.process = process
        self.out = out
        self.lines: list[str] = []
        self.url_found = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            found = re.search(r"serving on (http://\S+)", line)
            if found and not self.url:
                self.url = found.group(1)
                self.url_found.set()

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30)

    def streams(self) -> list[dict]:
        response = self.get("/api/streams")
        response.raise_for_status()
        return response.json()

    def stderr(self) -> str:
        return "".join(self.lines)


@pytest.fixture(scope="module")
def served(cli, weights, videos, tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (README, Set-up)")
    out = tmp_path_factory.mktemp("serve")
    command = [
        *cli,
        "serve",
        _lavfi_live(videos / "01_dog.mp4"),
        "--port",
        "0",
        "--out",
        str(out),
        "--weights",
        str(weights),
        "--device",
        "cpu",
        "--imgsz",
        "320",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    service = Served(process, out)
    try:
        if not service.url_found.wait(HANG_S):
            pytest.fail(f"serve printed no `serving on` line: {service.stderr()}")
        _until(
            lambda: process.poll() is not None or any(s["frames"] > 0 for s in service.streams()),
            "the first frame",
        )
        if process.poll() is not None:
            pytest.fail(f"serve ended: {service.stderr()}")
        yield service
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=HANG_S)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"serve did not stop on SIGTERM: {service.stderr()}")
    assert process.returncode == 0, service.stderr()
    assert "Traceback" not in service.stderr()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():  # README's set-up command and .ci/run install it (Debian's chromium)
        why = f"{CHROMIUM} is missing: apt-get install chromium"
        if os.environ.get("FASTSAM_STREAM_REQUIRE_BROWSER"):
            pytest.fail(why)
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    assert not errors, f"the page's script failed: {errors}"


def _tile_frames(page, stream: str) -> int:
    value = page.get_attribute(f'.tile[data-stream="{stream}"] .frames', "data-value")
    return int(value) if value else 0


def test_the_grid_shows_live_frames_and_streams_joining_and_leaving(served, page):
    (stream,) = [s["id"] for s in served.streams()]
    page.goto(served.url + "/")
    tile = f'.tile[data-stream="{stream}"]'
    page.wait_for_selector(f"{tile} .frames[data-value]", timeout=HANG_S * 1000)
    # The MJPEG picture is there, at the source's size, and it moves; the frame count grows.
    page.wait_for_function(
        "sel => document.querySelector(sel).naturalWidth > 0", arg=f"{tile} img.frame", timeout=HANG_S * 1000
    )
    size = page.eval_on_selector(f"{tile} img.frame", "img => [img.naturalWidth, img.naturalHeight]")
    assert size == [SOURCE_WIDTH, SOURCE_HEIGHT]
    first_count = _tile_frames(page, stream)
    first_picture = page.locator(f"{tile} img.frame").screenshot()
    _until(lambda: _tile_frames(page, stream) >= first_count + 3, "the frame count in the page growing")
    _until(lambda: page.locator(f"{tile} img.frame").screenshot() != first_picture, "the picture changing")
    assert page.text_content(f"{tile} .state") in ("streaming", "reconnecting")  # a looping movie may reconnect

    # A stream added with the page's form appears in the grid with its own frames; removed with
    # its button (once confirmed), it goes, its outputs finalised.
    page.fill('#add-stream input[name="path"]', "lavfi:testsrc2=size=160x120:rate=5")
    page.fill('#add-stream input[name="id"]', "second")
    page.click('#add-stream button[type="submit"]')
    page.wait_for_function(
        "() => { const img = document.querySelector('.tile[data-stream=\"second\"] img.frame');"
        " return img && img.naturalWidth === 160; }",
        timeout=HANG_S * 1000,
    )
    assert [s["id"] for s in served.streams()] == [stream, "second"]
    page.once("dialog", lambda dialog: dialog.accept())
    page.click('.tile[data-stream="second"] .remove')
    page.wait_for_selector('.tile[data-stream="second"]', state="detached", timeout=HANG_S * 1000)
    assert page.locator(".tile").count() == 1
    assert [s["id"] for s in served.streams()] == [stream]
    assert (served.out / "second" / "tracks.jsonl").exists()


def _an_object(page) -> dict | None:
    """The largest object the page last heard of that is tracked and not a target, or None."""
    last = page.evaluate("() => window.fastsamViewer && window.fastsamViewer.last")
    if not last:
        return None
    tracked = [t for t in last["tracks"] if t["state"] == "tracked" and not t["target"]]
    return max(tracked, key=lambda t: (t["box"][2] - t["box"][0]) * (t["box"][3] - t["box"][1]), default=None)


def _on_screen(page, x: float, y: float) -> tuple[float, float]:
    """Where source pixel (x, y) is on the screen: the frame fits its box, centred (object-fit: contain)."""
    rect, natural = page.eval_on_selector(
        "#frame",
        "img => { const r = img.getBoundingClientRect();"
        " return [[r.left, r.top, r.width, r.height], [img.naturalWidth, img.naturalHeight]]; }",
    )
    left, top, width, height = rect
    scale = min(width / natural[0], height / natural[1])
    assert abs(scale - 1) > 0.05, "the frame should be shown at another size than its own"
    return left + (width - natural[0] * scale) / 2 + x * scale, top + (height - natural[1] * scale) / 2 + y * scale


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().split("\n")[:-1]]  # whole lines only: one may be on its way


def _outcomes(events: Path) -> list[dict]:
    """What the commands did, in order: their targets_changed and prompt_failed events."""
    return [e for e in _lines(events) if e["event"] in ("targets_changed", "prompt_failed")]


def test_a_click_on_an_object_makes_it_a_target(served, page, tmp_path):
    (stream,) = [s["id"] for s in served.streams()]
    sent: list[dict] = []

    def sending(action) -> dict:
        """Do `action` (a click) and return the command the page sent for it."""
        commands = f"{served.url}/api/streams/{stream}/commands"
        with page.expect_request(lambda r: r.method == "POST" and r.url == commands, timeout=HANG_S * 1000) as request:
            action()
        sent.append(request.value.post_data_json)
        assert request.value.headers["content-type"] == "application/json"
        return sent[-1]

    page.goto(f"{served.url}/streams/{stream}")
    page.wait_for_function("() => document.getElementById('frame').naturalWidth > 0", timeout=HANG_S * 1000)

    # Click the middle of an object (a point prompt picks what holds the point); the object moves,
    # so if the click misses (prompt_failed), another one on a newer frame.
    events = served.out / stream / "events.jsonl"
    for attempt in range(1, 6):
        target = _until(lambda: _an_object(page), "an object tracked in the page")
        x1, y1, x2, y2 = target["box"]
        middle = ((x1 + x2) / 2, (y1 + y2) / 2)
        command = sending(lambda middle=middle: page.mouse.click(*_on_screen(page, *middle)))
        assert command["op"] == "replace"
        (point,) = command["points"]
        assert point[2] == 1 and abs(point[0] - middle[0]) <= 1.5 and abs(point[1] - middle[1]) <= 1.5  # source px
        outcome = _until(lambda n=attempt: _outcomes(events)[n - 1 :], "the command's outcome in events.jsonl")
        if outcome[0]["event"] == "targets_changed":
            break
    else:
        pytest.fail(f"no click made a target: {_lines(events)}")
    added = outcome[0]["added"]
    assert added

    # The target is in the API, the page's list, and tracks.jsonl.
    _until(lambda: served.streams()[0]["targets"] == added, "the target in /api/streams")
    page.wait_for_selector(f'#targets li[data-target="{added[0]}"]', timeout=HANG_S * 1000)
    tracks = served.out / stream / "tracks.jsonl"
    _until(
        lambda: any(t["id"] in added and t["target"] for line in _lines(tracks) for t in line["tracks"]),
        "the target in tracks.jsonl",
    )
    # The README's screenshot: the stream with its target drawn, once the page shows it.
    page.wait_for_function(
        "ids => window.fastsamViewer.last && ids.every(id => window.fastsamViewer.last.targets.includes(id))",
        arg=added,
        timeout=HANG_S * 1000,
    )
    screenshot = Path(os.environ.get("FASTSAM_STREAM_SCREENSHOT") or tmp_path / "viewer.png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot))
    assert screenshot.stat().st_size > 10_000

    # The drop button stops following it.
    dropped = sending(lambda: page.click(f'#targets li[data-target="{added[0]}"] .drop'))
    assert dropped == {"op": "drop", "ids": [added[0]]}
    _until(lambda: served.streams()[0]["targets"] == [], "the target dropped")


def test_the_login_page_lets_the_viewer_in(page):
    """With a token, the viewer sends the browser to the login page; the right token lets it in, a wrong one not."""
    from fastsam_stream.config import ServeConfig
    from fastsam_stream.service.app import make_app
    from fastsam_stream.service.core import Service
    from fastsam_stream.service.frames import FrameHub
    from fastsam_stream.service.server import HttpServer

    # The model is not needed to log in: a service still starting lists no streams.
    with HttpServer(make_app(Service(ServeConfig(token="s3cret"), hub=FrameHub()))) as server:
        assert httpx.get(server.url + "/api/streams", timeout=30).status_code == 401
        page.goto(server.url + "/")
        page.wait_for_url(re.compile(r"/login\?next=/$"), timeout=HANG_S * 1000)
        page.fill("#token", "wrong")
        page.click("#login-form button")
        page.wait_for_function(
            "() => document.getElementById('message').textContent === 'wrong token'", timeout=HANG_S * 1000
        )
        page.fill("#token", "s3cret")
        page.click("#login-form button")
        page.wait_for_url(server.url + "/", timeout=HANG_S * 1000)
        # In: the grid lists the (no) streams with the cookie the login set, with no error.
        page.wait_for_selector("#empty:not([hidden])", timeout=HANG_S * 1000)
        assert page.text_content("#message") == ""
        assert any(c["name"] for c in page.context.cookies())
