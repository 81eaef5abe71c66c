"""One worker of a cluster run: a Ray actor holding one segmenter and the lanes of its streams.

It runs the same `Pipeline` as a run in one process (keep_running: streams join and leave), with
a `HomeSink` in each lane sending records home (records.py), and writes each stream's annotated
video and event snapshots itself into the stream's folder (storage every node must see). This
module does not import Ray: the driver makes the class an actor (driver.py), and tests can use it
in-process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..assemble import alert_outputs, load_text_scorer, open_configured, place_stage, tracker_factory
from ..config import Config
from ..core import Box, Prompt
from ..pipeline import BatchSettings, Pipeline
from ..pipeline.segmenter import SegmenterSettings, quiet_ultralytics
from ..pipeline.status import PipelineMetrics, StreamStatus
from ..pipeline.summary import SourceSummary
from ..service.frames import Preview
from ..service.metrics import GpuMemory, torch_gpu_memory
from ..sinks import Sink, VideoSink
from ..sinks.jsonl import TrackRecords
from ..trackers import make_tracker
from .records import HomeMessage, HomeSink, Outbox, PreviewTap
from .resume import RenumberedTracker, ResumedSource

log = logging.getLogger(__name__)

SegmenterFactory = Callable[[SegmenterSettings], object]
"""Makes a worker's segmenter from the model settings (default: the real model, UltralyticsSegmenter)."""


@dataclass(frozen=True)
class StreamSpec:
    """A stream as the driver hands it to a worker: where it comes from, where it writes, where it resumes.

    Attributes:
        path: What to open (file, folder, URL, camera), as the user gave it.
        source_id: Its id.
        folder: Its output folder (the video and snapshots go there).
        video_name: The annotated video's file name (a moved stream's later parts get their own).
        start: The first frame to process (0, or where a moved stream resumes).
        prompts: Its start prompts.
        strict: A start prompt that selects nothing, or whose frame never comes, is the stream's
            error (a run's start prompts; not a service's, nor a moved stream's).
        seeds: Old target id → last known box: targets to re-seed on frame `start`, keeping their ids.
        changes: Prompts given while it ran, still ahead of `start`: (prompt, replace), applied in order.
        first_free_id: The lowest track id the stream has not used.
    """

    path: str
    source_id: str
    folder: str
    video_name: str = "annotated.mp4"
    start: int = 0
    prompts: tuple[Prompt, ...] = ()
    strict: bool = False
    seeds: tuple[tuple[int, Box], ...] = ()
    changes: tuple[tuple[Prompt, bool], ...] = ()
    first_free_id: int = 1


@dataclass(frozen=True)
class RemoteStream:
    """A stream a worker will open, as a service hands it to `ClusterPipeline.add_source` (no source here).

    Attributes:
        spec: Where it comes from and where it writes.
        is_live: Whether the check on the driver found a live source.
    """

    spec: StreamSpec
    is_live: bool

    @property
    def source_id(self) -> str:
        """Its id."""
        return self.spec.source_id

    def close(self) -> None:
        """Nothing to close: the driver only checked it (the worker opens its own)."""


@dataclass(frozen=True)
class WorkerReport:
    """What one `drain` brings home.

    Attributes:
        messages: Records, events and stream ends, in order per stream.
        streams: The worker's streams now.
        metrics: The worker's pipeline metrics now.
        finished: Its pipeline has stopped and every message is in this report or an earlier one.
        error: Why the pipeline stopped with an error, if it did.
        previews: The watched streams' newest frames, for the viewer.
        gpus: The CUDA memory torch uses in the worker (none on CPU).
        started_at: When the drain began (the worker's monotonic clock).
        sent_at: When it returned (the same clock): records waited sent_at - made_at on the worker.
    """

    messages: tuple[HomeMessage, ...]
    streams: tuple[StreamStatus, ...]
    metrics: PipelineMetrics
    finished: bool
    error: str | None = None
    previews: tuple[Preview, ...] = ()
    gpus: tuple[GpuMemory, ...] = ()
    started_at: float = 0.0
    sent_at: float = 0.0


