"""Scale-out on Ray: the same streams in one process and on Ray workers, then many light workers.

    .venv/bin/python bench/scale_out.py [--workers 1,2] [--stand-in-workers 8,32,128] [--ray ADDRESS] [--quick]

1. Real curve: N real clips (default 4) with the real model (imgsz 320 by default) run in one
   process (`build_pipeline`, the baseline), then on a Ray cluster with 1, 2, ... workers
   (`build_cluster_pipeline`), in interleaved rounds; medians are reported. Each run's steady state
   is the same number of frames after the same warm-up; start-up (model loaded, workers ready, first
   result) is reported apart. Aggregate frames/s, latency from capture to the record written on the
   driver (p50/p99 over every stream's frames, and the worst stream's p99), and each figure's ratio to
   the baseline; then where the CPU went during the steady state (driver, workers, Ray's daemons,
   everything else on the machine).
2. Stand-in curve: a stand-in segmenter of FIXED cost per batch (time.sleep: no CPU, like a model on
   an accelerator) returning 3 fixed instances, on cheap sources (a folder of 64x48 JPEGs written to
   a temporary folder), with 1 worker (the per-worker rate), then 8, 32 and 128 (or `--stand-in-workers`)
   and 4 streams each, on fractional `cpus_per_worker`. Each scale warms up, waits until the driver
   has caught up with the workers (records written at start-up pile up on the workers while the driver
   places the streams), then measures a few seconds; start-up (workers ready, streams placed, steady)
   is reported apart, and a scale that has no result within `--startup-limit-s` is interrupted and
   reported with how far it got. Aggregate frames/s against the ideal linear figure (workers × the
   1-worker rate), CPU cores used by the driver, the workers, Ray's daemons and everything else, and
   each actor's memory (RSS, PSS, private; the PSS the scale added to the run's processes). A scale
   that would not fit in memory (as measured at the previous one) is not run: the most that fit is said.

Latency: capture → the record written on the driver. The workers' records do not carry their
capture time, so the segmenter factory installs a probe in each worker process that adds the frame's
wall-clock capture time and result time to its tracks.jsonl record; the driver takes `time.time()`
minus them once the record is written (exact on one machine; across machines, up to clock skew):
the latency, and the home leg (result on the worker → written on the driver). In one process:
`time.monotonic() - frame.captured_at` once the result has gone through every sink. The mean of
`ClusterPipeline.latency` over the window is printed beside the probe's, as a check.

CPU accounting is per process, from /proc: with a cluster this run starts, the driver's descendants
are its Ray processes; with `--ray ADDRESS` (a running cluster: `ray start --head`, then `--ray
HOST:6379` or `--ray ray://HOST:10001`; sources and the output folder must be at the same paths on
every node) any Ray process on this machine counts as the cluster's. Figures vary between machines
and runs (another job on the machine shows as "other processes"): compare within one run only.
"""

from __future__ import annotations

import _thread
import argparse
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fastsam_stream.config import Config
from fastsam_stream.core import DenseMasks, Frame, Instances
from fastsam_stream.pipeline.segmenter import SegmenterSettings, quiet_ultralytics

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VIDEOS = SHARED / "media" / "videos"
DEFAULT_CLIPS = ("vtest.avi", "bikes.mp4", "bag.avi", "bedroom.mp4")
CAPTURED = "_bench_captured_wall"  # the probe's keys in a worker's records: the frame's capture, wall clock
RESULTED = "_bench_result_wall"  # ... and its result on the worker (its record made), wall clock
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MEMORY_RESERVE = 2 << 30  # what a scale must leave free on this machine to be tried


# -- on the workers: the latency probe and the stand-in segmenter ----------------------------------


def install_probe() -> None:
    """In a worker process: each tracks.jsonl record also carries its frame's capture and result times (wall clock)."""
    from fastsam_stream.sinks.jsonl import TrackRecords

    if getattr(TrackRecords.record, "probed", False):
        return
    plain = TrackRecords.record

    def record(self, result):  # noqa: ANN001, ANN202 - TrackRecords.record's own signature
        made = plain(self, result)
        now = time.time()
        made[CAPTURED] = now - (time.monotonic() - result.frame.captured_at)
        made[RESULTED] = now
        return made

    record.probed = True
    TrackRecords.record = record


class RealModel:
    """The worker's default segmenter (the real model), with the latency probe installed first."""

    def __call__(self, settings: SegmenterSettings):  # noqa: ANN204 - a Segmenter
        install_probe()
        from fastsam_stream.pipeline import UltralyticsSegmenter

        return UltralyticsSegmenter(settings)


