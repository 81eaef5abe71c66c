"""Cluster runs on Ray (`--ray`): real model, real clips and DAVIS frames, a real local Ray cluster.

A run spread over two worker actors writes what the same config writes in one process; a worker
killed in the middle of a run hands its streams to the survivor, which resumes each at its first
frame not yet written, with its targets' ids; the command line runs it end to end; and Ray
missing, an address that does not answer or a cluster too small each end in one line.

One local cluster serves the whole module (the `ray_cluster` fixture): `connect()` reuses a Ray
already initialised in the process. Only the command-line run starts a cluster of its own.
"""

from __future__ import annotations

import math
import re
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import av
import pytest
import yaml

from fastsam_stream.assemble import build_pipeline
from fastsam_stream.cluster.build import build_cluster_pipeline
from fastsam_stream.config import Config
from fastsam_stream.errors import ClusterError
from fastsam_stream.sinks.jsonl import read_jsonl
from fastsam_stream.sinks.video import ENCODER_DELAY_FRAMES

RAY_CPUS = 4  # the module's cluster: room for two workers of one CPU, not for three of two
HANG_S = 600  # only stops a hang: each run here takes seconds to a minute even on a slow, busy machine
IMPORT_MARGIN_S = 120  # a fresh interpreter's imports (torch, ultralytics), on a slow, busy machine
BOX_TOL_PX = 0.05  # boxes are written to 0.01 px: a few rounding steps of float noise, no more
SCORE_TOL = 1e-3  # scores are written to 1e-4


@dataclass(frozen=True)
class Clip:
    """A real source with its length and a box around an object the model finds on its frame 0."""

    id: str
    path: Path
    frames: int
    box: tuple[int, int, int, int]


def _clips(videos: Path, davis: Path) -> dict[str, Clip]:
    frames = davis / "JPEGImages" / "480p"
    return {
        c.id: c
        for c in (
            Clip("car", videos / "carphone_pristine.mp4", 120, (30, 14, 175, 142)),  # the driver (176x144)
            Clip("bag", videos / "bag.avi", 196, (314, 138, 431, 255)),  # the bag (480x360)
            Clip("round", frames / "car-roundabout", 75, (244, 175, 688, 357)),  # the car in front, others around
            Clip("dog", frames / "dog", 60, (144, 10, 507, 306)),  # the dog
            Clip("swan", frames / "blackswan", 50, (138, 71, 513, 408)),  # the swan
        )
    }


def _config(
    weights: Path, out: Path, clips: list[Clip], address: str | None, video: bool = False, **cluster: object
) -> Config:
    return Config.model_validate(
        {
            "sources": [{"id": c.id, "path": str(c.path)} for c in clips],
            "model": {"weights": str(weights), "imgsz": 320, "device": "cpu"},
            "prompts": [{"source": c.id, "boxes": [list(c.box)]} for c in clips],
            "output": {"dir": str(out), "video": video},
            "cluster": {"address": address, "workers": 2, **cluster},
        }
    )


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster for the module's runs through the Python API."""
    import ray

    ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def _target_ids(records: list[dict]) -> set[int]:
    return {t["id"] for r in records for t in r["tracks"] if t["target"]}


def _assert_same_tracks(source_id: str, one: list[dict], cluster: list[dict]) -> None:
    """The same frames, the same track ids, states and target flags; boxes and scores up to float noise."""
    assert [r["frame"] for r in cluster] == [r["frame"] for r in one], source_id
    for a, b in zip(one, cluster, strict=True):
        where = f"{source_id} frame {a['frame']}"
        mine = {t["id"]: t for t in a["tracks"]}
        theirs = {t["id"]: t for t in b["tracks"]}
        assert sorted(theirs) == sorted(mine), f"{where}: track ids"
        for track_id, t in mine.items():
            u = theirs[track_id]
            assert (u["target"], u["state"]) == (t["target"], t["state"]), f"{where}: track {track_id}"
            assert u["box"] == pytest.approx(t["box"], abs=BOX_TOL_PX), f"{where}: track {track_id}"
            assert u["score"] == pytest.approx(t["score"], abs=SCORE_TOL), f"{where}: track {track_id}"


