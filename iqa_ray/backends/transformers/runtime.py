"""A loaded model and processor with what every execution path shares: the device, the batch
limits, the work counters, prompt text, token estimates and freeing device memory."""

from __future__ import annotations

from typing import Any

import torch

from iqa_ray.backends.batching import ForwardStats
from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.prompt import Prompt
from iqa_ray.backends.sources import resolve_model_source
from iqa_ray.backends.transformers.text import PromptText

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LoadedModel(PromptText):
    """One model and processor, in eval mode on its device (bf16 on GPU, float32 on CPU).

    Attributes:
        model: the ``AutoModelForImageTextToText`` instance.
        device: "cuda" or "cpu".
        batch_size: rows per forward pass at most.
        max_tokens_per_batch: padded tokens per forward pass at most (None: rows only).
        stats: the work done so far (benchmarks turn it into passes/s and FLOPs).
    """

    def __init__(self, model: Any, processor: Any, cfg: ModelConfig, source: str) -> None:
        super().__init__(processor, cfg, source)
        self.model = model.eval()
        self.device = next(model.parameters()).device.type
        self.batch_size = cfg.batch_size
        self.max_tokens_per_batch = cfg.max_tokens_per_batch
        self.stats = ForwardStats()
        # Left padding keeps every row's last real token at position -1.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @classmethod
    def load(cls, cfg: ModelConfig) -> LoadedModel:
        """Load ``cfg``'s model and processor with ``from_pretrained`` (hub id, folder, bucket)."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = _DTYPES.get(cfg.dtype) or (torch.bfloat16 if device == "cuda" else torch.float32)
        source = resolve_model_source(cfg)
        kwargs: dict[str, Any] = {"revision": cfg.revision} if cfg.revision else {}
        processor = AutoProcessor.from_pretrained(source, **kwargs)
        if cfg.attn_implementation:
            kwargs["attn_implementation"] = cfg.attn_implementation
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, **kwargs)
        return cls(model.to(device), processor, cfg, source)

    def free_memory(self) -> None:
        """Return cached allocator blocks to the device (after an out-of-memory error)."""
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def estimate_tokens(self, prompt: Prompt, text: str) -> int:
        """Sequence length of a prompt: its text tokens plus each image's placeholder tokens.

        Image tokens come from the processor's ``_get_num_multimodal_tokens``, or from the
        model-specific rule of :meth:`_multi_image_tokens`.

        Raises:
            ValueError: the processor cannot tell how many tokens an image takes (the token
                budget ``model.max_tokens_per_batch`` cannot be planned for this model).
        """
        n_text = len(self.tokenizer(text)["input_ids"])
        if not prompt.images:
            return n_text
        per_image = self._multi_image_tokens(len(prompt.images))
        if per_image is None:
            helper = getattr(self.processor, "_get_num_multimodal_tokens", None)
            if helper is None:
                raise ValueError(
                    f"processor {type(self.processor).__name__} does not report image token "
                    "counts: unset model.max_tokens_per_batch for this model"
                )
            sizes = [list(image.shape[:2]) for image in prompt.images]
            per_image = helper(image_sizes=sizes).num_image_tokens
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
