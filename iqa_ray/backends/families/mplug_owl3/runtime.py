"""mPLUG-Owl3 in the transformers backend: loading, the reference processor's prompt text, word
ids as the Q-Debias script reads them, and forward passes (unshared path only).

The backend imports this module by name for checkpoints whose ``model_type`` is ``mplugowl3``
(``iqa_ray.backends.transformers.checkpoint.NATIVE_FAMILIES``) and calls :func:`load`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.family_options import MplugOwl3Options, options_for
from iqa_ray.backends.prompt import Prompt
from iqa_ray.backends.transformers.runtime import LoadedModel

from .modeling import MplugOwl3ForCausalLM
from .processing import (
    IMAGE_PLACEHOLDER,
    MplugOwl3Processor,
    load_tokenizer,
    tokenize_with_placeholders,
)

logger = logging.getLogger(__name__)

# Between the images and the question when a prompt has no layout: a space, as the Q-Debias
# script writes "<|image|><|image|> <question>" (the only scoring reference for this family).
IMAGES_QUESTION_SEPARATOR = " "
SHARING_REASON = (
    "mPLUG-Owl3 feeds images through hyper attention inside decoder layers, keyed with MI-RoPE "
    "positions, not as input tokens; the shared-prefix path is not verified for this family, "
    "so every prompt runs its full sequence"
)


def prompt_messages(
    prompt: Prompt, placeholder: str = IMAGE_PLACEHOLDER
) -> list[dict[str, str]]:
    """The messages the reference processor takes for a prompt: the user turn (images as
    ``placeholder`` markers where ``prompt.layout`` puts them, else all images then a space and
    the question) and the assistant turn holding ``prompt.answer_prefix``."""
    if prompt.layout is None:
        user = placeholder * len(prompt.images) + IMAGES_QUESTION_SEPARATOR + prompt.question
        if not prompt.images:
            user = prompt.question
    else:
        user = "".join(placeholder if isinstance(p, int) else p for p in prompt.user_parts())
    return [
        {"role": "user", "content": user},
        {"role": "assistant", "content": prompt.answer_prefix},
    ]


def answer_word(text: str, word: str) -> str:
    """The form of ``word`` the model emits first after ``text``: bare at the start of the
    assistant turn (text ending in whitespace, as the reference reads "Yes", "Good"), else
    space-led."""
    return word if not text or text[-1].isspace() else f" {word}"


class MplugOwl3Runtime(LoadedModel):
    """A loaded mPLUG-Owl3 model and processor behind the transformers backend.

    Prompts are rendered as the reference processor builds them (chatml, cut prompts expanded
    for each image's grid, pairing and answer handling from ``options``); every prompt runs its
    full sequence (see :data:`SHARING_REASON`).

    Attributes:
        options: the processor options of this run (``model.options``).
    """

    text_depends_on_image_sizes = True  # each image's cut grid is written into the prompt

    def __init__(
        self,
        model: MplugOwl3ForCausalLM,
        processor: MplugOwl3Processor,
        cfg: ModelConfig,
        source: str,
        options: MplugOwl3Options,
    ) -> None:
        super().__init__(model, processor, cfg, source)
        self.options = options
        self._warned_prefix = False

    def sharing_support(self) -> str | None:
        """Why the shared-prefix path is off for this family (never None)."""
        return SHARING_REASON

    def render(self, prompt: Prompt) -> str:
        """The model's input text: chatml with every image's cut prompt expanded."""
        if prompt.answer_prefix and self.options.drop_last_assistant_content:
            self._note_dropped_prefix(prompt.answer_prefix)
        grids = [self.processor.grid(image) for image in prompt.images]
        messages = prompt_messages(prompt, self.processor.placeholder)
        return self.processor.prompt_text(messages, grids)

    def _note_dropped_prefix(self, prefix: str) -> None:
        if not self._warned_prefix:
            self._warned_prefix = True
            logger.warning(
                "mplugowl3: the answer prefix %r is dropped, as the reference processor does "
                "(model.options.drop_last_assistant_content: false keeps it)", prefix
            )

    def _resolve(self, tail: str, word: str) -> int:
        """The word's own first token (``tokenizer(word)``), bare after whitespace."""
        spaced = answer_word(tail, word)
        return self._pick_piece(self.tokenizer.encode(spaced, add_special_tokens=False), spaced)

    def model_inputs(self, texts: list[str], images: list[list[np.ndarray]]) -> dict[str, Any]:
        """Left-padded ids, mask, media offsets, crops and crop counts, on the device."""
        batch = self.processor.prepare_texts(texts, images)
        inputs = {k: v.to(self.device) for k, v in batch.model_inputs().items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def last_logits(self, inputs: dict[str, Any]) -> torch.Tensor:
        """(rows, vocab) float32 logits at the last position (call under inference mode)."""
        return self.model(**inputs, logits_to_keep=1).logits[:, -1, :].float()

    def estimate_tokens(self, prompt: Prompt, text: str) -> int:
        """Exact sequence length of a rendered prompt (its text holds every placeholder)."""
        ids, _ = tokenize_with_placeholders(self.processor.encode, text, self.processor.placeholder)
        return len(ids)


def load(cfg: ModelConfig, source: str, device: str, dtype: torch.dtype) -> MplugOwl3Runtime:
    """Load an mPLUG-Owl3 checkpoint natively (never its remote code) for the backend.

    Args:
        cfg: the model config (``revision``, ``attn_implementation`` for the SigLIP tower,
            ``options``: :class:`~iqa_ray.backends.family_options.MplugOwl3Options`).
        source: hub id or local folder.
        device: "cuda" or "cpu".
        dtype: parameter dtype.
    """
    options = options_for(MplugOwl3ForCausalLM.config_class.model_type, cfg.options)
    if not isinstance(options, MplugOwl3Options):
        raise TypeError(f"mplugowl3 options resolved to {type(options).__name__}")
    kwargs: dict[str, Any] = {"revision": cfg.revision} if cfg.revision else {}
    tokenizer = load_tokenizer(source, **kwargs)
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    model = MplugOwl3ForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    processor = MplugOwl3Processor(
        tokenizer,
        image_size=int(model.config.image_size),
        pair_cut_shapes=options.pair_cut_shapes,
        drop_last_assistant_content=options.drop_last_assistant_content,
    )
    return MplugOwl3Runtime(model.to(device), processor, cfg, source, options)
