"""Qwen2 decoder with mPLUG-Owl3 hyper attention (gated cross attention to image features).

Image features are not spliced into the token sequence: every token is text, and the hyper layers
let text queries attend to the crops whose placeholder started strictly before them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_utils import slice_logits_to_keep
from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP, Qwen2RMSNorm, repeat_kv, rotate_half

from .configuration import MplugOwl3Config


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate-half RoPE tables in float32, shape ``positions.shape + (head_dim,)``.

    Recomputed from the config on every call (cheap): there is no ``inv_freq`` buffer that the v5
    loader could leave on the meta device or uninitialised.
    """
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float()
    inv_freq = 1.0 / (theta ** (exponent / head_dim))
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin``, tables cast to ``x``'s dtype (Qwen2 convention)."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin


@dataclass
class HyperMedia:
    """Per-forward image context shared by all hyper layers.

    Attributes:
        image_embeds: (M, P, hidden) projected features of the M crops in use, row by row.
        crop_row: (M,) batch row of each crop.
        crop_slot: (M,) index of each crop within its row (0 = first crop of the prompt).
        key_cos: (M, 1, 1, head_dim) float32 MI-RoPE cos of each crop's single key position.
        key_sin: (M, 1, 1, head_dim) float32 MI-RoPE sin.
        max_crops: most crops in use by one row (padded slots hold zeros and are masked).
        cross_mask: (B, 1, T, max_crops * P) bool, True where query s may attend the key.
        query_on: (B, T) bool, positions that mix in the cross-attention output (s >= s0).
    """

    image_embeds: torch.Tensor
    crop_row: torch.Tensor
    crop_slot: torch.Tensor
    key_cos: torch.Tensor
    key_sin: torch.Tensor
    max_crops: int
    cross_mask: torch.Tensor
    query_on: torch.Tensor


class MplugOwl3Attention(nn.Module):
    """Qwen2 self attention; in hyper layers also gated cross attention to the image crops."""

    def __init__(self, config: MplugOwl3Config, layer_idx: int) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.is_hyper = config.is_hyper_layer(layer_idx)
        hidden, kv_width = config.hidden_size, self.num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(hidden, kv_width, bias=True)
        self.v_proj = nn.Linear(hidden, kv_width, bias=True)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=False)
        if self.is_hyper:
            self.v_kv_proj = nn.Linear(hidden, 2 * kv_width, bias=True)
            self.gate_proj = nn.Sequential(nn.Linear(self.head_dim, self.head_dim), nn.Sigmoid())

    def forward(
        self,
        hidden: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        self_mask: torch.Tensor,
        media: HyperMedia | None = None,
        normed_images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T, hidden) normed states -> (B, T, hidden) attention output after ``o_proj``."""
        bsz, seq, _ = hidden.shape
        q = self.q_proj(hidden).view(bsz, seq, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden).view(bsz, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden).view(bsz, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rope
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        groups = self.num_heads // self.num_kv_heads
        out = F.scaled_dot_product_attention(
            q, repeat_kv(k, groups), repeat_kv(v, groups), attn_mask=self_mask, scale=self.scaling
        ).transpose(1, 2)  # (B, T, heads, D)
        if self.is_hyper and media is not None and normed_images is not None:
            cross = self._cross_attention(q, normed_images, media)
            gate = self.gate_proj(out)
            mixed = out * (1 - gate) + cross * gate
            out = torch.where(media.query_on[:, :, None, None], mixed, out)
        return self.o_proj(out.reshape(bsz, seq, self.num_heads * self.head_dim))

    def _cross_attention(
        self, q: torch.Tensor, normed_images: torch.Tensor, media: HyperMedia
    ) -> torch.Tensor:
        """Post-RoPE text queries (B, heads, T, D) over the crops' keys -> (B, T, heads, D)."""
        n_crops, n_tok, _ = normed_images.shape
        # v_kv_proj output is laid out per KV head as [K | V].
        kv = self.v_kv_proj(normed_images).view(n_crops, n_tok, self.num_kv_heads, 2, self.head_dim)
        keys = apply_rope(kv[..., 0, :], media.key_cos, media.key_sin)
        values = kv[..., 1, :]
        bsz = q.shape[0]
        shape = (bsz, media.max_crops, n_tok, self.num_kv_heads, self.head_dim)
        padded_k, padded_v = keys.new_zeros(shape), values.new_zeros(shape)
        padded_k[media.crop_row, media.crop_slot] = keys
        padded_v[media.crop_row, media.crop_slot] = values
        flat = (bsz, media.max_crops * n_tok, self.num_kv_heads, self.head_dim)
        padded_k = padded_k.view(flat).transpose(1, 2)
        padded_v = padded_v.view(flat).transpose(1, 2)
        groups = self.num_heads // self.num_kv_heads
        out = F.scaled_dot_product_attention(
            q,
            repeat_kv(padded_k, groups),
            repeat_kv(padded_v, groups),
            attn_mask=media.cross_mask,
            scale=self.scaling,
        )
        return out.transpose(1, 2)


