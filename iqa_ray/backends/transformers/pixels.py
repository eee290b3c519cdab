"""A model's image preprocessing split in two: the geometry (resize, crop, pad to square) as pure
uint8 work that the CPU decode stage can run, and the normalisation, which the score actor runs
on the device.

A ``PixelPlan`` exists only where the split is exact: the processor's own code does the
geometry, and giving the processor an image it has already brought to its input size leaves
that image unchanged (a same-size resize and a full-size crop are identities), so pixels equal
the processor's own output (bit for bit through the processor, to float rounding through the
device normalisation). Processors that tile or crop by aspect ratio (LLaVA-OneVision anyres,
Qwen2-VL, mPLUG-Owl3) have no plan: their images reach the score actor as decoded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.sources import local_model_path

# Files a processor loads (never the weights): what a CPU node copies from a bucket model.
PROCESSOR_FILES = ("*.json", "*.txt", "*.model", "*.jinja")


@dataclass(frozen=True)
class PixelPlan:
    """How a model turns an RGB uint8 image into pixels, as geometry then normalisation.

    Attributes:
        geometry: uint8 (H, W, 3) -> uint8 (h, w, 3) at the model's input size, with the
            processor's own resize and crop.
        size: (h, w) of every image the geometry returns.
        scale: the processor's rescale factor (1/255).
        mean, std: per-channel normalisation after rescaling.
    """

    geometry: Callable[[np.ndarray], np.ndarray]
    size: tuple[int, int]
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def ready(self, images: Sequence[np.ndarray]) -> bool:
        """Whether every image already has the model's input geometry (uint8, ``size``)."""
        return all(
            im.dtype == np.uint8 and im.ndim == 3 and tuple(im.shape[:2]) == self.size
            for im in images
        )

    def normalize(self, images: Sequence[np.ndarray], device: str, dtype: torch.dtype) -> Any:
        """uint8 (h, w, 3) images -> (n, 3, h, w) pixels on ``device`` in ``dtype``: one small
        uint8 copy to the device (pinned and asynchronous on CUDA), the arithmetic there."""
        batch = torch.from_numpy(np.stack(images))
        if device == "cuda":
            batch = batch.pin_memory().to(device, non_blocking=True)
        x = batch.permute(0, 3, 1, 2).to(torch.float32).mul_(self.scale)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std).to(dtype)


def standard_plan(image_processor: Any) -> PixelPlan | None:
    """The plan of a transformers image processor whose pipeline is resize, centre crop,
    rescale, normalise (a backend's own ``_preprocess``, PIL or torchvision, no padding); None
    otherwise."""
    from transformers import image_processing_backends as backends

    kinds = [getattr(backends, name, None) for name in ("PilBackend", "TorchvisionBackend")]
    base = next((k for k in kinds if k is not None and isinstance(image_processor, k)), None)
    if base is None or type(image_processor)._preprocess is not base._preprocess:
        return None  # a processor with its own steps (tiling, patching, padding)
    ip = image_processor
    if getattr(ip, "do_pad", False) or not (ip.do_rescale and ip.do_normalize):
        return None
    geometry = _geometry_of(ip)
    probe = geometry(np.zeros((37, 53, 3), np.uint8))  # the output size, whatever the input
    return PixelPlan(geometry, (int(probe.shape[0]), int(probe.shape[1])),
                     float(ip.rescale_factor), channel_triple(ip.image_mean),
                     channel_triple(ip.image_std))


def _geometry_of(ip: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The processor's own resize and crop, without rescaling or normalising: uint8 stays."""

    def geometry(image: np.ndarray) -> np.ndarray:
        chw = ip([image], do_rescale=False, do_normalize=False)["pixel_values"][0]
        chw = chw.cpu().numpy() if hasattr(chw, "cpu") else np.asarray(chw)
        return np.ascontiguousarray(np.transpose(chw.astype(np.uint8), (1, 2, 0)))

    return geometry


def channel_triple(values: Any) -> tuple[float, float, float]:
    """Per-channel values (mean, std) as three floats; one number stands for all three."""
    a, b, c = (float(v) for v in (values if isinstance(values, Sequence) else [values] * 3))
    return a, b, c


def processor_source(cfg: ModelConfig) -> str:
    """Where a CPU node reads the processor: a hub id or folder as is; a bucket model's
    processor files only (never its weights), copied once per node."""
    return local_model_path(cfg.id, cfg.storage_options, cfg.cache_dir, PROCESSOR_FILES)


def load_pixel_plan(cfg: ModelConfig) -> PixelPlan | None:
    """The plan of ``cfg``'s model, from its processor files alone (for the decode stage):
    its native family's, or the generic image processor's; None where the split is not exact.
    """
    from transformers import AutoImageProcessor

    from iqa_ray.backends.transformers.checkpoint import family_runtime, model_type

    source = processor_source(cfg)
    runtime = family_runtime(model_type(source, cfg.revision))
    if runtime is not None:
        loader = getattr(runtime, "pixel_plan", None)
        return loader(source, cfg.revision) if loader is not None else None
    kwargs: dict[str, Any] = {"revision": cfg.revision} if cfg.revision else {}
    # The default backend choice, as the score actor's AutoProcessor makes it: the geometry
    # must be the one its own processor would apply.
    return standard_plan(AutoImageProcessor.from_pretrained(source, **kwargs))


def ready_pixels(plan: PixelPlan | None, images: Sequence[np.ndarray]) -> dict[str, Any] | None:
    """Images that already have the model's geometry, as a processed batch whose pixels the
    device makes (:func:`device_pixels`); None when the processor must run. ``pixel_values``
    holds (3, h, w) uint8 views: what placeholder expansion reads (the shapes)."""
    if plan is None or not images or not plan.ready(images):
        return None
    return {"uint8_images": list(images), "pixel_values": [im.transpose(2, 0, 1) for im in images]}


def device_pixels(plan: PixelPlan, processed: dict[str, Any], device: str,
                  dtype: torch.dtype) -> torch.Tensor:
    """The pixels of a :func:`ready_pixels` batch, normalised on ``device``."""
    return plan.normalize(processed["uint8_images"], device, dtype)
