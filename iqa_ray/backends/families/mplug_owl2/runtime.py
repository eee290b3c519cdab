"""mPLUG-Owl2 in the transformers backend: ``load`` and the loaded model's hooks (rendering, word
ids, model inputs, token estimates, and the prefix-sharing steps).

The backend calls ``load(cfg, source, device, dtype)`` for a checkpoint whose ``model_type`` is
``mplug_owl2`` (``iqa_ray.backends.transformers.checkpoint.NATIVE_FAMILIES``). Prompts follow the
reference conversation (``conversation.render``); answer words are read as the reference reads
them, ``tokenizer(word).input_ids[1]`` (the first SentencePiece piece of the word with its
dummy-prefix space, whatever precedes it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.families.mplug_owl2 import conversation
from iqa_ray.backends.families.mplug_owl2.configuration import IMAGE_TOKEN
from iqa_ray.backends.families.mplug_owl2.modeling import MplugOwl2ForCausalLM
from iqa_ray.backends.families.mplug_owl2.processing import (
    ImageSettings,
    MplugOwl2Processor,
    square_and_resize,
)
from iqa_ray.backends.prompt import Prompt
from iqa_ray.backends.transformers.pixels import (
    PixelPlan,
    channel_triple,
    device_pixels,
    ready_pixels,
)
from iqa_ray.backends.transformers.runtime import SHARING_VERIFIED, LoadedModel
from iqa_ray.errors import ConfigError

FAMILY = "mplug_owl2"
# Everything the processor reads; the weights are fetched by ``from_pretrained`` itself.
PROCESSOR_FILES = (
    "config.json", "preprocessor_config.json", "tokenizer.model", "tokenizer_config.json",
    "special_tokens_map.json",
)  # fmt: skip


def processor_folder(source: str, revision: str | None) -> Path:
    """A local folder with the processor's files: ``source`` itself, or a hub snapshot of
    :data:`PROCESSOR_FILES` (the hub cache; ``HF_HUB_OFFLINE`` is honoured)."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, revision=revision, allow_patterns=list(PROCESSOR_FILES)))


def settings_plan(settings: ImageSettings) -> PixelPlan:
    """The reference's pixels as geometry (expand to square on the CLIP mean, resize, crop:
    :func:`square_and_resize`) then normalisation; a square at the crop size is left as is."""
    if not (settings.do_rescale and settings.do_normalize):
        raise ValueError("mPLUG-Owl2 pixels are always rescaled and normalised")
    side = settings.crop_size
    return PixelPlan(lambda image: square_and_resize(image, settings), (side, side),
                     float(settings.rescale_factor), channel_triple(settings.image_mean),
                     channel_triple(settings.image_std))


def pixel_plan(source: str, revision: str | None) -> PixelPlan:
    """The plan the decode stage applies (from the processor files alone)."""
    return settings_plan(MplugOwl2Processor.from_pretrained(
        processor_folder(source, revision)).image_settings)


def load(cfg: ModelConfig, source: str, device: str, dtype: torch.dtype) -> MplugOwl2Runtime:
    """Processor and model of an mPLUG-Owl2 checkpoint (hub id or folder), on ``device``.

    Never executes the checkpoint's remote code: ``auto_map`` is ignored and the weights load
    into :class:`MplugOwl2ForCausalLM` by their own parameter names.
    """
    processor = MplugOwl2Processor.from_pretrained(processor_folder(source, cfg.revision))
    kwargs: dict[str, Any] = {"revision": cfg.revision} if cfg.revision else {}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    model = MplugOwl2ForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    return MplugOwl2Runtime(model.to(device), processor, cfg, source)


