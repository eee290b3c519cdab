"""Common IQA ladders (blur, noise, compression, pixelation, contrast, brightness, colour),
five severities each; ImageNet-C tables unless a docstring says otherwise.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from iqa_ray.distortions.pixels import (
    disk_kernel,
    filter_reflect,
    map_hsv,
    to_float,
    to_uint8,
)
from iqa_ray.distortions.registry import ParamValue, register_distortion


def _levels(key: str, values: Sequence[ParamValue]) -> list[dict[str, ParamValue]]:
    return [{key: value} for value in values]


@register_distortion(
    "gaussian_blur",
    levels=_levels("sigma", [1, 2, 3, 4, 6]),
    description="ImageNet-C Gaussian blur (sigma in pixels, nearest-edge borders)",
    random=False,
    monotone=True,
)
def gaussian_blur(img: np.ndarray, *, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """ImageNet-C Gaussian blur: per-channel Gaussian, truncated at 4 sigma, edge-replicated."""
    return to_uint8(ndimage.gaussian_filter(to_float(img), (sigma, sigma, 0), mode="nearest"))


@register_distortion(
    "motion_blur",
    levels=[
        {"radius": 10, "sigma": 3, "angle": 0.0},
        {"radius": 15, "sigma": 5, "angle": 0.0},
        {"radius": 15, "sigma": 8, "angle": 0.0},
        {"radius": 15, "sigma": 12, "angle": 0.0},
        {"radius": 20, "sigma": 15, "angle": 0.0},
    ],
    description="ImageNet-C motion blur (one-sided Gaussian streak), fixed angle in degrees",
    random=False,
    monotone=True,
)
def motion_blur(
    img: np.ndarray, *, rng: np.random.Generator, radius: int, sigma: float, angle: float
) -> np.ndarray:
    """Motion blur in the manner of ImageMagick's ``-motion-blur radius x sigma + angle``.

    Output = sum_i k_i * x(p + round(i * (sin a, cos a))) for i in 0..2*radius, with
    ``k_i ~ exp(-i^2 / (2 sigma^2))`` normalised; borders replicate edge pixels.
    Deviation: ImageNet-C draws the angle from U(-45, 45) per image; here it is a fixed
    table value (0 = horizontal streak) so the ladder is monotone and needs no rng.
    """
    steps = np.arange(2 * int(radius) + 1)
    weights = np.exp(-(steps**2) / (2.0 * sigma**2))
    weights /= weights.sum()
    theta = math.radians(angle)
    dy = np.rint(steps * math.sin(theta)).astype(int)
    dx = np.rint(steps * math.cos(theta)).astype(int)
    py, px = int(np.abs(dy).max()), int(np.abs(dx).max())
    padded = np.pad(to_float(img, np.float32), ((py, py), (px, px), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    out = np.zeros((h, w, 3), np.float32)
    for k, oy, ox in zip(weights, dy, dx, strict=True):
        out += np.float32(k) * padded[py + oy : py + oy + h, px + ox : px + ox + w]
    return to_uint8(out)


@register_distortion(
    "defocus_blur",
    levels=[
        {"radius": 3, "alias_blur": 0.1},
        {"radius": 4, "alias_blur": 0.5},
        {"radius": 6, "alias_blur": 0.5},
        {"radius": 8, "alias_blur": 0.5},
        {"radius": 10, "alias_blur": 0.5},
    ],
    description="ImageNet-C defocus blur: anti-aliased disk kernel",
    random=False,
    monotone=True,
)
def defocus_blur(
    img: np.ndarray, *, rng: np.random.Generator, radius: float, alias_blur: float
) -> np.ndarray:
    """ImageNet-C defocus blur: filter with a Gaussian-smoothed disk, reflect-101 borders.

    Deviation: the filtering is done by FFT instead of ``cv2.filter2D`` (same result up to
    floating-point rounding).
    """
    return to_uint8(filter_reflect(to_float(img), disk_kernel(radius, alias_blur)))


@register_distortion(
    "gaussian_noise",
    levels=_levels("sigma", [0.08, 0.12, 0.18, 0.26, 0.38]),
    description="ImageNet-C additive Gaussian noise (sigma on the [0, 1] scale)",
    random=True,
    monotone=True,
)
def gaussian_noise(img: np.ndarray, *, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """ImageNet-C Gaussian noise: ``x + N(0, sigma)`` per channel value."""
    x = to_float(img)
    return to_uint8(x + rng.normal(0.0, sigma, size=x.shape))


@register_distortion(
    "shot_noise",
    levels=_levels("photons", [60, 25, 12, 5, 3]),
    description="ImageNet-C shot (Poisson) noise: Poisson(x * photons) / photons",
    random=True,
    monotone=True,
)
def shot_noise(img: np.ndarray, *, rng: np.random.Generator, photons: float) -> np.ndarray:
    """ImageNet-C shot noise: ``Poisson(x * photons) / photons`` per channel value."""
    return to_uint8(rng.poisson(to_float(img) * photons) / photons)


@register_distortion(
    "impulse_noise",
    levels=_levels("amount", [0.03, 0.06, 0.09, 0.17, 0.27]),
    description="ImageNet-C impulse (salt and pepper) noise: fraction of values set to 0 or 1",
    random=True,
    monotone=True,
)
def impulse_noise(img: np.ndarray, *, rng: np.random.Generator, amount: float) -> np.ndarray:
    """ImageNet-C impulse noise: each channel value is replaced with probability ``amount``
    by 0 or 255 (equal odds), like ``skimage.util.random_noise(mode="s&p")`` on an RGB array.
    """
    hit = rng.random(img.shape) < amount
    salt = rng.random(img.shape) < 0.5
    return np.where(hit, np.where(salt, 255, 0), img).astype(np.uint8)


@register_distortion(
    "jpeg",
    levels=_levels("quality", [25, 18, 15, 10, 7]),
    description="ImageNet-C JPEG compression (PIL encoder, quality ladder)",
    random=False,
    monotone=True,
)
def jpeg(img: np.ndarray, *, rng: np.random.Generator, quality: int) -> np.ndarray:
    """ImageNet-C JPEG compression: encode with PIL at ``quality`` (default 4:2:0) and decode."""
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8).copy()


@register_distortion(
    "pixelate",
    levels=_levels("block", [2, 3, 4, 6, 8]),
    description="Pixelation: PIL box downscale by the block size, box upscale back",
    random=False,
    monotone=True,
)
def pixelate(img: np.ndarray, *, rng: np.random.Generator, block: int) -> np.ndarray:
    """Pixelate as ImageNet-C does (PIL BOX down, BOX back up), with integer block sizes.

    Deviation: ImageNet-C scales by factors (0.6, 0.5, 0.4, 0.3, 0.25), which is not a monotone
    ladder: at 0.5 the box upscale restores exact 2x2 block means, so severity 2 has a higher
    PSNR than severity 1 on every image we tried. Here the small side is
    ``round(side / block)`` (at least 1), i.e. block sizes 2, 3, 4, 6, 8 pixels.
    """
    h, w = img.shape[:2]
    small = (max(1, round(w / block)), max(1, round(h / block)))
    pil = Image.fromarray(img).resize(small, Image.Resampling.BOX)
    return np.asarray(pil.resize((w, h), Image.Resampling.BOX), dtype=np.uint8).copy()


@register_distortion(
    "contrast",
    levels=_levels("factor", [0.4, 0.3, 0.2, 0.1, 0.05]),
    description="ImageNet-C contrast decrease towards the per-channel mean",
    random=False,
    monotone=True,
)
def contrast(img: np.ndarray, *, rng: np.random.Generator, factor: float) -> np.ndarray:
    """ImageNet-C contrast: ``(x - mean) * factor + mean`` with per-channel image means."""
    x = to_float(img)
    means = x.mean(axis=(0, 1), keepdims=True)
    return to_uint8((x - means) * factor + means)


@register_distortion(
    "brightness",
    levels=_levels("shift", [0.1, 0.2, 0.3, 0.4, 0.5]),
    description="ImageNet-C brightness increase: HSV V <- clip(V + shift)",
    random=False,
    monotone=True,
)
def brightness(img: np.ndarray, *, rng: np.random.Generator, shift: float) -> np.ndarray:
    """ImageNet-C brightness: in HSV, ``V <- clip(V + shift, 0, 1)``."""
    return map_hsv(img, 2, 1.0, shift)


@register_distortion(
    "darken",
    levels=_levels("shift", [0.1, 0.2, 0.3, 0.4, 0.5]),
    description="Brightness decrease, mirror of ImageNet-C brightness: HSV V <- clip(V - shift)",
    random=False,
    monotone=True,
)
def darken(img: np.ndarray, *, rng: np.random.Generator, shift: float) -> np.ndarray:
    """Project ladder (not in ImageNet-C): in HSV, ``V <- clip(V - shift, 0, 1)``."""
    return map_hsv(img, 2, 1.0, -shift)


@register_distortion(
    "desaturate",
    levels=_levels("factor", [0.8, 0.6, 0.4, 0.2, 0.0]),
    description="Colour saturation decrease: HSV S <- S * factor (0 = grey)",
    random=False,
    monotone=True,
)
def desaturate(img: np.ndarray, *, rng: np.random.Generator, factor: float) -> np.ndarray:
    """Project ladder (not in ImageNet-C): in HSV, ``S <- S * factor``; severity 5 is grey (V)."""
    return map_hsv(img, 1, factor, 0.0)
