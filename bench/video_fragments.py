"""What fragmenting annotated.mp4 costs: file size and encode time, fragmented against plain MP4.

    .venv/bin/python bench/video_fragments.py ../shared/media/videos/vtest.avi ../shared/media/videos/01_dog.mp4

Each clip is decoded once, then encoded three times each way with the video sink's own settings
(x264 veryfast, crf 23); the medians are printed, with the ratio. The fragmented file is what
VideoSink writes (sinks/video.py: MP4_OPTIONS, X264_LOOKAHEAD), so that a killed run's video plays.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from fastsam_stream.sinks.video import MP4_OPTIONS, X264_LOOKAHEAD

TIME_BASE = Fraction(1, 90_000)


def encode(frames: list[np.ndarray], fps: Fraction, path: Path, fragmented: bool) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, bytes) of encoding `frames` into `path`."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = av.open(str(path), "w", container_options=dict(MP4_OPTIONS) if fragmented else {})
    stream = out.add_stream("libx264", rate=fps)
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt, stream.codec_context.time_base = "yuv420p", TIME_BASE
    lookahead = {"rc-lookahead": str(X264_LOOKAHEAD)} if fragmented else {}
    stream.options = {"crf": "23", "preset": "veryfast", **lookahead}
    for index, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = round(index / fps / TIME_BASE), TIME_BASE
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
    out.close()
    return time.perf_counter() - wall, time.process_time() - cpu, os.path.getsize(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for clip in args.clips:
            with av.open(str(clip)) as source:
                fps = source.streams.video[0].average_rate
                frames = [f.to_ndarray(format="bgr24") for f in source.decode(video=0)]
            runs: dict[bool, list[tuple[float, float, int]]] = {False: [], True: []}
            for _ in range(args.rounds):
                for fragmented in (False, True):
                    runs[fragmented].append(encode(frames, fps, Path(folder) / "out.mp4", fragmented))
            (w0, c0, s0), (w1, c1, s1) = ([statistics.median(v) for v in zip(*runs[k], strict=True)] for k in runs)
            n = len(frames)
            print(
                f"{clip.name}: size {s0 / 1e6:.3f} -> {s1 / 1e6:.3f} MB ({100 * (s1 / s0 - 1):+.2f}%), "
                f"cpu {1000 * c0 / n:.1f} -> {1000 * c1 / n:.1f} ms/frame, "
                f"wall {1000 * w0 / n:.1f} -> {1000 * w1 / n:.1f} ms/frame"
            )


if __name__ == "__main__":
    main()