class FixedCost:
    """A stand-in segmenter: sleeps `cost_s` per batch (whatever its size) and returns 3 fixed instances.

    Args:
        cost_s: Seconds per batch.
    """

    def __init__(self, cost_s: float) -> None:
        self.cost_s = cost_s

    def segment(self, frames: list[Frame]) -> list[Instances]:
        time.sleep(self.cost_s)
        out = []
        for f in frames:
            h, w = f.height, f.width
            boxes = np.array(
                [[0, 0, w // 3, h // 3], [w // 3, h // 3, 2 * w // 3, 2 * h // 3], [w // 2, 0, w, h // 2]], np.float32
            )
            masks = np.zeros((3, h, w), bool)
            for row, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
                masks[row, y1:y2, x1:x2] = True
            out.append(Instances(boxes, np.array([0.9, 0.8, 0.7]), (h, w), masks=DenseMasks(masks)))
        return out


class StandIn:
    """Makes a worker's FixedCost segmenter (and installs the latency probe there)."""

    def __init__(self, cost_s: float) -> None:
        self.cost_s = cost_s

    def __call__(self, settings: SegmenterSettings) -> FixedCost:
        install_probe()
        return FixedCost(self.cost_s)


# -- on the driver: the machine, CPU and memory accounting -----------------------------------------


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), platform.processor())
    cores = len(os.sched_getaffinity(0))
    total = meminfo()["MemTotal"] / 2**30
    gpu = "no GPU" if not Path("/dev/nvidia0").exists() else "a GPU (unused: device cpu)"
    import ray

    return (
        f"{cpu}, {cores} cores, {total:.1f} GiB RAM, {gpu}; Python {platform.python_version()}, Ray {ray.__version__}"
    )


def code_version() -> str:
    """The commit, and the files of cluster/ changed since (the benchmark measures the working tree)."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    import fastsam_stream

    package = Path(fastsam_stream.__file__).resolve().parent
    if package != ROOT:
        return f"fastsam_stream imported from {package}, not from this checkout ({ROOT})"
    changed = git("status", "--porcelain", "--", "cluster", "pipeline", "sinks")
    files = [line[3:] for line in changed.splitlines()]
    return f"commit {git('rev-parse', '--short', 'HEAD') or '?'}" + (
        f", uncommitted changes in {', '.join(files)}"
        if files
        else ", no uncommitted change in cluster/ pipeline/ sinks/"
    )


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes."""
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0]) * 1024
    return out


def load() -> str:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return f"load average {one} {five} {fifteen}"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def processes() -> dict[int, tuple[int, str, int]]:
    """Every process: pid → (parent pid, command line, utime + stime ticks)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(f"/proc/{entry}/stat")
        if not stat:
            continue
        rest = stat.rsplit(")", 1)[1].split()
        cmdline = _read(f"/proc/{entry}/cmdline").replace("\0", " ").strip()
        found[int(entry)] = (int(rest[1]), cmdline, int(rest[11]) + int(rest[12]))
    return found


def descendants(table: dict[int, tuple[int, str, int]], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def is_worker(cmdline: str) -> bool:
    """A Ray worker process (an actor, or an idle one), not one of Ray's agents (ray::DashboardAgent, ...)."""
    return cmdline.startswith("ray::") and "Agent" not in cmdline.split()[0]


def kind_of(pid: int, cmdline: str, mine: set[int] | None) -> str:
    """driver, workers (Ray worker processes), ray daemons (raylet, gcs_server, agents), or other.

    `mine`: the processes of the Ray cluster this run started (its driver's descendants); None when
    it joined a running cluster: then any Ray process on this machine counts as the cluster's.
    """
    if pid == os.getpid():
        return "driver"
    if mine is not None:
        if pid not in mine:
            return "other"
        return "workers" if is_worker(cmdline) else "ray daemons"
    if is_worker(cmdline):
        return "workers"
    if cmdline.startswith("ray::") or "/site-packages/ray/" in cmdline:
        return "ray daemons"
    return "other"


OWN_CLUSTER = True  # the Ray cluster was started by this run (set in main)


@dataclass
class CpuSample:
    at: float
    busy: int  # machine-wide busy ticks
    total: int  # machine-wide ticks
    per_pid: dict[int, tuple[str, int]]  # pid → (kind, utime + stime ticks)


def cpu_sample() -> CpuSample:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    table = processes()
    mine = descendants(table, os.getpid()) if OWN_CLUSTER else None
    per_pid = {pid: (kind_of(pid, cmdline, mine), ticks) for pid, (_, cmdline, ticks) in table.items()}
    return CpuSample(time.monotonic(), sum(fields) - idle, sum(fields), per_pid)


def cpu_between(a: CpuSample, b: CpuSample) -> dict[str, float]:
    """Cores used between two samples by each kind of process, and the machine ('busy', of its cores)."""
    seconds = b.at - a.at
    used: dict[str, float] = {"driver": 0.0, "workers": 0.0, "ray daemons": 0.0, "other": 0.0}
    for pid, (kind, ticks) in b.per_pid.items():
        before = a.per_pid.get(pid)
        started = ticks - (before[1] if before and before[0] == kind else 0)
        used[kind] += started / TICK / seconds
    cores = len(os.sched_getaffinity(0))
    used["busy"] = (b.busy - a.busy) / max(b.total - a.total, 1) * cores
    return used


def cpu_line(used: dict[str, float]) -> str:
    cores = len(os.sched_getaffinity(0))
    return (
        f"CPU cores used: driver {used['driver']:.2f}, workers {used['workers']:.2f}, "
        f"Ray daemons {used['ray daemons']:.2f}, other processes {used['other']:.2f}; "
        f"machine busy {used['busy']:.2f} of {cores}"
    )