def test_a_cluster_run_writes_what_one_process_writes(ray_cluster, weights, videos, davis, tmp_path):
    """Two workers, four streams (a clip, three DAVIS folders): every tracks.jsonl is the one-process run's.

    The one-process run batches the three DAVIS folders' frames together (same size); on the
    cluster they are split over two workers. The frames, track ids (targets and the others),
    states and target flags must still be equal, and boxes and scores equal up to float noise.
    """
    clips = _clips(videos, davis)
    chosen = [clips[i] for i in ("car", "round", "dog", "swan")]

    one = build_pipeline(_config(weights, tmp_path / "one", chosen, None)).run()

    pipeline = build_cluster_pipeline(_config(weights, tmp_path / "cluster", chosen, "local"))
    placed: dict[str, str] = {}
    for record in pipeline.results():
        placed.setdefault(record.source_id, pipeline.worker_of(record.source_id).name)
    summary = pipeline.summary

    assert sorted(set(placed.values())) == ["worker-0", "worker-1"], placed  # both workers had streams
    assert not summary.interrupted
    for clip in chosen:
        expected = read_jsonl(tmp_path / "one" / clip.id / "tracks.jsonl")
        got = read_jsonl(tmp_path / "cluster" / clip.id / "tracks.jsonl")
        assert [r["frame"] for r in expected] == list(range(clip.frames)), clip.id
        first = [t for t in expected[0]["tracks"] if t["target"]]
        # the prompt really selected the object it surrounds, and the model keeps finding it
        assert len(first) == 1 and first[0]["state"] == "tracked" and _iou(first[0]["box"], clip.box) > 0.7, clip.id
        assert one.sources[clip.id].frames_with_target >= 0.9 * clip.frames, clip.id
        _assert_same_tracks(clip.id, expected, got)
        assert summary.sources[clip.id].frames == clip.frames
        assert summary.sources[clip.id].frames_with_target == one.sources[clip.id].frames_with_target
        # (one process writes events.jsonl for a file source only when asked; the driver always does)
        events = read_jsonl(tmp_path / "cluster" / clip.id / "events.jsonl")
        assert [(e["event"], e["added"]) for e in events] == [("targets_changed", [first[0]["id"]])], clip.id
    # the non-target tracks are compared too: the run has some
    assert len({t["id"] for r in read_jsonl(tmp_path / "one" / "round" / "tracks.jsonl") for t in r["tracks"]}) > 3


TRIGGER = "bag"  # the stream whose worker is killed: bag.avi, 196 frames at 25 fps
KILL_AT = 80  # its lines when its worker is killed: two seconds of its video are surely on disk then
# The driver keeps up with the workers (a few records behind at worst, on a busy machine): the
# stream is still running when its KILL_AT-th record comes home, with more than 100 frames to go.


def _playable(path: Path) -> tuple[int, bool]:
    """Frames PyAV decodes from the start, and whether it stopped at damage (a fragment cut by the kill)."""
    frames = 0
    try:
        with av.open(str(path)) as container:
            for _ in container.decode(video=0):
                frames += 1
    except av.FFmpegError:
        return frames, True
    return frames, False


def test_a_killed_workers_streams_resume_on_the_survivor(ray_cluster, weights, videos, davis, tmp_path):
    """A worker killed mid-run: its streams move, resume at the first frame not written, and keep their targets.

    Each file source's tracks.jsonl ends with exactly one line per frame of the file; events.jsonl
    of each moved stream says `moved` with the frame the stream went on from, which is the next
    line written; the targets have the same ids after the move and are found again at once, and
    the other tracks get ids not used before. The killed worker's part of the video plays up to
    its last complete fragment; the survivor's part, annotated-part2.mp4, holds every frame after.
    """
    clips = _clips(videos, davis)
    chosen = [clips[i] for i in ("bag", "swan", "car")]  # bag and car share worker-0, swan is on worker-1
    pipeline = build_cluster_pipeline(_config(weights, tmp_path, chosen, "local", video=True))
    seen: dict[str, list[int]] = {c.id: [] for c in chosen}
    moved_at: dict[str, int] = {}  # stream → its records handed on before the move
    pipeline.on_moved = lambda source_id, dead, to: moved_at.setdefault(source_id, len(seen[source_id]))
    killed, on_it, lines_then = None, set(), {}
    for record in pipeline.results():
        seen[record.source_id].append(record.frame)
        if killed is None and record.source_id == TRIGGER and len(seen[TRIGGER]) >= KILL_AT:
            killed = pipeline.worker_of(TRIGGER)
            on_it, lines_then = set(killed.streams), {i: len(seen[i]) for i in killed.streams}
            assert TRIGGER in on_it, f"{TRIGGER} ended before its {KILL_AT}th record came home"
            pipeline.ray.kill(killed.actor)
    summary = pipeline.summary

    assert killed is not None and TRIGGER in moved_at
    assert set(moved_at) <= on_it  # only the killed worker's streams moved
    assert not summary.interrupted and summary.error_source is None
    for clip in chosen:
        folder = tmp_path / clip.id
        records = read_jsonl(folder / "tracks.jsonl")
        assert [r["frame"] for r in records] == list(range(clip.frames)), clip.id  # each frame once, in order
        assert seen[clip.id] == list(range(clip.frames)), clip.id
        assert summary.sources[clip.id].frames == clip.frames
        moves = [e for e in read_jsonl(folder / "events.jsonl") if e["event"] == "moved"]
        if clip.id not in moved_at:
            assert moves == [], clip.id
            assert not (folder / "annotated-part2.mp4").exists()
            assert _playable(folder / "annotated.mp4") == (clip.frames, False), clip.id
            continue
        (move,) = moves
        resumed = move["next_frame"]
        assert resumed == seen[clip.id][moved_at[clip.id]], clip.id  # the first line written after the move
        assert resumed >= lines_then[clip.id]
        before, after = records[:resumed], records[resumed:]
        assert _target_ids(before) and _target_ids(after) == _target_ids(before), clip.id
        found = {t["id"] for t in after[0]["tracks"] if t["target"] and t["state"] == "tracked"}
        assert found == _target_ids(before), clip.id  # re-seeded from its last box on the resume frame
        others = {t["id"] for r in after for t in r["tracks"] if not t["target"]}
        used = {t["id"] for r in before for t in r["tracks"]}
        assert all(i > max(used) for i in others), clip.id  # never an id the stream used before
        assert sorted(p.name for p in folder.iterdir()) == [
            "annotated-part2.mp4",
            "annotated.mp4",
            "events.jsonl",
            "tracks.jsonl",
        ]
        # the survivor's part of the video holds every frame from the move on
        assert _playable(folder / "annotated-part2.mp4") == (clip.frames - resumed, False), clip.id
    # the killed worker's part plays up to its last complete fragment (sinks/video.py frames_at_risk)
    frames, damaged = _playable(tmp_path / TRIGGER / "annotated.mp4")
    with av.open(str(clips[TRIGGER].path)) as container:
        fps = math.ceil(container.streams.video[0].average_rate)
    at_risk = fps + ENCODER_DELAY_FRAMES + 1 + (fps + 2 if damaged else 0)
    assert frames >= KILL_AT - at_risk > 0
    assert summary.frames == sum(c.frames for c in chosen)


