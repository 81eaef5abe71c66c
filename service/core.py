"""The service the HTTP app talks to: a pipeline that streams join and leave, its frames and its status.

The app (service/app.py) only ever calls a `Service`; the pipeline, the frame hub and the way a new
stream is opened are handed in, so tests can give their own. Every method is safe from any thread;
those that open or close a stream block, and the app calls them in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..core import Prompt
from ..errors import PromptError, ServiceStartingError, StreamConflictError, UnknownStreamError
from ..pipeline.places import PlaceStage
from ..pipeline.status import PipelineMetrics, StreamState, StreamStatus
from ..sinks.base import Sink
from ..sources.base import Source
from .metrics import GpuMemory, torch_gpu_memory

if TYPE_CHECKING:
    from ..config import ServeConfig
    from ..pipeline.control import ControlCommand
    from ..pipeline.runner import Pipeline

log = logging.getLogger(__name__)

REMOVE_TIMEOUT_S = 30.0  # how long DELETE waits for a stream's outputs to be final


@dataclass
class OpenedStream:
    """A stream opened for the pipeline: its source, its own outputs and its prompts."""

    source: Source
    sinks: list[Sink] = field(default_factory=list)
    prompts: list[Prompt] = field(default_factory=list)
    places: PlaceStage | None = None  # its zones and lines


class StreamOpener(Protocol):
    """Opens a new stream for `POST /api/streams` (assemble.StreamFactory is the real one)."""

    def __call__(self, path: str, stream_id: str | None, prompt: dict | None, taken: Sequence[str]) -> OpenedStream:
        """Open the source and make its outputs.

        Args:
            path: What to read: file, folder, stream URL, camera or lavfi:GRAPH.
            stream_id: Its id; None: one made from the path, not among `taken`.
            prompt: Prompt keys of the config's `prompt` for its first targets, or None.
            taken: The ids in use.

        Returns:
            The opened stream.

        Raises:
            ConfigError, SourceError, PromptError, OutputError: One line saying what is wrong.
        """
        ...


class FrameViewers(Protocol):
    """What the service needs of the frame hub (service/frames.py)."""

    def forget(self, stream_id: str) -> None:
        """The stream is gone: its viewers' connections end."""
        ...

    def expect(self, stream_id: str) -> None:
        """A stream is being added (its id may have been forgotten before)."""
        ...


