"""CLIP text scoring (pipeline/clip.py) with a real open_clip model and real instances of a real frame.

The model is a tiny CLIP architecture (registered here, random weights) so the tests run in seconds on
a CPU; the code paths (tokenizer, encoders, checkpoint loading) are open_clip's own.
"""

from __future__ import annotations

import json
import socket
from urllib.parse import urlparse

import av
import numpy as np
import open_clip
import pytest
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from fastsam_stream.core import DenseMasks, Frame, Instances
from fastsam_stream.errors import ConfigError, ModelError
from fastsam_stream.pipeline import clip
from fastsam_stream.pipeline.clip import BLANK, ClipSettings, ClipTextScorer, can_connect, load_clip

TINY = "fss-tiny-clip"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("clip_config") / f"{TINY}.json"
    path.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(path)
    return TINY


@pytest.fixture(scope="module")
def model(tiny) -> torch.nn.Module:
    torch.manual_seed(0)
    return open_clip.create_model(tiny, pretrained=None).eval()


def scorer_for(model: torch.nn.Module, crop: str = "masked") -> ClipTextScorer:
    return ClipTextScorer.from_model(model, open_clip.get_tokenizer(TINY), crop)


@pytest.fixture(scope="module")
def frame(videos) -> np.ndarray:
    with av.open(str(videos / "01_dog.mp4")) as container:
        return next(container.decode(video=0)).to_ndarray(format="bgr24")


@pytest.fixture(scope="module")
def instances(segmenter, frame) -> Instances:
    found = segmenter.segment([Frame(frame, "dog", 0, 0.0, 0.0)])[0]
    assert len(found) >= 3, "01_dog.mp4 frame 0 should hold several instances"
    return found


def count_calls(monkeypatch, model: torch.nn.Module, name: str) -> list:
    """Wrap model.<name> so each call records its argument's shape; restored after the test."""
    calls, real = [], getattr(model, name)

    def counted(x, *args, **kwargs):
        calls.append(tuple(x.shape))
        return real(x, *args, **kwargs)

    monkeypatch.setattr(model, name, counted)
    return calls


@pytest.mark.parametrize("crop", ["masked", "box"])
def test_all_crops_of_a_frame_go_through_one_forward_pass(monkeypatch, model, frame, instances, crop):
    scorer = scorer_for(model, crop)
    calls = count_calls(monkeypatch, model, "encode_image")
    rows = list(range(len(instances))) * 3  # repeated rows are scored again, still in one batch
    scores = scorer.similarities(frame, instances, rows, "a dog")
    assert calls == [(len(rows), 3, 64, 64)]
    assert scores.shape == (len(rows),) and scores.dtype == np.float32
    assert np.all(np.abs(scores) <= 1 + 1e-5)

    calls.clear()
    empty = scorer.similarities(frame, instances, [], "a dog")
    assert calls == [] and empty.shape == (0,) and empty.dtype == np.float32


def test_scores_follow_the_order_of_rows(model, frame, instances):
    scorer = scorer_for(model)
    rows = list(range(len(instances)))
    forward = scorer.similarities(frame, instances, rows, "a dog on the grass")
    backward = scorer.similarities(frame, instances, rows[::-1], "a dog on the grass")
    assert len(np.unique(forward.round(5))) == len(rows), "distinct crops should score differently"
    np.testing.assert_allclose(backward, forward[::-1], atol=1e-5)
    alone = scorer.similarities(frame, instances, [rows[-1]], "a dog on the grass")
    np.testing.assert_allclose(alone, forward[-1:], atol=1e-5)


def test_text_embeddings_are_cached_per_text(monkeypatch, model, frame, instances):
    scorer = scorer_for(model)
    calls = count_calls(monkeypatch, model, "encode_text")
    first = scorer.similarities(frame, instances, [0, 1], "a dog")
    second = scorer.similarities(frame, instances, [0, 1], " a dog ")
    assert len(calls) == 1
    np.testing.assert_array_equal(first, second)
    scorer.similarities(frame, instances, [0, 1], "a person")
    assert len(calls) == 2
    assert torch.linalg.vector_norm(scorer.text_embedding("a dog")).item() == pytest.approx(1, abs=1e-5)
    assert scorer_for(model).text_embedding("a dog") is not scorer.text_embedding("a dog"), "caches are per scorer"


