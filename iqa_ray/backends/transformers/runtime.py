"""A loaded model and processor with what every execution path shares: the device, the batch
limits, the work counters, prompt text, model inputs, token estimates and freeing memory.

``LoadedModel`` is the generic family (``AutoModelForImageTextToText`` + ``AutoProcessor`` with
a chat template). A checkpoint whose ``model_type`` has a native family is loaded by
that family's ``runtime.load(cfg, source, device, dtype)`` (``checkpoint.family_runtime``), which
returns a subclass overriding the hooks below (rendering, word ids, model inputs, logits, prefix
sharing, pixels). Family modules are imported by name, on demand: they import this module,
never the other way round.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from iqa_ray.backends.batching import ForwardStats
from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.family_options import options_for
from iqa_ray.backends.prompt import Prompt
from iqa_ray.backends.sources import resolve_model_source
from iqa_ray.backends.transformers.checkpoint import family_runtime, model_type
from iqa_ray.backends.transformers.pixels import (
    PixelPlan,
    device_pixels,
    ready_pixels,
    standard_plan,
)
from iqa_ray.backends.transformers.text import PromptText

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Model types whose shared-prefix path a test checks against the unshared one (``shared``).
SHARING_VERIFIED = frozenset({"llava", "mplug_owl2"})


def sharing_support(model: Any, processor: Any) -> str | None:
    """None when the shared path is exact for this model and processor, else why it is not."""
    model_type = getattr(model.config, "model_type", "?")
    if model_type not in SHARING_VERIFIED:
        verified = sorted(SHARING_VERIFIED)
        return f"model type {model_type!r} is not verified for it (verified: {verified})"
    text = model.config.get_text_config()
    layer_types = set(getattr(text, "layer_types", None) or ["full_attention"])
    if layer_types != {"full_attention"} or getattr(text, "use_sliding_window", False):
        return f"its text model has {sorted(layer_types)} layers (only full attention is handled)"
    if getattr(processor, "image_token_id", None) is None or not hasattr(
        processor, "replace_image_token"
    ):
        return f"processor {type(processor).__name__} exposes no image placeholder expansion"
    return None


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
        self._prepare_tokenizer()
        self.pixel_plan = self._pixel_plan()

    def _pixel_plan(self) -> PixelPlan | None:
        """How this model's images split into CPU geometry and device normalisation (None:
        the processor runs whole, in the score actor)."""
        image_processor = getattr(self.processor, "image_processor", None)
        return standard_plan(image_processor) if image_processor is not None else None

    def _prepare_tokenizer(self) -> None:
        """Left padding keeps every row's last real token at position -1."""
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @classmethod
    def load(cls, cfg: ModelConfig) -> LoadedModel:
        """Load ``cfg``'s model and processor with ``from_pretrained`` (hub id, folder, bucket):
        through its native family when the checkpoint's ``model_type`` has one."""
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = _DTYPES.get(cfg.dtype) or (torch.bfloat16 if device == "cuda" else torch.float32)
        source = resolve_model_source(cfg)
        kind = model_type(source, cfg.revision)
        options_for(kind, cfg.options)  # model.options given to a family that takes none: error
        runtime = family_runtime(kind)
        if runtime is not None:
            return runtime.load(cfg, source, device, dtype)
        return cls.load_generic(cfg, source, device, dtype)

    @classmethod
    def load_generic(
        cls, cfg: ModelConfig, source: str, device: str, dtype: torch.dtype
    ) -> LoadedModel:
        """``AutoProcessor`` + ``AutoModelForImageTextToText``."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        kwargs: dict[str, Any] = {"revision": cfg.revision} if cfg.revision else {}
        processor = AutoProcessor.from_pretrained(source, **kwargs)
        if cfg.attn_implementation:
            kwargs["attn_implementation"] = cfg.attn_implementation
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, **kwargs)
        return cls(model.to(device), processor, cfg, source)

    @property
    def family(self) -> str:
        """The model family prompts are rendered for: the checkpoint's ``model_type``."""
        return str(getattr(self.model.config, "model_type", "unknown"))

    def sharing_support(self) -> str | None:
        """None when the shared-prefix path is exact for this model, else why it is not."""
        return sharing_support(self.model, self.processor)

    def model_inputs(self, texts: list[str], images: list[list[np.ndarray]]) -> dict[str, Any]:
        """Left-padded model inputs of rendered texts and their images, on the device."""
        enc = self.processor(text=texts, images=images, padding=True, return_tensors="pt")
        enc = {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in enc.items()}
        if "pixel_values" in enc and enc["pixel_values"].is_floating_point():
            enc["pixel_values"] = enc["pixel_values"].to(self.model.dtype)
        return enc

    def last_logits(self, inputs: dict[str, Any]) -> torch.Tensor:
        """(rows, vocab) float32 logits at the last position (call under inference mode)."""
        with self.stats.cpu_time("device_cpu_s"):
            out = self.model(**inputs, logits_to_keep=1, use_cache=False)
        return out.logits[:, -1, :].float()

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

    # ---- prefix-sharing hooks: ``encode`` and ``shared`` call these, a family overrides them --
    def preprocess_images(self, images: list[np.ndarray]) -> Any:
        """CPU preprocessing of distinct images (may run in a helper thread); nothing but a
        view for images the decode stage already brought to the model's geometry."""
        ready = ready_pixels(self.pixel_plan, images)
        if ready is not None:
            return ready
        return self.processor.image_processor(images, return_tensors="pt")

    def image_pixels(self, processed: Any) -> torch.Tensor:
        """The preprocessed images as one batch on the device (first axis: images)."""
        if "uint8_images" in processed:
            assert self.pixel_plan is not None  # set whenever ready_pixels returned a batch
            with self.stats.cpu_time("device_cpu_s"):
                return device_pixels(self.pixel_plan, processed, self.device, self.model.dtype)
        pixels = processed["pixel_values"]
        if self.device == "cuda":  # a pinned host buffer: the copy overlaps other work
            pixels = pixels.pin_memory().to(self.device, non_blocking=True)
        return pixels.to(self.device, self.model.dtype)

    def image_features(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Language-model inputs of each image: one (tokens, hidden) tensor per image."""
        return list(self.model.get_image_features(pixel_values=pixels).pooler_output)

    def image_placeholders(self, processed: Any, sizes: list[int]) -> list[str]:
        """Placeholder text of each image, checked against its number of feature rows.

        Raises:
            ValueError: a placeholder text holds another number of image tokens.
        """
        texts = [self.processor.replace_image_token(processed, image_idx=k)
                 for k in range(len(sizes))]
        for text, size in zip(texts, sizes, strict=True):
            if text.count(self.processor.image_token) != size:
                raise ValueError(
                    f"placeholder text has {text.count(self.processor.image_token)} "
                    f"image tokens for {size} features"
                )
        return texts

    def shared_token_ids(self, texts: list[str], placeholders: list[str]) -> list[list[int]]:
        """Token ids of rendered prompts, each image slot as :attr:`image_token_id`;
        ``placeholders`` are the prompts' images' texts in row-major order."""
        expanded, _ = self.processor.get_text_with_replacements(list(texts), placeholders)
        return self.tokenizer(expanded)["input_ids"]

    def reference_token_ids(self, prompt: Prompt, text: str) -> list[int]:
        """The processor's own token ids of one rendered prompt (checks the shared path)."""
        images = [list(prompt.images)] if prompt.images else None
        return list(self.processor(text=[text], images=images)["input_ids"][0])

    @property
    def image_token_id(self) -> int:
        """The id marking an image slot in :meth:`shared_token_ids`."""
        return int(self.processor.image_token_id)

    @property
    def image_embedding_id(self) -> int:
        """A valid id embedded at image slots before their features replace it."""
        return int(self.processor.image_token_id)

    @property
    def pad_token_id(self) -> int:
        """The id of left-padding positions (masked out)."""
        return int(self.tokenizer.pad_token_id)

    def embeds_forward_kwargs(self, embeds: torch.Tensor, image_slots: torch.Tensor) -> dict:
        """Model arguments of a forward from ``embeds`` (B, T, hidden) whose ``image_slots``
        (B, T) positions hold image features."""
        del image_slots
        return {"inputs_embeds": embeds}
