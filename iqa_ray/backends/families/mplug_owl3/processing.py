"""mPLUG-Owl3 prompts: cut-prompt expansion, chatml text, placeholder-aware tokenisation, batching.

Pure functions first (text and ids), then ``MplugOwl3Processor`` which adds the tokenizer, the
crops and left padding for a batch of prompts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature, PreTrainedTokenizerBase

from .image_processing import GRID_SQU_6, ImageCrops, crop_image, select_anchor

IMAGE_PLACEHOLDER = "<|image|>"
PairCutShapes = Literal["reference", "per_image"]
Message = Mapping[str, str]
PromptInput = str | Sequence[Message]
ImageInput = Image.Image | np.ndarray

# ------------------------------------------------------------------------ pure text functions


def cut_prompt(rows: int, cols: int, placeholder: str = IMAGE_PLACEHOLDER) -> str:
    """The v2_global cut prompt that replaces one ``<|image|>`` (rows*cols + 1 placeholders)."""
    grid = "\n".join(
        " ".join(f"subimg({i},{j}){placeholder}" for j in range(cols)) for i in range(rows)
    )
    return f"Cut to {rows} rows {cols} columns with a global view\n{grid}\nglobal_view{placeholder}"


def cut_shapes_for_placeholders(
    grids: Sequence[tuple[int, int]], mode: PairCutShapes = "reference"
) -> list[tuple[int, int]]:
    """The grid paired with the k-th ``<|image|>`` of a prompt, for k = 0, 1, ...

    ``reference`` reproduces the checkpoint's processor: its image processor returns TWO cut
    shapes per image, (rows, cols) then (1, 1) for the global view, and the k-th placeholder takes
    the k-th entry, so a second image gets the (1, 1) template. ``per_image`` is our deliberate
    fix (not the reference): image k gets its own grid.
    """
    if mode == "reference":
        return [shape for grid in grids for shape in (tuple(grid), (1, 1))]
    if mode == "per_image":
        return [tuple(grid) for grid in grids]
    raise ValueError(f"unknown pair_cut_shapes {mode!r}")


def expand_placeholders(
    text: str, cut_shapes: Sequence[tuple[int, int]], placeholder: str = IMAGE_PLACEHOLDER
) -> tuple[str, int]:
    """Replace the placeholders of ``text`` in order with cut prompts.

    Args:
        text: text containing ``placeholder`` markers.
        cut_shapes: grid for each marker, consumed in order (enough must remain).
        placeholder: the marker.

    Returns:
        (expanded text, number of markers consumed).
    """
    pieces = text.split(placeholder)
    used = len(pieces) - 1
    if used > len(cut_shapes):
        raise ValueError(f"{used} image placeholders but only {len(cut_shapes)} cut shapes")
    out = [pieces[0]]
    for shape, piece in zip(cut_shapes, pieces[1:], strict=False):
        out += [cut_prompt(*shape, placeholder=placeholder), piece]
    return "".join(out), used


def build_chat_text(
    messages: Sequence[Message], drop_last_assistant_content: bool = True
) -> str:
    """chatml text of ``build_text_qwen`` in inference mode, ending with the assistant header.

    A leading system message fills the (otherwise empty) system turn. If the last message is the
    assistant's, the reference (inference mode) DROPS its content: the prompt ends with
    ``<|im_start|>assistant\\n``. ``drop_last_assistant_content=False`` (our option) keeps it as a
    pre-filled answer prefix, without ``<|im_end|>``.
    """
    messages = list(messages)
    system = ""
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    prefix = ""
    if messages and messages[-1]["role"] == "assistant":
        prefix = "" if drop_last_assistant_content else messages[-1]["content"]
        messages = messages[:-1]
    text = f"<|im_start|>system\n{system}<|im_end|>"
    for message in messages:
        if message["role"] not in ("user", "assistant"):
            raise ValueError(f"unsupported role {message['role']!r}")
        text += f"\n<|im_start|>{message['role']}\n{message['content']}<|im_end|>"
    return text + "\n<|im_start|>assistant\n" + prefix


def expand_messages(
    messages: Sequence[Message],
    cut_shapes: Sequence[tuple[int, int]],
    placeholder: str = IMAGE_PLACEHOLDER,
) -> list[dict[str, str]]:
    """Messages with each placeholder replaced by its cut prompt (k-th marker -> k-th shape)."""
    out, consumed = [], 0
    for message in messages:
        content, used = expand_placeholders(message["content"], cut_shapes[consumed:], placeholder)
        consumed += used
        out.append({**message, "content": content})
    return out


def tokenize_with_placeholders(
    encode: Callable[[str], list[int]], text: str, placeholder: str = IMAGE_PLACEHOLDER
) -> tuple[list[int], list[int]]:
    """Token ids of ``text`` and the index of the first token of each placeholder.

    As the reference does, each text chunk and each placeholder is tokenised separately and the
    ids are concatenated; the placeholder is whatever the tokenizer makes of the literal (one
    special token, or several ordinary tokens as in the fixture), never a hard-coded id.
    """
    ids: list[int] = []
    starts: list[int] = []
    marker = encode(placeholder)
    for index, chunk in enumerate(text.split(placeholder)):
        if index > 0:
            starts.append(len(ids))
            ids += marker
        if chunk:
            ids += encode(chunk)
    return ids, starts


def media_offset_from_starts(starts: Sequence[int], length: int) -> np.ndarray:
    """(length,) int64: number of placeholder starts strictly before each position."""
    return np.searchsorted(np.asarray(starts, dtype=np.int64), np.arange(length), side="left")


# ------------------------------------------------------------------------------ processor


@dataclass
class MplugOwl3Batch:
    """A left-padded batch of prompts, ready for ``MplugOwl3ForCausalLM``.

    Attributes:
        input_ids: (B, T) int64, left padded with the tokenizer's pad id.
        attention_mask: (B, T) int64, 0 on padding.
        media_offset: (B, T) int64, placeholder starts strictly before each position.
        pixel_values: (sum(num_crops), 3, S, S) float32, rows in order (None if no image).
        num_crops: (B,) int64 crops of each row in ``pixel_values``.
        placeholder_starts: per row, first-token index of each placeholder (unpadded positions).
        crops_seen: per row, crops the hyper attention uses (placeholders before the last token).
        texts: per row, the prompt text after cut-prompt expansion and templating.
        grids: per row, the (rows, cols) anchor grid of each image.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    media_offset: torch.Tensor
    pixel_values: torch.Tensor | None
    num_crops: torch.Tensor
    placeholder_starts: list[list[int]] = field(default_factory=list)
    crops_seen: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    grids: list[list[tuple[int, int]]] = field(default_factory=list)

    def model_inputs(self) -> BatchFeature:
        """The keyword arguments of ``MplugOwl3ForCausalLM.forward`` (``.to(device)`` works)."""
        data: dict[str, Any] = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "media_offset": self.media_offset,
            "num_crops": self.num_crops,
        }
        if self.pixel_values is not None:
            data["pixel_values"] = self.pixel_values
        return BatchFeature(data)


