"""Readers for the standard benchmark layouts: DAVIS (masks), OTB-style SOT (boxes) and MOTChallenge.

This module owns where each layout keeps its frames and its ground truth, and how ground truth
is parsed; it loads no model and scores nothing. A wrong root raises SourceError and an unknown
sequence name ConfigError, each with one line naming what was expected.

- DAVIS: ROOT/JPEGImages/480p/<seq>/00000.jpg… and ROOT/Annotations/480p/<seq>/00000.png…
  (one annotation per frame, same stem; any nonzero pixel is the object).
- SOT (OTB): ROOT/<seq>/img/0001.jpg… and ROOT/<seq>/groundtruth_rect.txt, or
  groundtruth_rect.1.txt, .2.txt… for several targets (named <seq>.1, <seq>.2…). One box per
  frame, `x,y,w,h` in OTB's 1-based pixel coordinates, separated by commas, tabs or spaces.
- MOT: ROOT/<seq>/{seqinfo.ini, img1/, gt/gt.txt}, ROOT being e.g. MOT17/train.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError, SourceError
from ..sources.folder import FolderSource

DAVIS_FPS = 24.0  # DAVIS 2016/2017 frames are 24 fps
OTB_FPS = 30.0  # OTB gives no rate; it only sets the frames' timestamps here
_OTB_GT = re.compile(r"^groundtruth_rect(?:\.(\d+))?\.txt$")
_SEPARATORS = re.compile(r"[,\s]+")


@dataclass(frozen=True)
class DavisSequence:
    """One DAVIS sequence: frame i is `frames[i]`, its ground truth `annotations[i]`."""

    name: str
    images: Path
    frames: tuple[Path, ...]
    annotations: tuple[Path, ...]

    def mask(self, index: int) -> np.ndarray:
        """Frame `index`'s ground truth as H×W bool (any nonzero pixel, in any channel, is the object)."""
        path = self.annotations[index]
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise SourceError(f"cannot read annotation {path}")
        return image.any(axis=2) if image.ndim == 3 else image > 0


@dataclass(frozen=True)
class SotTarget:
    """One target of an OTB-style sequence: `boxes[i]` is frame i's x,y,w,h (1-based, as in the file)."""

    name: str  # the sequence name, or <seq>.<n> for one of several targets
    sequence: str
    images: Path
    boxes: np.ndarray  # N×4 float


@dataclass(frozen=True)
class MotSequence:
    """One MOTChallenge sequence. `length` is seqinfo.ini's seqLength (a cut copy may hold fewer images)."""

    name: str
    folder: Path
    images: Path
    gt: Path
    fps: float
    length: int


def _root(root: str | Path, what: str) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise SourceError(f"no such {what} folder: {path}")
    return path


def _pick(available: Sequence[str], names: Iterable[str] | None, what: str, root: Path) -> list[str]:
    """The sequences asked for (all when `names` is None), in the order asked, each once."""
    if names is None:
        return list(available)
    chosen = list(dict.fromkeys(names))
    for name in chosen:
        if name not in available:
            raise ConfigError(f"no {what} sequence {name!r} in {root} (it has: {', '.join(available)})")
    return chosen


def _listed_frames(folder: Path) -> tuple[Path, ...]:
    """The images of a folder in the order the pipeline reads them (FolderSource's)."""
    return tuple(FolderSource(folder).files)


def davis_sequences(
    root: str | Path, names: Iterable[str] | None = None, resolution: str = "480p"
) -> list[DavisSequence]:
    """The DAVIS sequences under `root` (all, or those named)."""
    base = _root(root, "DAVIS")
    images, annotations = base / "JPEGImages" / resolution, base / "Annotations" / resolution
    if not images.is_dir() or not annotations.is_dir():
        raise SourceError(
            f"{base} is not a DAVIS root: expected JPEGImages/{resolution}/<seq>/ and Annotations/{resolution}/<seq>/"
        )
    available = sorted(p.name for p in annotations.iterdir() if p.is_dir() and (images / p.name).is_dir())
    if not available:
        raise SourceError(
            f"{base} holds no DAVIS sequence (no folder in both JPEGImages/{resolution} and Annotations/{resolution})"
        )
    return [_davis_sequence(name, images / name, annotations / name) for name in _pick(available, names, "DAVIS", base)]


