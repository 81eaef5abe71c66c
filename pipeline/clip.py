"""CLIP scoring for text prompts: how well each candidate instance of a frame matches a text.

As in FastSAM, each instance is cropped from the frame, the crops go through CLIP's image encoder
and the text through its text encoder, and cosine similarity ranks them. Here the model is loaded
once (the FastSAM repo reloads it on every text prompt), crops are cut and normalised in
numpy/torch rather than one PIL image each, ALL crops of a call go through ONE `encode_image`
call, and each text is encoded once per scorer.

Default crop "masked": pixels outside the instance's mask are blanked, as ultralytics' FastSAM
does (the FastSAM repo blanks outside the box only), so the crop of a large instance does not
score for a smaller object inside its box. Its cost, assembling the scored rows' masks, was lost in
run-to-run noise next to CLIP's forward pass in `bench/clip_speed.py` (the README has the
figures), and it is paid once per text prompt. Which crop CLIP scores better with has not been
measured.
"""

from __future__ import annotations

import difflib
import math
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import open_clip
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from ..core import Instances
from ..errors import ConfigError, ModelError
from .clip_settings import ClipSettings, CropMode

BLANK = (255, 255, 255)  # FastSAM's _segment_image fills what it cuts away with white (ultralytics: black)
MAX_CACHED_TEXTS = 256  # text embeddings kept per scorer (oldest dropped first)
MASK_CHUNK = 32  # masks are assembled at frame size: 32 rows of 1080p are 66 MB, 300 would be 600 MB
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt")


