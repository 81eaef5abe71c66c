"""What zones and alert outputs cost the frame path: frames/s with none against three zones and two alerts.

    .venv/bin/python bench/zones_overhead.py [--clip PATH] [--weights PATH.pt] [--frames N] [--rounds R] [--split]

The real pipeline as `fastsam-stream run` builds it (`assemble.build_pipeline` on a `load_config`
with `zones` and `alerts` sections), on a real clip with the real model, with its default outputs
(tracks.jsonl, annotated.mp4; with zones also events.jsonl, the zones drawn and event snapshots).
The zones variant adds three zones, one per trigger (bottom_center with dwell, mask with obstacle
detection, center with dwell), and two alert outputs: a signed webhook to a receiver on 127.0.0.1
and MQTT (qos 1) to a mosquitto broker on 127.0.0.1, both started here (two webhooks when
mosquitto is not installed), neither with a cooldown, so every event goes out. Rounds alternate
(none, zones, none, zones, ...) in one process with one loaded model; frames/s is measured over
`--frames` results after a warm-up, before the stop (the alert outputs' drain at close is not
per-frame work, and is reported apart), and the medians and their ratio are printed. The issue
asks for the zones variant within 5% of none. `--split` adds rounds with the zones and no alert
outputs, to tell the two costs apart. Compare figures within one run only, on a machine that is
otherwise idle: on a busy one the rounds differ by more than the 5% being measured.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from fastsam_stream.assemble import build_pipeline
from fastsam_stream.config import load_config
from fastsam_stream.pipeline.segmenter import UltralyticsSegmenter, quiet_ultralytics

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WARMUP = 10
SECRET_ENV = "FASTSAM_BENCH_HOOK_SECRET"
START_S = 20.0  # the longest wait for the broker to start

# vtest.avi: people walking across a square, seen from above; fractions of the frame, so any clip fits.
ZONES = [
    {"name": "left_walk", "relative": True, "polygon": [[0, 0.35], [0.35, 0.35], [0.35, 1], [0, 1]], "dwell_s": 2},
    {
        "name": "square",
        "relative": True,
        "polygon": [[0.3, 0.25], [0.7, 0.25], [0.7, 0.9], [0.3, 0.9]],
        "trigger": "mask",
        "min_overlap": 0.3,
        "stationary_s": 2,
    },
    {
        "name": "right_walk",
        "relative": True,
        "polygon": [[0.65, 0.3], [1, 0.3], [1, 1], [0.65, 1]],
        "trigger": "center",
        "dwell_s": 3,
    },
]


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers 200 to every POST and counts them."""

    def __init__(self) -> None:
        self.count = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    receiver.count += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Broker:
    """mosquitto on 127.0.0.1 with a subscriber that counts what reaches it."""

    def __init__(self, executable: str, folder: Path) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.port = free_port()
        config = folder / "mosquitto.conf"
        config.write_text(f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\nallow_anonymous true\n")
        self.process = subprocess.Popen([executable, "-c", str(config)], stderr=subprocess.PIPE, text=True)
        running = threading.Event()
        threading.Thread(target=self._read_log, args=(running,), daemon=True).start()
        if not running.wait(START_S) or self.process.poll() is not None:
            raise RuntimeError("mosquitto did not start")
        self.count = 0
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda client, *_: client.subscribe("fastsam/#", qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if not subscribed.wait(START_S):
            raise RuntimeError("the subscriber did not subscribe")

    def _read_log(self, running: threading.Event) -> None:
        for line in self.process.stderr:
            if " running" in line:
                running.set()
        running.set()

    def _on_message(self, client, userdata, message) -> None:
        self.count += 1  # paho's one network thread: no lock needed

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.process.terminate()
        self.process.wait(START_S)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def mosquitto_path() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def overrides(args, out: Path, zones: list[dict], alerts: list[dict]) -> dict:
    return {
        "sources": [args.clip],
        "model": {"weights": args.weights, "device": args.device, "imgsz": args.imgsz, "conf": args.conf},
        "output": {"dir": str(out), "quiet": True, "video": not args.no_video},
        "zones": zones,
        "alerts": alerts,
    }


def run_round(args, segmenter, out: Path, zones: list[dict], alerts: list[dict]) -> dict:
    """Frames/s over args.frames results after WARMUP, and the seconds the close took (the alerts' drain)."""
    pipeline = build_pipeline(load_config(overrides=overrides(args, out, zones, alerts)), segmenter=segmenter)
    n, t0, seconds = 0, None, None
    stopped_at = None
    for _ in pipeline:
        n += 1
        if n == WARMUP:
            t0 = time.perf_counter()
        if n == WARMUP + args.frames:
            seconds = time.perf_counter() - t0  # before the stop: the outputs' finalising is not per-frame work
            stopped_at = time.perf_counter()
            pipeline.stop()
    if seconds is None:
        seconds = time.perf_counter() - t0
        stopped_at = time.perf_counter()
    measured = n - WARMUP
    return {"fps": measured / seconds, "frames": measured, "close_s": time.perf_counter() - stopped_at}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default=str(SHARED / "media/videos/vtest.avi"))
    parser.add_argument("--weights", default=str(SHARED / "models/yolov8n-seg-int8dq.pt"))
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N")
    parser.add_argument("--frames", type=int, default=200, help="steady-state frames per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each variant, alternating")
    parser.add_argument(
        "--no-video", action="store_true", help="no annotated.mp4 (the zones' drawing is then unmeasured)"
    )
    parser.add_argument("--split", action="store_true", help="also rounds with the zones and no alert outputs")
    args = parser.parse_args()
    quiet_ultralytics()
    os.environ[SECRET_ENV] = "bench-secret"  # the webhook signs each body, as a user's would

    with tempfile.TemporaryDirectory(prefix="zones_overhead_") as tmp:
        folder = Path(tmp)
        hook = Receiver()
        mosquitto = mosquitto_path()
        broker = Broker(mosquitto, folder) if mosquitto else None
        second = Receiver() if broker is None else None
        alerts = [{"kind": "webhook", "url": hook.url, "secret_env": SECRET_ENV}]
        if broker is not None:
            alerts.append({"kind": "mqtt", "host": "127.0.0.1", "port": broker.port, "qos": 1})
        else:
            alerts.append({"kind": "webhook", "url": second.url})
        outputs = "a webhook and MQTT (mosquitto)" if broker else "two webhooks (mosquitto not installed)"
        print(
            f"clip {Path(args.clip).name}, weights {Path(args.weights).name}, device {args.device}, imgsz {args.imgsz}"
        )
        print(f"{args.frames} steady-state frames after {WARMUP} per round; zones variant: 3 zones + {outputs}")
        print("zones_only (--split): the same zones, no alert outputs")

        segmenter = UltralyticsSegmenter(load_config(overrides=overrides(args, folder / "x", [], [])).model)
        run_round(args, segmenter, folder / "warmup", [], [])  # first-run costs (allocations, caches) go here
        variants = {"none": ([], []), "zones": (ZONES, alerts)} | ({"zones_only": (ZONES, [])} if args.split else {})
        figures: dict[str, list[float]] = {name: [] for name in variants}
        for index in range(args.rounds):
            for name, (zones, outputs_of) in variants.items():
                before = hook.count, (broker or second).count
                out = folder / f"{name}{index}"
                result = run_round(args, segmenter, out, zones, outputs_of)
                figures[name].append(result["fps"])
                received = hook.count - before[0], (broker or second).count - before[1]
                extra = f", events received {received[0]} + {received[1]}" if outputs_of else ""
                print(
                    f"round {index + 1} {name:10s}: {result['fps']:6.2f} frames/s over {result['frames']} frames, "
                    f"close {result['close_s']:.2f} s{extra}"
                )
                shutil.rmtree(out, ignore_errors=True)

        medians = {name: statistics.median(values) for name, values in figures.items()}
        print("medians: " + ", ".join(f"{name} {fps:.2f} frames/s" for name, fps in medians.items()))
        for name in list(variants)[1:]:
            ratio = medians[name] / medians["none"]
            print(
                f"{name} / none: {ratio:.3f} ({(1 - ratio) * 100:+.1f}% slower); "
                f"within 5%: {'yes' if ratio >= 0.95 else 'NO'}"
            )
        hook.close()
        if broker is not None:
            broker.close()
        if second is not None:
            second.close()


if __name__ == "__main__":
    main()