def test_too_small_a_cluster_is_refused_in_one_line(ray_cluster, weights, videos, davis, tmp_path):
    """Three workers of two CPUs on a cluster of four: a ClusterError at once, not a wait for ever.

    The module's cluster is left as it was (it was not this run's to shut down).
    """
    clip = _clips(videos, davis)["swan"]
    with pytest.raises(ClusterError) as caught:
        build_cluster_pipeline(_config(weights, tmp_path, [clip], "local", workers=3, cpus_per_worker=2))
    message = str(caught.value)
    assert "\n" not in message
    assert f"the cluster has {RAY_CPUS} CPUs" in message and "3 workers" in message and "need 6" in message
    assert ray_cluster.is_initialized() and ray_cluster.cluster_resources()["CPU"] == RAY_CPUS
    assert not (tmp_path / "tracks.jsonl").exists()


def _args(weights: Path, source: Path, out: Path, *more: str) -> list[str]:
    return ["run", str(source), "--weights", str(weights), "--device", "cpu", "--out", str(out), *more]


def test_the_command_line_runs_streams_on_a_cluster_of_its_own(cli, weights, videos, davis, tmp_path):
    """`fastsam-stream run --ray --workers 2`: a local cluster started by the command, every output in its folder."""
    clips = _clips(videos, davis)
    chosen = [clips["car"], clips["swan"]]
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": [{"id": c.id, "path": str(c.path)} for c in chosen],
                "prompts": [{"source": c.id, "boxes": [list(c.box)]} for c in chosen],
            }
        )
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [*cli, "run", "--config", str(config), "--weights", str(weights), "--imgsz", "320", "--device", "cpu"]
        + ["--out", str(out), "--ray", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert f"{sum(c.frames for c in chosen)} frames" in done.stdout
    for clip in chosen:
        folder = out / clip.id
        assert sorted(p.name for p in folder.iterdir()) == ["annotated.mp4", "events.jsonl", "tracks.jsonl"]
        records = read_jsonl(folder / "tracks.jsonl")
        assert [r["frame"] for r in records] == list(range(clip.frames)), clip.id
        assert len(_target_ids(records)) == 1, clip.id
        assert _playable(folder / "annotated.mp4") == (clip.frames, False), clip.id
        assert str(folder / "tracks.jsonl") in done.stdout


def test_without_ray_installed_the_run_stops_in_one_line_naming_the_extra(weights, videos, tmp_path):
    """With Ray not importable, `--ray` fails before anything is written: one line naming the [ray] extra."""
    out = tmp_path / "out"
    args = _args(weights, videos / "carphone_pristine.mp4", out, "--ray")
    code = f"import sys; sys.modules['ray'] = None\nfrom fastsam_stream.cli import main\nsys.exit(main({args!r}))\n"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=IMPORT_MARGIN_S, cwd=tmp_path
    )
    assert done.returncode != 0
    (line,) = done.stderr.splitlines()
    assert line.startswith("fastsam-stream: error: ") and "[ray]" in line
    assert not out.exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_closed_port_fails_in_one_line_without_waiting_for_the_timeout(cli, weights, videos, tmp_path):
    """Nothing listening: refused at once, although the config allows an hour to answer."""
    config = tmp_path / "cluster.yaml"
    config.write_text("cluster:\n  connect_timeout_s: 3600\n")
    port = _closed_port()
    done = subprocess.run(
        [*cli, *_args(weights, videos / "carphone_pristine.mp4", tmp_path / "out", "--ray", f"127.0.0.1:{port}")]
        + ["--config", str(config)],
        capture_output=True,
        text=True,
        timeout=IMPORT_MARGIN_S,  # far less than the hour: the refusal did not wait for it
    )
    assert done.returncode != 0
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"fastsam-stream: error: cannot reach the Ray cluster at 127.0.0.1:{port}")
    assert "refused" in line.lower()


