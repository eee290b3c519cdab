"""SigLIP vision tower of mPLUG-Owl3, built from transformers' SigLIP encoder layers.

Parameter names match the checkpoint (``vision_model.embeddings.*``, ``.encoder.layers.*``,
``.post_layernorm.*``, ``.head.*``); only the layers that feed ``hidden_states[-2]`` are run.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import SiglipVisionConfig
from transformers.models.siglip.modeling_siglip import (
    SiglipEncoder,
    SiglipMultiheadAttentionPoolingHead,
)


class MplugOwl3VisionEmbeddings(nn.Module):
    """Patch convolution plus learned absolute position embeddings (no CLS token).

    Unlike transformers' ``SiglipVisionEmbeddings`` it holds no ``position_ids`` buffer: a
    non-persistent buffer is left uninitialised by the v5 loader unless re-initialised, and the
    full position table is all that is ever added here.
    """

    def __init__(self, config: SiglipVisionConfig) -> None:
        super().__init__()
        self.patch_embedding = nn.Conv2d(
            config.num_channels,
            config.hidden_size,
            kernel_size=config.patch_size,
            stride=config.patch_size,
            padding="valid",
        )
        num_positions = (config.image_size // config.patch_size) ** 2
        self.position_embedding = nn.Embedding(num_positions, config.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) pixels -> (N, (S // patch) ** 2, hidden) patch embeddings."""
        weight = self.patch_embedding.weight
        patches = self.patch_embedding(pixel_values.to(device=weight.device, dtype=weight.dtype))
        embeddings = patches.flatten(2).transpose(1, 2)
        if embeddings.shape[1] != self.position_embedding.num_embeddings:
            raise ValueError(
                f"crop gives {embeddings.shape[1]} patches, the position table has "
                f"{self.position_embedding.num_embeddings}: pixel size does not match image_size"
            )
        return embeddings + self.position_embedding.weight.unsqueeze(0)


class MplugOwl3VisionTower(nn.Module):
    """SigLIP vision transformer returning one intermediate hidden state per crop.

    Args:
        config: the SigLIP vision config (``MplugOwl3Config.vision_config``).
        feature_layer: index into SigLIP's ``hidden_states`` tuple (embeddings, layer 1, ...,
            layer L); the reference uses -2, so the last layer is never run here.
    """

    def __init__(self, config: SiglipVisionConfig, feature_layer: int = -2) -> None:
        super().__init__()
        self.config = config
        self.embeddings = MplugOwl3VisionEmbeddings(config)
        self.encoder = SiglipEncoder(config)
        # Loaded so that the checkpoint maps one-to-one, never used by the reference's scoring.
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        if config.vision_use_head:
            self.head = SiglipMultiheadAttentionPoolingHead(config)
        num_states = config.num_hidden_layers + 1
        index = feature_layer if feature_layer >= 0 else num_states + feature_layer
        if not 0 <= index < num_states:
            raise ValueError(f"feature_layer {feature_layer} out of range for {num_states} states")
        self.num_layers_run = index

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) normalised crops -> (N, tokens, hidden) features of ``feature_layer``."""
        hidden = self.embeddings(pixel_values)
        for layer in self.encoder.layers[: self.num_layers_run]:
            hidden = layer(hidden, None)
        return hidden
