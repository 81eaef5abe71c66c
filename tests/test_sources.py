"""Sources on real files: PyAV decoding loses no frame, folders sort like people do, errors are clear."""

from __future__ import annotations

import av
import numpy as np
import pytest

from fastsam_stream.errors import SourceError
from fastsam_stream.sources import FileSource, FolderSource, Source, open_source


def _decoded_count(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.parametrize("name", ["carphone_pristine.mp4", "tree.avi", "bag.avi"])
def test_file_source_yields_every_frame_with_stream_pts(videos, name):
    source = FileSource(videos / name)
    assert isinstance(source, Source) and not source.is_live
    frames = list(source.frames())
    source.close()
    assert len(frames) == _decoded_count(videos / name)
    assert [f.index for f in frames] == list(range(len(frames)))
    pts = [f.pts for f in frames]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    first = frames[0]
    assert first.image.dtype == np.uint8 and first.image.shape[2] == 3
    assert first.source_id == name.rsplit(".", 1)[0]


def test_file_source_reads_the_container_frame_rate(videos):
    assert float(FileSource(videos / "carphone_pristine.mp4").fps) == pytest.approx(29.97, abs=0.01)
    assert float(FileSource(videos / "vtest.avi").fps) == pytest.approx(10)


def test_folder_source_sorts_naturally_and_counts_files(tmp_path, davis):
    import cv2

    image = cv2.imread(str(davis / "JPEGImages/480p/dog/00000.jpg"))
    for i in (10, 2, 1):  # unpadded names: img10 must come after img2
        cv2.imwrite(str(tmp_path / f"img{i}.png"), np.full_like(image, i))
    (tmp_path / "notes.txt").write_text("not an image")
    source = FolderSource(tmp_path, fps=24)
    frames = list(source.frames())
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 2, 10]
    assert [f.pts for f in frames] == pytest.approx([0, 1 / 24, 2 / 24])
    assert source.frame_count == 3 and source.source_id == tmp_path.name


def test_folder_source_on_a_davis_sequence(davis):
    source = open_source(davis / "JPEGImages/480p/blackswan")
    assert isinstance(source, FolderSource)
    assert source.frame_count == len(list((davis / "JPEGImages/480p/blackswan").glob("*.jpg")))


def test_open_source_errors(tmp_path):
    with pytest.raises(SourceError, match="no such file or folder"):
        open_source(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no JPEG or PNG"):
        open_source(tmp_path / "empty")
    text = tmp_path / "clip.mp4"
    text.write_text("hello")
    with pytest.raises(SourceError, match="cannot read"):
        open_source(text)


def test_unreadable_image_in_a_folder_is_a_source_error(tmp_path):
    (tmp_path / "0001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SourceError, match="cannot read image"):
        list(FolderSource(tmp_path).frames())


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(SourceError, match="no video stream"):
        FileSource(path)


def test_a_truncated_video_says_how_much_was_decoded(videos, tmp_path, caplog):
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes((videos / "01_dog.mp4").read_bytes()[:300_000])
    source = FileSource(truncated)
    frames = list(source.frames())
    assert 0 < len(frames) < source.frame_count
    assert f"decoded {len(frames)} of the {source.frame_count} frames" in caplog.text
