"""`fastsam-stream serve` end to end: the real command, the real model, a real RTSP camera and a lavfi one.

One service runs for the module: a lavfi camera ("cam") and the test RTSP server ("rtsp"). The
tests use it in order: health and the stream list, metrics, a killed camera reconnecting while
the other keeps flowing, a stream added and removed through the API, and SIGTERM draining it.
Every wait is on a condition, bounded by a hang guard; nothing assumes how fast the machine is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import av
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from rtsp import RtspServer, rtsp_available

HANG_S = 120.0  # bound on waits for things that take seconds (the model loading on a busy CPU)
CAMERA = "lavfi:testsrc2=size=160x120:rate=10,realtime"


class Served:
    """A `fastsam-stream serve` process, its URL (read from its stderr) and its stderr lines."""

    def __init__(self, args: list[str], env: dict | None = None) -> None:
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
        )
        self.lines: list[str] = []
        self._url = threading.Event()
        self.url = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("serving on "):
                self.url = line.split()[2]
                self._url.set()
        self._url.set()

    def wait_url(self) -> str:
        assert self._url.wait(HANG_S), "serve printed no URL"
        assert self.url, "serve ended before serving:\n" + "\n".join(self.lines)
        return self.url

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(HANG_S)
        finally:
            self._reader.join(HANG_S)


def wait_for(condition, what: str, timeout_s: float = HANG_S):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def streams(client: httpx.Client) -> dict[str, dict]:
    answer = client.get("/api/streams")
    assert answer.status_code == 200, answer.text
    return {s["id"]: s for s in answer.json()}


def scrape(client: httpx.Client) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, parsed by prometheus_client's own parser: {(name, labels): value}."""
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def frames_total(samples: dict, stream: str) -> float:
    return samples.get(("fastsam_stream_frames_total", (("stream", stream),)), 0.0)


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture(scope="module")
def rtsp_server(videos):
    ok, why = rtsp_available()
    if not ok:
        if os.environ.get("FASTSAM_STREAM_REQUIRE_RTSP"):
            pytest.fail(why)
        pytest.skip(why)
    with RtspServer(videos / "carphone_pristine.mp4", width=176, height=144) as server:
        yield server


@pytest.fixture(scope="module")
def service(rtsp_server, cli, weights, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    config = folder / "serve.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": [{"id": "cam", "path": CAMERA}, {"id": "rtsp", "path": rtsp_server.url}],
                # A lost camera is noticed within a second and retried at once: the test waits less.
                "source": {"read_timeout_s": 2.0, "reconnect": {"initial_delay_s": 0.2, "max_delay_s": 1.0}},
                "model": {"weights": str(weights), "imgsz": 256, "device": "cpu"},
                # The whole camera frame is a zone: its count is in /metrics and /api/streams.
                "zones": [
                    {"name": "all", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]], "relative": True, "source": "cam"}
                ],
            }
        )
    )
    out = folder / "out"
    served = Served([*cli, "serve", "--config", str(config), "--port", "0", "--out", str(out), "--quiet"])
    url = served.wait_url()
    with httpx.Client(base_url=url, timeout=30) as client:
        yield served, client, out
    served.stop(signal.SIGKILL)


def test_healthz_answers_at_once_and_readyz_once_a_stream_streams(service):
    served, client, _ = service
    assert client.get("/healthz").status_code == 200
    wait_for(lambda: client.get("/readyz").status_code == 200, "/readyz to be 200")
    listed = wait_for(
        lambda: (s := streams(client)) and all(v["state"] == "streaming" for v in s.values()) and s,
        "both streams to stream",
    )
    assert set(listed) == {"cam", "rtsp"}
    for entry in listed.values():
        assert {"id", "state", "frames", "dropped", "fps", "latency_ms", "targets"} <= set(entry)
        assert set(entry["latency_ms"]) == {"p50", "p99"}


def test_metrics_parse_and_frames_total_grows_between_scrapes(service):
    _, client, _ = service
    first = scrape(client)
    second = wait_for(
        lambda: (s := scrape(client)) and frames_total(s, "cam") > frames_total(first, "cam") and s, "cam frames"
    )
    names = {name for name, _ in second}
    for family in (
        "fastsam_stream_dropped_frames_total",
        "fastsam_stream_reconnects_total",
        "fastsam_stream_latency_seconds_bucket",
        "fastsam_stream_batch_size_bucket",
        "fastsam_stream_queue_depth",
        "fastsam_stream_targets",
    ):
        assert family in names, family
    assert second[("fastsam_stream_latency_seconds_count", ())] >= frames_total(second, "cam")
    assert ("fastsam_stream_zone_objects", (("stream", "cam"), ("zone", "all"))) in second
    assert "all" in streams(client)["cam"]["zones"]


def test_a_killed_camera_reconnects_while_the_other_keeps_flowing(service, rtsp_server):
    _, client, _ = service
    before = scrape(client)
    reconnects = ("fastsam_stream_reconnects_total", (("stream", "rtsp"),))
    rtsp_server.kill()
    wait_for(lambda: streams(client)["rtsp"]["state"] == "reconnecting", "the rtsp stream to be reconnecting")
    cam_then = streams(client)["cam"]["frames"]
    wait_for(lambda: streams(client)["cam"]["frames"] > cam_then + 3, "cam frames while rtsp is down")
    rtsp_server.restart()
    wait_for(lambda: scrape(client).get(reconnects, 0) > before.get(reconnects, 0), "reconnects_total to grow")
    wait_for(lambda: streams(client)["rtsp"]["state"] == "streaming", "the rtsp stream back")


