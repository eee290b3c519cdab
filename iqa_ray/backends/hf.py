"""Hugging Face transformers backend: any ``AutoModelForImageTextToText`` with a chat template.

Prompts are rendered with the processor's chat template (images first, then the question),
the assistant turn is pre-filled with the answer prefix, and one forward pass per sub-batch
reads the logits at the last position (left padding, so position -1 is every row's next token).
With ``model.prefix_sharing`` (default) and a verified model type, shared prompt prefixes and
repeated images are computed once per call instead (``iqa_ray.backends.hf_shared``); sub-batches
respect ``batch_size`` rows and ``max_tokens_per_batch`` padded tokens, and a CUDA out-of-memory
error halves the failing sub-batch and retries.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from iqa_ray import io
from iqa_ray.backends import Prompt
from iqa_ray.backends.batching import ForwardStats, is_out_of_memory, plan_batches, run_halving
from iqa_ray.backends.hf_shared import SharedPrefixRunner, sharing_support
from iqa_ray.errors import ConfigError, RowError
from iqa_ray.schema import ErrorCode

if TYPE_CHECKING:
    from iqa_ray.config import ModelConfig

logger = logging.getLogger(__name__)
_INSTALL_HINT = (
    "the transformers backend needs torch and transformers (core dependencies): pip install -e ."
)


def resolve_model_source(cfg: ModelConfig) -> str:
    """Hub id or local folder as is; a bucket prefix is copied once per node to a local cache."""
    if io.is_remote(cfg.id):
        return io.local_model_cache(cfg.id, cfg.storage_options, cfg.cache_dir)
    return cfg.id.removeprefix("file://")


class TransformersBackend:
    """One model and processor, loaded once per actor (bf16 on GPU, float32 on CPU)."""

    def __init__(
        self, cfg: ModelConfig, batch_size: int = 8, max_tokens_per_batch: int | None = None
    ) -> None:
        try:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT) from exc
        self._torch = torch
        self.cfg = cfg
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16,
                 "float16": torch.float16}[cfg.dtype]
        if dtype is None:
            dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        source = resolve_model_source(cfg)
        kwargs: dict[str, Any] = {"revision": cfg.revision} if cfg.revision else {}
        processor = AutoProcessor.from_pretrained(source, **kwargs)
        if cfg.attn_implementation:
            kwargs["attn_implementation"] = cfg.attn_implementation
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, **kwargs)
        self._attach(model.to(self.device).eval(), processor, source)

    @classmethod
    def from_loaded(
        cls, model: Any, processor: Any, cfg: ModelConfig, batch_size: int = 8,
        max_tokens_per_batch: int | None = None,
    ) -> TransformersBackend:
        """A backend around a model already built in memory (benchmarks: random full-size
        weights that would be slow to save and load); ``cfg`` supplies the options."""
        import torch

        self = cls.__new__(cls)
        self._torch, self.cfg = torch, cfg
        self.batch_size, self.max_tokens_per_batch = batch_size, max_tokens_per_batch
        self.device = next(model.parameters()).device.type
        self._attach(model.eval(), processor, cfg.id)
        return self

    def _attach(self, model: Any, processor: Any, source: str) -> None:
        """Common setup of a loaded model and processor; picks the shared or unshared path."""
        self.model, self.processor = model, processor
        self.tokenizer = self.processor.tokenizer
        # Left padding keeps every row's last real token at position -1.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._word_ids: dict[tuple[str, str], int] = {}
        self.source = source
        self.stats = ForwardStats()
        reason = sharing_support(model, processor)
        self._shared = SharedPrefixRunner(self) if reason is None else None
        # Read at every call: the benchmarks flip it to time both paths on one loaded model.
        self.prefix_sharing = bool(self.cfg.prefix_sharing) and self._shared is not None
        if self.cfg.prefix_sharing and reason is not None:
            logger.info("prefix sharing off: %s; every prompt runs its full sequence", reason)

    def free_memory(self) -> None:
        """Return cached allocator blocks to the device (after an out-of-memory error)."""
        if self.device == "cuda":
            self._torch.cuda.empty_cache()

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
        """Logits of each prompt's words at the next position; failures isolated per prompt.

        Shared prefixes and repeated images are computed once when ``prefix_sharing`` is on
        and the model type is verified for it; else every prompt runs in full.
        """
        if self.prefix_sharing and self._shared is not None and self._shared.enabled and prompts:
            return self._shared.run(prompts)
        return self.unshared_logits(prompts)

    def unshared_logits(self, prompts: list[Prompt]) -> list[np.ndarray | RowError]:
        """The unshared path: one full sequence per prompt, batched with left padding."""
        self.stats.add(prompts=len(prompts))
        not_run = RowError(ErrorCode.MODEL_ERROR, "not run")
        results: list[np.ndarray | RowError] = [not_run] * len(prompts)
        texts = [self.render(p) for p in prompts]
        # Similar lengths together wastes less padding.
        order = sorted(range(len(prompts)), key=lambda i: len(texts[i]))
        for chunk in self._plan_unshared(prompts, texts, order):
            values = run_halving(chunk, lambda c: self._run_isolated(prompts, texts, c),
                                 is_out_of_memory, lambda _: self.free_memory())
            for i, value in zip(chunk, values, strict=True):
                results[i] = value
        return results

    def _plan_unshared(
        self, prompts: list[Prompt], texts: list[str], order: list[int]
    ) -> list[list[int]]:
        """Sub-batches of ``order``: ``batch_size`` rows, within the token budget when set."""
        if self.max_tokens_per_batch is None:
            return [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        lengths = {i: self.estimate_tokens(prompts[i], texts[i]) for i in order}
        order = sorted(order, key=lengths.__getitem__)
        plan = plan_batches([lengths[i] for i in order], self.batch_size, self.max_tokens_per_batch)
        return [[order[k] for k in batch] for batch in plan]

    def estimate_tokens(self, prompt: Prompt, text: str) -> int:
        """Sequence length of a prompt: its text tokens plus each image's placeholder tokens
        (from the processor's ``_get_num_multimodal_tokens``; 1 per image where it has none)."""
        n_text = len(self.tokenizer(text)["input_ids"])
        if not prompt.images:
            return n_text
        per_image = self._multi_image_tokens(len(prompt.images))
        if per_image is None:
            try:
                sizes = [list(image.shape[:2]) for image in prompt.images]
                counts = self.processor._get_num_multimodal_tokens(image_sizes=sizes)
                per_image = counts.num_image_tokens
            except Exception:  # a processor without the helper: text length, a lower bound
                per_image = [1] * len(prompt.images)
        return n_text + sum(int(n) - 1 for n in per_image)

    def _multi_image_tokens(self, n_images: int) -> list[int] | None:
        """Tokens per image where a processor expands several images differently from one.

        LLaVA-OneVision gives each image of a multi-image prompt its base tile plus a newline
        token (no anyres tiles), while ``_get_num_multimodal_tokens`` reports the tiled count.
        """
        if n_images < 2 or getattr(self.model.config, "model_type", "") != "llava_onevision":
            return None
        n = int(self.processor.num_image_tokens) + 1
        if self.processor.vision_feature_select_strategy == "default":
            n -= 1
        return [n] * n_images

    def _run_isolated(
        self, prompts: Sequence[Prompt], texts: Sequence[str], chunk: list[int]
    ) -> list[np.ndarray | RowError]:
        try:
            return list(self._forward([prompts[i] for i in chunk], [texts[i] for i in chunk]))
        except Exception as exc:
            if len(chunk) > 1 and is_out_of_memory(exc):
                raise  # halved and retried by the caller, not split one by one
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
        mask = enc["attention_mask"]
        self.stats.add(forward_calls=1, tokens=int(mask.sum()), padded_tokens=mask.numel(),
                       images_encoded=sum(len(i) for i in images))
        last = out.logits[:, -1, :].float()
        rows = []
        for r, (prompt, text) in enumerate(zip(prompts, texts, strict=True)):
            ids = torch.tensor([self.word_id(text, w) for w in prompt.words], device=last.device)
            rows.append(last[r, ids].double().cpu().numpy())
        return rows
