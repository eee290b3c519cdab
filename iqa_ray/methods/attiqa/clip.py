"""A CLIP model that scores images against prompt pairs, with per-instance text-embedding cache.

Loaded once per actor (``from_pretrained`` on a hub id, local folder, or bucket prefix copied to
a node-local cache), bf16 on GPU and float32 on CPU unless configured otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from iqa_ray.backends.config import ModelConfig
from iqa_ray.methods.attiqa.prompts import PromptPair, pair_probabilities

logger = logging.getLogger(__name__)
_INSTALL_HINT = "CLIP scoring needs torch and transformers (core dependencies): pip install -e ."
Dtype = Literal["auto", "float32", "bfloat16", "float16"]


def _pooled(output: Any) -> Any:
    # transformers 5 returns a ModelOutput whose pooler_output is the projected embedding;
    # transformers 4 returned the tensor itself.
    return getattr(output, "pooler_output", output)


class ClipAttributeModel:
    """``CLIPModel`` + ``CLIPProcessor`` with cached, L2-normalised text embeddings.

    Attributes:
        text_encode_calls: forward passes of the text tower so far (a test hook: scoring many
            batches with known prompts must not raise it).
    """

    def __init__(self, source: ModelConfig, dtype: Dtype = "auto") -> None:
        try:
            import torch
            from transformers import CLIPModel, CLIPProcessor
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT) from exc
        from iqa_ray.backends.sources import resolve_model_source
        from iqa_ray.methods.attiqa.network import device_and_dtype

        self._torch = torch
        self.device, self.dtype = device_and_dtype(dtype)
        path = resolve_model_source(source)
        kwargs: dict[str, Any] = {"revision": source.revision} if source.revision else {}
        self.processor = CLIPProcessor.from_pretrained(path, **kwargs)
        self.model = CLIPModel.from_pretrained(path, dtype=self.dtype, **kwargs)
        self.model.to(self.device).eval()
        self.logit_scale = float(self.model.logit_scale.detach().float().exp().cpu())
        self.text_encode_calls = 0
        self._text_cache: dict[str, np.ndarray] = {}
        logger.info("CLIP %s on %s (%s), logit scale %.2f", path, self.device, self.dtype,
                    self.logit_scale)

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings (len(texts), D); texts not seen before are encoded in one pass."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        if missing:
            torch = self._torch
            enc = self.processor.tokenizer(missing, padding=True, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with torch.inference_mode():
                emb = _pooled(self.model.get_text_features(**enc)).float().cpu().numpy()
            self.text_encode_calls += 1
            for text, row in zip(missing, emb, strict=True):
                self._text_cache[text] = row / max(float(np.linalg.norm(row)), 1e-12)
        return np.stack([self._text_cache[t] for t in texts])

    def image_embeddings(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Unit-norm embeddings (N, D) of RGB uint8 images (the processor resizes and crops)."""
        torch = self._torch
        rows = []
        for start in range(0, len(images), batch_size):
            chunk = list(images[start : start + batch_size])
            pixels = self.processor(images=chunk, return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                emb = _pooled(self.model.get_image_features(
                    pixel_values=pixels.to(self.device, self.dtype)))
            rows.append(emb.float().cpu().numpy())
        width = int(self.model.config.projection_dim)
        out = np.concatenate(rows) if rows else np.zeros((0, width), dtype=np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def pair_probabilities(
        self, images: Sequence[np.ndarray], pairs: Sequence[PromptPair],
        logit_scale: float | None = None,
    ) -> np.ndarray:
        """P(positive) for every (image, pair): (len(images), len(pairs)), float64."""
        positive = self.text_embeddings([p.positive for p in pairs])
        negative = self.text_embeddings([p.negative for p in pairs])
        scale = self.logit_scale if logit_scale is None else logit_scale
        return pair_probabilities(self.image_embeddings(images), positive, negative, scale)
