"""Distortions: a registry of pure, seeded ``uint8 HxWx3 -> uint8 HxWx3`` image distortions.

Holds the four Q-Debias priors (``zoom_blur``, ``spatter``, ``saturate``, ``fog``; Zhu et al.
2024, arXiv:2411.12791) and common IQA ladders. Unless a docstring says otherwise, parameter
tables are the ImageNet-C tables (Hendrycks & Dietterich, ICLR 2019, arXiv:1903.12261; reference
code github.com/hendrycks/robustness), re-implemented here in numpy/scipy/PIL from the published
definitions (no OpenCV, ImageMagick or scikit-image; works on NumPy 2).

Conventions: pixels are processed as floats on [0, 1]; results are clipped to [0, 1] and
converted with ``np.uint8(x * 255)``, i.e. TRUNCATION, like the reference (its outputs are
saved with ``np.uint8``). PIL-based ones (``jpeg``, ``pixelate``) return PIL's own uint8.
Randomness comes only from the ``rng`` argument; :func:`apply_distortion` seeds it from
``sha256(f"{seed_key}|{name}|{severity}")`` so priors are identical across reruns and processes.

``registry`` holds the registry, ``priors`` the Q-Debias priors, ``ladders`` the common IQA
ladders, ``pixels`` their shared pixel helpers. Importing this package registers every built-in.
"""

from __future__ import annotations

from iqa_ray.distortions import ladders as _ladders  # noqa: F401  (registers the IQA ladders)
from iqa_ray.distortions import priors as _priors  # noqa: F401  (registers the Q-Debias priors)
from iqa_ray.distortions.pixels import hsv_to_rgb, plasma_fractal, rgb_to_hsv
from iqa_ray.distortions.registry import (
    DISTORTIONS,
    DistortionInfo,
    apply_distortion,
    distortion_seed,
    get_distortion,
    list_distortions,
    register_distortion,
    validate_image,
)

__all__ = [
    "DISTORTIONS",
    "DistortionInfo",
    "apply_distortion",
    "distortion_seed",
    "get_distortion",
    "hsv_to_rgb",
    "list_distortions",
    "plasma_fractal",
    "register_distortion",
    "rgb_to_hsv",
    "validate_image",
]
