"""mPLUG-Owl2 inputs: expand-to-square + CLIP preprocessing of pixels, the LLaMA SentencePiece
tokenizer with the reference's per-chunk ``<|image|>`` rule, and the batching processor."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from iqa_ray.backends.families.mplug_owl2.configuration import IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from iqa_ray.backends.families.mplug_owl2.tokenization import LlamaSentencePieceTokenizer


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W[, C]) uint8 array -> (H, W, 3): grey is repeated, an alpha channel dropped (as
    PIL's ``convert("RGB")``)."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected (H, W), (H, W, 1|3|4), got {image.shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[:, :, :3]


def expand_to_square(image: np.ndarray, fill: Sequence[int]) -> np.ndarray:
    """Pad an (H, W, 3) uint8 image to a square of side max(H, W) filled with ``fill``.

    The image is centred along its short side with the reference's integer offsets:
    ((S - W) // 2, 0) for tall images, (0, (S - H) // 2) for wide ones; squares are returned
    unchanged.
    """
    h, w = image.shape[:2]
    if h == w:
        return image
    side = max(h, w)
    canvas = np.empty((side, side, image.shape[2]), dtype=image.dtype)
    canvas[...] = np.asarray(fill, dtype=image.dtype)
    top, left = ((side - h) // 2, 0) if w > h else (0, (side - w) // 2)
    canvas[top : top + h, left : left + w] = image
    return canvas


def _edge(value: Any, key: str) -> int:
    return int(value[key] if isinstance(value, dict) else value)


@dataclass(frozen=True)
class ImageSettings:
    """The CLIP image processor's settings (``preprocessor_config.json``)."""

    size: int = 448  # shortest edge after resizing
    crop_size: int = 448
    resample: int = 3  # PIL BICUBIC
    image_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    rescale_factor: float = 1 / 255
    do_resize: bool = True
    do_center_crop: bool = True
    do_rescale: bool = True
    do_normalize: bool = True

    @classmethod
    def from_json(cls, path: str | Path) -> ImageSettings:
        """Read a (CLIP) ``preprocessor_config.json``; absent keys keep the defaults."""
        raw = json.loads(Path(path).read_text())
        values: dict[str, Any] = {}
        if "size" in raw:
            values["size"] = _edge(raw["size"], "shortest_edge")
        if "crop_size" in raw:
            values["crop_size"] = _edge(raw["crop_size"], "height")
        for key in ("image_mean", "image_std"):
            if key in raw:
                values[key] = tuple(float(x) for x in raw[key])
        flags = ("do_resize", "do_center_crop", "do_rescale", "do_normalize")
        for key in ("resample", "rescale_factor", *flags):
            if key in raw:
                values[key] = raw[key]
        return cls(**values)

    @property
    def background(self) -> tuple[int, ...]:
        """Expand-to-square fill: ``int(mean * 255)`` per channel, truncated as the reference."""
        return tuple(int(x * 255) for x in self.image_mean)


def resize_and_crop(image: np.ndarray, settings: ImageSettings) -> np.ndarray:
    """uint8 (H, W, 3) -> shortest edge ``size`` with PIL (bicubic), then centre crop."""
    if settings.do_resize:
        h, w = image.shape[:2]
        short, long = min(h, w), max(h, w)
        new_short, new_long = settings.size, int(settings.size * long / short)
        new_h, new_w = (new_short, new_long) if h <= w else (new_long, new_short)
        if (new_h, new_w) != (h, w):
            resized = Image.fromarray(image).resize((new_w, new_h), resample=settings.resample)
            image = np.asarray(resized)
    if settings.do_center_crop:
        h, w = image.shape[:2]
        top, left = (h - settings.crop_size) // 2, (w - settings.crop_size) // 2
        if top < 0 or left < 0:
            raise ValueError(f"image {h}x{w} is smaller than the crop {settings.crop_size}")
        image = image[top : top + settings.crop_size, left : left + settings.crop_size]
    return image


def normalize(image: np.ndarray, settings: ImageSettings) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, H, W): x * (1/255) in float64 cast to float32, then
    (x - mean) / std in float32 (the arithmetic of transformers' numpy image processors)."""
    out = image.astype(np.float64)
    if settings.do_rescale:
        out = out * settings.rescale_factor
    out = out.astype(np.float32)
    if settings.do_normalize:
        mean = np.asarray(settings.image_mean, dtype=np.float32)
        std = np.asarray(settings.image_std, dtype=np.float32)
        out = (out - mean) / std
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def square_and_resize(image: np.ndarray, settings: ImageSettings) -> np.ndarray:
    """The uint8 image the model sees: expand to square on the mean colour, resize, crop."""
    square = expand_to_square(to_rgb_uint8(image), settings.background)
    return resize_and_crop(square, settings)


def preprocess_images(
    images: Sequence[np.ndarray], settings: ImageSettings | None = None
) -> torch.Tensor:
    """uint8 RGB (H, W, 3) images -> float32 pixel batch (n, 3, crop, crop)."""
    settings = settings or ImageSettings()
    if not images:
        return torch.empty(0, 3, settings.crop_size, settings.crop_size)
    arrays = [normalize(square_and_resize(im, settings), settings) for im in images]
    return torch.from_numpy(np.stack(arrays))


def tokenize_with_images(
    text: str,
    encode: Callable[[str], list[int]],
    bos_token_id: int,
    image_token: str = IMAGE_TOKEN,
    image_token_index: int = IMAGE_TOKEN_INDEX,
) -> list[int]:
    """The reference's prompt ids: one ``image_token_index`` per ``image_token``.

    The text is split on ``image_token``; every chunk is encoded on its own (``encode`` adds
    BOS and the SentencePiece dummy-prefix space). When the first chunk starts with BOS, that
    BOS is kept and the first token (BOS) of every later chunk is dropped.
    """
    chunks = [list(encode(chunk)) for chunk in text.split(image_token)]
    offset = 1 if chunks[0][:1] == [bos_token_id] else 0
    ids: list[int] = chunks[0][:]
    for chunk in chunks[1:]:
        ids.append(image_token_index)
        ids.extend(chunk[offset:])
    return ids


def expand_image_positions(
    ids: Sequence[int], num_image_tokens: int, image_token_index: int = IMAGE_TOKEN_INDEX
) -> list[int]:
    """Replace each ``image_token_index`` by ``num_image_tokens`` copies (the model's layout)."""
    out: list[int] = []
    for token in ids:
        out.extend([token] * num_image_tokens if token == image_token_index else [token])
    return out


def left_pad(
    rows: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (B, T) long ids and their (B, T) long attention mask."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


class MplugOwl2Processor:
    """Prompt text + images -> model inputs, as the Q-Align / Compare2Score reference builds them.

    Attributes:
        tokenizer: the LLaMA SentencePiece tokenizer (``encode``, ``word_id``, ``pad_token_id``).
        image_settings: the CLIP preprocessing settings.
        image_token: the placeholder string in prompt text, ``"<|image|>"``.
        image_token_index: the sentinel id of an image position, -200.
        num_image_tokens: model positions per image (abstractor queries + 1, from config.json).
    """

    image_token = IMAGE_TOKEN
    image_token_index = IMAGE_TOKEN_INDEX

    def __init__(
        self, tokenizer: LlamaSentencePieceTokenizer, image_settings: ImageSettings,
        num_image_tokens: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.image_settings = image_settings
        self.num_image_tokens = num_image_tokens

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> MplugOwl2Processor:
        """Tokenizer, ``preprocessor_config.json`` and the image-token count of ``config.json``."""
        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        abstractor = (config.get("visual_config") or {}).get("visual_abstractor") or {}
        queries = abstractor.get("num_learnable_queries") or 64
        preprocessor = folder / "preprocessor_config.json"
        has_settings = preprocessor.is_file()
        settings = ImageSettings.from_json(preprocessor) if has_settings else ImageSettings()
        return cls(LlamaSentencePieceTokenizer.from_pretrained(folder), settings, int(queries) + 1)

    def preprocess_images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 RGB (H, W, 3) images -> float32 (n, 3, S, S) pixel batch."""
        return preprocess_images(images, self.image_settings)

    def tokenize_prompt(self, text: str) -> list[int]:
        """The reference's ids of ``text``: one -200 per ``<|image|>`` (not yet expanded)."""
        return tokenize_with_images(
            text, self.tokenizer.encode, self.tokenizer.bos_token_id, self.image_token,
            self.image_token_index,
        )

    def prompt_ids(self, text: str) -> list[int]:
        """``tokenize_prompt`` with each image expanded to ``num_image_tokens`` sentinels."""
        return expand_image_positions(
            self.tokenize_prompt(text), self.num_image_tokens, self.image_token_index
        )

    def word_id(self, word: str) -> int:
        """Id of an answer word as the reference reads it: ``tokenizer(word).input_ids[1]``."""
        return self.tokenizer.word_id(word)

    def __call__(
        self, texts: Sequence[str], images: Sequence[Sequence[np.ndarray]] | None = None
    ) -> dict[str, torch.Tensor | None]:
        """Batch inputs for ``MplugOwl2ForCausalLM``.

        Args:
            texts: prompts, each with one ``<|image|>`` per image of its row.
            images: per prompt, its uint8 RGB images in placeholder order.

        Returns:
            ``input_ids`` (B, T) long, left padded with the pad id, every image as
            ``num_image_tokens`` x -200; ``attention_mask`` (B, T) long; ``pixel_values``
            (n, 3, S, S) float32 of all images in row-major prompt order, or ``None``.

        Raises:
            ValueError: a prompt's placeholder count differs from its number of images.
        """
        images = images if images is not None else [[] for _ in texts]
        if len(images) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(images)} image lists")
        rows, flat = [], []
        for text, row_images in zip(texts, images, strict=True):
            if text.count(self.image_token) != len(row_images):
                raise ValueError(
                    f"prompt has {text.count(self.image_token)} {self.image_token} for "
                    f"{len(row_images)} images"
                )
            rows.append(self.prompt_ids(text))
            flat.extend(row_images)
        input_ids, attention_mask = left_pad(rows, self.tokenizer.pad_token_id)
        pixel_values = self.preprocess_images(flat) if flat else None
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values": pixel_values,
        }