class StreamWorker:
    """The actor's state and methods (see the module docstring).

    Args:
        config: The run's configuration (model, tracker, batch, outputs, zones, alerts).
        name: How logs and events name it.
        make_segmenter: Makes its segmenter from `config.model`; None: the real model.
    """

    def __init__(self, config: Config, name: str, make_segmenter: SegmenterFactory | None = None) -> None:
        quiet_ultralytics()
        self.config = config
        self.name = name
        self.outbox = Outbox()
        if make_segmenter is None:
            from ..pipeline import UltralyticsSegmenter

            segmenter = UltralyticsSegmenter(config.model, features=config.tracker.wants_embeddings)
        else:
            segmenter = make_segmenter(config.model)
        self.alerts: list[Sink] = alert_outputs(_own_client_ids(config, name))  # each sends its own streams' alerts
        self.previews = PreviewTap()
        self.pipeline = Pipeline(
            [],
            segmenter,
            text_scorer=load_text_scorer(config),
            tracker=tracker_factory(config),
            sinks=[*self.alerts, self.previews],
            batch=BatchSettings(**config.batch.model_dump(), buffer_size=config.source.buffer_size),
            drop_policy=config.source.drop_policy,
            keep_running=True,
        )
        self.records = TrackRecords(config.output.masks)
        self.error: str | None = None
        self.stop_asked = False
        self.finished = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"fastsam-stream {name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.pipeline.run()
        except BaseException as exc:  # noqa: BLE001 - reported home, the driver decides
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("%s stopped: %s", self.name, self.error)
        finally:
            self.finished.set()
            self.outbox.close()

    def ready(self) -> str:
        """Answers once the model has loaded (the actor's constructor has returned): its name."""
        return self.name

    def add_stream(self, spec: StreamSpec) -> None:
        """Open a stream's source and outputs here and add it to the pipeline.

        Raises:
            SourceError: The source cannot be opened here.
            StreamConflictError: A stream of that id runs here already, or the worker is stopping.
        """
        source = open_configured(self.config, spec.path, spec.source_id)
        if spec.start:
            source = ResumedSource(source, spec.start)
        folder = Path(spec.folder)
        sinks: list[Sink] = []
        places = None
        try:
            if self.config.output.video:
                sinks.append(VideoSink(folder / spec.video_name, fps=source.fps))
            # last of its sinks: its close says the stream's video here is final
            summary_of = self._summary_of(spec.source_id)
            mot = self.config.output.mot
            sinks.append(HomeSink(spec.source_id, self.outbox, self.records, mot, summary_of, self._failing))
            tracker = None
            if spec.start or spec.first_free_id > 1 or spec.seeds:  # ids go on from the stream's earlier ones
                tracker = RenumberedTracker(make_tracker(self.config.tracker), dict(spec.seeds), spec.first_free_id)
            places = place_stage(self.config, source, folder)
            self.pipeline.add_source(source, sinks, spec.prompts, places, tracker=tracker, strict=spec.strict)
        except BaseException:
            for closing in [*[k for k in sinks if not isinstance(k, HomeSink)], *([places] if places else []), source]:
                closing.close()
            raise
        # Queued before its first frame can come through: they apply on frame `start` or later.
        for prompt in self._seed_prompts(spec):
            self.pipeline.add_prompt(prompt)
        for prompt, replace in spec.changes:
            self.pipeline.add_prompt(prompt, replace)

    def _failing(self) -> bool:
        """The pipeline is ending, and nobody asked it to: a failure cut its streams short."""
        return self.pipeline.summary.finished_at is not None and not self.stop_asked

    def _summary_of(self, source_id: str) -> Callable[[], SourceSummary | None]:
        return lambda: self.pipeline.summary.sources.get(source_id)

    @staticmethod
    def _seed_prompts(spec: StreamSpec) -> list[Prompt]:
        """One box prompt per target to re-seed, on the first frame the stream resumes at."""
        return [Prompt(boxes=[box], frame=spec.start, source_id=spec.source_id) for _, box in spec.seeds]

    def remove_stream(self, source_id: str, timeout_s: float | None = None) -> SourceSummary:
        """Pipeline.remove_source: the stream's outputs here are final when it returns."""
        return self.pipeline.remove_source(source_id, timeout_s)

    def add_prompt(self, prompt: Prompt, replace: bool = False) -> None:
        """Pipeline.add_prompt."""
        self.pipeline.add_prompt(prompt, replace)

    def drop_targets(self, ids: Iterable[int] | None, source_id: str | None, frame: int = 0) -> None:
        """Pipeline.drop_targets."""
        self.pipeline.drop_targets(ids, source_id, frame)

    def targets(self) -> dict[str, list[int]]:
        """Pipeline.targets."""
        return self.pipeline.targets()

    def drain(self, max_wait_s: float = 0.2, watched: Sequence[str] = ()) -> WorkerReport:
        """Everything waiting to go home (waiting up to `max_wait_s` for something), with the streams' state.

        Args:
            max_wait_s: How long to wait for a first message.
            watched: Streams someone watches in the viewer: their newest frames come drawn and encoded.
        """
        started_at = time.monotonic()
        finished = self.finished.is_set()  # before taking: a message put after this is in a later report
        messages = self.outbox.take(max_wait_s)
        streams = tuple(self.pipeline.streams())
        previews = self.previews.previews(watched, [s.id for s in streams]) if watched else []
        return WorkerReport(
            messages=tuple(messages),
            streams=streams,
            metrics=self.pipeline.metrics(),
            finished=finished,
            error=self.error,
            previews=tuple(previews),
            gpus=tuple(torch_gpu_memory()),
            started_at=started_at,
            sent_at=time.monotonic(),
        )

    def stop(self, timeout_s: float | None = None, discard: bool = False) -> bool:
        """Stop the pipeline after the frames in hand; every stream's outputs are final when it returns True.

        Args:
            timeout_s: How long to wait for that.
            discard: Nobody drains any more (the driver is ending): what is left to send home is
                dropped, so no lane waits on a full outbox.
        """
        self.stop_asked = True
        if discard:
            self.outbox.close()
        self.pipeline.stop()
        self.finished.wait(timeout_s)
        return self.finished.is_set()

    def stream_ids(self) -> Sequence[str]:
        """The streams this worker holds."""
        return [s.id for s in self.pipeline.streams()]


def _own_client_ids(config: Config, name: str) -> Config:
    """The config with each MQTT output's client id (when one is set) made the worker's own.

    Two clients with one id take the broker's session from each other, over and over.
    """
    alerts = [
        a.model_copy(update={"client_id": f"{a.client_id}-{name}"}) if getattr(a, "client_id", "") else a
        for a in config.alerts
    ]
    return config.model_copy(update={"alerts": alerts})
