"""`fastsam-stream serve --ray`: the service with its streams on two Ray workers (a local cluster).

The real command, the real model, a lavfi camera from the config and a clip added through the
API: the added stream goes to the worker holding none, the viewer gets its frames (drawn on the
worker, sent home only while someone looks), `/metrics` has every worker, removing the stream
answers once its files are final, and SIGTERM drains the rest. Every wait is on a condition,
bounded by a hang guard.
"""

from __future__ import annotations

import signal

import cv2
import httpx
import numpy as np
import yaml
from test_serve import HANG_S, Served, decoded_frames, scrape, streams, wait_for

from fastsam_stream.sinks.jsonl import read_jsonl

CAMERA = "lavfi:testsrc2=size=160x120:rate=10,realtime"
CAR_BOX = [40, 20, 140, 144]  # the driver in carphone_pristine.mp4's first frame


def test_serve_on_two_workers_adds_views_and_removes_a_stream(cli, weights, videos, tmp_path):
    """A stream added through the API runs on the idle worker, shows in the viewer and leaves with whole files."""
    config = tmp_path / "serve.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": [{"id": "cam", "path": CAMERA}],
                "model": {"weights": str(weights), "imgsz": 256, "device": "cpu"},
                "cluster": {"address": "local", "workers": 2, "cpus_per_worker": 0.5},
            }
        )
    )
    out = tmp_path / "out"
    served = Served([*cli, "serve", "--config", str(config), "--port", "0", "--out", str(out), "--quiet"])
    try:
        url = served.wait_url()
        with httpx.Client(base_url=url, timeout=HANG_S) as client:
            wait_for(lambda: streams(client).get("cam", {}).get("state") == "streaming", "the camera to stream")
            added = client.post(
                "/api/streams",
                json={"path": str(videos / "carphone_pristine.mp4"), "id": "car", "boxes": [CAR_BOX]},
            )
            assert added.status_code == 201, added.text
            # the camera's worker holds one stream: the new one went to the other
            samples = scrape(client)
            held = {w: samples[("fastsam_stream_worker_streams", (("worker", w),))] for w in ("worker-0", "worker-1")}
            assert sorted(held.values()) == [1.0, 1.0], held
            assert samples[("fastsam_stream_worker_up", (("worker", "worker-0"),))] == 1.0

            # a still of the added stream: the first request makes it wanted, a later one gets it
            jpeg = wait_for(
                lambda: (r := client.get("/api/streams/car/frame.jpg")).status_code == 200 and r.content,
                "a frame of car in the viewer",
            )
            image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            assert image.shape == (144, 176, 3)

            listed = wait_for(lambda: (s := streams(client)["car"])["frames"] >= 5 and s, "car's first frames")
            assert listed["targets"] == [1]
            removed = client.delete("/api/streams/car")
            assert removed.status_code == 200, removed.text
            assert "car" not in streams(client)
            frames = removed.json()["summary"]["frames"]
        # answered once final: every frame counted is a whole line, in order from 0, each once
        lines = read_jsonl(out / "car" / "tracks.jsonl", torn="raise")
        assert [line["frame"] for line in lines] == list(range(frames))
        assert decoded_frames(out / "car" / "annotated.mp4") >= 1
        events = [e["event"] for e in read_jsonl(out / "car" / "events.jsonl", torn="raise")]
        assert "targets_changed" in events
    finally:
        code = served.stop(signal.SIGTERM)
    assert code == 0, "\n".join(served.lines)
    cam = read_jsonl(out / "cam" / "tracks.jsonl", torn="raise")
    assert cam and [line["frame"] for line in cam] == sorted({line["frame"] for line in cam})
    assert decoded_frames(out / "cam" / "annotated.mp4") >= 1