def load_tokenizer(folder: str | Path, **kwargs: Any) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer, without remote code (``auto_map`` is never followed).

    Args:
        folder: checkpoint folder or hub id.
        **kwargs: passed to ``AutoTokenizer.from_pretrained`` (e.g. ``revision``).
    """
    from transformers import AutoTokenizer

    from .configuration import register_config

    register_config()  # model_type known -> AutoTokenizer does not ask for remote code
    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False, **kwargs)


class MplugOwl3Processor:
    """Tokenizer + crops + prompt building for a batch of mPLUG-Owl3 prompts.

    Args:
        tokenizer: the checkpoint's (Qwen2) tokenizer.
        image_size: crop side (``config.json`` ``image_size``).
        anchors: (rows, cols) anchor grids (grid_squ_6).
        pair_cut_shapes: ``"reference"`` (default, the checkpoint's pairing quirk) or
            ``"per_image"`` (deliberate fix: every image gets its own grid).
        drop_last_assistant_content: True (default, reference inference mode) drops the content
            of a final assistant message; False keeps it as an answer prefix.
        placeholder: the image marker in message texts.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_size: int = 384,
        anchors: Sequence[tuple[int, int]] = GRID_SQU_6,
        pair_cut_shapes: PairCutShapes = "reference",
        drop_last_assistant_content: bool = True,
        placeholder: str = IMAGE_PLACEHOLDER,
    ) -> None:
        cut_shapes_for_placeholders([(1, 1)], pair_cut_shapes)  # validates the mode
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.anchors = tuple(tuple(a) for a in anchors)
        self.pair_cut_shapes: PairCutShapes = pair_cut_shapes
        self.drop_last_assistant_content = drop_last_assistant_content
        self.placeholder = placeholder
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else (tokenizer.eos_token_id or 0))

    @classmethod
    def from_pretrained(cls, folder: str | Path, **kwargs: Any) -> MplugOwl3Processor:
        """Processor of a checkpoint folder (tokenizer files, ``image_size`` from config.json)."""
        config_path = Path(folder) / "config.json"
        if "image_size" not in kwargs and config_path.is_file():
            kwargs["image_size"] = int(json.loads(config_path.read_text()).get("image_size", 384))
        return cls(load_tokenizer(folder), **kwargs)

    def encode(self, text: str) -> list[int]:
        """``tokenizer(text).input_ids``, as the reference calls it on every chunk."""
        return list(self.tokenizer(text).input_ids)

    def word_id(self, word: str) -> int:
        """Id of a word that must be exactly one token (e.g. "Yes", "Good")."""
        ids = self.encode(word)
        if len(ids) != 1:
            raise ValueError(f"{word!r} is {len(ids)} tokens {ids}, expected exactly one")
        return ids[0]

    def crop(self, image: ImageInput) -> ImageCrops:
        """Crops of one image (tiles then the global view)."""
        return crop_image(image, self.image_size, self.anchors)

    def grid(self, image: ImageInput) -> tuple[int, int]:
        """(rows, cols) the image would be cut into, from its size alone (no resize)."""
        if isinstance(image, np.ndarray):
            height, width = image.shape[:2]
        else:
            width, height = image.size
        return self.anchors[select_anchor(width, height, self.anchors, self.image_size)]

    def prompt_text(
        self,
        prompt: PromptInput,
        grids: Sequence[tuple[int, int]],
        apply_chat_template: bool = True,
    ) -> str:
        """Prompt text after cut-prompt expansion and the chatml template.

        Args:
            prompt: messages (role/content dicts) or a string (the user turn's content, or the
                whole text when ``apply_chat_template`` is False).
            grids: anchor grid of each image of the prompt, in order.
            apply_chat_template: wrap a string prompt as one user turn in the chat template.
        """
        n_markers = (
            prompt.count(self.placeholder)
            if isinstance(prompt, str)
            else sum(m["content"].count(self.placeholder) for m in prompt)
        )
        if n_markers != len(grids):
            raise ValueError(f"{n_markers} image placeholders for {len(grids)} images")
        shapes = cut_shapes_for_placeholders(grids, self.pair_cut_shapes)
        if isinstance(prompt, str):
            if not apply_chat_template:
                return expand_placeholders(prompt, shapes, self.placeholder)[0]
            prompt = [{"role": "user", "content": prompt}]
        messages = expand_messages(prompt, shapes, self.placeholder)
        return build_chat_text(messages, self.drop_last_assistant_content)

    def prepare(
        self,
        prompts: PromptInput | Sequence[PromptInput],
        images: Sequence[ImageInput] | Sequence[Sequence[ImageInput]],
        apply_chat_template: bool = True,
    ) -> MplugOwl3Batch:
        """Build a left-padded batch.

        Args:
            prompts: one prompt (messages or string) or a list of prompts.
            images: for one prompt, its images in order; for a list, one image list per prompt.
            apply_chat_template: see ``prompt_text``.

        Returns:
            The batch (model inputs plus per-row metadata).
        """
        single = isinstance(prompts, str) or (
            len(prompts) > 0 and isinstance(prompts[0], Mapping)
        )
        batch_prompts = [prompts] if single else list(prompts)
        batch_images = [list(images)] if single else [list(row) for row in images]
        if len(batch_prompts) != len(batch_images):
            raise ValueError(f"{len(batch_prompts)} prompts but {len(batch_images)} image lists")
        cache: dict[int, ImageCrops] = {}
        rows = [
            self._prepare_row(prompt, row_images, apply_chat_template, cache)
            for prompt, row_images in zip(batch_prompts, batch_images, strict=True)
        ]
        return self._pad(rows)

    def prepare_texts(
        self, texts: Sequence[str], images: Sequence[Sequence[ImageInput]]
    ) -> MplugOwl3Batch:
        """A left-padded batch of FINAL texts (templated, cut prompts expanded, as
        ``prompt_text`` returns them) with each row's images in order.

        The texts must have been expanded for these images (same sizes): their placeholders are
        tokenised as they stand and the crops taken from the images.
        """
        if len(texts) != len(images):
            raise ValueError(f"{len(texts)} texts but {len(images)} image lists")
        cache: dict[int, ImageCrops] = {}
        rows = [
            self._row(text, self._crops(list(row_images), cache))
            for text, row_images in zip(texts, images, strict=True)
        ]
        return self._pad(rows)

    def __call__(
        self,
        prompts: PromptInput | Sequence[PromptInput],
        images: Sequence[ImageInput] | Sequence[Sequence[ImageInput]],
        apply_chat_template: bool = True,
    ) -> BatchFeature:
        """``prepare(...).model_inputs()``: keyword arguments for the model's forward."""
        return self.prepare(prompts, images, apply_chat_template).model_inputs()

    def _prepare_row(
        self,
        prompt: PromptInput,
        images: list[ImageInput],
        apply_chat_template: bool,
        cache: dict[int, ImageCrops],
    ) -> dict[str, Any]:
        crops = self._crops(images, cache)
        text = self.prompt_text(prompt, [c.grid for c in crops], apply_chat_template)
        return self._row(text, crops)

    def _crops(self, images: list[ImageInput], cache: dict[int, ImageCrops]) -> list[ImageCrops]:
        """Crops of each image; the same image object in several prompts is cropped once."""
        for image in images:
            if id(image) not in cache:
                cache[id(image)] = self.crop(image)
        return [cache[id(image)] for image in images]

    def _row(self, text: str, crops: list[ImageCrops]) -> dict[str, Any]:
        ids, starts = tokenize_with_placeholders(self.encode, text, self.placeholder)
        offset = media_offset_from_starts(starts, len(ids))
        return {
            "ids": ids,
            "starts": starts,
            "offset": offset,
            "crops": [c.pixel_values for c in crops],
            "text": text,
            "grids": [c.grid for c in crops],
        }

    def _pad(self, rows: list[dict[str, Any]]) -> MplugOwl3Batch:
        length = max(len(r["ids"]) for r in rows)
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        media_offset = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["ids"])
            input_ids[i, length - n :] = torch.tensor(row["ids"], dtype=torch.long)
            attention_mask[i, length - n :] = 1
            media_offset[i, length - n :] = torch.from_numpy(row["offset"])
        crops = [t for r in rows for t in r["crops"]]
        return MplugOwl3Batch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            media_offset=media_offset,
            pixel_values=torch.cat(crops) if crops else None,
            num_crops=torch.tensor([sum(len(t) for t in r["crops"]) for r in rows]),
            placeholder_starts=[r["starts"] for r in rows],
            crops_seen=[int(r["offset"][-1]) if len(r["offset"]) else 0 for r in rows],
            texts=[r["text"] for r in rows],
            grids=[r["grids"] for r in rows],
        )
