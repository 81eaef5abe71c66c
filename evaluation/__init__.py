"""Benchmarks: run the real pipeline on DAVIS, OTB-style SOT and MOTChallenge sequences and score it.

- `metrics.py`: the scores as the benchmarks' toolkits define them (DAVIS J/F, OTB success and
  precision; HOTA/IDF1/MOTA through TrackEval, the [eval] extra);
- `datasets.py`: readers for the three dataset layouts;
- `runner.py`: each benchmark's protocol around `build_pipeline`;
- `report.py`: report.json, the PNG plot and the printed table;
- `cli.py`: `fastsam-stream eval davis|sot|mot ROOT ...`.

Importing this package loads neither TrackEval nor matplotlib (only the commands that need them do).
"""

from .metrics import (
    boundary_f_measure,
    box_iou_xywh,
    center_errors,
    davis_sequence_scores,
    mot_scores,
    precision_at,
    region_similarity,
    success_auc,
    success_curve,
)

__all__ = [
    "boundary_f_measure",
    "box_iou_xywh",
    "center_errors",
    "davis_sequence_scores",
    "mot_scores",
    "precision_at",
    "region_similarity",
    "success_auc",
    "success_curve",
]
