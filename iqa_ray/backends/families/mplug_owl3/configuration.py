"""Configuration of the native mPLUG-Owl3 family (same config.json schema as the checkpoint)."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig, SiglipVisionConfig

# Keys of the reference config.json that only its remote code uses; dropped so that a config saved
# by this implementation never points transformers at remote code again.
_REMOTE_ONLY_KEYS = ("auto_map",)


@strict
class MplugOwl3Config(PreTrainedConfig):
    """mPLUG-Owl3 config: a Qwen2 language model with hyper attention plus a SigLIP vision tower.

    The LLM fields sit at the top level (as in the checkpoint's ``config.json``); the vision tower
    is a ``SiglipVisionConfig`` under ``vision_config``.

    Attributes:
        hyper_layers: 1-based indices of the decoder layers that carry hyper (cross) attention.
        image_size: side of one crop in pixels (384 for 7B-240728).
        rope_theta: RoPE base, for the text positions and for the MI-RoPE of the image keys.
        vision_feature_layer: which SigLIP hidden state feeds the projector (-2 as in the
            reference: the last encoder layer, post_layernorm and head are not used).
    """

    model_type = "mplugowl3"
    sub_configs_defaults = {"vision_config": SiglipVisionConfig}  # noqa: RUF012 (transformers API)

    vision_config: dict | PreTrainedConfig | None = None
    vocab_size: int = 151851
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int | None = 4
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    hyper_layers: list[int] | None = None
    image_size: int = 384
    patch_size: int = 14
    vision_feature_layer: int = -2
    attention_dropout: float | int = 0.0
    use_cache: bool = False
    tie_word_embeddings: bool = False
    use_sliding_window: bool = False
    sliding_window: int | None = None
    max_window_layers: int = 28
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        for key in _REMOTE_ONLY_KEYS:
            kwargs.pop(key, None)
        if kwargs.get("rope_scaling"):
            raise NotImplementedError("mplugowl3: rope_scaling is not supported")
        kwargs.pop("rope_scaling", None)
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.hyper_layers is None:
            self.hyper_layers = [1, 9, 17, 25]
        super().__post_init__(**kwargs)
        if self.use_sliding_window:
            raise NotImplementedError("mplugowl3: sliding-window attention is not supported")

    @property
    def head_dim(self) -> int:
        """Width of one attention head of the language model."""
        return self.hidden_size // self.num_attention_heads

    def is_hyper_layer(self, layer_idx: int) -> bool:
        """Whether decoder layer ``layer_idx`` (0-based) has hyper attention (list is 1-based)."""
        return (layer_idx + 1) in self.hyper_layers


def register_config() -> None:
    """Register ``mplugowl3`` with ``AutoConfig`` (idempotent).

    Once the model type is known, ``AutoConfig`` / ``AutoTokenizer`` no longer try to follow the
    checkpoint's ``auto_map`` to remote code.
    """
    AutoConfig.register(MplugOwl3Config.model_type, MplugOwl3Config, exist_ok=True)