@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_text_is_a_value_error(model, frame, instances, text):
    with pytest.raises(ValueError, match="text prompt"):
        scorer_for(model).similarities(frame, instances, [0], text)
    with pytest.raises(ValueError, match="text prompt"):
        scorer_for(model).similarities(frame, instances, [], text)


def unnormalised(scorer: ClipTextScorer, batch: torch.Tensor) -> np.ndarray:
    """The crops back as N×S×S×3 uint8 RGB."""
    pixels = batch.float() * scorer.std + scorer.mean
    return pixels.round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()


def test_masked_crops_blank_what_is_outside_the_mask_and_box_crops_do_not(model, frame, instances):
    row = int(np.argmax(instances.areas))
    x1, y1, x2, y2 = (int(v) for v in np.round(instances.boxes[row]))
    instances = Instances(
        np.array([[x1, y1, x2, y2]], np.float32),
        instances.scores[row : row + 1],
        instances.image_shape,
        masks=DenseMasks(instances.masks([row])),
    )
    mask = instances.masks([0])[0, y1:y2, x1:x2]
    assert 0.2 < mask.mean() < 0.9, "the test needs a mask that leaves part of its box out"
    region = frame[y1:y2, x1:x2, ::-1]  # RGB
    for crop in ("masked", "box"):
        # an input the size of the box: the crop is the box's pixels unresized, so they compare exactly
        size = (y2 - y1, x2 - x1)
        scorer = ClipTextScorer(model, None, size, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, "cpu", crop=crop)
        pixels = unnormalised(scorer, scorer.crops(frame, instances, [0]))[0]
        expected = np.where(mask[..., None], region, np.array(BLANK, np.uint8)) if crop == "masked" else region
        np.testing.assert_array_equal(pixels, expected)


def test_crops_at_the_model_size_pad_elongated_boxes_instead_of_cutting_them(model, frame):
    # a 40×200 box with no mask pixels outside it: the whole box is kept, padded above and below
    instances = Instances(
        np.array([[100, 300, 300, 340]], np.float32),
        np.ones(1, np.float32),
        frame.shape[:2],
        masks=DenseMasks(np.ones((1, *frame.shape[:2]), bool)),
    )
    scorer = scorer_for(model, "masked")
    pixels = unnormalised(scorer, scorer.crops(frame, instances, [0]))[0]
    assert pixels.shape == (64, 64, 3)
    content = np.any(pixels != np.array(BLANK), axis=2)
    rows_with_content = np.flatnonzero(content.any(axis=1))
    assert 0 < rows_with_content[0] and rows_with_content[-1] < 63, "blank bands above and below"
    assert content.any(axis=0)[[0, 63]].all(), "the full width of the box is kept"


@pytest.mark.parametrize("crop", ["masked", "box"])
def test_degenerate_boxes_do_not_crash(model, frame, crop):
    h, w = frame.shape[:2]
    boxes = np.array([[100, 50, 100, 80], [w + 10, 10, w + 50, 20], [-30, -30, -5, -5], [5, 5, 5.2, 5.4]], np.float32)
    instances = Instances(boxes, np.ones(4, np.float32), (h, w), masks=DenseMasks(np.zeros((4, h, w), bool)))
    scores = scorer_for(model, crop).similarities(frame, instances, [0, 1, 2, 3], "a dog")
    assert scores.shape == (4,) and np.all(np.isfinite(scores))


def test_load_clip_rejects_unknown_models_and_tags(tiny):
    with pytest.raises(ConfigError, match=r"unknown CLIP model 'ViT-B-33'.*ViT-B-32"):
        load_clip(ClipSettings(model="ViT-B-33", weights=None), "cpu")
    with pytest.raises(ConfigError, match=r"unknown CLIP weights 'opneai' for ViT-B-32: use one of openai, "):
        load_clip(ClipSettings(model="ViT-B-32", weights="opneai"), "cpu")
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        load_clip(ClipSettings(model=tiny, weights=None, device="gpu"), "cpu")