@dataclass
class ActorMemory:
    count: int
    rss: float  # median bytes per actor
    pss: float
    private: float
    torch: int  # actors with libtorch mapped
    nice: str  # their niceness (Ray's default for workers: 15)


def actor_memory() -> ActorMemory:
    """Memory of this machine's StreamWorker actor processes (Ray names them ray::StreamWorker...)."""
    rss, pss, private, torch, nice = [], [], [], 0, set()
    table = processes()
    mine = descendants(table, os.getpid()) if OWN_CLUSTER else set(table)
    for entry, (_, cmdline, _) in table.items():
        if entry not in mine or not cmdline.startswith("ray::StreamWorker"):
            continue
        rollup = {}
        for line in _read(f"/proc/{entry}/smaps_rollup").splitlines()[1:]:
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                rollup[key] = int(value.split()[0]) * 1024
        if not rollup:
            continue
        rss.append(rollup.get("Rss", 0))
        pss.append(rollup.get("Pss", 0))
        private.append(rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0))
        torch += "libtorch" in _read(f"/proc/{entry}/maps")
        stat = _read(f"/proc/{entry}/stat")
        if stat:
            nice.add(stat.rsplit(")", 1)[1].split()[16])
    if not rss:
        return ActorMemory(0, 0.0, 0.0, 0.0, 0, "?")
    return ActorMemory(
        len(rss),
        statistics.median(rss),
        statistics.median(pss),
        statistics.median(private),
        torch,
        ",".join(sorted(nice)),
    )


def cluster_pss() -> int:
    """Bytes of PSS of this run's processes: the driver and (a cluster it started) every Ray process under it."""
    table = processes()
    mine = {os.getpid(), *descendants(table, os.getpid())} if OWN_CLUSTER else {os.getpid()}
    if not OWN_CLUSTER:  # a cluster joined: its Ray processes on this machine
        mine |= {pid for pid, (_, cmdline, _) in table.items() if cmdline.startswith("ray::")}
    total = 0
    for pid in mine:
        for line in _read(f"/proc/{pid}/smaps_rollup").splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
    return total


def mib(value: float) -> str:
    return f"{value / 2**20:.0f} MiB"


# -- one run -----------------------------------------------------------------------------------------


@dataclass
class Window:
    """What one run measured."""

    startup: float  # seconds from building to the first result
    build: float  # of which building (model loaded, workers ready)
    steady_after: float  # seconds from building to the window's start
    frames: int
    seconds: float
    latencies: dict[str, list[float]]  # capture → written on the driver (in one process: through every sink)
    home: list[float]  # cluster: result on the worker → written on the driver
    cpu: dict[str, float]
    reports: int = 0  # cluster: worker reports taken during the window
    caught_up: bool = True  # the window started once the driver had caught up with the workers
    extra: dict = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    def percentile(self, q: float) -> float:
        every = [v for values in self.latencies.values() for v in values]
        return float(np.percentile(every, q)) if every else float("nan")

    @property
    def worst_p99(self) -> float:
        return max((float(np.percentile(v, 99)) for v in self.latencies.values() if v), default=float("nan"))

    def home_percentile(self, q: float) -> float:
        return float(np.percentile(self.home, q)) if self.home else float("nan")


CAUGHT_UP_S = 1.0
"""The driver has caught up when every stream has come home, and 95% of the streams' latest records reached
it within this long of their result on the worker."""


def measure(
    items: Iterator,
    stop: Callable[[], None],
    latency_of: Callable[[object], tuple[str, float, float | None]],
    started: float,
    build: float,
    warm_frames: int = 0,
    frames: int | None = None,
    warm_s: float = 0.0,
    window_s: float | None = None,
    catch_up_s: float = 0.0,
    streams: int = 1,
    reports: Callable[[], int] = lambda: 0,
) -> Window:
    """Iterate a run: warm up, then a steady window, then stop it.

    By frames (`warm_frames`, `frames`), or by seconds (`warm_s` after the first result, and then until
    the driver has caught up with the workers, at most `catch_up_s` more; then `window_s`).
    """
    n, n0, first, t0, a, r0 = 0, 0, None, None, None, 0
    latencies: dict[str, list[float]] = {}
    home: list[float] = []
    last_leg: dict[str, float] = {}  # each stream's latest home leg, during the warm-up
    done, caught_up = None, True
    for item in items:
        n += 1
        now = time.monotonic()
        first = now if first is None else first
        source_id, latency, leg = latency_of(item)
        if t0 is None:
            if leg is not None:
                last_leg[source_id] = leg
            if frames is not None:
                begin = n > warm_frames
            else:
                legs = sorted(last_leg.values())
                behind = len(legs) < streams or legs[int(0.95 * (len(legs) - 1))] > CAUGHT_UP_S
                caught_up = not behind
                begin = now - first >= warm_s and (not behind or now - first >= warm_s + catch_up_s)
            if begin:
                t0, n0, a, r0 = now, n, cpu_sample(), reports()
            continue
        if done is None:
            latencies.setdefault(source_id, []).append(latency)
            if leg is not None:
                home.append(leg)
            if (frames is not None and n - n0 >= frames) or (window_s is not None and now - t0 >= window_s):
                done = (n - n0, now - t0, cpu_sample(), reports() - r0)
                stop()
    if done is None:
        raise RuntimeError(f"the run ended after {n} results, before its window did: give it longer sources")
    count, seconds, b, taken = done
    return Window(
        first - started, build, t0 - started, count, seconds, latencies, home, cpu_between(a, b), taken, caught_up
    )


