"""The frame path: batched segmentation in threads, prompt selection, and the Pipeline that ties them."""

from .batcher import BatchSettings, SegmentingStages
from .prompts import Selection, select
from .runner import Pipeline, RunSummary
from .segmenter import Segmenter, SegmenterSettings, UltralyticsSegmenter

__all__ = [
    "BatchSettings",
    "Pipeline",
    "RunSummary",
    "SegmentingStages",
    "Segmenter",
    "SegmenterSettings",
    "Selection",
    "UltralyticsSegmenter",
    "select",
]