def test_load_clip_reports_missing_and_unreadable_checkpoints(tiny, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_clip(ClipSettings(model=tiny, weights=str(tmp_path / "missing.pt")), "cpu")
    junk = tmp_path / "notes.pt"
    junk.write_text("not a checkpoint\nsecond line\n")
    with pytest.raises(ModelError, match=r"cannot load CLIP weights .*notes\.pt") as caught:
        load_clip(ClipSettings(model=tiny, weights=str(junk)), "cpu")
    assert "\n" not in str(caught.value)


def test_a_tag_not_in_the_cache_fails_at_once_when_the_hub_is_unreachable(monkeypatch, tmp_path):
    monkeypatch.setattr(clip.hf_constants, "HF_HUB_OFFLINE", False)
    asked = []

    def unreachable(host: str, port: int) -> bool:
        asked.append((host, port))
        return False

    with pytest.raises(
        ModelError,
        match=r"'openai' for ViT-B-32 are not in the local cache and .* cannot be "
        r"reached: pass a local checkpoint path .*--clip-weights PATH",
    ):
        load_clip(ClipSettings(weights="openai"), "cpu", cache_dir=tmp_path, reachable=unreachable)
    assert asked == [(urlparse(clip.hf_constants.ENDPOINT).hostname, 443)]


def test_hf_hub_offline_mode_fails_without_asking_the_network(monkeypatch, tmp_path):
    monkeypatch.setattr(clip.hf_constants, "HF_HUB_OFFLINE", True)

    def no_network(host: str, port: int) -> bool:
        raise AssertionError("HF_HUB_OFFLINE is set: nothing to probe")

    with pytest.raises(ModelError, match="not in the local cache"):
        load_clip(ClipSettings(weights="openai"), "cpu", cache_dir=tmp_path, reachable=no_network)


def test_the_network_probe_is_a_plain_tcp_connect():
    # A loopback connect is answered at once (accepted by the backlog, or refused): the timeout
    # only stops a hang, so it is far above what a slow, busy machine needs.
    hang_s = 10
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert can_connect("127.0.0.1", listening.getsockname()[1], timeout=hang_s)
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]  # bound, never listening: refused at once
        assert not can_connect("127.0.0.1", port, timeout=hang_s)


@pytest.mark.skipif(can_connect("huggingface.co"), reason="needs a machine that cannot reach huggingface.co")
def test_offline_the_default_tag_fails_with_the_real_probe(tmp_path):
    # the same call as the defaults on this offline machine, with an empty cache: no hub retries
    with pytest.raises(ModelError, match="cannot be reached"):
        load_clip(ClipSettings(), "cpu", cache_dir=tmp_path)


def test_a_local_checkpoint_loads_the_same_weights(model, tiny, tmp_path, frame, instances):
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    loaded = load_clip(ClipSettings(model=tiny, weights=str(path)), "cpu")
    assert loaded.model is not model and not loaded.model.training
    rows = list(range(len(instances)))
    np.testing.assert_allclose(
        loaded.similarities(frame, instances, rows, "a dog"),
        scorer_for(model).similarities(frame, instances, rows, "a dog"),
        atol=1e-6,
    )


def test_a_cached_tag_loads_without_the_network(monkeypatch, model, tiny, tmp_path):
    # a published-tag entry for the tiny model, its checkpoint laid out as the Hugging Face cache keeps it
    tag = {"hf_hub": "fss/tiny-clip/", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "quick_gelu": True}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, tiny, {"cached": tag})
    repo = tmp_path / "models--fss--tiny-clip"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    torch.save(model.state_dict(), repo / "snapshots" / commit / "open_clip_pytorch_model.bin")

    def no_network(host: str, port: int) -> bool:
        raise AssertionError(f"asked the network ({host}) for a cached tag")

    scorer = load_clip(ClipSettings(model=tiny, weights="cached"), "cpu", cache_dir=tmp_path, reachable=no_network)
    torch.testing.assert_close(scorer.model.state_dict()["text_projection"], model.state_dict()["text_projection"])
    assert torch.allclose(scorer.mean.flatten(), torch.tensor([127.5] * 3))  # the tag's normalisation
    assert type(scorer.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"


def test_the_defaults(tiny):
    settings = ClipSettings()
    assert (settings.model, settings.weights, settings.crop, settings.device, settings.half) == (
        "ViT-B-32",
        "openai",
        "masked",
        None,
        None,
    )
    scorer = load_clip(ClipSettings(model=tiny, weights=None), "cpu")
    assert scorer.dtype == torch.float32 and scorer.device == torch.device("cpu") and scorer.crop == "masked"
    assert not scorer.model.training
