"""`/metrics`: the pipeline's snapshot as Prometheus families, parsed back with prometheus_client's own parser."""

from __future__ import annotations

import sys
import types

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from fastsam_stream.pipeline.status import (
    BATCH_SIZE_BUCKETS,
    LATENCY_BUCKETS_S,
    Histogram,
    PipelineMetrics,
    StreamState,
    StreamStatus,
)
from fastsam_stream.service.metrics import GpuMemory, exposition, metrics_registry, torch_gpu_memory

LATENCIES = (0.004, 0.03, 0.03, 0.2, 0.7, 12.0)  # one below the first bucket, one above the last
BATCHES = (1, 3, 3, 8)


def _histogram(bounds, values):
    histogram = Histogram(bounds)
    for value in values:
        histogram.observe(value)
    return histogram.snapshot()


def _metrics(frames: int = 120, streams: tuple[StreamStatus, ...] | None = None) -> PipelineMetrics:
    if streams is None:
        streams = (
            StreamStatus(
                "cam1", StreamState.STREAMING, frames=frames, dropped=7, reconnects=2, fps=24.5, targets=(1, 3)
            ),
            StreamStatus("clip", StreamState.RECONNECTING, frames=40, dropped=0, reconnects=0, fps=0.0),
        )
    return PipelineMetrics(
        streams=streams,
        latency=_histogram(LATENCY_BUCKETS_S, LATENCIES),
        batch_size=_histogram(BATCH_SIZE_BUCKETS, BATCHES),
        queue_depth={"intake": 3, "prepared": 1, "results": 0},
    )


def _scrape(registry) -> dict:
    """{family name: family} of one scrape, parsed as Prometheus would."""
    body, content_type = exposition(registry)
    assert content_type.startswith("text/plain; version=0.0.4")
    return {family.name: family for family in text_string_to_metric_families(body.decode("utf-8"))}


def _values(family, name: str | None = None) -> dict:
    """{labels as a sorted tuple of pairs: value} of a family's samples called `name` (default: the family's)."""
    name = name or family.name
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == name}


def test_the_per_stream_families_carry_each_streams_counts():
    families = _scrape(metrics_registry(_metrics, gpu=list))
    assert families["fastsam_stream_frames"].type == "counter"
    assert _values(families["fastsam_stream_frames"], "fastsam_stream_frames_total") == {
        (("stream", "cam1"),): 120,
        (("stream", "clip"),): 40,
    }
    assert _values(families["fastsam_stream_dropped_frames"], "fastsam_stream_dropped_frames_total") == {
        (("stream", "cam1"),): 7,
        (("stream", "clip"),): 0,
    }
    assert _values(families["fastsam_stream_reconnects"], "fastsam_stream_reconnects_total")[(("stream", "cam1"),)] == 2
    assert _values(families["fastsam_stream_targets"]) == {(("stream", "cam1"),): 2, (("stream", "clip"),): 0}
    assert _values(families["fastsam_stream_fps"])[(("stream", "cam1"),)] == pytest.approx(24.5)
    assert _values(families["fastsam_stream_stream_up"]) == {(("stream", "cam1"),): 1, (("stream", "clip"),): 0}
    assert _values(families["fastsam_stream_queue_depth"]) == {
        (("stage", "intake"),): 3,
        (("stage", "prepared"),): 1,
        (("stage", "results"),): 0,
    }
    assert _values(families["fastsam_stream_model_loaded"]) == {(): 1}


def test_the_state_gauge_is_one_for_the_current_state_only():
    states = _values(_scrape(metrics_registry(_metrics, gpu=list))["fastsam_stream_stream_state"])
    for stream, current in (("cam1", "streaming"), ("clip", "reconnecting")):
        mine = {dict(labels)["state"]: value for labels, value in states.items() if dict(labels)["stream"] == stream}
        assert set(mine) == {state.value for state in StreamState}
        assert mine[current] == 1 and sum(mine.values()) == 1


@pytest.mark.parametrize(
    ("name", "bounds", "observed"),
    [
        ("fastsam_stream_latency_seconds", LATENCY_BUCKETS_S, LATENCIES),
        ("fastsam_stream_batch_size", BATCH_SIZE_BUCKETS, BATCHES),
    ],
)
def test_histograms_are_cumulative_and_add_up(name, bounds, observed):
    family = _scrape(metrics_registry(_metrics, gpu=list))[name]
    assert family.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == name + "_bucket"}
    assert list(buckets) == [*(str(float(b)) for b in bounds), "+Inf"]  # every bound, in order, then +Inf
    counts = list(buckets.values())
    assert counts == sorted(counts)  # cumulative: never decreasing
    for bound, count in zip(bounds, counts, strict=False):
        assert count == sum(1 for v in observed if v <= bound)
    (count,) = [s.value for s in family.samples if s.name == name + "_count"]
    (total,) = [s.value for s in family.samples if s.name == name + "_sum"]
    assert buckets["+Inf"] == count == len(observed)
    assert total == pytest.approx(sum(observed))


def test_while_the_model_loads_only_the_process_families_appear():
    families = _scrape(metrics_registry(lambda: None, gpu=list))
    ours = {name for name in families if name.startswith("fastsam_stream_")}
    assert ours == {"fastsam_stream_model_loaded"}
    assert _values(families["fastsam_stream_model_loaded"]) == {(): 0}
    assert any(name.startswith("process_") for name in families)  # the process' own, for a scraper's alerts
    assert "python_info" in families


def test_values_are_read_at_each_scrape():
    frames = [10]
    registry = metrics_registry(lambda: _metrics(frames=frames[0]), gpu=list)
    first = _values(_scrape(registry)["fastsam_stream_frames"], "fastsam_stream_frames_total")
    frames[0] = 25
    second = _values(_scrape(registry)["fastsam_stream_frames"], "fastsam_stream_frames_total")
    assert first[(("stream", "cam1"),)] == 10 and second[(("stream", "cam1"),)] == 25


