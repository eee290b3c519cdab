"""mPLUG-Owl2 model classes on transformers' ``PreTrainedModel``: the image splice, the multiway
LLaMA forward with a KV cache, the causal-LM head, and registration with the Auto classes."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from iqa_ray.backends.families.mplug_owl2.configuration import IMAGE_TOKEN_INDEX, MplugOwl2Config
from iqa_ray.backends.families.mplug_owl2.language import (
    DecoderLayer,
    MplugOwl2RMSNorm,
    Route,
    attention_mask_4d,
    rotary_cos_sin,
)
from iqa_ray.backends.families.mplug_owl2.vision import (
    AbstractorAttention,
    VisionEmbeddings,
    VisionModel,
    VisualAbstractor,
)


def _with_cache(output_class: type, cache: Any, **fields: Any) -> Any:
    """Build a transformers output whose cache field is ``cache`` (5.x renamed the field
    ``past_key_values`` to ``cache`` in some release)."""
    names = {f.name for f in dataclasses.fields(output_class)}
    return output_class(**fields, **{"cache" if "cache" in names else "past_key_values": cache})


def default_position_ids(
    attention_mask: torch.Tensor | None, batch: int, length: int, past: int, device: Any
) -> torch.Tensor:
    """(B, T) positions of the new tokens: real tokens counted from the mask (left padding
    safe), or ``past .. past + T - 1`` without a mask."""
    if attention_mask is None:
        return torch.arange(past, past + length, device=device).expand(batch, -1)
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return positions[:, -length:]


class MplugOwl2PreTrainedModel(PreTrainedModel):
    """Shared loading behaviour: config class, attention backends, initialisation."""

    config_class = MplugOwl2Config
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules: ClassVar[list[str]] = ["DecoderLayer", "VisionLayer", "AbstractorLayer"]
    _supports_sdpa = True
    # Very old checkpoints stored the rotary frequencies; they are recomputed, never read.
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"rotary_emb\.inv_freq"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Random init of a fresh model; ``transformers.initialization`` skips loaded tensors."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (nn.LayerNorm, MplugOwl2RMSNorm)):
            init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, VisionEmbeddings):
            init.normal_(module.cls_token, mean=0.0, std=std)
            init.normal_(module.position_embedding, mean=0.0, std=std)
        elif isinstance(module, VisualAbstractor):
            init.normal_(module.query_embeds, mean=0.0, std=std)
            init.normal_(module.vit_eos, mean=0.0, std=std)
        elif isinstance(module, AbstractorAttention):
            q_table, k_table = module.sincos_tables()
            init.copy_(module.q_pos_embed, q_table)
            init.copy_(module.k_pos_embed, k_table)


class MplugOwl2Model(MplugOwl2PreTrainedModel):
    """Vision tower, abstractor and multiway LLaMA decoder (no LM head)."""

    def __init__(self, config: MplugOwl2Config) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            DecoderLayer(config, i) for i in range(config.num_hidden_layers)
        )
        self.norm = MplugOwl2RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.vision_model = VisionModel(config.vision)
        self.visual_abstractor = VisualAbstractor(config.abstractor, config.hidden_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        """The text embedding table."""
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        """Replace the text embedding table."""
        self.embed_tokens = value

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n, 3, S, S) preprocessed images -> (n, num_image_tokens, hidden) LLM embeddings."""
        return self.visual_abstractor(self.vision_model(pixel_values))

    def embed(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embed ``input_ids``; sentinel positions take the images' features, in order.

        Returns the (B, T, hidden) embeddings and the (B, T) image-position mask (``None`` when
        there are no images).

        Raises:
            ValueError: the sentinel count is not ``len(pixel_values) * num_image_tokens``.
        """
        image_mask = input_ids == IMAGE_TOKEN_INDEX
        embeds = self.embed_tokens(input_ids.masked_fill(image_mask, 0))
        slots = int(image_mask.sum())
        if pixel_values is None or len(pixel_values) == 0:
            if slots:
                raise ValueError(f"input_ids hold {slots} image positions but no pixel_values")
            return embeds, None
        features = self.get_image_features(pixel_values)
        if slots != features.shape[0] * features.shape[1]:
            raise ValueError(
                f"input_ids hold {slots} image positions for {features.shape[0]} images of "
                f"{features.shape[1]} tokens each (expand every <|image|> into "
                f"{features.shape[1]} copies of {IMAGE_TOKEN_INDEX})"
            )
        flat = features.reshape(-1, features.shape[-1]).to(embeds.dtype)
        return embeds.masked_scatter(image_mask[..., None], flat), image_mask

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        past_key_values: Any | None = None,
        use_cache: bool = False,
    ) -> BaseModelOutputWithPast:
        """Final-normed hidden states; see ``MplugOwl2ForCausalLM.forward`` for the inputs."""
        hidden, cache = self.decode(
            input_ids, pixel_values, attention_mask, position_ids, inputs_embeds, image_mask,
            past_key_values, use_cache,
        )
        return _with_cache(BaseModelOutputWithPast, cache, last_hidden_state=hidden)

    def decode(
        self,
        input_ids: torch.Tensor | None,
        pixel_values: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        image_mask: torch.Tensor | None,
        past_key_values: Any | None,
        use_cache: bool,
    ) -> tuple[torch.Tensor, Any]:
        """The (B, T, hidden) final-normed hidden states and the cache (``None`` without one)."""
        inputs_embeds, image_mask = self._resolve_inputs(
            input_ids, pixel_values, inputs_embeds, image_mask
        )
        batch, length = inputs_embeds.shape[:2]
        device = inputs_embeds.device
        cache = past_key_values
        if use_cache and cache is None:
            cache = DynamicCache()
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = default_position_ids(attention_mask, batch, length, past, device)
        mask = attention_mask_4d(attention_mask, batch, length, past, device)
        route = Route.from_mask(image_mask)
        rotary = rotary_cos_sin(self.config, position_ids.to(device), inputs_embeds.dtype)
        hidden = inputs_embeds
        for layer in self.layers:
            hidden = layer(hidden, route, rotary, mask, cache)
        return self.norm(hidden), cache

    def _resolve_inputs(
        self,
        input_ids: torch.Tensor | None,
        pixel_values: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        image_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The embeddings and image mask of either entry, refusing ambiguous combinations."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            if image_mask is not None:
                raise ValueError("image_mask goes with inputs_embeds (input_ids mark images: -200)")
            return self.embed(input_ids, pixel_values)
        if pixel_values is not None:
            raise ValueError("with inputs_embeds, splice the image features yourself")
        if image_mask is None:
            # Silently routing image positions through the text weights would give wrong logits.
            raise ValueError("inputs_embeds needs image_mask (all False for text-only positions)")
        return inputs_embeds, image_mask


class MplugOwl2ForCausalLM(MplugOwl2PreTrainedModel):
    """mPLUG-Owl2 with its LM head: what Q-Align, Compare2Score and DeQA-Score checkpoints hold."""

    def __init__(self, config: MplugOwl2Config) -> None:
        super().__init__(config)
        self.model = MplugOwl2Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        """The text embedding table."""
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        """Replace the text embedding table."""
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        """The LM head."""
        return self.lm_head

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n, 3, S, S) preprocessed images -> (n, num_image_tokens, hidden) LLM embeddings."""
        return self.model.get_image_features(pixel_values)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        past_key_values: Any | None = None,
        use_cache: bool = False,
        logits_to_keep: int | torch.Tensor = 0,
        cache: Any | None = None,
        return_dict: bool | None = None,
    ) -> CausalLMOutputWithPast:
        """Next-token logits.

        Args:
            input_ids: (B, T) ids with every image expanded to ``num_image_tokens`` copies of
                ``IMAGE_TOKEN_INDEX``; padding (any id) where ``attention_mask`` is 0.
            pixel_values: (n_images, 3, S, S), the images of all rows in row-major prompt order.
            attention_mask: (B, past + T), 1 for real tokens (left padding supported).
            position_ids: (B, T); default: counted from ``attention_mask`` (or past .. past+T-1).
            inputs_embeds: (B, T, hidden) instead of ``input_ids`` (images already spliced).
            image_mask: (B, T) bool, image positions of ``inputs_embeds`` (multiway index 1);
                required with ``inputs_embeds`` (all False when there is no image).
            past_key_values: a transformers ``Cache``; every layer calls
                ``cache.update(k, v, layer_idx)`` and attends to what it returns.
            use_cache: create a ``DynamicCache`` when none is passed, and return it.
            logits_to_keep: int n > 0 keeps the last n positions; a tensor indexes positions.
            cache: alias of ``past_key_values`` (newer transformers name).
            return_dict: ignored (always an output object).

        Returns:
            ``CausalLMOutputWithPast`` with float32 ``logits`` (B, kept, vocab) and the cache.
        """
        del return_dict
        hidden, cache = self.model.decode(
            input_ids, pixel_values, attention_mask, position_ids, inputs_embeds, image_mask,
            past_key_values if past_key_values is not None else cache, use_cache,
        )
        if isinstance(logits_to_keep, int):
            hidden = hidden[:, -logits_to_keep:] if logits_to_keep > 0 else hidden
        else:
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden).float()
        return _with_cache(CausalLMOutputWithPast, cache, logits=logits)


def register_mplug_owl2() -> None:
    """Make ``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM`` resolve ``mplug_owl2`` to
    these classes (never to remote code). Idempotent: safe to call any number of times."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    AutoConfig.register(MplugOwl2Config.model_type, MplugOwl2Config, exist_ok=True)
    AutoModel.register(MplugOwl2Config, MplugOwl2Model, exist_ok=True)
    AutoModelForCausalLM.register(MplugOwl2Config, MplugOwl2ForCausalLM, exist_ok=True)
