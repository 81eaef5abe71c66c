"""Shared fixtures: paths into ../shared, and one segmenter loaded for the whole session.

The paths lead to the real clips, DAVIS frames and the stand-in model; the segmenter is loaded
once because loading costs seconds.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
WEIGHTS = SHARED / "models" / "yolov8n-seg-int8dq.pt"
VIDEOS = SHARED / "media" / "videos"
DAVIS = SHARED / "eval" / "davis2016"

# Tests never reach for the network or pip, and keep ultralytics' settings file out of $HOME.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_VERBOSE", "false")


def shared_file(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests read real data from ../shared (see ../shared/README.md)")
    return path


@pytest.fixture(scope="session")
def weights() -> Path:
    return shared_file(WEIGHTS)


@pytest.fixture(scope="session")
def videos() -> Path:
    return shared_file(VIDEOS)


@pytest.fixture(scope="session")
def davis() -> Path:
    return shared_file(DAVIS)


@pytest.fixture(scope="session")
def segmenter(weights):
    from fastsam_stream.pipeline.segmenter import SegmenterSettings, UltralyticsSegmenter

    return UltralyticsSegmenter(SegmenterSettings(weights=str(weights), device="cpu", conf=0.25))


@pytest.fixture(scope="session")
def cli() -> list[str]:
    """The installed console script, run as a user would."""
    script = Path(sys.executable).parent / "fastsam-stream"
    if not script.exists():
        pytest.fail("the fastsam-stream console script is not installed: pip install -e . first")
    return [str(script)]
