"""mPLUG-Owl2 vision side: the CLIP-style ViT tower and the visual abstractor that turns its
1 + grid^2 tokens into ``num_learnable_queries + 1`` language-model embeddings per image."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from iqa_ray.backends.families.mplug_owl2.configuration import (
    AbstractorSettings,
    VisionSettings,
)

# torch.nn.LayerNorm's default: the abstractor's norm1 / normk / norm2 use it, not layer_norm_eps.
TORCH_LAYER_NORM_EPS = 1e-5


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """CLIP's activation, x * sigmoid(1.702 x); used whatever the config's ``hidden_act`` says."""
    return x * torch.sigmoid(1.702 * x)


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """MAE-style sine-cosine table: (len(positions), dim), sines in the first half."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, grid: int, cls_row: bool = True) -> np.ndarray:
    """MAE-style 2-D table over a grid x grid patch layout, with a leading zero row for CLS.

    The first half of each row encodes the patch's column index, the second half its row index.
    """
    cols, rows = np.meshgrid(np.arange(grid), np.arange(grid))
    table = np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)
    if cls_row:
        table = np.concatenate([np.zeros((1, dim)), table], axis=0)
    return table


class VisionEmbeddings(nn.Module):
    """Patchify (bias-free conv), prepend CLS, add learned positions, then ``pre_layernorm``."""

    def __init__(self, cfg: VisionSettings) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden_size))
        self.patch_embed = nn.Conv2d(
            cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size, bias=False
        )
        self.position_embedding = nn.Parameter(torch.zeros(1, cfg.num_positions, cfg.hidden_size))
        self.pre_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) pixels -> (B, 1 + grid^2, hidden)."""
        patches = self.patch_embed(pixel_values.to(self.patch_embed.weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        tokens = torch.cat([cls, patches], dim=1)
        tokens = tokens + self.position_embedding[:, : tokens.shape[1]]
        return self.pre_layernorm(tokens)


class VisionAttention(nn.Module):
    """Bidirectional self-attention whose fused projection is laid out per head as [q, k, v]."""

    def __init__(self, cfg: VisionSettings) -> None:
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.query_key_value = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, hidden) -> (B, S, hidden)."""
        b, s, _ = x.shape
        # Per-head packing: (B, S, heads, 3, head_dim), not the usual (B, S, 3, heads, head_dim).
        qkv = self.query_key_value(x).view(b, s, self.heads, 3, self.head_dim)
        q, k, v = (qkv[:, :, :, i].transpose(1, 2) for i in range(3))
        ctx = F.scaled_dot_product_attention(q, k, v, scale=self.head_dim**-0.5)
        return self.dense(ctx.transpose(1, 2).reshape(b, s, -1))


class VisionMlp(nn.Module):
    """fc1 -> QuickGELU -> fc2."""

    def __init__(self, cfg: VisionSettings) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., hidden) -> (..., hidden)."""
        return self.fc2(quick_gelu(self.fc1(x)))


class VisionLayer(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg: VisionSettings) -> None:
        super().__init__()
        self.input_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = VisionAttention(cfg)
        self.post_attention_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = VisionMlp(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, hidden) -> (B, S, hidden)."""
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class VisionEncoder(nn.Module):
    """The stack of vision layers (its own module so parameter names match the checkpoint)."""

    def __init__(self, cfg: VisionSettings) -> None:
        super().__init__()
        self.layers = nn.ModuleList(VisionLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, hidden) -> (B, S, hidden)."""
        for layer in self.layers:
            x = layer(x)
        return x


class VisionModel(nn.Module):
    """ViT tower; returns every token (CLS included) after ``post_layernorm``."""

    def __init__(self, cfg: VisionSettings) -> None:
        super().__init__()
        self.embeddings = VisionEmbeddings(cfg)
        self.encoder = VisionEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, 1 + grid^2, hidden)."""
        return self.post_layernorm(self.encoder(self.embeddings(pixel_values)))


