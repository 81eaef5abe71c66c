"""Damaged images in an image folder: named in one line, or skipped and counted (issue #12).

A folder of real DAVIS frames (blackswan) with bad files made here: one cut off halfway, one that is
not an image at all, and one that libjpeg decodes with a warning ("Corrupt JPEG data: premature end
of data segment": its data has a hole but the file still ends with its end marker). By default the
first bad file stops the source with a SourceError naming it; with `skip_bad_images` the frames are
exactly the sound files, each keeping its index, and `skipped` counts the rest. libjpeg's own line
never reaches the terminal.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from fastsam_stream.errors import SourceError
from fastsam_stream.sources import FolderSource, open_source
from fastsam_stream.sources.images import BadImage, held_back_stderr, read_image

SEQUENCE = "JPEGImages/480p/blackswan"
N_IMAGES = 10
CUT, GARBAGE, HOLED = 2, 5, 7  # positions of the bad files
LIBJPEG_LINES = ("Corrupt JPEG data", "Premature end of JPEG file", "libpng")
SKIP_HINT = "remove or replace it, or set source.skip_bad_images: true to skip damaged images"


def _write(path, data: bytes) -> None:
    path.chmod(0o644)
    path.write_bytes(data)


@pytest.fixture
def folder(davis, tmp_path):
    """The first ten blackswan frames, three of them damaged."""
    out = tmp_path / "frames"
    out.mkdir()
    for source in sorted((davis / SEQUENCE).glob("*.jpg"))[:N_IMAGES]:
        shutil.copyfile(source, out / source.name)
    files = sorted(out.glob("*.jpg"))
    cut = files[CUT].read_bytes()
    _write(files[CUT], cut[: len(cut) // 2])
    _write(files[GARBAGE], b"<html>404 Not Found</html>\n" * 20)
    holed = files[HOLED].read_bytes()
    _write(files[HOLED], holed[: len(holed) // 2] + holed[len(holed) // 2 + 2000 :])  # still ends with FF D9
    return out


def _expected(davis, positions):
    files = sorted((davis / SEQUENCE).glob("*.jpg"))
    return [cv2.imread(str(files[i]), cv2.IMREAD_COLOR) for i in positions]


def test_a_damaged_image_stops_the_folder_naming_the_file(folder, davis, capfd):
    source = FolderSource(folder)
    frames = []
    with pytest.raises(SourceError) as raised:
        for frame in source.frames():
            frames.append(frame)
    message = str(raised.value)
    assert "\n" not in message
    bad = folder / f"{CUT:05d}.jpg"
    assert message == (
        f"cannot read image {bad}: it is cut off (its {bad.stat().st_size} bytes end inside the compressed picture "
        f"data, before the JPEG end marker FF D9); {SKIP_HINT}"
    )
    assert [f.index for f in frames] == [0, 1]  # the good ones before it, and never the damaged one
    assert all(np.array_equal(f.image, e) for f, e in zip(frames, _expected(davis, [0, 1]), strict=True))
    assert not any(line in capfd.readouterr().err for line in LIBJPEG_LINES)


def test_skip_bad_images_gives_exactly_the_sound_files_and_counts_the_rest(folder, davis, caplog, capfd):
    source = open_source(folder, skip_bad_images=True)
    assert isinstance(source, FolderSource) and source.frame_count == N_IMAGES
    with caplog.at_level(logging.WARNING, logger="fastsam_stream.sources.folder"):
        frames = list(source.frames())
    good = [i for i in range(N_IMAGES) if i not in (CUT, GARBAGE, HOLED)]
    assert [f.index for f in frames] == good  # each frame keeps its file's index (and pts)
    assert [f.pts for f in frames] == pytest.approx([i / 30 for i in good])
    assert all(np.array_equal(f.image, e) for f, e in zip(frames, _expected(davis, good), strict=True))
    assert source.skipped == 3
    assert source.skipped_files == [folder / f"{i:05d}.jpg" for i in (CUT, GARBAGE, HOLED)]

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4, warnings
    cut, garbage, holed, total = warnings
    assert cut.startswith(f"frames: skipped image {folder / '00002.jpg'}: it is cut off (")
    assert garbage == (
        f"frames: skipped image {folder / '00005.jpg'}: it is not a JPEG or PNG image "
        "(its first bytes are 3c 68 74 6d 6c 3e 34 30)"
    )
    assert holed == (
        f"frames: skipped image {folder / '00007.jpg'}: it is damaged "
        "(the decoder says: Corrupt JPEG data: premature end of data segment)"
    )
    assert total == f"frames: skipped 3 of the 10 images in {folder} (damaged or unreadable)"
    assert not any(line in capfd.readouterr().err for line in LIBJPEG_LINES)  # libjpeg's line was held back


def test_a_holed_jpeg_decodes_with_a_libjpeg_warning_that_read_image_turns_into_a_reason(folder):
    """The premise: OpenCV alone returns this file as a picture (only libjpeg's stderr line tells)."""
    holed = folder / f"{HOLED:05d}.jpg"
    assert cv2.imdecode(np.fromfile(holed, np.uint8), cv2.IMREAD_COLOR) is not None
    with pytest.raises(BadImage, match="premature end of data segment"):
        read_image(holed)


def test_a_folder_of_only_bad_images_is_an_error_even_when_skipping(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    source = FolderSource(tmp_path, skip_bad_images=True)
    with pytest.raises(SourceError, match=f"no usable image in {tmp_path}: all 2 are damaged or unreadable"):
        list(source.frames())
    assert source.skipped == 2


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("trailer.jpg", lambda jpg, png: jpg + b"\x00" * 64 + b"vendor trailer after EOI", None),
        ("progressive.jpg", lambda jpg, png: _encode(jpg, ".jpg", cv2.IMWRITE_JPEG_PROGRESSIVE, 1), None),
        ("restarts.jpg", lambda jpg, png: _encode(jpg, ".jpg", cv2.IMWRITE_JPEG_RST_INTERVAL, 4), None),
        ("whole.png", lambda jpg, png: png, None),
        (
            "progressive_cut.jpg",
            lambda jpg, png: _encode(jpg, ".jpg", cv2.IMWRITE_JPEG_PROGRESSIVE, 1)[:30000],
            "it is cut off (its 30000 bytes end inside the compressed picture data, before the JPEG end marker FF D9)",
        ),
        (
            "headers_cut.jpg",
            lambda jpg, png: jpg[:300],
            "it is cut off (its 300 bytes end inside a segment, before the JPEG end marker FF D9)",
        ),
        (
            "cut.png",
            lambda jpg, png: png[:5000],
            "it is cut off (its 5000 bytes end inside chunk IDAT, before the PNG end chunk IEND)",
        ),
        ("empty.jpg", lambda jpg, png: b"", "it is empty (0 bytes)"),
    ],
)
def test_read_image_checks_the_structure_of_jpegs_and_pngs(davis, tmp_path, name, make, reason):
    first = sorted((davis / SEQUENCE).glob("*.jpg"))[0]
    jpg = first.read_bytes()
    png = _encode(jpg, ".png")
    path = tmp_path / name
    path.write_bytes(make(jpg, png))
    if reason is None:
        image = read_image(path)
        assert np.array_equal(image, cv2.imread(str(path), cv2.IMREAD_COLOR))  # what OpenCV reads, unchanged
    else:
        with pytest.raises(BadImage) as raised:
            read_image(path)
        assert str(raised.value) == reason


