"""Turn a Config into a ClusterPipeline: check what can be checked here, join Ray, start the workers.

A reused folder, a wrong source or a prompt past a file's end fail in a moment on the driver,
before any worker loads the model; Ray missing, an address that does not answer or a cluster too
small for the workers fail in one line too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from ..assemble import (
    StreamFactory,
    claim_output_dir,
    open_sources,
    prepare_output_dir,
    prompts_from,
    source_specs,
)
from ..config import Config
from ..errors import ClusterError, ConfigError, PromptError
from ..pipeline.summary import SourceSummary
from ..service.core import OpenedStream
from ..service.frames import FrameHub
from ..zones.settings import check_places
from .connect import Connection, check_room, connect, import_ray
from .driver import ClusterPipeline
from .home import HomeFiles
from .places import StreamPlace, WorkerHandle
from .worker import RemoteStream, SegmenterFactory, StreamSpec, StreamWorker

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 300.0
"""How long the workers may take to start and load the model (a cold node pulls in torch and the weights)."""
MAX_CONCURRENCY = 8
"""Calls a worker serves at once: the driver's drain beside prompts and stream changes."""


def build_cluster_pipeline(
    config: Config,
    make_segmenter: SegmenterFactory | None = None,
    serving: bool = False,
    hub: FrameHub | None = None,
) -> ClusterPipeline:
    """A ready ClusterPipeline for `config` (its `cluster` section says where and how many workers).

    Args:
        config: The run's configuration.
        make_segmenter: Makes each worker's segmenter from `config.model` (picklable); None: the real model.
        serving: A service's run: it runs until stopped, with no source or with streams joining and
            leaving, each in its own folder.
        hub: The service's frame hub, fed with the watched streams' frames.

    Returns:
        The pipeline, its workers started and their model loaded.

    Raises:
        ClusterError: Ray missing, the cluster unreachable or too small, a worker that cannot start.
        ConfigError, SourceError, OutputError, PromptError: As a run in one process.
    """
    import_ray()  # before anything else: without the extra, nothing is touched
    if config.output.segment_minutes is not None:
        raise ConfigError("output.segment_minutes (rotating outputs) is not available with --ray yet: leave it unset")
    specs = source_specs(config, allow_none=serving)
    check_places(config.zones, config.lines, None if serving else [source_id for _, source_id in specs])
    out = Path(config.output.dir)
    claim_output_dir(out, config.output.overwrite)
    streams = _checked_streams(config, specs, several=serving or len(specs) > 1, out=out, serving=serving)
    connection = connect(config.cluster)
    try:
        check_room(connection.ray, config.cluster)
        workers = start_workers(connection, config, make_segmenter)
    except BaseException:
        connection.close()
        raise
    return ClusterPipeline(config, connection, workers, streams, keep_running=serving, hub=hub)


def _checked_streams(
    config: Config, specs: list[tuple[str, str]], several: bool, out: Path, serving: bool
) -> list[StreamPlace]:
    """Each stream's place, its source opened once here (and closed) so a wrong one fails now."""
    prompts = prompts_from(config)
    opened = open_sources(config, allow_none=serving)  # checks the prompts' sources too
    try:
        streams = []
        for (path, source_id), source in zip(specs, opened, strict=True):
            own = [p for p in prompts if p.source_id in (None, source_id)]
            total = source.frame_count
            for p in own:
                if total is not None and p.frame >= total:
                    raise PromptError(
                        f"prompt frame {p.frame} is past the end of {source_id} "
                        f"(its container announces {total} frames)"
                    )
            folder = prepare_output_dir(out / source_id if several else out)
            # A run's start prompts are strict, as in one process: selecting nothing is the stream's error.
            spec = StreamSpec(path, source_id, str(folder), prompts=tuple(own), strict=not serving)
            summary = SourceSummary(source_id, is_live=source.is_live)
            changes = [(p, False) for p in own]
            streams.append(StreamPlace(spec, HomeFiles(folder, config.output.mot), summary, changes))
        return streams
    finally:
        for source in opened:
            source.close()


class ClusterStreamFactory(StreamFactory):
    """Checks the streams a service on a cluster adds (`POST /api/streams`); its worker opens it.

    The source is opened here once, so a wrong path or an unreachable camera is the request's
    error at once, then closed; its folder is claimed as in one process.

    Args:
        config: The service's configuration.
    """

    def __call__(self, path: str, stream_id: str | None, prompt: dict | None, taken: Sequence[str]) -> OpenedStream:
        """A RemoteStream for ClusterPipeline.add_source (see service.core.StreamOpener)."""
        request = self.request(path, stream_id, prompt, taken)
        source = self.open(request)
        try:
            claim_output_dir(request.folder, self.config.output.overwrite)
            folder = prepare_output_dir(request.folder)
            is_live = source.is_live
        finally:
            source.close()
        spec = StreamSpec(request.path, request.source_id, str(folder))
        return OpenedStream(RemoteStream(spec, is_live), [], request.prompts, None)


def start_workers(
    connection: Connection, config: Config, make_segmenter: SegmenterFactory | None
) -> list[WorkerHandle]:
    """Start `cluster.workers` actors and wait until each has loaded the model.

    Raises:
        ClusterError: A worker failed to start (its reason in one line), or they were not all up in time.
    """
    ray, settings = connection.ray, config.cluster
    actor_class = ray.remote(StreamWorker).options(
        num_cpus=settings.cpus_per_worker, num_gpus=settings.gpus_per_worker, max_concurrency=MAX_CONCURRENCY
    )
    names = [f"worker-{n}" for n in range(settings.workers)]
    workers = [WorkerHandle(name, actor_class.remote(config, name, make_segmenter)) for name in names]
    try:
        calls = [w.actor.ready.remote() for w in workers]
        done, waiting = ray.wait(calls, num_returns=len(calls), timeout=READY_TIMEOUT_S)
        if waiting:
            raise ClusterError(
                f"{len(waiting)} of {len(calls)} workers did not start within {READY_TIMEOUT_S:g} s "
                "(placing them, or loading the model on their nodes)"
            )
        for worker, call in zip(workers, calls, strict=True):
            try:
                ray.get(call)
            except ray.exceptions.RayError as exc:
                raise ClusterError(f"{worker.name} could not start: {remote_reason(exc)}") from None
    except BaseException:
        for worker in workers:
            ray.kill(worker.actor)
        raise
    log.info("%d workers ready", len(workers))
    return workers


_REASON = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$", re.MULTILINE)


def remote_reason(exc: BaseException) -> str:
    """The last `SomeError: message` line of a remote failure's text (Ray sends the worker's traceback)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, Exception) and not isinstance(cause, type(exc)):
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    found = _REASON.findall(str(exc))
    return f"{found[-1][0]}: {found[-1][1]}" if found else str(exc).splitlines()[0]
