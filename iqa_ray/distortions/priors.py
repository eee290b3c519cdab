"""The four Q-Debias priors (Zhu et al. 2024, arXiv:2411.12791): ImageNet-C ``zoom_blur``,
``spatter``, ``saturate`` and ``fog`` (Hendrycks & Dietterich, ICLR 2019, arXiv:1903.12261;
reference code github.com/hendrycks/robustness), re-implemented in numpy/scipy from the published
definitions (no OpenCV). Parameter tables are the ImageNet-C tables, next to each function.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from iqa_ray.distortions.pixels import (
    add_clipped_zoom,
    map_hsv,
    plasma_fractal,
    to_float,
    to_uint8,
    water_mask,
)
from iqa_ray.distortions.registry import register_distortion


@register_distortion(
    "zoom_blur",
    levels=[
        {"start": 1.0, "stop": 1.11, "step": 0.01},
        {"start": 1.0, "stop": 1.16, "step": 0.01},
        {"start": 1.0, "stop": 1.21, "step": 0.02},
        {"start": 1.0, "stop": 1.26, "step": 0.02},
        {"start": 1.0, "stop": 1.31, "step": 0.03},
    ],
    description="ImageNet-C zoom blur: mean of the image and its centre zooms by np.arange(...)",
    random=False,
    monotone=True,
)
def zoom_blur(
    img: np.ndarray, *, rng: np.random.Generator, start: float, stop: float, step: float
) -> np.ndarray:
    """ImageNet-C zoom blur: ``(x + sum_z zoom_z(x)) / (n + 1)``, z = ``arange(start, stop, step)``.

    Each zoom is the bilinear (``scipy.ndimage.zoom(order=1)`` grid) enlargement of the centre
    crop. Deviations: both axes are cropped and trimmed, so non-square images work (the
    reference crops a square of the height); only the kept output pixels are interpolated.
    """
    x = to_float(img, np.float32)
    factors = np.arange(start, stop, step)
    # Accumulate in float32 in the reference's order (zooms first, then + x) so the
    # truncated uint8 output matches it bit for bit on square images.
    zooms = np.zeros_like(x)
    for factor in factors:
        add_clipped_zoom(x, float(factor), zooms)
    return to_uint8((x + zooms) / np.float32(len(factors) + 1))


@register_distortion(
    "spatter",
    levels=[
        {"loc": 0.65, "scale": 0.3, "sigma": 4, "threshold": 0.69, "intensity": 0.6, "mode": 0},
        {"loc": 0.65, "scale": 0.3, "sigma": 3, "threshold": 0.68, "intensity": 0.6, "mode": 0},
        {"loc": 0.65, "scale": 0.3, "sigma": 2, "threshold": 0.68, "intensity": 0.5, "mode": 0},
        {"loc": 0.65, "scale": 0.3, "sigma": 1, "threshold": 0.65, "intensity": 1.5, "mode": 1},
        {"loc": 0.67, "scale": 0.4, "sigma": 1, "threshold": 0.65, "intensity": 1.5, "mode": 1},
    ],
    description="ImageNet-C spatter: water drops (severity 1-3) or mud (4-5)",
    random=True,
)
def spatter(
    img: np.ndarray,
    *,
    rng: np.random.Generator,
    loc: float,
    scale: float,
    sigma: float,
    threshold: float,
    intensity: float,
    mode: int,
) -> np.ndarray:
    """ImageNet-C spatter: liquid ~ N(loc, scale) per pixel, smoothed, zeroed below ``threshold``.

    Water (mode 0): ``out = clip(x + m * (175, 238, 238) / 255)`` with ``m`` the embossed mask of
    :func:`water_mask` scaled to max ``intensity`` (an additive blend, as the reference). Mud
    (mode 1): mask ``liquid > threshold`` blurred with sigma ``intensity``, values < 0.8 zeroed,
    ``out = x * (1 - m) + m * (63, 42, 20) / 255``. Deviation: see :func:`water_mask`; where no
    liquid survives the threshold the reference divides by zero (NaN), here the image is kept.
    """
    x = to_float(img, np.float32)
    liquid = rng.normal(loc, scale, size=img.shape[:2])
    liquid = ndimage.gaussian_filter(liquid, sigma, mode="nearest")
    liquid[liquid < threshold] = 0.0
    if int(mode) == 0:
        m = water_mask(liquid)
        peak = m.max()
        if peak <= 0:
            return img.copy()
        m = (m / peak * intensity)[..., None]
        return to_uint8(x + m * (np.array([175.0, 238.0, 238.0]) / 255.0))
    m = ndimage.gaussian_filter((liquid > threshold).astype(np.float32), intensity, mode="nearest")
    m[m < 0.8] = 0.0
    m = m[..., None]
    return to_uint8(x * (1.0 - m) + m * (np.array([63.0, 42.0, 20.0]) / 255.0))


@register_distortion(
    "saturate",
    levels=[
        {"scale": 0.3, "shift": 0.0},
        {"scale": 0.1, "shift": 0.0},
        {"scale": 2.0, "shift": 0.0},
        {"scale": 5.0, "shift": 0.1},
        {"scale": 20.0, "shift": 0.2},
    ],
    description="ImageNet-C saturate: HSV S <- clip(S * scale + shift); not a monotone ladder",
    random=False,
)
def saturate(
    img: np.ndarray, *, rng: np.random.Generator, scale: float, shift: float
) -> np.ndarray:
    """ImageNet-C saturate: in HSV, ``S <- clip(S * scale + shift, 0, 1)``.

    Severities 1-2 desaturate and 3-5 oversaturate, as in the reference table.
    """
    return map_hsv(img, 1, scale, shift)


@register_distortion(
    "fog",
    levels=[
        {"strength": 1.5, "wibble_decay": 2.0},
        {"strength": 2.0, "wibble_decay": 2.0},
        {"strength": 2.5, "wibble_decay": 1.7},
        {"strength": 2.5, "wibble_decay": 1.5},
        {"strength": 3.0, "wibble_decay": 1.4},
    ],
    description="ImageNet-C fog: add a diamond-square plasma fractal, rescale",
    random=True,
)
def fog(
    img: np.ndarray, *, rng: np.random.Generator, strength: float, wibble_decay: float
) -> np.ndarray:
    """ImageNet-C fog: ``clip((x + c0 * plasma) * max(x) / (max(x) + c0), 0, 1)``.

    Deviation: the fractal side is the next power of two >= max(h, w) (the reference uses a
    fixed 256 and crops 224), cropped to h x w; the fractal is drawn from ``rng``.
    """
    x = to_float(img)
    h, w = img.shape[:2]
    mapsize = max(2, 1 << (max(h, w) - 1).bit_length())
    peak = x.max()
    x = x + strength * plasma_fractal(mapsize, wibble_decay, rng)[:h, :w, None]
    return to_uint8(x * peak / (peak + strength))