def in_process(config: Config, warm: int, frames: int) -> Window:
    from fastsam_stream.assemble import build_pipeline

    started = time.monotonic()
    pipeline = build_pipeline(config)
    build = time.monotonic() - started

    def latency_of(result) -> tuple[str, float, None]:  # noqa: ANN001
        return result.frame.source_id, time.monotonic() - result.frame.captured_at, None

    return measure(pipeline.results(), pipeline.stop, latency_of, started, build, warm_frames=warm, frames=frames)


class StartUpTooLongError(Exception):
    """A cluster run that did not reach its first result within its start-up limit (what it reached, in words)."""


def on_ray(
    config: Config,
    factory: Callable[[SegmenterSettings], object],
    warm: int = 0,
    frames: int | None = None,
    warm_s: float = 0.0,
    window_s: float | None = None,
    catch_up_s: float = 0.0,
    startup_limit_s: float | None = None,
) -> Window:
    """One cluster run; the actors' memory is measured as the window ends (every stream running).

    Raises:
        StartUpTooLongError: No result within `startup_limit_s` of the start (workers started, streams placed):
            the run is interrupted (as Ctrl-C would), its workers stopped, and how far it got is said.
    """
    from fastsam_stream.cluster.build import build_cluster_pipeline

    before, pss_before = meminfo()["MemAvailable"], cluster_pss()
    started = time.monotonic()
    state: dict = {"pipeline": None, "ready": None, "first": False, "fired": False}
    done = threading.Event()

    def watch() -> None:  # interrupts the main thread (blocked in Ray) once the limit has passed
        if startup_limit_s is None or done.wait(startup_limit_s) or state["first"]:
            return
        state["fired"] = True
        _thread.interrupt_main()

    watchdog = threading.Thread(target=watch, name="start-up limit", daemon=True)
    watchdog.start()
    try:
        pipeline = build_cluster_pipeline(config, factory)
        build = state["ready"] = time.monotonic() - started
        state["pipeline"] = pipeline
        taken, memory = [0], {}
        plain = pipeline._take

        def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - counts the worker reports the driver takes
            taken[0] += 1
            return plain(*args, **kwargs)

        pipeline._take = counted
        snapshots = []

        def latency_of(record) -> tuple[str, float, float]:  # noqa: ANN001
            state["first"] = True
            now = time.time()
            return record.source_id, now - record.record[CAPTURED], now - record.record[RESULTED]

        def mark() -> int:  # at the window's start and end: the reports so far, and the pipeline's own latency
            snapshots.append(pipeline.latency.snapshot())
            return taken[0]

        def stop() -> None:
            memory.update(
                ended=sum(p.closed for p in pipeline.places.values()),
                memory=actor_memory(),
                available_drop=before - meminfo()["MemAvailable"],
                pss_added=cluster_pss() - pss_before,
            )
            pipeline.stop()

        window = measure(
            pipeline.results(),
            stop,
            latency_of,
            started,
            build,
            warm_frames=warm,
            frames=frames,
            warm_s=warm_s,
            window_s=window_s,
            catch_up_s=catch_up_s,
            streams=len(pipeline.places),
            reports=mark,
        )
    except KeyboardInterrupt:
        if not state["fired"]:
            raise
        spent = time.monotonic() - started
        if state["pipeline"] is None:
            raise StartUpTooLongError(
                f"no result within {spent:.0f} s: the workers were still starting (not all ready)"
            ) from None
        places = state["pipeline"].places.values()
        placed = sum(p.worker is not None for p in places)
        raise StartUpTooLongError(
            f"no result within {spent:.0f} s: workers ready after {state['ready']:.0f} s, then {placed} of "
            f"{len(places)} streams placed in {spent - state['ready']:.0f} s "
            f"({(spent - state['ready']) / max(placed, 1):.2f} s per stream; the driver places them one call "
            "after another, before it takes any result)"
        ) from None
    finally:
        done.set()
    a, b = snapshots[0], snapshots[-1]
    count = b.count - a.count
    memory["own_latency_mean"] = (b.total - a.total) / count if count else float("nan")
    window.extra = memory
    return window