class SilentServer:
    """Takes TCP connections on 127.0.0.1 and never says a word (not a Ray head, or a hung one)."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:  # closed
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self.socket.close()
        for connection in self.accepted:
            connection.close()


def test_an_address_that_never_answers_fails_in_one_line_after_the_timeout(cli, weights, videos, tmp_path):
    """Something takes the connection but never answers: one line naming the timeout, and the process ends."""
    timeout_s = 2
    config = tmp_path / "cluster.yaml"
    config.write_text(f"cluster:\n  connect_timeout_s: {timeout_s}\n")
    server = SilentServer()
    try:
        address = f"127.0.0.1:{server.port}"
        done = subprocess.run(
            [*cli, *_args(weights, videos / "carphone_pristine.mp4", tmp_path / "out", "--ray", address)]
            + ["--config", str(config)],
            capture_output=True,
            text=True,
            timeout=timeout_s + IMPORT_MARGIN_S,  # ends after the timeout, not after Ray's minutes of retries
        )
        assert server.accepted  # the address did answer the TCP connection: the wait was for Ray itself
    finally:
        server.close()
    assert done.returncode != 0
    (line,) = done.stderr.splitlines()
    assert line == (
        f"fastsam-stream: error: the Ray cluster at {address} did not answer within {timeout_s} s (is it a Ray head?)"
    )


LINGER_S = 8  # a program that goes on after the error: Ray's retries would write within this (at 5 s)


def test_an_address_that_never_answers_leaves_stderr_quiet_in_a_program_that_goes_on(weights, videos, tmp_path):
    """After the timeout, Ray's own retries in the background never reach stderr; Python's stderr still works.

    A program using the API catches the ClusterError and goes on (as the command line does while
    its process ends, which takes long on a busy machine).
    """
    server = SilentServer()
    try:
        config = {
            "sources": [{"id": "car", "path": str(videos / "carphone_pristine.mp4")}],
            "model": {"weights": str(weights), "device": "cpu"},
            "output": {"dir": str(tmp_path / "out")},
            "cluster": {"address": f"127.0.0.1:{server.port}", "connect_timeout_s": 2},
        }
        code = (
            "import sys, time\n"
            "from fastsam_stream.cluster.build import build_cluster_pipeline\n"
            "from fastsam_stream.config import Config\n"
            "from fastsam_stream.errors import ClusterError\n"
            "try:\n"
            f"    build_cluster_pipeline(Config.model_validate({config!r}))\n"
            "except ClusterError as exc:\n"
            "    print(exc, flush=True)\n"
            f"time.sleep({LINGER_S})\n"
            "print('still here', file=sys.stderr)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=LINGER_S + IMPORT_MARGIN_S
        )
        assert server.accepted
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"the Ray cluster at 127.0.0.1:{server.port} did not answer within 2 s")
    assert done.stderr == "still here\n"


def test_a_worker_that_cannot_start_is_one_line_with_its_reason(ray_cluster, videos, davis, tmp_path):
    """Weights the workers cannot load: a ClusterError naming the worker and the remote error's own line."""
    missing = tmp_path / "missing.pt"
    with pytest.raises(ClusterError) as caught:
        build_cluster_pipeline(_config(missing, tmp_path / "out", [_clips(videos, davis)["swan"]], "local", workers=1))
    reason = f"ModelError: weights file not found: {missing}"
    assert re.fullmatch(rf"worker-0 could not start: {re.escape(reason)}", str(caught.value)), str(caught.value)
    assert ray_cluster.is_initialized()