class AbstractorAttention(nn.Module):
    """Queries attend to [normed queries; normed vision tokens], keys carrying sin-cos positions.

    ``q_pos_embed`` / ``k_pos_embed`` are persistent buffers: checkpoints store them (in their
    storage dtype) and the stored values are what the reference uses, so they are loaded, not
    recomputed. A fresh model fills them from ``sincos_1d`` / ``sincos_2d`` at initialisation.
    """

    def __init__(self, cfg: AbstractorSettings) -> None:
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.grid = cfg.grid_size
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.encoder_hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.encoder_hidden_size, cfg.hidden_size)
        self.register_buffer(
            "q_pos_embed", torch.zeros(cfg.num_learnable_queries, cfg.hidden_size), persistent=True
        )
        self.register_buffer(
            "k_pos_embed", torch.zeros(cfg.grid_size**2 + 1, cfg.hidden_size), persistent=True
        )

    def sincos_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The tables a fresh model starts with (float32): 1-D over queries, 2-D over patches."""
        dim = self.q_pos_embed.shape[1]
        q = sincos_1d(dim, np.arange(self.q_pos_embed.shape[0]))
        k = sincos_2d(dim, self.grid)
        return torch.from_numpy(q).float(), torch.from_numpy(k).float()

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, queries: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
        """(B, Q, hidden) normed queries and (B, N, enc_hidden) normed vision -> (B, Q, hidden)."""
        kv_in = torch.cat([queries, vision], dim=1)
        pos = torch.cat([self.q_pos_embed, self.k_pos_embed], dim=0).to(kv_in.dtype)
        q = self._heads(self.query(queries + self.q_pos_embed.to(queries.dtype)))
        k = self._heads(self.key(kv_in + pos))
        v = self._heads(self.value(kv_in))
        ctx = F.scaled_dot_product_attention(q, k, v, scale=self.head_dim**-0.5)
        return ctx.transpose(1, 2).reshape(queries.shape[0], queries.shape[1], -1)


class AbstractorMlp(nn.Module):
    """SwiGLU with a LayerNorm (``ffn_ln``, eps = ``layer_norm_eps``) before the down projection."""

    def __init__(self, cfg: AbstractorSettings) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.w2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.w3 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.ffn_ln = nn.LayerNorm(cfg.intermediate_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., hidden) -> (..., hidden)."""
        return self.w2(self.ffn_ln(F.silu(self.w1(x)) * self.w3(x)))


class AbstractorOutput(nn.Module):
    """Output projection plus the residual MLP block."""

    def __init__(self, cfg: AbstractorSettings) -> None:
        super().__init__()
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=TORCH_LAYER_NORM_EPS)
        self.mlp = AbstractorMlp(cfg)

    def forward(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Attention context and the residual stream -> the layer's output queries."""
        out = residual + self.out_proj(context)
        return out + self.mlp(self.norm2(out))


class AbstractorCrossAttention(nn.Module):
    """One abstractor block. The attention residual is the NORMED queries (as the reference)."""

    def __init__(self, cfg: AbstractorSettings) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=TORCH_LAYER_NORM_EPS)
        self.normk = nn.LayerNorm(cfg.encoder_hidden_size, eps=TORCH_LAYER_NORM_EPS)
        self.attention = AbstractorAttention(cfg)
        self.output = AbstractorOutput(cfg)

    def forward(self, queries: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
        """(B, Q, hidden) queries, (B, N, enc_hidden) vision tokens -> (B, Q, hidden)."""
        normed = self.norm1(queries)
        return self.output(self.attention(normed, self.normk(vision)), normed)


class AbstractorLayer(nn.Module):
    """Wrapper whose only child is ``crossattention`` (checkpoint naming)."""

    def __init__(self, cfg: AbstractorSettings) -> None:
        super().__init__()
        self.crossattention = AbstractorCrossAttention(cfg)

    def forward(self, queries: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
        """See ``AbstractorCrossAttention.forward``."""
        return self.crossattention(queries, vision)


class AbstractorEncoder(nn.Module):
    """The stack of abstractor layers."""

    def __init__(self, cfg: AbstractorSettings) -> None:
        super().__init__()
        self.layers = nn.ModuleList(AbstractorLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, queries: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
        """Run every layer on the queries against the same vision tokens."""
        for layer in self.layers:
            queries = layer(queries, vision)
        return queries


class VisualAbstractor(nn.Module):
    """Learned queries -> abstractor layers -> ``visual_fc`` -> append ``vit_eos``."""

    def __init__(self, cfg: AbstractorSettings, language_hidden: int) -> None:
        super().__init__()
        self.query_embeds = nn.Parameter(torch.zeros(1, cfg.num_learnable_queries, cfg.hidden_size))
        self.encoder = AbstractorEncoder(cfg)
        self.visual_fc = nn.Linear(cfg.hidden_size, language_hidden)
        self.vit_eos = nn.Parameter(torch.zeros(1, 1, language_hidden))

    def forward(self, vision: torch.Tensor) -> torch.Tensor:
        """(B, 1 + grid^2, enc_hidden) vision tokens -> (B, queries + 1, language hidden)."""
        queries = self.query_embeds.expand(vision.shape[0], -1, -1)
        out = self.visual_fc(self.encoder(queries, vision))
        return torch.cat([out, self.vit_eos.expand(out.shape[0], -1, -1)], dim=1)