class MplugOwl3DecoderLayer(nn.Module):
    """Pre-norm Qwen2 block; its input RMSNorm also normalises a hyper layer's image features."""

    def __init__(self, config: MplugOwl3Config, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = MplugOwl3Attention(config, layer_idx)
        self.mlp = Qwen2MLP(config)
        self.input_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        self_mask: torch.Tensor,
        media: HyperMedia | None = None,
    ) -> torch.Tensor:
        """One decoder block on (B, T, hidden)."""
        normed_images = None
        if self.self_attn.is_hyper and media is not None:
            normed_images = self.input_layernorm(media.image_embeds)
        attn = self.self_attn(self.input_layernorm(hidden), rope, self_mask, media, normed_images)
        hidden = hidden + attn
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


class MplugOwl3TextModel(nn.Module):
    """Embeddings, decoder layers and final norm (``language_model.model.*``)."""

    def __init__(self, config: MplugOwl3Config) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            [MplugOwl3DecoderLayer(config, i) for i in range(config.num_hidden_layers)]
        )
        self.norm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        key_valid: torch.Tensor,
        media: HyperMedia | None = None,
    ) -> torch.Tensor:
        """(B, T) ids -> (B, T, hidden) final-normed states.

        Args:
            input_ids: token ids, left padded.
            position_ids: (B, T) RoPE positions (0 at each row's first real token).
            key_valid: (B, T) bool, False on padding.
            media: image context for the hyper layers, or None for text only.
        """
        hidden = self.embed_tokens(input_ids)
        cfg = self.config
        cos, sin = rope_cos_sin(position_ids, cfg.head_dim, cfg.rope_theta)
        rope = (cos[:, None], sin[:, None])
        self_mask = causal_padding_mask(key_valid)
        for layer in self.layers:
            hidden = layer(hidden, rope, self_mask, media)
        return self.norm(hidden)


class MplugOwl3LanguageModel(nn.Module):
    """Decoder plus untied LM head (``language_model.*``)."""

    def __init__(self, config: MplugOwl3Config) -> None:
        super().__init__()
        self.model = MplugOwl3TextModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        key_valid: torch.Tensor,
        media: HyperMedia | None = None,
        logits_to_keep: int | torch.Tensor = 0,
    ) -> torch.Tensor:
        """Float32 logits of the kept positions, (B, kept, vocab)."""
        hidden = self.model(input_ids, position_ids, key_valid, media)
        return self.lm_head(slice_logits_to_keep(hidden, logits_to_keep)).float()


def causal_padding_mask(key_valid: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) bool SDPA mask: causal, padding keys hidden.

    Each position may always see itself, so that the rows of padding queries are never fully
    masked (SDPA would return NaN there); real queries never see padding keys.
    """
    seq = key_valid.shape[1]
    idx = torch.arange(seq, device=key_valid.device)
    causal = idx[None, :] <= idx[:, None]
    allowed = causal[None] & key_valid[:, None, :]
    allowed = allowed | torch.eye(seq, dtype=torch.bool, device=key_valid.device)[None]
    return allowed[:, None]
