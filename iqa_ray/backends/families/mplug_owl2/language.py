"""mPLUG-Owl2 language side: a LLaMA decoder whose key/value projections and layer norms are
"multiway" (one copy for text positions, one for image positions), plus masks and rotary maths."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iqa_ray.backends.families.mplug_owl2.configuration import MplugOwl2Config


@dataclass
class Route:
    """Which flattened (batch * time) positions take the text (0) or image (1) multiway copy.

    Built once per forward (one host sync) so that the layers gather and scatter without more.
    ``mode`` is "text" or "image" when every position has that modality (no gather at all),
    else "mixed" with the index tensors of each modality.
    """

    mode: str
    text: torch.Tensor | None = None
    image: torch.Tensor | None = None

    @classmethod
    def from_mask(cls, image_mask: torch.Tensor | None) -> Route:
        """Route from a (B, T) bool mask of image positions (``None``: all text)."""
        if image_mask is None:
            return cls("text")
        flat = image_mask.reshape(-1).bool()
        image = torch.nonzero(flat).squeeze(1)
        if image.numel() == 0:
            return cls("text")
        if image.numel() == flat.numel():
            return cls("image")
        return cls("mixed", text=torch.nonzero(~flat).squeeze(1), image=image)


class MultiwayNetwork(nn.Module):
    """Two copies of a per-token module; each position goes through its modality's copy."""

    def __init__(self, factory: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.multiway = nn.ModuleList([factory(), factory()])

    def forward(self, x: torch.Tensor, route: Route) -> torch.Tensor:
        """(B, T, d_in) -> (B, T, d_out), position-wise."""
        if route.mode == "text":
            return self.multiway[0](x)
        if route.mode == "image":
            return self.multiway[1](x)
        assert route.text is not None and route.image is not None
        flat = x.reshape(-1, x.shape[-1])
        text = self.multiway[0](flat.index_select(0, route.text))
        image = self.multiway[1](flat.index_select(0, route.image))
        out = text.new_empty(flat.shape[0], text.shape[-1])
        out.index_copy_(0, route.text, text)
        out.index_copy_(0, route.image, image.to(text.dtype))
        return out.view(*x.shape[:-1], -1)


class MplugOwl2RMSNorm(nn.Module):
    """LLaMA RMSNorm, computed in float32 whatever the activations' dtype."""

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension."""
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dtype)


def rotary_cos_sin(
    config: MplugOwl2Config, position_ids: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos / sin tables (B, T, head_dim) for the rotate-half RoPE at ``position_ids``.

    The inverse frequencies are recomputed on every call (head_dim / 2 numbers): a stored
    non-persistent buffer is exactly what transformers 5's loader leaves uninitialised.
    """
    dim = config.head_dim
    exponent = torch.arange(0, dim, 2, dtype=torch.int64, device=position_ids.device).float() / dim
    inv_freq = 1.0 / (config.rope_theta**exponent)
    freqs = position_ids[..., None].float() * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, heads, T, head_dim) by the (B, T, head_dim) tables."""
    return x * cos[:, None] + _rotate_half(x) * sin[:, None]


def attention_mask_4d(
    attention_mask: torch.Tensor | None, batch: int, query_len: int, past_len: int, device: Any
) -> torch.Tensor | None:
    """Bool (B, 1, T, past + T) mask, True = may attend; ``None`` for plain causal, no padding
    (SDPA then runs ``is_causal``, which lets CUDA pick its fastest kernels).

    Query i sits at cache slot ``past_len + i`` and sees slots up to its own that the 2-D mask
    marks real. It always sees itself, so a padding query (fully masked otherwise) stays
    finite; no real query ever sees a padding key.
    """
    total = past_len + query_len
    if attention_mask is not None and tuple(attention_mask.shape) != (batch, total):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}; expected ({batch}, "
            f"{total}) = (batch, cached + new tokens)"
        )
    if past_len == 0 and (attention_mask is None or bool(attention_mask.all())):
        return None
    slots = torch.arange(total, device=device)
    query_slots = slots[past_len:, None]
    allowed = (slots[None, :] <= query_slots)[None]
    if attention_mask is not None:
        allowed = allowed & attention_mask.to(device=device, dtype=torch.bool)[:, None, :]
    return (allowed | (slots[None, :] == query_slots)[None])[:, None]


class MultiwayAttention(nn.Module):
    """LLaMA attention with shared q/o projections and multiway k/v projections."""

    def __init__(self, config: MplugOwl2Config, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        bias, hidden = config.attention_bias, config.hidden_size
        kv_out = self.kv_heads * self.head_dim
        self.q_proj = nn.Linear(hidden, self.heads * self.head_dim, bias=bias)
        self.k_proj = MultiwayNetwork(lambda: nn.Linear(hidden, kv_out, bias=bias))
        self.v_proj = MultiwayNetwork(lambda: nn.Linear(hidden, kv_out, bias=bias))
        self.o_proj = nn.Linear(self.heads * self.head_dim, hidden, bias=bias)

    def _split(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        route: Route,
        rotary: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        cache: Any | None,
    ) -> torch.Tensor:
        """(B, T, hidden) -> (B, T, hidden); appends this step's keys/values to ``cache``."""
        b, t, _ = x.shape
        q = apply_rotary(self._split(self.q_proj(x), self.heads), *rotary)
        k = apply_rotary(self._split(self.k_proj(x, route), self.kv_heads), *rotary)
        v = self._split(self.v_proj(x, route), self.kv_heads)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        if self.config._attn_implementation == "eager":
            ctx = _eager_attention(q, k, v, mask, self.head_dim**-0.5)
        else:
            ctx = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None, scale=self.head_dim**-0.5
            )
        return self.o_proj(ctx.transpose(1, 2).reshape(b, t, -1))


def _eager_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v with the softmax in float32, as the reference."""
    scores = torch.matmul(q, k.transpose(2, 3)) * scale
    if mask is None:
        t, s = q.shape[-2], k.shape[-2]
        mask = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t)
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(weights, v)


class LlamaMlp(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: MplugOwl2Config) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., hidden) -> (..., hidden)."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm LLaMA block with multiway input / post-attention norms."""

    def __init__(self, config: MplugOwl2Config, layer_idx: int) -> None:
        super().__init__()
        size, eps = config.hidden_size, config.rms_norm_eps
        self.self_attn = MultiwayAttention(config, layer_idx)
        self.mlp = LlamaMlp(config)
        self.input_layernorm = MultiwayNetwork(lambda: MplugOwl2RMSNorm(size, eps))
        self.post_attention_layernorm = MultiwayNetwork(lambda: MplugOwl2RMSNorm(size, eps))

    def forward(
        self,
        x: torch.Tensor,
        route: Route,
        rotary: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        cache: Any | None,
    ) -> torch.Tensor:
        """(B, T, hidden) -> (B, T, hidden)."""
        x = x + self.self_attn(self.input_layernorm(x, route), route, rotary, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x, route))
