"""mPLUG-Owl3 model: vision tower, projector and hyper-attention Qwen2, loadable by from_pretrained.

Parameter names follow the checkpoint (``vision_model.*``, ``vision2text_model.*``,
``language_model.model.*``, ``language_model.lm_head.*``); no remote code is involved.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.siglip.modeling_siglip import SiglipMultiheadAttentionPoolingHead

from .configuration import MplugOwl3Config, register_config
from .language import HyperMedia, MplugOwl3LanguageModel, rope_cos_sin
from .vision import MplugOwl3VisionTower


class MplugOwl3PreTrainedModel(PreTrainedModel):
    """Base class: config class, weight init and loading flags."""

    config_class = MplugOwl3Config
    config: MplugOwl3Config
    # A prefix no module carries, so that the loader never strips or adds one to checkpoint keys.
    base_model_prefix = "mplugowl3"
    main_input_name = "input_ids"
    _no_split_modules = ["MplugOwl3DecoderLayer", "SiglipEncoderLayer"]  # noqa: RUF012
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        """transformers' defaults plus the SigLIP pooling probe (used only for random builds)."""
        super()._init_weights(module)
        if isinstance(module, SiglipMultiheadAttentionPoolingHead):
            init.normal_(module.probe, std=self.config.initializer_range)


class MplugOwl3ForCausalLM(MplugOwl3PreTrainedModel):
    """mPLUG-Owl3 (7B-240728 architecture) returning next-token logits.

    ``forward`` takes a left-padded batch as built by ``MplugOwl3Processor``; every row has its
    own placeholders (``media_offset``) and its own crops (``num_crops`` consecutive entries of
    ``pixel_values``, rows in order).
    """

    def __init__(self, config: MplugOwl3Config) -> None:
        super().__init__(config)
        vision = config.vision_config
        if vision._attn_implementation is None:
            # SigLIP's attention dispatches on its own config, which the v5 loader leaves unset
            # here because the tower is not a PreTrainedModel of its own.
            vision._attn_implementation = config._attn_implementation or "sdpa"
        self.vision_model = MplugOwl3VisionTower(vision, config.vision_feature_layer)
        self.vision2text_model = nn.Linear(vision.hidden_size, config.hidden_size, bias=True)
        self.language_model = MplugOwl3LanguageModel(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The token embedding table."""
        return self.language_model.model.embed_tokens

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) normalised crops -> (N, tokens_per_crop, hidden) projected features."""
        features = self.vision_model(pixel_values)
        return self.vision2text_model(features)

    @torch.inference_mode()
    def next_token_logits(self, token_ids: Sequence[int], **inputs: torch.Tensor) -> torch.Tensor:
        """Float32 (B, len(token_ids)) logits of the given token ids at each row's next position.

        Args:
            token_ids: ids to read (e.g. ``[processor.word_id("Yes"), processor.word_id("No")]``).
            **inputs: the keyword arguments of ``forward`` (e.g. ``processor(prompts, images)``
                moved to the model's device).
        """
        logits = self(**inputs, logits_to_keep=1).logits[:, -1]
        return logits[:, torch.as_tensor(list(token_ids), device=logits.device)]

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        media_offset: torch.Tensor | None = None,
        num_crops: torch.Tensor | Sequence[int] | None = None,
        image_embeds: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
    ) -> CausalLMOutputWithPast:
        """Logits of a left-padded batch of prompts with images.

        Args:
            input_ids: (B, T) token ids, LEFT padded (the last column must be real tokens).
            pixel_values: (sum(num_crops), 3, S, S) crops of all rows, row after row.
            attention_mask: (B, T) 1 on real tokens, 0 on padding; None = no padding.
            media_offset: (B, T) or the reference's (B, T, 2) (column 1 used): number of image
                placeholder starts strictly before each position (0 on padding).
            num_crops: (B,) crops of each row in ``pixel_values``; may be None when B == 1.
            image_embeds: alternative to ``pixel_values``: (sum(num_crops), P, hidden) output of
                ``encode_images`` in the same layout.
            logits_to_keep: 0 = logits of all positions; k = the last k (1 for next-token use).

        Returns:
            ``CausalLMOutputWithPast`` whose ``logits`` are float32 (B, kept, vocab).
        """
        bsz, seq = input_ids.shape
        device = input_ids.device
        if attention_mask is None:
            key_valid = torch.ones(bsz, seq, dtype=torch.bool, device=device)
        else:
            key_valid = attention_mask.to(device=device).bool()
            if not bool(key_valid[:, -1].all()):
                raise ValueError("mplugowl3 needs LEFT padding: a row ends with padding")
        position_ids = (key_valid.long().cumsum(-1) - 1).clamp(min=0)
        media = self._hyper_media(
            bsz, seq, position_ids, pixel_values, media_offset, num_crops, image_embeds
        )
        logits = self.language_model(input_ids, position_ids, key_valid, media, logits_to_keep)
        return CausalLMOutputWithPast(logits=logits)

    def _hyper_media(
        self,
        bsz: int,
        seq: int,
        position_ids: torch.Tensor,
        pixel_values: torch.Tensor | None,
        media_offset: torch.Tensor | None,
        num_crops: torch.Tensor | Sequence[int] | None,
        image_embeds: torch.Tensor | None,
    ) -> HyperMedia | None:
        """Encode the crops in use and build the masks and MI-RoPE tables of the hyper layers."""
        if media_offset is None or (pixel_values is None and image_embeds is None):
            return None
        device = position_ids.device
        offset = media_offset[..., 1] if media_offset.dim() == 3 else media_offset
        offset = offset.to(device=device, dtype=torch.long)
        if offset.shape != (bsz, seq):
            raise ValueError(f"media_offset shape {tuple(media_offset.shape)} != ({bsz}, {seq})")
        source = image_embeds if image_embeds is not None else pixel_values
        counts = _crop_counts(num_crops, bsz, source.shape[0])
        # Only the crops whose placeholder starts before the last token are ever attended to.
        used = offset[:, -1].tolist()
        for row, (n_used, n_given) in enumerate(zip(used, counts, strict=True)):
            if n_used > n_given:
                raise ValueError(f"row {row}: {n_used} image placeholders but {n_given} crops")
        if sum(used) == 0:
            return None
        starts = [sum(counts[:row]) for row in range(bsz)]
        index = torch.tensor(
            [starts[r] + k for r in range(bsz) for k in range(used[r])], device=source.device
        )
        if image_embeds is not None:
            embeds = image_embeds.index_select(0, index)
        else:
            embeds = self.encode_images(pixel_values.index_select(0, index))
        embeds = embeds.to(device=device, dtype=self.language_model.lm_head.weight.dtype)
        return _build_media(embeds, used, offset, position_ids, self.config)


