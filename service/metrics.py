"""`/metrics`: the pipeline's counters, histograms and gauges in Prometheus' text format.

Each service builds its own registry (`metrics_registry`), never prometheus_client's global one, so
two services (or two tests) in one process share nothing. The pipeline keeps its own counts
(pipeline/status.py); the collector here reads one snapshot of them at each scrape and turns it into
families, so the pipeline never pays for Prometheus between scrapes.

The families (every one prefixed `fastsam_stream_`):

    frames_total{stream}            counter    frames segmented
    dropped_frames_total{stream}    counter    frames never segmented (dropped to stay current)
    reconnects_total{stream}        counter    times a live source got its stream back
    latency_seconds                 histogram  capture-to-result latency of every frame
    batch_size                      histogram  frames per batch through the network
    queue_depth{stage}              gauge      items waiting: intake, prepared, results
    targets{stream}                 gauge      the stream's current targets
    fps{stream}                     gauge      frames per second over the last few seconds
    stream_up{stream}               gauge      1 while the stream's frames arrive
    stream_state{stream,state}      gauge      1 for the stream's state, 0 for the others
    model_loaded                    gauge      1 once the pipeline runs (0 while the model loads)
    zone_objects{stream,zone}       gauge      tracks inside the zone now (zones/)
    line_crossings_total{stream,line,direction}  counter  crossings "in" and "out"
    zone_events_total{stream,place,event}        counter  zone_enter, zone_leave, obstacle, ...
    alerts_sent_total{output}, alerts_dropped_total{output}, alerts_failed_total{output}
                                    counter    each alert output's deliveries (alerts/)
    gpu_memory_allocated_bytes{device}, gpu_memory_reserved_bytes{device}
                                    gauge      torch's CUDA memory, where torch uses a GPU (on a
                                               cluster, each worker's: device "worker-0/cuda:0")
    worker_up{worker}, worker_streams{worker}, worker_fps{worker}
                                    gauge      a cluster run's workers (cluster/): alive, streams held,
                                               frames per second

Stream ids are labels: they are source ids (safe names, never a URL or its credentials).
The process' own families (process_*, python_*) come with every scrape; while the model loads they
and model_loaded are all there is.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from ..core import PlaceKind
from ..pipeline.status import HistogramSnapshot, PipelineMetrics, StreamState

PREFIX = "fastsam_stream_"


@dataclass(frozen=True)
class GpuMemory:
    """One GPU's memory as torch's allocator sees it.

    Attributes:
        device: Its name as a label, e.g. "cuda:0".
        allocated: Bytes held by tensors.
        reserved: Bytes the caching allocator holds (allocated, and kept for reuse).
    """

    device: str
    allocated: int
    reserved: int


def torch_gpu_memory() -> list[GpuMemory]:
    """The CUDA memory torch uses in this process; [] where torch is not imported or has not used a GPU.

    torch is never imported here (importing it costs seconds and memory), and CUDA is never
    initialised by a scrape: a process that has not put anything on a GPU has nothing to report.

    Returns:
        One entry per visible CUDA device.
    """
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is None or not cuda.is_initialized():
        return []
    return [
        GpuMemory(f"cuda:{i}", int(cuda.memory_allocated(i)), int(cuda.memory_reserved(i)))
        for i in range(cuda.device_count())
    ]


class PipelineCollector(Collector):
    """Reads the pipeline's metrics at each scrape and yields them as Prometheus families.

    Args:
        read: The pipeline's metrics now, or None while the model loads (Service.metrics).
        gpu: The GPUs' memory now (torch_gpu_memory; a stand-in in tests).
    """

    def __init__(
        self,
        read: Callable[[], PipelineMetrics | None],
        gpu: Callable[[], list[GpuMemory]] = torch_gpu_memory,
    ) -> None:
        self._read = read
        self._gpu = gpu

    def collect(self) -> Iterator[Metric]:
        """The families of one scrape (see the module docstring)."""
        metrics = self._read()
        loaded = GaugeMetricFamily(
            PREFIX + "model_loaded", "1 once the model is loaded and the pipeline runs, 0 while it loads"
        )
        loaded.add_metric([], 0 if metrics is None else 1)
        yield loaded
        yield from _gpu_families(self._gpu())
        if metrics is None:
            return
        yield from _stream_families(metrics)
        yield from _place_families(metrics)
        yield from _output_families(metrics)
        yield from _worker_families(metrics)
        yield _histogram(PREFIX + "latency_seconds", "Capture-to-result latency of every frame", metrics.latency)
        yield _histogram(PREFIX + "batch_size", "Frames per batch through the network", metrics.batch_size)
        depth = GaugeMetricFamily(
            PREFIX + "queue_depth", "Items waiting per pipeline stage (intake, prepared, results)", labels=["stage"]
        )
        for stage, items in sorted(metrics.queue_depth.items()):
            depth.add_metric([stage], items)
        yield depth


def _stream_families(metrics: PipelineMetrics) -> Iterator[Metric]:
    """The per-stream families: counts, targets, rate and state."""
    frames = CounterMetricFamily(PREFIX + "frames", "Frames segmented", labels=["stream"])
    dropped = CounterMetricFamily(
        PREFIX + "dropped_frames",
        "Frames never segmented (dropped to stay current, or left at a stop)",
        labels=["stream"],
    )
    reconnects = CounterMetricFamily(
        PREFIX + "reconnects", "Times a live source got its stream back", labels=["stream"]
    )
    targets = GaugeMetricFamily(PREFIX + "targets", "The stream's current targets", labels=["stream"])
    fps = GaugeMetricFamily(PREFIX + "fps", "Frames segmented per second over the last few seconds", labels=["stream"])
    up = GaugeMetricFamily(PREFIX + "stream_up", "1 while the stream's frames arrive, else 0", labels=["stream"])
    state = GaugeMetricFamily(
        PREFIX + "stream_state", "1 for the stream's current state, 0 for the others", labels=["stream", "state"]
    )
    for stream in metrics.streams:
        label = [stream.id]
        frames.add_metric(label, stream.frames)
        dropped.add_metric(label, stream.dropped)
        reconnects.add_metric(label, stream.reconnects)
        targets.add_metric(label, len(stream.targets))
        fps.add_metric(label, stream.fps)
        up.add_metric(label, 1 if stream.state is StreamState.STREAMING else 0)
        for each in StreamState:
            state.add_metric([stream.id, each.value], 1 if stream.state is each else 0)
    yield from (frames, dropped, reconnects, targets, fps, up, state)


def _place_families(metrics: PipelineMetrics) -> Iterator[Metric]:
    """The zones' and lines' families (zones/): who is inside now, crossings and events so far."""
    inside = GaugeMetricFamily(PREFIX + "zone_objects", "Tracks inside the zone now", labels=["stream", "zone"])
    crossings = CounterMetricFamily(
        PREFIX + "line_crossings", "Tracks that crossed the line, by direction", labels=["stream", "line", "direction"]
    )
    events = CounterMetricFamily(
        PREFIX + "zone_events", "Zone and line events (zone_enter, obstacle, ...)", labels=["stream", "place", "event"]
    )
    for stream in metrics.streams:
        for place in stream.places:
            if place.kind is PlaceKind.ZONE:
                inside.add_metric([stream.id, place.name], place.count)
            else:
                crossings.add_metric([stream.id, place.name, "in"], place.crossed_in)
                crossings.add_metric([stream.id, place.name, "out"], place.crossed_out)
        for place, kind, count in stream.zone_events:
            events.add_metric([stream.id, place, kind], count)
    yield from (inside, crossings, events)


def _output_families(metrics: PipelineMetrics) -> Iterator[Metric]:
    """Each alert output's deliveries: sent, dropped (its queue was full), failed (refused or given up)."""
    families = {
        "sent": CounterMetricFamily(PREFIX + "alerts_sent", "Events delivered by the alert output", labels=["output"]),
        "dropped": CounterMetricFamily(
            PREFIX + "alerts_dropped", "Events dropped because the output's queue was full", labels=["output"]
        ),
        "failed": CounterMetricFamily(
            PREFIX + "alerts_failed", "Events the receiver refused, or the output gave up", labels=["output"]
        ),
    }
    for counts in metrics.outputs:
        for name, family in families.items():
            family.add_metric([counts.output], getattr(counts, name))
    yield from families.values()