class Service:
    """A running pipeline as the HTTP app sees it.

    Until `pipeline` is set (the model loads after the port is bound), the app can answer
    /healthz and /readyz; anything about streams is ServiceStartingError (503).

    Args:
        settings: The `serve` section (the app reads its security settings).
        hub: The frame hub the pipeline writes to, or None (no frame routes).
        open_stream: How `add_stream` opens a stream; None: streams cannot be added (a run).
        pipeline: The pipeline, or None until it is built.
    """

    def __init__(
        self,
        settings: ServeConfig,
        hub: FrameViewers | None = None,
        open_stream: StreamOpener | None = None,
        pipeline: Pipeline | None = None,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.open_stream = open_stream
        self.pipeline = pipeline

    def _running(self) -> Pipeline:
        pipeline = self.pipeline
        if pipeline is None:
            raise ServiceStartingError("the pipeline is still starting (the model is loading)")
        return pipeline

    def ready(self) -> tuple[bool, str]:
        """(True, "") once the model is loaded and a stream delivers frames; else (False, why)."""
        if self.pipeline is None:
            return False, "the model is loading"
        streams = self.pipeline.streams()
        if any(s.state is StreamState.STREAMING for s in streams):
            return True, ""
        if not streams:
            return False, "no stream: add one with POST /api/streams"
        return False, "no stream is streaming: " + ", ".join(f"{s.id} {s.state.value}" for s in streams)

    def streams(self) -> list[StreamStatus]:
        """Every stream's status ([] while the model loads)."""
        return [] if self.pipeline is None else self.pipeline.streams()

    def stream(self, stream_id: str) -> StreamStatus:
        """One stream's status.

        Raises:
            UnknownStreamError: No such stream.
        """
        for status in self.streams():
            if status.id == stream_id:
                return status
        raise UnknownStreamError(f"no stream {stream_id!r}")

    def add_stream(self, path: str, stream_id: str | None = None, prompt: dict | None = None) -> StreamStatus:
        """Open a stream and add it to the running pipeline (blocking: a live source connects first).

        Args:
            path: What to read.
            stream_id: Its id (None: made from the path).
            prompt: Prompt keys for its first targets.

        Returns:
            Its status.

        Raises:
            ServiceStartingError: The model is still loading.
            StreamConflictError: The id is taken, or this is a run that takes no new streams.
            ConfigError, SourceError, PromptError, OutputError: What is wrong with the request.
        """
        pipeline = self._running()
        if self.open_stream is None:
            raise StreamConflictError("this run takes no new streams: start `fastsam-stream serve` to add them")
        taken = [s.id for s in pipeline.streams()]
        if stream_id is not None and stream_id in taken:
            raise StreamConflictError(f"a stream {stream_id!r} is already running: remove it or choose another id")
        opened = self.open_stream(path, stream_id, prompt, taken)
        if self.hub is not None:  # its viewers may connect before its first frame
            self.hub.expect(opened.source.source_id)
        try:
            pipeline.add_source(opened.source, opened.sinks, opened.prompts, opened.places)
        except BaseException:
            for closing in [*opened.sinks, *([opened.places] if opened.places else []), opened.source]:
                _close_quietly(closing)
            raise
        log.info("stream %s added", opened.source.source_id)
        return self.stream(opened.source.source_id)

    def remove_stream(self, stream_id: str) -> dict:
        """Remove a stream: it stops and its outputs are finalised before this returns.

        Returns:
            Its counts: frames, frames_with_target, dropped, reconnects.

        Raises:
            ServiceStartingError, UnknownStreamError; TimeoutError: its outputs were not final within
            REMOVE_TIMEOUT_S (it still leaves).
        """
        pipeline = self._running()
        try:
            summary = pipeline.remove_source(stream_id, REMOVE_TIMEOUT_S)
        finally:  # its viewers' connections end even when its outputs are slow to close
            if self.hub is not None:
                self.hub.forget(stream_id)
        log.info("stream %s removed: %s", stream_id, summary.describe())
        return {
            "frames": summary.frames,
            "frames_with_target": summary.frames_with_target,
            "dropped": summary.dropped,
            "reconnects": summary.reconnects,
        }

    def command(self, command: ControlCommand, stream_id: str | None = None) -> str:
        """Queue a control command (add / replace / drop) on the pipeline.

        Args:
            command: The parsed command.
            stream_id: The stream of the route (/api/streams/{id}/commands); None: the command's own
                `source` (the /commands route), or every stream.

        Returns:
            A line saying what was queued.

        Raises:
            ServiceStartingError, UnknownStreamError, PromptError.
        """
        from ..pipeline.control import apply_command  # control.py builds its server on this package

        pipeline = self._running()
        if stream_id is not None:
            self.stream(stream_id)  # UnknownStreamError: 404, not a 400 about the command
            if command.source not in (None, stream_id):
                raise PromptError(f"the command names source {command.source!r}, but is sent to stream {stream_id!r}")
            command = command.model_copy(update={"source": stream_id})
        return apply_command(command, pipeline)

    def targets(self) -> dict[str, list[int]]:
        """Each stream's current target ids."""
        return self._running().targets()

    def metrics(self) -> PipelineMetrics | None:
        """What /metrics exposes; None while the model loads."""
        return None if self.pipeline is None else self.pipeline.metrics()

    def gpu_memory(self) -> list[GpuMemory]:
        """The GPUs' memory for /metrics: this process's (torch), or each worker's in a cluster run."""
        from ..cluster.driver import ClusterPipeline  # Ray is never imported by it

        pipeline = self.pipeline
        return pipeline.gpu_memory() if isinstance(pipeline, ClusterPipeline) else torch_gpu_memory()


def _close_quietly(closing: Sink | Source) -> None:
    try:
        closing.close()
    except Exception as exc:  # noqa: BLE001 - the error being raised matters more
        log.warning("closing %s failed: %s", type(closing).__name__, exc)


def for_run(pipeline: Pipeline | None, settings: ServeConfig | None = None) -> Service:
    """The service of a `run --control-port`: its commands and status, no streams added or removed."""
    from ..config import ServeConfig

    return Service(settings or ServeConfig(), pipeline=pipeline)