class MplugOwl2Runtime(LoadedModel):
    """A loaded mPLUG-Owl2 model with the reference's prompts, words and inputs.

    Attributes:
        processor: the :class:`MplugOwl2Processor` (pixels and the reference's prompt ids).
        tokenizer: its LLaMA SentencePiece tokenizer.
    """

    processor: MplugOwl2Processor

    def _prepare_tokenizer(self) -> None:
        """Nothing to set: the processor left-pads with the tokenizer's pad id itself."""

    # ---- prompts ----------------------------------------------------------------------------
    def render(self, prompt: Prompt) -> str:
        """The reference conversation text (see :mod:`.conversation`)."""
        return conversation.render(prompt)

    def word_id(self, text: str, word: str) -> int:
        """``tokenizer(word).input_ids[1]``: the word's first piece after the dummy-prefix space
        (the same id whatever ``text`` ends with, as the reference reads it).

        Raises:
            ConfigError: ``word`` is several pieces and ``model.word_policy`` is ``single``, or
                encodes to nothing.
        """
        del text
        key = ("", word)
        if key not in self._word_ids:
            self._word_ids[key] = self._piece_id(word)
        return self._word_ids[key]

    def _piece_id(self, word: str) -> int:
        pieces = self.tokenizer.encode(word)[1 if self.tokenizer.add_bos_token else 0 :]
        if not pieces:
            raise ConfigError(f"word {word!r} encodes to no token with {self.source}")
        if len(pieces) > 1 and self.cfg.word_policy == "single":
            shown = self.tokenizer.convert_ids_to_tokens(pieces)
            raise ConfigError(
                f"word {word!r} is {len(pieces)} tokens {shown} for the tokenizer of "
                f"{self.source}; choose single-token words or set model.word_policy: first"
            )
        return int(pieces[0])

    def estimate_tokens(self, prompt: Prompt, text: str) -> int:
        """Sequence length: the text's ids plus ``num_image_tokens`` (65) per image."""
        del prompt
        return len(self.processor.prompt_ids(text))

    # ---- the unshared forward ---------------------------------------------------------------
    def model_inputs(self, texts: list[str], images: list[list[np.ndarray]]) -> dict[str, Any]:
        """Left-padded ``input_ids`` (65 x -200 per image), ``attention_mask`` and
        ``pixel_values`` (model dtype) on the device."""
        enc = self.processor(texts, images)
        out = {k: v.to(self.device) for k, v in enc.items() if v is not None}
        if "pixel_values" in out:
            out["pixel_values"] = out["pixel_values"].to(self.model.dtype)
        return out

    # ---- prefix sharing ---------------------------------------------------------------------
    def sharing_support(self) -> str | None:
        """None: the shared path is tested for this family (full causal attention, 1-D rotary
        positions; image positions are passed to the forward as ``image_mask``)."""
        if FAMILY not in SHARING_VERIFIED:
            return f"model type {FAMILY!r} is not verified for it"
        return None

    def _pixel_plan(self) -> PixelPlan | None:
        return settings_plan(self.processor.image_settings)

    def preprocess_images(self, images: list[np.ndarray]) -> Any:
        """Expand to square, CLIP resize and normalise: float32 (n, 3, S, S); only a view for
        images the decode stage already brought to that geometry."""
        ready = ready_pixels(self.pixel_plan, images)
        return ready if ready is not None else self.processor.preprocess_images(images)

    def image_pixels(self, processed: Any) -> torch.Tensor:
        """The pixel batch on the device, in the model's dtype."""
        if isinstance(processed, dict):
            assert self.pixel_plan is not None
            with self.stats.cpu_time("device_cpu_s"):
                return device_pixels(self.pixel_plan, processed, self.device, self.model.dtype)
        return processed.to(self.device, self.model.dtype)

    def image_features(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Vision tower + abstractor: one (65, hidden) tensor per image."""
        return list(self.model.get_image_features(pixels))

    def image_placeholders(self, processed: torch.Tensor, sizes: list[int]) -> list[str]:
        """``<|image|>`` per image; the processor expands it to ``num_image_tokens`` slots.

        Raises:
            ValueError: an image gives another number of features than the processor expands.
        """
        del processed
        wrong = [n for n in sizes if n != self.processor.num_image_tokens]
        if wrong:
            raise ValueError(
                f"images give {wrong[0]} features, the processor expands "
                f"{self.processor.num_image_tokens} slots"
            )
        return [IMAGE_TOKEN] * len(sizes)

    def shared_token_ids(self, texts: list[str], placeholders: list[str]) -> list[list[int]]:
        """The reference's ids of each text, every image as ``num_image_tokens`` x -200."""
        del placeholders
        return [self.processor.prompt_ids(text) for text in texts]

    def reference_token_ids(self, prompt: Prompt, text: str) -> list[int]:
        """The processor's own (padded batch of one) ids of one prompt."""
        return [int(t) for t in self.processor([text], [list(prompt.images)])["input_ids"][0]]

    @property
    def image_token_id(self) -> int:
        """-200, the sentinel of an image position."""
        return int(self.processor.image_token_index)

    @property
    def image_embedding_id(self) -> int:
        """The pad id: any valid id, its embedding is replaced by the image feature."""
        return int(self.tokenizer.pad_token_id)

    @property
    def pad_token_id(self) -> int:
        """The tokenizer's pad id (``<unk>`` for the published checkpoints)."""
        return int(self.tokenizer.pad_token_id)

    def embeds_forward_kwargs(self, embeds: torch.Tensor, image_slots: torch.Tensor) -> dict:
        """``inputs_embeds`` and the ``image_mask`` that routes image positions through the
        modality-adaptive (image) weights."""
        return {"inputs_embeds": embeds, "image_mask": image_slots}