def _encode(jpg: bytes, ext: str, *params: int) -> bytes:
    image = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    ok, data = cv2.imencode(ext, image, list(params))
    assert ok
    return data.tobytes()


def test_an_unreadable_image_names_the_reason(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file: no permission error to show")
    path = tmp_path / "0001.jpg"
    path.write_bytes(b"\xff\xd8")
    path.chmod(0)
    with pytest.raises(SourceError, match=f"cannot read image {path}: Permission denied; "):
        list(FolderSource(tmp_path).frames())


def test_held_back_stderr_passes_other_output_through(capfd):
    """Only decoder lines are held back; anything else written meanwhile still reaches stderr, in order."""
    with held_back_stderr() as lines:
        os.write(2, b"Corrupt JPEG data: premature end of data segment\n")
        os.write(2, b"another thread's log line\n")
    assert lines == ["Corrupt JPEG data: premature end of data segment"]
    assert capfd.readouterr().err == "another thread's log line\n"


def test_the_command_names_the_damaged_image_in_one_line(cli, weights, folder, tmp_path):
    """Through `fastsam-stream run`: exit 1, one stderr line, no traceback, no libjpeg line, no duplicate."""
    bad_first = folder / "00000.jpg"
    data = bad_first.read_bytes()
    bad_first.write_bytes(data[: len(data) // 3])  # the first frame: the run stops at once
    done = subprocess.run(
        [*cli, "run", str(folder), "--weights", str(weights), "--out", str(tmp_path / "out"), "--no-video"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"fastsam-stream: error: cannot read image {bad_first}: it is cut off (")
    assert lines[0].endswith(SKIP_HINT)


def test_sound_frames_read_exactly_as_opencv_reads_them(davis):
    """The checks change nothing for sound files: every frame of a DAVIS sequence, pixel for pixel."""
    for file in sorted((davis / SEQUENCE).glob("*.jpg")):
        assert np.array_equal(read_image(file), cv2.imread(str(file), cv2.IMREAD_COLOR)), file