def _crop_counts(
    num_crops: torch.Tensor | Sequence[int] | None, bsz: int, total: int
) -> list[int]:
    """Per-row crop counts as a list; all crops belong to the only row when not given."""
    if num_crops is None:
        if bsz != 1:
            raise ValueError("num_crops is required for a batch of more than one prompt")
        return [total]
    counts = [int(n) for n in (num_crops.tolist() if torch.is_tensor(num_crops) else num_crops)]
    if len(counts) != bsz or sum(counts) != total:
        raise ValueError(f"num_crops {counts} does not match {bsz} rows and {total} crops")
    return counts


def _build_media(
    embeds: torch.Tensor,
    used: list[int],
    offset: torch.Tensor,
    position_ids: torch.Tensor,
    config: MplugOwl3Config,
) -> HyperMedia:
    """Masks and per-crop MI-RoPE tables for ``embeds`` (the used crops, row after row)."""
    device = offset.device
    bsz, seq = offset.shape
    max_crops, n_tok = max(used), embeds.shape[1]
    crop_row = torch.tensor([r for r in range(bsz) for _ in range(used[r])], device=device)
    crop_slot = torch.tensor([k for r in range(bsz) for k in range(used[r])], device=device)
    # Crop n of a row is keyed at the position of the first token after its placeholder start,
    # i.e. the first s with media_offset[s] > n (media_offset is non-decreasing along a row).
    slots = torch.arange(max_crops, device=device).expand(bsz, max_crops).contiguous()
    first = torch.searchsorted(offset.contiguous(), slots, right=True).clamp(max=seq - 1)
    key_pos = position_ids.gather(1, first)[crop_row, crop_slot]
    cos, sin = rope_cos_sin(key_pos, config.head_dim, config.rope_theta)
    key_crop = torch.arange(max_crops * n_tok, device=device) // n_tok
    # Queries before the first placeholder see no crop; they are given crop 0 (zeros for a row
    # without images) so that no mask row is empty, and their output is discarded via query_on.
    visible = offset.clamp(min=1)
    cross_mask = key_crop[None, None, :] < visible[:, :, None]
    return HyperMedia(
        image_embeds=embeds,
        crop_row=crop_row,
        crop_slot=crop_slot,
        key_cos=cos[:, None, None, :],
        key_sin=sin[:, None, None, :],
        max_crops=max_crops,
        cross_mask=cross_mask[:, None],
        query_on=offset >= 1,
    )


def register_auto_classes() -> None:
    """Register the config and model with transformers' Auto classes (idempotent).

    After this, ``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM`` resolve model_type
    ``mplugowl3`` to this implementation; the checkpoint's ``auto_map`` is never followed.
    """
    register_config()
    AutoModel.register(MplugOwl3Config, MplugOwl3ForCausalLM, exist_ok=True)
    AutoModelForCausalLM.register(MplugOwl3Config, MplugOwl3ForCausalLM, exist_ok=True)
