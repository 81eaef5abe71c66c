"""What camera-motion estimation costs a frame: `CameraMotion.estimate` on real 1280×720 frames.

    .venv/bin/python bench/camera_motion_cost.py [--clip PATH] [--frames 60] [--rounds 7]
        [--widths 160 240 320 480] [--corners 100 300] [--idle-every 1]

A fixed camera's cost with and without idling (`idle_every`, the tracker's
`camera_motion_idle_every`): `--clip ../shared/media/videos/vtest.avi --frames 200 --widths 256
--corners 300 --idle-every 1 4`.

The clip's first `--frames` frames are decoded once (PyAV) and kept in memory, so decoding is not
timed. For each working width and `max_corners`, a fresh `CameraMotion` is given the first frame
(untimed: it has nothing to compare with) and then every other frame; the figure is the wall time
of those calls divided by their number, in milliseconds per frame, the median of `--rounds` rounds.
Rounds are interleaved over the settings, so a machine that slows down mid-run slows every setting.
Each setting runs with OpenCV on one thread (`cv2.setNumThreads(1)`, as on a worker that runs one
stream per core) and with OpenCV's default thread count. It also prints how many frames came back
with a matrix (the rest were still, or unreliable), and the median motion found, as the largest
displacement of a frame corner in full-resolution pixels, a check that the settings agree.
Figures vary between machines and runs: compare within one run only.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import av
import cv2
import numpy as np

from fastsam_stream.trackers.camera_motion import CameraMotion

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def decode(path: Path, count: int) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) == count:
                break
    return frames


def corner_motion(matrix: np.ndarray, shape: tuple[int, int]) -> float:
    height, width = shape
    corners = np.array([[0.0, 0.0, 1.0], [width, 0.0, 1.0], [0.0, height, 1.0], [width, height, 1.0]])
    moved = corners @ matrix.T - corners[:, :2]
    return float(np.max(np.hypot(moved[:, 0], moved[:, 1])))


def one_round(
    frames: list[np.ndarray], width: int, corners: int, idle_every: int
) -> tuple[float, list[np.ndarray | None]]:
    estimator = CameraMotion(width=width, max_corners=corners, idle_every=idle_every)
    estimator.estimate(frames[0])
    start = time.perf_counter()
    matrices = [estimator.estimate(frame) for frame in frames[1:]]
    return (time.perf_counter() - start) / (len(frames) - 1) * 1e3, matrices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=SHARED / "media" / "videos" / "01_dog.mp4")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--widths", type=int, nargs="+", default=[160, 240, 320, 480])
    parser.add_argument("--corners", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--idle-every", type=int, nargs="+", default=[1], help="1: estimate every frame")
    args = parser.parse_args()

    frames = decode(args.clip, args.frames)
    default_threads = cv2.getNumThreads()
    print(f"{args.clip.name}: {len(frames)} frames of {frames[0].shape[1]}x{frames[0].shape[0]}")
    machine = platform.processor() or platform.machine()
    print(f"OpenCV {cv2.__version__}, {default_threads} threads by default; {machine}")

    settings = [
        (w, c, t, i) for w in args.widths for c in args.corners for t in (1, default_threads) for i in args.idle_every
    ]
    times: dict[tuple, list[float]] = {s: [] for s in settings}
    found: dict[tuple, list[np.ndarray | None]] = {}
    for _ in range(args.rounds):
        for setting in settings:
            width, corners, threads, idle_every = setting
            cv2.setNumThreads(threads)
            ms, matrices = one_round(frames, width, corners, idle_every)
            times[setting].append(ms)
            found[setting] = matrices
    cv2.setNumThreads(default_threads)

    print(f"\nms per frame, median of {args.rounds} rounds (min-max)")
    header = f"{'width':>5} {'corners':>7} {'threads':>7} {'idle':>4} {'ms/frame':>9} {'range':>13} {'matrix':>7}"
    print(f"{header} {'motion px':>9}")
    for setting in settings:
        width, corners, threads, idle_every = setting
        ms = times[setting]
        matrices = [m for m in found[setting] if m is not None]
        motion = statistics.median(corner_motion(m, frames[0].shape[:2]) for m in matrices) if matrices else 0.0
        print(
            f"{width:>5} {corners:>7} {threads:>7} {idle_every:>4} {statistics.median(ms):>9.2f} "
            f"{f'{min(ms):.2f}-{max(ms):.2f}':>13} {len(matrices):>3}/{len(frames) - 1:<3} {motion:>9.2f}"
        )


if __name__ == "__main__":
    main()