def _worker_families(metrics: PipelineMetrics) -> Iterator[Metric]:
    """A cluster run's workers; none in one process."""
    if not metrics.workers:
        return
    up = GaugeMetricFamily(PREFIX + "worker_up", "1 while the cluster worker lives, 0 once it died", labels=["worker"])
    streams = GaugeMetricFamily(PREFIX + "worker_streams", "Streams the cluster worker holds", labels=["worker"])
    fps = GaugeMetricFamily(PREFIX + "worker_fps", "Frames per second over the worker's streams", labels=["worker"])
    for worker in metrics.workers:
        up.add_metric([worker.name], int(worker.alive))
        streams.add_metric([worker.name], worker.streams)
        fps.add_metric([worker.name], worker.fps)
    yield from (up, streams, fps)


def _histogram(name: str, documentation: str, snapshot: HistogramSnapshot) -> HistogramMetricFamily:
    """A histogram family from the pipeline's cumulative counts: a bucket per bound, +Inf, _sum and _count."""
    family = HistogramMetricFamily(name, documentation)
    buckets = [
        (floatToGoString(bound), count) for bound, count in zip(snapshot.bounds, snapshot.cumulative[:-1], strict=True)
    ]
    buckets.append(("+Inf", snapshot.count))
    family.add_metric([], buckets, sum_value=snapshot.total)
    return family


def _gpu_families(gpus: list[GpuMemory]) -> Iterator[Metric]:
    """The GPU memory gauges; none at all without a GPU in use."""
    if not gpus:
        return
    allocated = GaugeMetricFamily(
        PREFIX + "gpu_memory_allocated_bytes", "GPU memory held by tensors (torch)", labels=["device"]
    )
    reserved = GaugeMetricFamily(
        PREFIX + "gpu_memory_reserved_bytes",
        "GPU memory held by torch's caching allocator (allocated, and kept for reuse)",
        labels=["device"],
    )
    for gpu in gpus:
        allocated.add_metric([gpu.device], gpu.allocated)
        reserved.add_metric([gpu.device], gpu.reserved)
    yield from (allocated, reserved)


def metrics_registry(
    read: Callable[[], PipelineMetrics | None],
    gpu: Callable[[], list[GpuMemory]] = torch_gpu_memory,
) -> CollectorRegistry:
    """A registry of its own for one service: the pipeline's families and the process' own.

    Nothing is read until a scrape; the global prometheus_client registry is never touched.

    Args:
        read: The pipeline's metrics now, or None while the model loads (Service.metrics).
        gpu: The GPUs' memory now; the default asks torch, only where it is imported already.

    Returns:
        The registry to pass to `exposition` at each scrape.
    """
    registry = CollectorRegistry()
    registry.register(PipelineCollector(read, gpu))
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
    PlatformCollector(registry=registry)  # python_info
    GCCollector(registry=registry)  # python_gc_*
    return registry


def exposition(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """One scrape's body and its content type.

    Args:
        registry: From metrics_registry.
        accept: The request's Accept header: OpenMetrics when it asks for it, else (and by
            default) Prometheus' text format 0.0.4.

    Returns:
        (body, content type) for the response.
    """
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
