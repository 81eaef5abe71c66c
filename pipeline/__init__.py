"""The frame path: batched segmentation in threads, prompt selection, and the Pipeline that ties them."""

from .batcher import BatchConfig, BatchSettings, SegmentingStages
from .prompts import Selection, select
from .runner import Pipeline
from .segmenter import Segmenter, SegmenterSettings, StagedSegmenter, UltralyticsSegmenter, staged
from .summary import RunSummary, SourceSummary

__all__ = [
    "BatchConfig",
    "BatchSettings",
    "Pipeline",
    "RunSummary",
    "SegmentingStages",
    "Segmenter",
    "SegmenterSettings",
    "Selection",
    "SourceSummary",
    "StagedSegmenter",
    "UltralyticsSegmenter",
    "select",
    "staged",
]
