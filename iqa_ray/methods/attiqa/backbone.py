"""What the ATTIQA network is built from and fed, without torch: the backbone spec (a config
section of training) and the input pixels (shorter side resized, centre crop)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from pydantic import Field

from iqa_ray.settings import StrictModel


class BackboneSpec(StrictModel):
    """A transformers vision backbone: built from a config (random init) or loaded pretrained."""

    model_type: str = Field("resnet", description="transformers model type (resnet, convnext, "
                            "vit, ...), built with AutoConfig.for_model(model_type, **config).")
    config: dict[str, Any] = Field(default_factory=dict, description="Config keyword arguments.")
    pretrained: str | None = Field(None, description="Hub id, folder or bucket prefix of "
                                   "backbone weights (AutoModel.from_pretrained); overrides "
                                   "model_type/config.")


def prepare_pixels(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (bicubic) and centre-crop: -> uint8 (B, S, S, 3)."""
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        h, w = image.shape[:2]
        scale = size / min(h, w)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        pil = Image.fromarray(np.ascontiguousarray(image))
        if (nw, nh) != (w, h):
            pil = pil.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        out[i] = np.asarray(pil.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return out
