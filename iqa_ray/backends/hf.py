"""Hugging Face transformers backend: any ``AutoModelForImageTextToText`` with a chat template.

Prompts are rendered with the processor's chat template (images first, then the question),
the assistant turn is pre-filled with the answer prefix, and one forward pass per sub-batch
reads the logits at the last position (left padding, so position -1 is every row's next token).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from iqa_ray import io
from iqa_ray.backends import Prompt
from iqa_ray.errors import ConfigError, RowError
from iqa_ray.schema import ErrorCode

if TYPE_CHECKING:
    from iqa_ray.config import ModelConfig

logger = logging.getLogger(__name__)
_INSTALL_HINT = "the transformers backend needs torch and transformers: pip install 'iqa_ray[gpu]'"


def resolve_model_source(cfg: ModelConfig) -> str:
    """Hub id or local folder as is; a bucket prefix is copied once per node to a local cache."""
    if io.is_remote(cfg.id):
        return io.local_model_cache(cfg.id, cfg.storage_options, cfg.cache_dir)
    return cfg.id.removeprefix("file://")


class TransformersBackend:
    """One model and processor, loaded once per actor (bf16 on GPU, float32 on CPU)."""

    def __init__(self, cfg: ModelConfig, batch_size: int = 8) -> None:
        try:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT) from exc
        self._torch = torch
        self.cfg = cfg
        self.batch_size = batch_size
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16,
                 "float16": torch.float16}[cfg.dtype]
        if dtype is None:
            dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        source = resolve_model_source(cfg)
        kwargs: dict[str, Any] = {"revision": cfg.revision} if cfg.revision else {}
        self.processor = AutoProcessor.from_pretrained(source, **kwargs)
        if cfg.attn_implementation:
            kwargs["attn_implementation"] = cfg.attn_implementation
        self.model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, **kwargs)
        self.model.to(self.device).eval()
        self.tokenizer = self.processor.tokenizer
        # Left padding keeps every row's last real token at position -1.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._word_ids: dict[tuple[str, str], int] = {}
        self.source = source

    # ---- prompt rendering and word resolution -------------------------------------------
    def render(self, prompt: Prompt) -> str:
        """Chat-template text of a prompt, ending with the pre-filled answer prefix."""
        content: list[dict[str, str]] = [{"type": "image"} for _ in prompt.images]
        content.append({"type": "text", "text": prompt.question})
        messages = [{"role": "user", "content": content}]
        text = self.processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        if prompt.answer_prefix:
            sep = "" if text.endswith((" ", "\n")) else " "
            text = f"{text}{sep}{prompt.answer_prefix}"
        return text

    def word_id(self, text: str, word: str) -> int:
        """Token id the model would emit first for ``word`` right after ``text``.

        A word follows a space unless the text ends in whitespace (the start of an assistant
        turn in many templates); ids come from the loaded tokenizer, never hard-coded.
        """
        tail = text[-48:]
        key = (tail, word)
        if key not in self._word_ids:
            self._word_ids[key] = self._resolve(tail, word)
        return self._word_ids[key]

    def _resolve(self, tail: str, word: str) -> int:
        spaced = word if tail.endswith((" ", "\n")) or not tail else f" {word}"
        base = self.tokenizer.encode(tail, add_special_tokens=False)
        full = self.tokenizer.encode(tail + spaced, add_special_tokens=False)
        if full[: len(base)] == base:
            pieces = full[len(base):]
        else:  # a merge across the boundary: fall back to the word on its own
            pieces = self.tokenizer.encode(spaced, add_special_tokens=False)
        if not pieces:
            raise ConfigError(f"word {word!r} encodes to no token with {self.source}")
        if len(pieces) > 1 and self.cfg.word_policy == "single":
            shown = [self.tokenizer.decode([p]) for p in pieces]
            raise ConfigError(
                f"word {spaced!r} is {len(pieces)} tokens {shown} for the tokenizer of "
                f"{self.source}; choose single-token words or set model.word_policy: first"
            )
        return int(pieces[0])

    def check_words(self, templates: list[Prompt]) -> None:
        """Resolve the words of every prompt shape now, so a bad word fails the actor at start."""
        for template in templates:
            text = self.render(template)
            ids = [self.word_id(text, w) for w in template.words]
            if len(set(ids)) != len(ids):
                raise ConfigError(
                    f"words {template.words} share a first token for {self.source}: "
                    "their logits cannot be told apart"
                )

    # ---- inference ------------------------------------------------------------------------
    def next_token_logits(self, prompts: list[Prompt]) -> list[np.ndarray | RowError]:
        """Logits of each prompt's words at the next position; failures isolated per prompt."""
        results: list[np.ndarray | RowError] = [RowError(ErrorCode.MODEL_ERROR, "not run")] * len(prompts)
        texts = [self.render(p) for p in prompts]
        # Similar lengths together wastes less padding.
        order = sorted(range(len(prompts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, value in zip(chunk, self._run_isolated(prompts, texts, chunk), strict=True):
                results[i] = value
        return results

    def _run_isolated(
        self, prompts: Sequence[Prompt], texts: Sequence[str], chunk: list[int]
    ) -> list[np.ndarray | RowError]:
        try:
            return list(self._forward([prompts[i] for i in chunk], [texts[i] for i in chunk]))
        except Exception as exc:
            if len(chunk) == 1:
                logger.warning("model error on one prompt: %s: %s", type(exc).__name__, exc)
                return [RowError(ErrorCode.MODEL_ERROR, f"{type(exc).__name__}: {exc}")]
        # A batch failed: rerun one by one so only the bad prompt gets an error.
        return [self._run_isolated(prompts, texts, [i])[0] for i in chunk]

    def _forward(self, prompts: Sequence[Prompt], texts: Sequence[str]) -> list[np.ndarray]:
        torch = self._torch
        images = [list(p.images) for p in prompts]
        enc = self.processor(text=list(texts), images=images, padding=True, return_tensors="pt")
        enc = {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in enc.items()}
        if "pixel_values" in enc and enc["pixel_values"].is_floating_point():
            enc["pixel_values"] = enc["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            out = self.model(**enc, logits_to_keep=1, use_cache=False)
        last = out.logits[:, -1, :].float()
        rows = []
        for r, (prompt, text) in enumerate(zip(prompts, texts, strict=True)):
            ids = torch.tensor([self.word_id(text, w) for w in prompt.words], device=last.device)
            rows.append(last[r, ids].double().cpu().numpy())
        return rows