def can_connect(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """A TCP connection to host:port opens within `timeout` seconds."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_clip(
    settings: ClipSettings,
    device: torch.device | str,
    *,
    cache_dir: str | Path | None = None,
    reachable: Callable[[str, int], bool] = can_connect,
) -> ClipTextScorer:
    """Build the CLIP model of `settings` in eval mode on its device, as a text scorer.

    Args:
        settings: The model, weights, crop mode, device and precision.
        device: The device when `settings.device` is None (the segmenter's).
        cache_dir: The Hugging Face hub cache (None: its default).
        reachable: `reachable(host, port)` is asked before anything is downloaded, so a machine
            without internet fails at once with a clear error instead of waiting on the network.

    Returns:
        The scorer, with the model's own input size and normalisation.

    Raises:
        ConfigError: An unknown model, device or pretrained tag.
        ModelError: The weights cannot be found, fetched or loaded.
    """
    if settings.model not in open_clip.list_models():
        close = difflib.get_close_matches(settings.model, open_clip.list_models(), n=3) or ["ViT-B-32", "ViT-L-14"]
        raise ConfigError(
            f"unknown CLIP model {settings.model!r}: try {', '.join(close)} (or any of open_clip.list_models())"
        )
    try:
        device = torch.device(settings.device or device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {settings.device!r} for CLIP: use cpu or cuda:N") from None
    half = device.type == "cuda" if settings.half is None else settings.half
    weights = _weights(settings.model, settings.weights, cache_dir, reachable)
    try:
        model = open_clip.create_model(
            settings.model,
            precision="fp16" if half else "fp32",
            device=device,
            cache_dir=None if cache_dir is None else str(cache_dir),
            **weights,
        )
    except Exception as e:  # open_clip raises RuntimeError, torch's unpickling errors, OSError...
        first = (str(e).strip().splitlines() or [""])[0]
        raise ModelError(
            f"cannot load CLIP weights {settings.weights!r} for {settings.model}: {type(e).__name__}: {first}"
        ) from e
    model.eval()
    tokenizer = open_clip.get_tokenizer(settings.model)
    return ClipTextScorer.from_model(model, tokenizer, settings.crop, dtype=torch.float16 if half else torch.float32)


def _weights(
    model: str, pretrained: str | None, cache_dir: str | Path | None, reachable: Callable[[str, int], bool]
) -> dict:
    """open_clip.create_model's weight arguments for a tag, a file or None; never waits on the network."""
    if pretrained is None:
        return {"pretrained": None}
    tag = open_clip.get_pretrained_cfg(model, pretrained)
    if tag:
        # open_clip does not switch to QuickGELU for the tags trained with it (OpenAI's): ask for it.
        extra = {"force_quick_gelu": bool(tag.get("quick_gelu")), "force_preprocess_cfg": tag}
        cached = _cached_checkpoint(tag, cache_dir)
        if cached is not None:  # load the file itself: open_clip would still ask the hub first
            return {"pretrained": cached, **extra}
        host = urlparse(hf_constants.ENDPOINT if tag.get("hf_hub") else tag.get("url", "")).hostname
        if host and (hf_constants.HF_HUB_OFFLINE or not reachable(host, 443)):
            raise ModelError(
                f"CLIP weights {pretrained!r} for {model} are not in the local cache and {host} cannot "
                "be reached: pass a local checkpoint path as the pretrained weights (--clip-weights PATH)"
            )
        return {"pretrained": pretrained, **extra}
    path = Path(pretrained).expanduser()
    if path.is_file():
        return {"pretrained": str(path)}
    if path.exists():
        raise ModelError(f"CLIP weights {pretrained} is a folder, not a checkpoint file")
    if path.suffix in CHECKPOINT_SUFFIXES or "/" in pretrained:
        raise ModelError(f"CLIP weights file {pretrained} not found")
    tags = open_clip.list_pretrained_tags_by_model(model)
    raise ConfigError(
        f"unknown CLIP weights {pretrained!r} for {model}: use one of "
        f"{', '.join(tags) if tags else '(no published tags)'} or a checkpoint path"
    )


def _cached_checkpoint(tag: dict, cache_dir: str | Path | None) -> str | None:
    """The tag's checkpoint in the Hugging Face cache, looked up in the order open_clip downloads."""
    repo, _, filename = tag.get("hf_hub", "").rpartition("/")
    if not repo:
        return None
    if not filename:
        names = [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    elif filename.endswith((".bin", ".pth")):
        names = [filename[:-4] + ".safetensors", filename]
    else:
        names = [filename]
    for name in names:
        found = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
        if isinstance(found, str):
            return found
    return None


class ClipTextScorer:
    """Cosine similarity between a text and instances of a frame, with a CLIP model."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Callable,
        image_size: int | tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str,
        dtype: torch.dtype = torch.float32,
        crop: CropMode = "masked",
    ):
        if crop not in ("masked", "box"):
            raise ValueError(f"crop must be 'masked' or 'box', got {crop!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.device = torch.device(device)
        self.dtype = dtype
        self.crop = crop
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255
        self._texts: dict[str, torch.Tensor] = {}

    @classmethod
    def from_model(
        cls, model: torch.nn.Module, tokenizer: Callable, crop: CropMode = "masked", dtype: torch.dtype | None = None
    ) -> ClipTextScorer:
        """Input size and normalisation from the model's own preprocessing config."""
        visual = model.visual
        config = getattr(visual, "preprocess_cfg", {})
        parameter = next(model.parameters())
        return cls(
            model,
            tokenizer,
            config.get("size", visual.image_size),
            config.get("mean", OPENAI_DATASET_MEAN),
            config.get("std", OPENAI_DATASET_STD),
            parameter.device,
            dtype or parameter.dtype,
            crop,
        )

    @torch.inference_mode()
    def similarities(self, image: np.ndarray, instances: Instances, rows: Sequence[int], text: str) -> np.ndarray:
        """Cosine similarity of `text` with each row's crop of `image` (H×W×3 BGR), in the order of `rows`."""
        if len(rows) == 0:
            _prompt_key(text)  # an empty text is still an error
            return np.zeros(0, np.float32)
        text_features = self.text_embedding(text)
        features = self.model.encode_image(self.crops(image, instances, rows)).float()
        features = torch.nn.functional.normalize(features, dim=-1)
        return (features @ text_features).cpu().numpy().astype(np.float32)

    @torch.inference_mode()
    def text_embedding(self, text: str) -> torch.Tensor:
        """The normalised embedding (D,) of `text`, encoded once per scorer."""
        key = _prompt_key(text)
        if key not in self._texts:
            if len(self._texts) >= MAX_CACHED_TEXTS:  # texts sent over the control interface must not pile up
                self._texts.pop(next(iter(self._texts)))
            tokens = self.tokenizer([key]).to(self.device)
            self._texts[key] = torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)[0]
        return self._texts[key]

    @torch.inference_mode()
    def crops(self, image: np.ndarray, instances: Instances, rows: Sequence[int]) -> torch.Tensor:
        """The N×3×S×S normalised batch of the rows' crops, on the model's device and dtype."""
        rows = [int(r) for r in rows]
        h, w = image.shape[:2]
        batch = np.empty((len(rows), *self.size, 3), np.uint8)
        for start in range(0, len(rows), MASK_CHUNK):
            chunk = rows[start : start + MASK_CHUNK]
            masks = instances.masks(chunk) if self.crop == "masked" else [None] * len(chunk)
            for i, (row, mask) in enumerate(zip(chunk, masks, strict=True)):
                x1, y1, x2, y2 = _pixel_box(instances.boxes[row], w, h)
                crop = image[y1:y2, x1:x2]
                if mask is not None:
                    crop = np.where(mask[y1:y2, x1:x2, None], crop, np.array(BLANK, np.uint8))
                batch[start + i] = self._fit(crop)
        # BGR → RGB, and normalisation done once for the whole batch on the device
        x = torch.from_numpy(batch[..., ::-1].copy()).to(self.device).permute(0, 3, 1, 2).float()
        return ((x - self.mean) / self.std).to(self.dtype)

    def _fit(self, crop: np.ndarray) -> np.ndarray:
        """Resize the long side to the input size and pad the rest with BLANK.

        Not CLIP's resize of the short side + centre crop, which cuts the ends off elongated
        objects (a person, a snake).
        """
        out_h, out_w = self.size
        h, w = crop.shape[:2]
        scale = min(out_h / h, out_w / w)
        new_w, new_h = max(1, min(out_w, round(w * scale))), max(1, min(out_h, round(h * scale)))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        resized = cv2.resize(crop, (new_w, new_h), interpolation=interpolation)
        out = np.full((out_h, out_w, 3), BLANK, np.uint8)
        top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
        out[top : top + new_h, left : left + new_w] = resized
        return out


def _prompt_key(text: str) -> str:
    """The cache key of a text prompt; an empty one is an error the caller reports as a PromptError."""
    key = text.strip() if isinstance(text, str) else ""
    if not key:
        raise ValueError("a text prompt must be a non-empty string")
    return key


def _pixel_box(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixel bounds of a float xyxy box, clipped to the frame and at least 1 px each way."""
    x1 = min(max(math.floor(box[0]), 0), width - 1)
    y1 = min(max(math.floor(box[1]), 0), height - 1)
    x2 = max(min(math.ceil(box[2]), width), x1 + 1)
    y2 = max(min(math.ceil(box[3]), height), y1 + 1)
    return x1, y1, x2, y2