def _davis_sequence(name: str, images: Path, annotations: Path) -> DavisSequence:
    frames = _listed_frames(images)
    masks = tuple(annotations / f"{f.stem}.png" for f in frames)
    missing = [m.name for m in masks if not m.is_file()]
    if missing:
        raise SourceError(
            f"DAVIS sequence {name}: no annotation {missing[0]} in {annotations} ({len(missing)} missing)"
        )
    return DavisSequence(name, images, frames, masks)


def read_boxes(path: Path) -> np.ndarray:
    """N×4 float boxes from an OTB ground-truth file (commas, tabs or spaces; NaN allowed)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in _SEPARATORS.split(line.strip())]
        except ValueError:
            values = []
        if len(values) != 4:
            raise SourceError(f"{path}, line {number}: expected 4 numbers x,y,w,h, got {line.strip()[:40]!r}")
        rows.append(values)
    return np.array(rows, np.float64).reshape(-1, 4)


def _otb_truths(folder: Path) -> list[tuple[str, Path]]:
    """(target name, file) for a sequence folder's ground-truth files, numbered targets in order."""
    found = []
    for path in folder.iterdir():
        match = _OTB_GT.match(path.name)
        if match and path.is_file():
            number = match.group(1)
            found.append(
                (int(number) if number else 0, folder.name if number is None else f"{folder.name}.{number}", path)
            )
    return [(name, path) for _, name, path in sorted(found)]


def sot_targets(root: str | Path, names: Iterable[str] | None = None) -> list[SotTarget]:
    """The targets under an OTB-style root. A name picks a sequence (all its targets) or one target (`Jogging.1`)."""
    base = _root(root, "SOT")
    truths = {p.name: _otb_truths(p) for p in sorted(base.iterdir()) if p.is_dir() and (p / "img").is_dir()}
    truths = {seq: files for seq, files in truths.items() if files}
    if not truths:
        raise SourceError(f"{base} holds no OTB-style sequence (<seq>/img/ and <seq>/groundtruth_rect.txt)")
    available = list(truths) + [name for files in truths.values() for name, _ in files if name not in truths]
    chosen = _pick(available, names, "SOT", base)
    wanted = [
        (seq, name, path) for seq, files in truths.items() for name, path in files if seq in chosen or name in chosen
    ]
    return [_sot_target(base / seq, name, path) for seq, name, path in wanted]


def _sot_target(folder: Path, name: str, truth: Path) -> SotTarget:
    frames = _listed_frames(folder / "img")
    boxes = read_boxes(truth)
    # OTB sequences whose annotation starts on a later frame need a start-frame table this reader lacks.
    if len(boxes) != len(frames):
        raise SourceError(f"SOT target {name}: {len(frames)} images but {len(boxes)} boxes in {truth.name}")
    return SotTarget(name, folder.name, folder / "img", boxes)


def _seqinfo(folder: Path) -> configparser.SectionProxy:
    info = configparser.ConfigParser()
    try:
        info.read(folder / "seqinfo.ini", encoding="utf-8")
        return info["Sequence"]
    except (configparser.Error, KeyError, UnicodeDecodeError):
        raise SourceError(f"{folder / 'seqinfo.ini'} has no [Sequence] section") from None


def mot_sequences(root: str | Path, names: Iterable[str] | None = None) -> list[MotSequence]:
    """The MOTChallenge sequences under `root` (a split folder such as MOT17/train)."""
    base = _root(root, "MOT")
    available = sorted(p.name for p in base.iterdir() if (p / "seqinfo.ini").is_file())
    if not available:
        raise SourceError(f"{base} holds no MOTChallenge sequence (<seq>/seqinfo.ini, img1/, gt/gt.txt)")
    return [_mot_sequence(base / name) for name in _pick(available, names, "MOT", base)]


def _mot_sequence(folder: Path) -> MotSequence:
    info = _seqinfo(folder)
    images, gt = folder / info.get("imDir", "img1"), folder / "gt" / "gt.txt"
    if not gt.is_file():
        raise SourceError(f"MOT sequence {folder.name}: no ground truth {gt}")
    try:
        fps, length = float(info.get("frameRate", "30")), int(info.get("seqLength", "0"))
    except ValueError:
        raise SourceError(f"{folder / 'seqinfo.ini'}: frameRate and seqLength must be numbers") from None
    if not images.is_dir():
        raise SourceError(f"MOT sequence {folder.name}: no image folder {images}")
    return MotSequence(folder.name, folder, images, gt, fps if fps > 0 else 30.0, length)