class RayWarnings:
    """Collects what the raylet pushes to the driver (printed on stdout by Ray otherwise), to summarise it."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def install(self) -> None:
        from ray._private import worker

        plain = worker.print_to_stdstream

        def collect(data, ignore_prefix=False):  # noqa: ANN001, ANN202, FBT002 - Ray's signature
            if data.get("pid") == "raylet":
                self.messages.extend(line.strip() for line in data.get("lines", []))
            else:
                plain(data, ignore_prefix=ignore_prefix)

        worker.print_to_stdstream = collect

    def summary(self) -> str | None:
        """The warnings since the last summary: how many, and the last one (shortened)."""
        if not self.messages:
            return None
        last = self.messages[-1]
        last = last[:200] + ("..." if len(last) > 200 else "")
        text = f"Ray warned {len(self.messages)} time(s); the last: {last}"
        self.messages.clear()
        return text


RAY_WARNINGS = RayWarnings()


# -- configs -----------------------------------------------------------------------------------------


def make_config(sources: list[tuple[str, str]], out: Path, model: dict, cluster: dict | None, video: bool) -> Config:
    return Config.model_validate(
        {
            "sources": [{"id": i, "path": p} for i, p in sources],
            "model": model,
            "output": {"dir": str(out), "overwrite": True, "video": video},
            "cluster": cluster or {},
        }
    )


def write_images(folder: Path, count: int, size: tuple[int, int] = (64, 48)) -> None:
    rng = np.random.default_rng(0)
    w, h = size
    for i in range(count):
        image = np.full((h, w, 3), 90, np.uint8)
        x = int(8 + 40 * (i % 30) / 30)
        cv2.rectangle(image, (x, 10), (x + 16, 30), (40, 200, 60), -1)
        image += rng.integers(0, 12, image.shape, dtype=np.uint8)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), image)


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def ratio(value: float, base: float) -> str:
    return f"{value / base:5.2f}x"


# -- the two curves ----------------------------------------------------------------------------------


def real_curve(args: argparse.Namespace, address: str, cluster_cpus: float, tmp: Path, budget: Budget) -> None:
    clips = [VIDEOS / c if "/" not in c else Path(c) for c in args.clips.split(",")]
    sources = [(f"s{i}-{c.stem}", str(c)) for i, c in enumerate(clips)]
    model = {"weights": args.weights, "imgsz": args.imgsz, "device": "cpu"}
    cores = len(os.sched_getaffinity(0))
    local = address == "local"
    print(
        f"\n== 1. real curve: {len(clips)} streams ({', '.join(c.name for c in clips)}), {Path(args.weights).name}, "
        f"imgsz {args.imgsz}, CPU; outputs tracks.jsonl{' + annotated.mp4' if args.video else ''} per stream "
        f"(defaults otherwise); {args.warm} warm-up results, then {args.frames} measured (all streams together); "
        f"{args.rounds} interleaved round(s), medians. Ray workers: cpus_per_worker "
        f"{cluster_cpus / max(args.workers):g}, torch threads {'cores / workers' if local else 'their node default'}"
    )
    names = ["one process"] + [f"Ray, {w} worker{'s' * (w > 1)}" for w in args.workers]
    runs: dict[str, list[Window]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name, workers in zip(names, [0, *args.workers], strict=True):
            if not budget.allows(30 + (args.warm + args.frames) / 5, f"{name}, round {r + 1}"):
                continue
            out = tmp / f"real-{r}-{workers}"
            if workers == 0:
                window = in_process(make_config(sources, out, model, None, args.video), args.warm, args.frames)
                window.extra["threads"] = cores
            else:
                # Each worker's torch threads: the machine's cores shared out (a cluster's nodes: their own count).
                threads = max(1, cores // workers) if local else None
                cluster = {"address": address, "workers": workers, "cpus_per_worker": cluster_cpus / max(args.workers)}
                config = make_config(sources, out, {**model, "threads": threads}, cluster, args.video)
                window = on_ray(config, RealModel(), warm=args.warm, frames=args.frames)
                window.extra["threads"] = threads
            runs[name].append(window)
            home = f"home leg p50 {window.home_percentile(50) * 1000:4.0f} ms  " if window.home else " " * 23
            print(
                f"  round {r + 1} {name:16s} {window.fps:6.1f} frames/s  p50 {window.percentile(50) * 1000:5.0f} ms "
                f"p99 {window.percentile(99) * 1000:5.0f} ms  {home}start-up {window.startup:5.1f} s  "
                f"{cpu_line(window.cpu)}{reports_line(window)}",
                flush=True,
            )
            warned = RAY_WARNINGS.summary()
            if warned:
                print(f"    {warned}")
    if not runs[names[0]]:
        return
    base = median_window(runs[names[0]])
    print(
        f"\n  {'run':16s} {'frames/s':>9s} {'ratio':>6s} {'p50 ms':>7s} {'ratio':>6s} {'p99 ms':>7s} {'ratio':>6s} "
        f"{'worst stream p99':>16s} {'home p50/p99 ms':>15s} {'start-up s':>10s} {'threads':>7s}  runs (frames/s)"
    )
    for name in names:
        if not runs[name]:
            continue
        m = median_window(runs[name])
        threads = runs[name][0].extra["threads"] or "node"
        home = f"{m.home_p50 * 1000:.0f}/{m.home_p99 * 1000:.0f}" if runs[name][0].home else "-"
        print(
            f"  {name:16s} {m.fps:9.1f} {ratio(m.fps, base.fps)} {m.p50 * 1000:7.0f} {ratio(m.p50, base.p50)} "
            f"{m.p99 * 1000:7.0f} {ratio(m.p99, base.p99)} {m.worst_p99 * 1000:13.0f} ms {home:>15s} "
            f"{m.startup:10.1f} {threads:>7}  {' '.join(f'{w.fps:.1f}' for w in runs[name])}"
        )
    print(
        "  latency: capture → record written on the driver (one process: through every sink); home leg: result on "
        "the worker → written on the driver; start-up: build (model loaded, workers ready) to the first result"
    )
    for name, workers in zip(names[1:], args.workers, strict=True):
        if not runs[name]:
            continue
        m = median_window(runs[name])
        change = 100 * (m.fps / base.fps - 1)
        paired = [100 * (w.fps / b.fps - 1) for w, b in zip(runs[name], runs[names[0]], strict=False)]
        line = (
            f"  {name}: frames/s {change:+.1f}% against one process (medians); per round, against the same "
            f"round's one-process run: {', '.join(f'{v:+.1f}%' for v in paired)} "
            f"(median {statistics.median(paired):+.1f}%)"
        )
        if workers == 1:
            worst = -min(change, statistics.median(paired))
            line += f": {'within' if worst <= 15 else 'OVER'} the 15% a single worker may cost"
        print(line)
    print("  CPU during the steady state (the median run of each):")
    for name in names:
        if runs[name]:
            w = sorted(runs[name], key=lambda w: w.fps)[len(runs[name]) // 2]
            print(f"    {name:16s} {cpu_line(w.cpu)}{reports_line(w)}")
    for name in names[1:]:
        if runs[name]:
            mem = runs[name][0].extra["memory"]
            own = statistics.median(w.extra["own_latency_mean"] for w in runs[name])
            probe = statistics.median(
                statistics.fmean(v for vs in w.latencies.values() for v in vs) for w in runs[name]
            )
            print(
                f"  {name}: each actor RSS {mib(mem.rss)}, PSS {mib(mem.pss)}, private {mib(mem.private)}, nice "
                f"{mem.nice}; {mem.torch} of {mem.count} with torch loaded. ClusterPipeline.latency's mean over "
                f"the window {own * 1000:.0f} ms, the probe's {probe * 1000:.0f} ms"
            )
    ended = [f"{name} round {i + 1}" for name in names for i, w in enumerate(runs[name]) if w.extra.get("ended")]
    if ended:
        print(f"  WARNING: a stream ended before the window did in {', '.join(ended)}: use longer clips")


def reports_line(w: Window) -> str:
    if not w.reports:
        return ""
    return f"; {w.reports / w.seconds:.0f} worker reports/s, {w.frames / w.reports:.1f} frames each"


@dataclass
class Median:
    fps: float
    p50: float
    p99: float
    worst_p99: float
    home_p50: float
    home_p99: float
    startup: float


def median_window(windows: list[Window]) -> Median:
    return Median(
        statistics.median(w.fps for w in windows),
        statistics.median(w.percentile(50) for w in windows),
        statistics.median(w.percentile(99) for w in windows),
        statistics.median(w.worst_p99 for w in windows),
        statistics.median(w.home_percentile(50) for w in windows),
        statistics.median(w.home_percentile(99) for w in windows),
        statistics.median(w.startup for w in windows),
    )


def backlog_note(w: Window, ceiling: float) -> str:
    if not w.caught_up:
        return "  (not caught up: a start-up backlog draining)"
    if w.fps > 1.05 * ceiling:
        return "  (above the ceiling: a start-up backlog draining)"
    return ""


PLACEMENT_MARGIN_S = 600.0
"""Seconds of frames each stand-in stream has beyond warm-up, catch-up and window: streams placed first run
while the driver places the rest (minutes, with hundreds of streams on a loaded machine)."""


def stand_in_curve(args: argparse.Namespace, address: str, cluster_cpus: float, tmp: Path, budget: Budget) -> None:
    folder = tmp / "images"
    folder.mkdir()
    per_worker = args.stand_in_batch / args.stand_in_s  # its ceiling
    per_stream = per_worker / args.streams_per_worker
    count = math.ceil(per_stream * (args.warm_s + args.catch_up_s + args.window_s + PLACEMENT_MARGIN_S))
    write_images(folder, count)
    scales = sorted({1, *args.stand_in_workers})
    cpus = cluster_cpus / max(scales)
    print(
        f"\n== 2. stand-in curve: a STAND-IN segmenter, NOT the model: time.sleep({args.stand_in_s * 1000:.0f} ms) "
        f"per batch (no CPU, like a model on an accelerator), 3 fixed instances per frame; "
        f"{args.streams_per_worker} streams per worker, each a folder of {count} 64x48 JPEGs; max_batch "
        f"{args.stand_in_batch}, so at most {per_worker:.0f} frames/s per worker; cpus_per_worker {cpus:.4g} "
        f"({cluster_cpus:g} cluster CPUs / {max(scales)}); outputs tracks.jsonl only. Each scale: {args.warm_s:g} s "
        f"warm-up after the first result, then until the driver has caught up (95% of the streams' latest "
        f"home legs under {CAUGHT_UP_S:g} s; at most {args.catch_up_s:g} s more), then {args.window_s:g} s measured"
    )
    model = {"weights": args.weights, "device": "cpu"}
    batch = {"max_batch": args.stand_in_batch}
    results: dict[int, Window] = {}
    per_actor = None  # bytes each actor costs, as measured at the latest scale of 8 or more
    for workers in scales:
        available = meminfo()["MemAvailable"]
        if per_actor is not None and workers * per_actor > available - MEMORY_RESERVE:
            fits = int((available - MEMORY_RESERVE) // per_actor)
            print(
                f"  {workers:4d} workers: NOT RUN: they would take ~{workers * per_actor / 2**30:.1f} GiB "
                f"({mib(per_actor)} each, as measured), {available / 2**30:.1f} GiB is available and "
                f"{MEMORY_RESERVE / 2**30:.0f} GiB is kept free; the most that fit: ~{fits}"
            )
            continue
        known = max(results) if results else None
        each = results[known].startup / known if known else 2.0  # seconds of start-up per worker, as measured
        startup = min(20 + workers * each, args.startup_limit_s)
        if not budget.allows(startup + args.warm_s + args.catch_up_s + args.window_s, f"{workers} stand-in workers"):
            continue
        sources = [(f"w{n}", str(folder)) for n in range(workers * args.streams_per_worker)]
        cluster = {"address": address, "workers": workers, "cpus_per_worker": cpus}
        config = make_config(sources, tmp / f"stand-in-{workers}", model, cluster, video=False)
        config = config.model_copy(update={"batch": config.batch.model_copy(update=batch)})
        began = time.monotonic()
        try:
            window = on_ray(
                config,
                StandIn(args.stand_in_s),
                warm_s=args.warm_s,
                window_s=args.window_s,
                catch_up_s=args.catch_up_s,
                startup_limit_s=args.startup_limit_s,
            )
        except StartUpTooLongError as exc:
            print(f"  {workers:4d} workers: NOT MEASURED (start-up limit {args.startup_limit_s:g} s): {exc}")
            print(f"       (the attempt took {time.monotonic() - began:.0f} s with its shutdown)", flush=True)
            continue
        except Exception as exc:  # noqa: BLE001 - reported as it is, and the next scale is still tried
            print(f"  {workers:4d} workers: FAILED: {type(exc).__name__}: {str(exc).splitlines()[0]}", flush=True)
            continue
        results[workers] = window
        drop, added = window.extra["available_drop"], window.extra["pss_added"]
        if workers >= 8:  # what the next scale is sized with (PSS: other processes do not blur it)
            per_actor = added / workers
        mem = window.extra["memory"]
        caught = ""
        if not window.caught_up:
            caught = (
                f" NOT CAUGHT UP after {args.catch_up_s:g} s: records of the start-up still waiting on the workers, "
                "so the window measures the driver draining them, not a steady state;"
            )
        elif window.fps > 1.05 * workers * per_worker:
            caught = " ABOVE the stand-in's ceiling: a backlog drained, not a steady state;"
        print(
            f"  {workers:4d} workers {window.fps:7.1f} frames/s ({window.fps / workers:.1f} per worker), "
            f"latency p50 {window.percentile(50) * 1000:.0f} ms p99 {window.percentile(99) * 1000:.0f} ms, home leg "
            f"p50 {window.home_percentile(50) * 1000:.0f} ms p99 {window.home_percentile(99) * 1000:.0f} ms;{caught}\n"
            f"       start-up: workers ready {window.build:.1f} s, streams placed and first result "
            f"{window.startup:.1f} s, steady {window.steady_after:.1f} s\n"
            f"       memory: {mem.count} actors (nice {mem.nice}), each RSS {mib(mem.rss)} PSS {mib(mem.pss)} "
            f"private {mib(mem.private)}, {mem.torch} with torch loaded; the run added {mib(added / workers)} PSS "
            f"per worker to its processes (the machine's available memory: {mib(drop / workers)} per worker, "
            f"other processes included)\n"
            f"       {cpu_line(window.cpu)}{reports_line(window)}; CPU per frame: workers "
            f"{window.cpu['workers'] / window.fps * 1000:.2f} ms, driver {window.cpu['driver'] / window.fps * 1000:.2f}"
            f" ms; the scale took {time.monotonic() - began:.0f} s in all",
            flush=True,
        )
        warned = RAY_WARNINGS.summary()
        if warned:
            print(f"       {warned}")
        if window.extra.get("ended"):
            print(f"       WARNING: {window.extra['ended']} streams ended before the window did: the figure is low")
    if 1 not in results:
        return
    rate = results[1].fps
    print(
        f"\n  {'workers':>7s} {'streams':>7s} {'frames/s':>9s} {'ideal':>8s} {'of ideal':>8s} {'p50 ms':>7s} "
        f"{'p99 ms':>7s} {'home p50':>8s} {'driver':>6s} {'workers':>7s} {'daemons':>7s} {'other':>5s} {'busy':>5s} "
        f"{'reports/s':>9s} {'RSS/actor':>9s} {'PSS/actor':>9s} {'private':>8s} {'ready s':>7s} {'steady s':>8s}"
    )
    for workers, w in results.items():
        ideal = workers * rate
        mem = w.extra["memory"]
        print(
            f"  {workers:7d} {workers * args.streams_per_worker:7d} {w.fps:9.1f} {ideal:8.1f} {w.fps / ideal:8.0%} "
            f"{w.percentile(50) * 1000:7.0f} {w.percentile(99) * 1000:7.0f} {w.home_percentile(50) * 1000:8.0f} "
            f"{w.cpu['driver']:6.2f} {w.cpu['workers']:7.2f} {w.cpu['ray daemons']:7.2f} {w.cpu['other']:5.2f} "
            f"{w.cpu['busy']:5.2f} {w.reports / w.seconds:9.0f} {mib(mem.rss):>9s} {mib(mem.pss):>9s} "
            f"{mib(mem.private):>8s} {w.build:7.1f} {w.steady_after:8.1f}{backlog_note(w, workers * per_worker)}"
        )
    print(
        f"  ideal = workers x the 1-worker rate ({rate:.1f} frames/s; the stand-in's ceiling is {per_worker:.0f}); "
        "driver/workers/daemons/other/busy: CPU cores used during the window (busy: the whole machine's)"
    )


class Budget:
    """The whole run's wall-clock budget: a stage that would not fit is skipped, and says so."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()

    @property
    def used(self) -> float:
        return time.monotonic() - self.started

    def allows(self, needs_s: float, what: str) -> bool:
        left = self.seconds - self.used
        if needs_s <= left:
            return True
        print(
            f"  {what}: NOT RUN: it needs ~{needs_s:.0f} s and {left:.0f} s of the {self.seconds:.0f} s budget is left"
        )
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=ints, default=[1, 2], help="Ray workers of the real curve (default 1,2)")
    parser.add_argument("--stand-in-workers", type=ints, default=[8, 32, 128], help="default 8,32,128")
    parser.add_argument("--ray", default=None, help="a running cluster's address (default: a local one for the run)")
    parser.add_argument(
        "--quick", action="store_true", help="a small smoke run: fewer frames, 1 round, 1 and 8 workers"
    )
    parser.add_argument(
        "--clips", default=",".join(DEFAULT_CLIPS), help="real curve: clips (names in shared/ or paths)"
    )
    parser.add_argument("--weights", default=str(SHARED / "models/yolov8n-seg-int8dq.pt"))
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--warm", type=int, default=40, help="real curve: warm-up results (every stream together)")
    parser.add_argument("--frames", type=int, default=400, help="real curve: measured results (every stream together)")
    parser.add_argument("--rounds", type=int, default=3, help="real curve: interleaved repeats (medians reported)")
    parser.add_argument("--no-video", dest="video", action="store_false", help="real curve: no annotated.mp4")
    parser.add_argument("--stand-in-s", type=float, default=0.5, help="stand-in: seconds of sleep per batch")
    parser.add_argument("--stand-in-batch", type=int, default=4, help="stand-in: max_batch")
    parser.add_argument("--streams-per-worker", type=int, default=4)
    parser.add_argument("--warm-s", type=float, default=3.0, help="stand-in: warm-up seconds")
    parser.add_argument("--window-s", type=float, default=8.0, help="stand-in: measured seconds")
    parser.add_argument(
        "--catch-up-s", type=float, default=120.0, help="stand-in: the longest wait for the driver to catch up"
    )
    parser.add_argument("--budget-s", type=float, default=1800.0, help="wall-clock budget of the whole run")
    parser.add_argument(
        "--startup-limit-s",
        type=float,
        default=420.0,
        help="stand-in: the longest a scale may take to its first result (workers started, streams placed)",
    )
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-stand-in", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.workers, args.stand_in_workers, args.rounds = args.workers[:1], [8], 1
        args.warm, args.frames, args.warm_s, args.window_s, args.catch_up_s = 20, 100, 2.0, 3.0, 30.0
    quiet_ultralytics()
    logging.basicConfig(level=logging.WARNING)
    budget = Budget(args.budget_s)
    print(f"machine: {machine()}")
    print(f"code: {code_version()}")
    print(f"before: {load()}; wall-clock budget {args.budget_s:.0f} s")
    import ray

    global OWN_CLUSTER
    address = args.ray or "local"
    OWN_CLUSTER = address == "local"
    started = time.monotonic()
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address == "local":
        cores = len(os.sched_getaffinity(0))
        ray.init(address="local", num_cpus=cores, include_dashboard=False, **quiet)
    else:
        ray.init(address=address, **quiet)
    RAY_WARNINGS.install()
    cluster_cpus = float(ray.cluster_resources().get("CPU", 1))
    print(
        f"Ray cluster: {address} ({cluster_cpus:g} CPUs, {len(ray.nodes())} node(s)), joined in "
        f"{time.monotonic() - started:.1f} s (not counted in any run's start-up); the same cluster serves every run"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="scale_out-") as tmp:
            if not args.skip_real:
                real_curve(args, address, cluster_cpus, Path(tmp), budget)
            if not args.skip_stand_in:
                stand_in_curve(args, address, cluster_cpus, Path(tmp), budget)
    finally:
        ray.shutdown()
    print(f"\nafter: {load()}; the whole run took {budget.used:.0f} s of its {args.budget_s:.0f} s budget")


if __name__ == "__main__":
    sys.exit(main())
