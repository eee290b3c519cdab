"""mPLUG-Owl2 configuration: the checkpoint's ``config.json`` schema (LLaMA fields plus the nested
``visual_config.visual_model`` / ``visual_config.visual_abstractor`` dictionaries)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import PretrainedConfig

IMAGE_TOKEN = "<|image|>"  # the image placeholder in prompt text
IMAGE_TOKEN_INDEX = -200  # sentinel id of one image position in ``input_ids``

# Published architecture (CLIP ViT-L/14 at 448 px, 64-query abstractor): used for any field a
# checkpoint's ``visual_config`` leaves out.
VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_channels": 3,
    "image_size": 448,
    "patch_size": 14,
    "layer_norm_eps": 1e-6,
}
ABSTRACTOR_DEFAULTS: dict[str, Any] = {
    "num_learnable_queries": 64,
    "hidden_size": 1024,
    "num_hidden_layers": 6,
    "num_attention_heads": 16,
    "intermediate_size": 2816,
    "layer_norm_eps": 1e-6,
    "encoder_hidden_size": 1024,
    "grid_size": None,
}


@dataclass(frozen=True)
class VisionSettings:
    """Sizes of the ViT vision tower (``visual_config.visual_model``)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_channels: int
    image_size: int
    patch_size: int
    layer_norm_eps: float

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_positions(self) -> int:
        """Tokens out of the tower: one CLS token plus one per patch."""
        return self.grid**2 + 1


@dataclass(frozen=True)
class AbstractorSettings:
    """Sizes of the visual abstractor (``visual_config.visual_abstractor``)."""

    num_learnable_queries: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    layer_norm_eps: float
    encoder_hidden_size: int
    grid_size: int


def _pick(source: dict[str, Any] | None, defaults: dict[str, Any]) -> dict[str, Any]:
    source = source or {}
    return {k: v if source.get(k) is None else source[k] for k, v in defaults.items()}


class MplugOwl2Config(PretrainedConfig):
    """Configuration of an mPLUG-Owl2 checkpoint (Q-Align, Compare2Score, DeQA-Score).

    Reads the reference's ``config.json`` as saved: LLaMA-2 fields at the top level and the
    vision tower / abstractor sizes nested in ``visual_config``. ``auto_map`` (remote code) is
    kept as an inert attribute and never used.

    Args:
        vocab_size: text vocabulary size.
        hidden_size: LLaMA hidden size.
        intermediate_size: LLaMA MLP size.
        num_hidden_layers: decoder layers.
        num_attention_heads: query heads.
        num_key_value_heads: key/value heads (``None``: as many as query heads).
        max_position_embeddings: context the checkpoint was trained for (informational).
        rms_norm_eps: RMSNorm epsilon.
        rope_theta: rotary base.
        rope_scaling: must be ``None`` (no scaled rotary variant is implemented).
        attention_bias: whether q/k/v/o projections carry a bias.
        initializer_range: std of the random initialisation of a fresh model.
        visual_config: ``{"visual_model": {...}, "visual_abstractor": {...}}``.
        **kwargs: passed to ``PretrainedConfig`` (token ids, dtype, ...).
    """

    model_type = "mplug_owl2"

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 4096,
        intermediate_size: int = 11008,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: int | None = None,
        max_position_embeddings: int = 2048,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 10000.0,
        rope_scaling: dict[str, Any] | None = None,
        attention_bias: bool = False,
        initializer_range: float = 0.02,
        visual_config: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if rope_scaling not in (None, {}) and (rope_scaling or {}).get("rope_type") != "default":
            raise NotImplementedError(f"mplug_owl2: rope_scaling {rope_scaling!r} is not supported")
        # Written by newer transformers versions; ``rope_theta`` and the head split are the source.
        kwargs.pop("rope_parameters", None)
        kwargs.pop("head_dim", None)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.head_dim = hidden_size // num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = float(rope_theta)
        self.attention_bias = attention_bias
        self.initializer_range = initializer_range
        self.visual_config = dict(visual_config or {})
        kwargs.setdefault("bos_token_id", 1)
        kwargs.setdefault("eos_token_id", 2)
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")

    @property
    def vision(self) -> VisionSettings:
        """The vision tower's sizes (checkpoint values over the published defaults)."""
        return VisionSettings(**_pick(self.visual_config.get("visual_model"), VISION_DEFAULTS))

    @property
    def abstractor(self) -> AbstractorSettings:
        """The abstractor's sizes; ``grid_size`` defaults to the vision tower's patch grid."""
        values = _pick(self.visual_config.get("visual_abstractor"), ABSTRACTOR_DEFAULTS)
        if values["grid_size"] is None:
            values["grid_size"] = self.vision.grid
        return AbstractorSettings(**values)

    @property
    def num_image_tokens(self) -> int:
        """Language-model positions per image: the learnable queries plus the ``vit_eos`` token."""
        return self.abstractor.num_learnable_queries + 1
