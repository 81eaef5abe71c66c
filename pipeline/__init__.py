"""The frame path: batched segmentation in threads, prompt selection, and the Pipeline that ties them."""

from .batcher import BatchSettings, SegmentingStages
from .prompts import Selection, select
from .runner import Pipeline
from .summary import RunSummary, SourceSummary
from .segmenter import Segmenter, SegmenterSettings, UltralyticsSegmenter

__all__ = [
    "BatchSettings",
    "Pipeline",
    "RunSummary",
    "SegmentingStages",
    "Segmenter",
    "SegmenterSettings",
    "Selection",
    "SourceSummary",
    "UltralyticsSegmenter",
    "select",
]
