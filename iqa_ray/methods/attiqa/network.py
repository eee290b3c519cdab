"""The ATTIQA network (a transformers vision backbone, five attribute heads, a quality head) and
its folder format: ``config.json`` (backbone config), ``model.safetensors`` (all weights) and
``attiqa.json`` (metadata: attributes, input size, normalisation, MOS scaling, training record).

Imports torch at module level: import it only where torch is installed (actors, workers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from iqa_ray.errors import ConfigError
from iqa_ray.methods.attiqa.backbone import BackboneSpec
from iqa_ray.methods.attiqa.prompts import ATTRIBUTES

META_FILE = "attiqa.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def device_and_dtype(dtype: str = "auto") -> tuple[str, torch.dtype]:
    """("cuda" or "cpu", torch dtype); ``auto`` is bfloat16 on GPU and float32 on CPU."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    choice = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    return device, choice.get(dtype, torch.bfloat16 if device == "cuda" else torch.float32)


def build_backbone(spec: BackboneSpec, source: str | None = None) -> nn.Module:
    """``AutoModel`` from pretrained weights (``source``: a resolved local path or hub id) or
    from ``AutoConfig.for_model(model_type, **config)`` with random init."""
    from transformers import AutoConfig, AutoModel

    if source is not None:
        return AutoModel.from_pretrained(source)
    return AutoModel.from_config(AutoConfig.for_model(spec.model_type, **spec.config))


def feature_dim(config: Any) -> int:
    """Width of the pooled features: ``hidden_sizes[-1]`` (CNNs) or ``hidden_size`` (ViTs)."""
    sizes = getattr(config, "hidden_sizes", None)
    if sizes:
        return int(sizes[-1])
    if getattr(config, "hidden_size", None):
        return int(config.hidden_size)
    raise ConfigError(f"cannot tell the feature width of backbone {type(config).__name__}")


def _head(dim: int, hidden: int) -> nn.Module:
    if hidden == 0:
        return nn.Linear(dim, 1)
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))


class AttiqaNetwork(nn.Module):
    """Backbone -> pooled features -> one head per attribute and a quality head.

    Input: uint8 pixels (B, S, S, 3); normalisation happens inside, so callers never disagree
    on it. Output: attribute scores (B, 5) and quality (B,), unbounded (only the order of the
    attribute outputs is trained).
    """

    def __init__(self, backbone: nn.Module, head_hidden: int = 0,
                 mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        dim = feature_dim(backbone.config)
        self.backbone = backbone
        self.attribute_heads = nn.ModuleDict({a: _head(dim, head_hidden) for a in ATTRIBUTES})
        self.quality_head = _head(dim, head_hidden)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (B, D) of uint8 NHWC pixels."""
        x = pixels.permute(0, 3, 1, 2).to(self.mean.dtype) / 255.0
        x = ((x - self.mean) / self.std).to(next(self.backbone.parameters()).dtype)
        out = self.backbone(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:  # token models without a pooler: mean over tokens
            pooled = out.last_hidden_state.mean(dim=1)
        return pooled.flatten(1).float()  # heads stay float32 under a bf16 backbone

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(attribute scores (B, 5), quality (B,)) in float32."""
        feats = self.features(pixels)
        attributes = torch.cat([self.attribute_heads[a](feats) for a in ATTRIBUTES], dim=1)
        return attributes.float(), self.quality_head(feats).squeeze(1).float()


def network_from_metadata(folder: Path, meta: dict[str, Any]) -> AttiqaNetwork:
    """An untrained network with the architecture recorded in a saved folder."""
    from transformers import AutoConfig, AutoModel

    backbone = AutoModel.from_config(AutoConfig.from_pretrained(folder))
    return AttiqaNetwork(backbone, int(meta["head_hidden"]), tuple(meta["mean"]),
                         tuple(meta["std"]))


def save_network(net: AttiqaNetwork, folder: str | Path, meta: dict[str, Any]) -> None:
    """Write the backbone config, every weight and the metadata into a local folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    net.backbone.config.save_pretrained(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    meta = {**meta, "format_version": FORMAT_VERSION, "attributes": list(ATTRIBUTES)}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """The ``attiqa.json`` of a saved folder; ConfigError if it is not an ATTIQA model."""
    path = Path(folder) / META_FILE
    if not path.exists():
        raise ConfigError(f"{folder} is not an ATTIQA model folder (no {META_FILE})")
    meta = json.loads(path.read_text())
    if meta.get("attributes") != list(ATTRIBUTES):
        raise ConfigError(f"{folder}: attributes {meta.get('attributes')} != {list(ATTRIBUTES)}")
    return meta


def load_network(folder: str | Path, device: str = "cpu",
                 dtype: torch.dtype = torch.float32) -> tuple[AttiqaNetwork, dict[str, Any]]:
    """Load a saved folder (strict: every weight must match) onto ``device`` in eval mode."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = read_metadata(folder)
    net = network_from_metadata(folder, meta)
    net.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
    net.backbone.to(dtype)
    return net.to(device).eval(), meta


def quality_from_outputs(attributes: np.ndarray, quality: np.ndarray,
                         meta: dict[str, Any]) -> np.ndarray:
    """Overall score: the MOS-scaled quality head after fine-tuning, else the attribute mean."""
    if meta.get("quality_trained"):
        return quality * float(meta["mos_std"]) + float(meta["mos_mean"])
    return attributes.mean(axis=1)