def test_a_stream_added_and_removed_through_the_api_has_final_outputs(service, videos):
    _, client, out = service
    added = client.post("/api/streams", json={"path": str(videos / "carphone_pristine.mp4"), "id": "clip"})
    assert added.status_code == 201, added.text
    assert added.json()["id"] == "clip"
    again = client.post("/api/streams", json={"path": str(videos / "carphone_pristine.mp4"), "id": "clip"})
    assert again.status_code == 409, again.text
    wait_for(lambda: streams(client)["clip"]["frames"] >= 10, "frames of the added stream")
    removed = client.delete("/api/streams/clip")
    assert removed.status_code == 200, removed.text
    frames = removed.json()["summary"]["frames"]
    assert "clip" not in streams(client)
    # Final on removal: every line whole, one per frame; the video has its trailer.
    lines = (out / "clip" / "tracks.jsonl").read_text().splitlines()
    assert len(lines) == frames >= 10
    assert all(json.loads(line)["frame"] == i for i, line in enumerate(lines))
    assert decoded_frames(out / "clip" / "annotated.mp4") == frames
    assert client.delete("/api/streams/clip").status_code == 404
    # Its folder holds its outputs: the id is not reused over them.
    again = client.post("/api/streams", json={"path": str(videos / "carphone_pristine.mp4"), "id": "clip"})
    assert again.status_code == 409 and "earlier stream" in again.json()["error"], again.text


def test_sigterm_drains_every_stream_and_finalises_its_files(service):
    served, client, out = service
    wait_for(lambda: streams(client)["cam"]["frames"] > 0, "cam frames")
    assert served.stop(signal.SIGTERM) == 0, "\n".join(served.lines)
    for stream in ("cam", "rtsp"):
        lines = (out / stream / "tracks.jsonl").read_text().splitlines()
        assert lines and all(json.loads(line) for line in lines)
        assert decoded_frames(out / stream / "annotated.mp4") == len(lines)
    assert not any("Traceback" in line for line in served.lines), "\n".join(served.lines)


def test_a_host_other_than_loopback_without_a_token_is_refused_at_start(cli, tmp_path):
    done = subprocess.run(
        [*cli, "serve", "--host", "0.0.0.0", "--port", "0", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        env={k: v for k, v in os.environ.items() if k != "FASTSAM_STREAM_TOKEN"},
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "token" in line and "0.0.0.0" in line


def test_with_a_token_every_request_but_healthz_needs_it(cli, weights, tmp_path):
    served = Served(
        [*cli, "serve", "--port", "0", "--out", str(tmp_path / "out"), "--weights", str(weights), "--quiet"],
        env={"FASTSAM_STREAM_TOKEN": "s3cret-t0ken"},
    )
    try:
        url = served.wait_url()
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/healthz").status_code == 200
            assert client.get("/api/streams").status_code == 401
            assert client.get("/metrics").status_code == 401
            assert client.get("/").status_code == 401 or client.get("/").is_redirect
            auth = {"Authorization": "Bearer s3cret-t0ken"}
            assert client.get("/api/streams", headers=auth).status_code == 200
            assert client.get("/metrics", headers=auth).status_code == 200
            assert client.get("/api/streams", headers={"Authorization": "Bearer wrong"}).status_code == 401
    finally:
        served.stop()
    assert not any("s3cret-t0ken" in line for line in served.lines)


def test_outputs_rotate_into_complete_segments_that_add_up_to_the_frames(cli, weights, tmp_path):
    """A segment every 0.6 s: each tracks/annotated pair is whole on its own, and together they hold every frame."""
    config = tmp_path / "rotate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": [{"id": "cam", "path": CAMERA}],
                "model": {"weights": str(weights), "imgsz": 256, "device": "cpu"},
                "output": {"segment_minutes": 0.01},
            }
        )
    )
    out = tmp_path / "out"
    served = Served([*cli, "serve", "--config", str(config), "--port", "0", "--out", str(out), "--quiet"])
    try:
        url = served.wait_url()
        assert url
        wait_for(lambda: len(list((out / "cam").glob("tracks-*.jsonl"))) >= 3, "three segments")
    finally:
        assert served.stop() == 0, "\n".join(served.lines)
    tracks = sorted((out / "cam").glob("tracks-*.jsonl"))
    videos = sorted((out / "cam").glob("annotated-*.mp4"))
    assert [p.name.removeprefix("tracks-").removesuffix(".jsonl") for p in tracks] == [
        p.name.removeprefix("annotated-").removesuffix(".mp4") for p in videos
    ]
    counts = [len(p.read_text().splitlines()) for p in tracks]
    assert [decoded_frames(p) for p in videos] == counts
    frames = [json.loads(line)["frame"] for p in tracks for line in p.read_text().splitlines()]
    # In order across segments (a live camera may drop frames, which the indices skip; none repeats).
    assert frames == sorted(set(frames))
    (done,) = [line for line in served.lines if line.startswith(("done:", "interrupted:"))]
    assert done.split(":", 1)[1].split()[0] == str(len(frames))


def test_a_wrong_source_fails_in_one_line_before_the_port_is_taken(cli, tmp_path):
    done = subprocess.run(
        [*cli, "serve", str(tmp_path / "no-such-clip.mp4"), "--port", "0", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()  # no "serving on": nothing was served
    assert "no such file or folder" in line