def test_a_removed_stream_leaves_the_next_scrape():
    streams = [_metrics().streams]
    registry = metrics_registry(lambda: _metrics(streams=streams[0]), gpu=list)
    assert len(_values(_scrape(registry)["fastsam_stream_frames"], "fastsam_stream_frames_total")) == 2
    streams[0] = streams[0][:1]
    assert list(_values(_scrape(registry)["fastsam_stream_frames"], "fastsam_stream_frames_total")) == [
        (("stream", "cam1"),)
    ]


def test_two_registries_share_nothing_and_the_global_one_is_untouched():
    one = metrics_registry(lambda: _metrics(frames=1), gpu=list)
    two = metrics_registry(lambda: None, gpu=list)
    assert _values(_scrape(one)["fastsam_stream_frames"], "fastsam_stream_frames_total")[(("stream", "cam1"),)] == 1
    assert "fastsam_stream_frames" not in _scrape(two)
    global_names = {family.name for family in REGISTRY.collect()}
    assert not any(name.startswith("fastsam_stream_") for name in global_names)


def test_odd_stream_ids_are_escaped_and_read_back_whole():
    """Ids are safe names in practice; even one with quotes, slashes or a newline cannot break the format."""
    odd = ['rtsp://cam.example/live"1', "back\\slash", "two\nlines"]
    streams = tuple(StreamStatus(i, StreamState.STREAMING, frames=n) for n, i in enumerate(odd, 1))
    families = _scrape(metrics_registry(lambda: _metrics(streams=streams), gpu=list))
    read = _values(families["fastsam_stream_frames"], "fastsam_stream_frames_total")
    assert read == {(("stream", i),): n for n, i in enumerate(odd, 1)}


def test_gpu_memory_appears_per_device_and_not_without_a_gpu():
    gpus = [GpuMemory("cuda:0", 1 << 20, 3 << 20), GpuMemory("cuda:1", 0, 0)]
    families = _scrape(metrics_registry(lambda: None, gpu=lambda: gpus))  # also while the model loads
    assert _values(families["fastsam_stream_gpu_memory_allocated_bytes"]) == {
        (("device", "cuda:0"),): 1 << 20,
        (("device", "cuda:1"),): 0,
    }
    assert _values(families["fastsam_stream_gpu_memory_reserved_bytes"])[(("device", "cuda:0"),)] == 3 << 20
    without = _scrape(metrics_registry(_metrics, gpu=list))
    assert not any(name.startswith("fastsam_stream_gpu") for name in without)


def _fake_torch(initialised: bool) -> types.ModuleType:
    cuda = types.SimpleNamespace(
        is_initialized=lambda: initialised,
        device_count=lambda: 2,
        memory_allocated=lambda i: 100 * (i + 1),
        memory_reserved=lambda i: 1000 * (i + 1),
    )
    return types.SimpleNamespace(cuda=cuda)


def test_torch_gpu_memory_asks_torch_only_once_cuda_is_in_use(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(initialised=True))
    assert torch_gpu_memory() == [GpuMemory("cuda:0", 100, 1000), GpuMemory("cuda:1", 200, 2000)]
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(initialised=False))
    assert torch_gpu_memory() == []  # CUDA never used: nothing to say, and a scrape does not initialise it


def test_torch_gpu_memory_never_imports_torch(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert torch_gpu_memory() == []
    assert "torch" not in sys.modules


def test_openmetrics_when_the_scraper_asks_for_it():
    body, content_type = exposition(metrics_registry(_metrics, gpu=list), "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    assert b'fastsam_stream_frames_total{stream="cam1"} 120.0' in body


def test_zones_lines_and_alert_outputs_have_their_families():
    import dataclasses

    import numpy as np

    from fastsam_stream.core import PlaceKind, PlaceState
    from fastsam_stream.pipeline.status import OutputCounts

    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float32)
    places = (
        PlaceState("dock", PlaceKind.ZONE, square, ids=(2, 5)),
        PlaceState("door", PlaceKind.LINE, square[:2], crossed_in=4, crossed_out=1),
    )
    (cam, clip) = _metrics().streams
    cam = dataclasses.replace(cam, places=places, zone_events=(("dock", "zone_enter", 6), ("door", "line_cross", 5)))
    metrics = dataclasses.replace(
        _metrics(streams=(cam, clip)), outputs=(OutputCounts("webhook http://hooks.local/x", 9, 2, 1),)
    )
    families = _scrape(metrics_registry(lambda: metrics))
    assert _values(families["fastsam_stream_zone_objects"]) == {(("stream", "cam1"), ("zone", "dock")): 2.0}
    crossings = _values(families["fastsam_stream_line_crossings"], "fastsam_stream_line_crossings_total")
    assert crossings == {
        (("direction", "in"), ("line", "door"), ("stream", "cam1")): 4.0,
        (("direction", "out"), ("line", "door"), ("stream", "cam1")): 1.0,
    }
    events = _values(families["fastsam_stream_zone_events"], "fastsam_stream_zone_events_total")
    assert events[(("event", "zone_enter"), ("place", "dock"), ("stream", "cam1"))] == 6.0
    output = (("output", "webhook http://hooks.local/x"),)
    assert _values(families["fastsam_stream_alerts_sent"], "fastsam_stream_alerts_sent_total") == {output: 9.0}
    assert _values(families["fastsam_stream_alerts_dropped"], "fastsam_stream_alerts_dropped_total") == {output: 2.0}
    assert _values(families["fastsam_stream_alerts_failed"], "fastsam_stream_alerts_failed_total") == {output: 1.0}
