"""Distortion registry and pure, seeded ``uint8 HxWx3 -> uint8 HxWx3`` image distortions.

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
The module is longer than the 300-line budget because each table lives next to its function.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from iqa_ray.errors import ConfigError

DistortionFn = Callable[..., np.ndarray]
ParamValue = float | int | tuple[float, ...]


@dataclass(frozen=True)
class DistortionInfo:
    """A registered distortion: its function, per-severity parameter tables and metadata.

    Attributes:
        name: registry name (lower snake_case).
        fn: pure ``fn(img, *, rng, **params) -> img`` on uint8 HxWx3 arrays.
        levels: ``levels[k - 1]`` holds the keyword parameters of severity ``k``.
        description: one line for listings and docs.
        random: whether the output depends on ``rng`` (else ``rng`` is ignored).
        monotone: whether strength rises with severity (PSNR to the input does not increase);
            false for tables that are not a ladder, e.g. ImageNet-C ``saturate``.
    """

    name: str
    fn: DistortionFn
    levels: tuple[dict[str, ParamValue], ...]
    description: str
    random: bool
    monotone: bool = False

    @property
    def n_levels(self) -> int:
        """Number of severities; valid severities are ``1..n_levels``."""
        return len(self.levels)

    def params(self, severity: int) -> dict[str, ParamValue]:
        """Copy of the parameter table of ``severity``; raises ``ConfigError`` if it is invalid."""
        if isinstance(severity, bool) or not isinstance(severity, int | np.integer):
            raise ConfigError(f"severity of {self.name!r} must be an int, got {severity!r}")
        if not 1 <= severity <= self.n_levels:
            raise ConfigError(
                f"severity of {self.name!r} must be in 1..{self.n_levels}, got {severity}"
            )
        return dict(self.levels[int(severity) - 1])


DISTORTIONS: dict[str, DistortionInfo] = {}


def register_distortion(
    name: str,
    *,
    levels: Sequence[Mapping[str, ParamValue]],
    description: str,
    random: bool,
    monotone: bool = False,
) -> Callable[[DistortionFn], DistortionFn]:
    """Register ``fn`` under ``name`` with one parameter table per severity (``levels[k - 1]``).

    Raises:
        ValueError: duplicate name, no levels, or levels with different parameter names.
    """
    if name in DISTORTIONS:
        raise ValueError(f"distortion {name!r} is already registered")
    tables = tuple(dict(level) for level in levels)
    if not tables or any(set(t) != set(tables[0]) for t in tables):
        raise ValueError(f"distortion {name!r} needs levels that share one set of parameters")

    def decorator(fn: DistortionFn) -> DistortionFn:
        DISTORTIONS[name] = DistortionInfo(name, fn, tables, description, random, monotone)
        return fn

    return decorator


def get_distortion(name: str) -> DistortionInfo:
    """Look a distortion up by name; raises ``ConfigError`` with a did-you-mean hint."""
    if name in DISTORTIONS:
        return DISTORTIONS[name]
    close = difflib.get_close_matches(name, list(DISTORTIONS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown distortion {name!r}{hint} Known: {', '.join(list_distortions())}")


def list_distortions() -> list[str]:
    """Sorted names of all registered distortions."""
    return sorted(DISTORTIONS)


def distortion_seed(seed_key: str | int, name: str, severity: int) -> int:
    """Stable 64-bit seed for one (image, distortion, severity).

    The seed is the first 8 bytes, big-endian, of ``sha256(f"{seed_key}|{name}|{severity}")``
    (UTF-8). ``seed_key`` is formatted with ``str()``, so ``7`` and ``"7"`` give the same seed.
    """
    digest = hashlib.sha256(f"{seed_key}|{name}|{int(severity)}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def validate_image(img: object) -> None:
    """Raise ``ValueError`` unless ``img`` is a non-empty uint8 array of shape HxWx3."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 numpy array, got {getattr(img, 'dtype', type(img))}")
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"expected an HxWx3 image, got shape {img.shape}")


def apply_distortion(
    img: np.ndarray, name: str, severity: int, *, seed_key: str | int
) -> np.ndarray:
    """Apply ``name`` at ``severity`` with an rng seeded from ``(seed_key, name, severity)``.

    Raises:
        ValueError: ``img`` is not uint8 HxWx3.
        ConfigError: unknown name or severity out of ``1..n_levels``.
    """
    validate_image(img)
    info = get_distortion(name)
    params = info.params(severity)
    rng = np.random.default_rng(distortion_seed(seed_key, name, severity))
    return info.fn(img, rng=rng, **params)


# ----------------------------------------------------------------------------- helpers


def _to_float(
    img: np.ndarray, dtype: type[np.float32] | type[np.float64] = np.float64
) -> np.ndarray:
    return img.astype(dtype) / dtype(255.0)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] and truncate to uint8, as the reference's ``np.uint8(x * 255)``."""
    return (np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """Vectorised RGB -> HSV on [0, 1] (hexcone model, same formulas as ``colorsys``)."""
    r, g, b = (np.ascontiguousarray(rgb[..., c], dtype=np.float64) for c in range(3))
    v = np.maximum(np.maximum(r, g), b)
    delta = v - np.minimum(np.minimum(r, g), b)
    s = np.divide(delta, v, out=np.zeros_like(v), where=v > 0)
    d = np.where(delta > 0, delta, 1.0)
    h = np.where(r == v, (g - b) / d, np.where(g == v, 2.0 + (b - r) / d, 4.0 + (r - g) / d))
    h = np.where(delta > 0, h / 6.0, 0.0)
    h[h < 0] += 1.0  # h / 6 lies in [-1/6, 5/6): this is h % 1 without the slow fmod
    return np.stack([h, s, v], axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB on [0, 1], inverse of :func:`rgb_to_hsv` (six-sector formulas)."""
    h, s, v = (np.asarray(hsv[..., c], dtype=np.float64) for c in range(3))
    sector = np.floor(h * 6.0)
    f = h * 6.0 - sector
    i = sector.astype(np.intp) % 6
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    out = np.empty((*hsv.shape[:-1], 3), dtype=np.float64)
    out[..., 0] = np.choose(i, (v, q, p, p, t, v))
    out[..., 1] = np.choose(i, (t, v, v, q, p, p))
    out[..., 2] = np.choose(i, (p, p, t, v, v, q))
    return out


def _map_hsv(img: np.ndarray, channel: int, scale: float, shift: float) -> np.ndarray:
    """``HSV[channel] <- clip(HSV[channel] * scale + shift, 0, 1)`` (ImageNet-C colour ops)."""
    hsv = rgb_to_hsv(_to_float(img))
    hsv[..., channel] = np.clip(hsv[..., channel] * scale + shift, 0.0, 1.0)
    return _to_uint8(hsv_to_rgb(hsv))


def _zoom_taps(n: int, factor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear-interpolation taps of one axis of the clipped zoom, in input coordinates.

    The centre ``ceil(n / factor)`` crop is resized to ``round(crop * factor)`` samples on
    ``scipy.ndimage.zoom``'s corner-aligned grid (``pos = k * (crop - 1) / (zoomed - 1)``) and
    the centre ``n`` samples are kept. Returns (low index, high index, weight of high).
    """
    n_crop = math.ceil(n / factor)
    top = (n - n_crop) // 2
    # round(n_crop * factor) >= n always holds; the max() only guards the slice length.
    n_zoomed = max(round(n_crop * factor), n)
    step = (n_crop - 1) / (n_zoomed - 1) if n_zoomed > 1 else 0.0
    pos = np.arange((n_zoomed - n) // 2, (n_zoomed - n) // 2 + n, dtype=np.float64) * step
    low = np.clip(np.floor(pos).astype(np.intp), 0, max(n_crop - 2, 0))
    return low + top, np.minimum(low + 1, n_crop - 1) + top, pos - low


def _add_clipped_zoom(x: np.ndarray, factor: float, out: np.ndarray, chunk: int = 32) -> None:
    """``out += clipped_zoom(x, factor)``: bilinear zoom of the centre crop, trimmed to h x w.

    Interpolates in float64 and rounds to float32 like ``scipy.ndimage.zoom(order=1)`` on a
    float32 image (bit-identical in our tests), but separably, only for the pixels kept, and
    in row chunks that stay in cache (about 3x faster than ``ndimage.zoom`` at 1000 px).
    """
    (y_lo, y_hi, y_w), (x_lo, x_hi, x_w) = (_zoom_taps(n, factor) for n in x.shape[:2])
    y_w, x_w = y_w[:, None, None], x_w[None, :, None]
    for r0 in range(0, x.shape[0], chunk):
        rows = slice(r0, r0 + chunk)
        part = x[y_lo[rows]] * (1.0 - y_w[rows]) + x[y_hi[rows]] * y_w[rows]
        out[rows] += (part[:, x_lo] * (1.0 - x_w) + part[:, x_hi] * x_w).astype(np.float32)


def _disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """Normalised disk of ``radius`` on a grid of half-size ``max(8, radius)``, then smoothed."""
    half = 8 if radius <= 8 else math.ceil(radius)
    grid = np.arange(-half, half + 1, dtype=np.float64)
    disk = (grid[:, None] ** 2 + grid[None, :] ** 2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    # The reference smooths with a 3x3 (5x5 above radius 8) Gaussian window, mirrored borders.
    return ndimage.gaussian_filter(disk, alias_blur, mode="mirror", radius=1 if half == 8 else 2)


def _filter_reflect(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D filtering of each channel by FFT, with reflect-101 borders (OpenCV's default)."""
    ry, rx = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(x, ((ry, ry), (rx, rx), (0, 0)), mode="reflect")
    from scipy import signal  # imported here: it costs most of a stage actor's start-up import

    return signal.fftconvolve(padded, kernel[::-1, ::-1, None], mode="valid", axes=(0, 1))


def plasma_fractal(mapsize: int, wibble_decay: float, rng: np.random.Generator) -> np.ndarray:
    """Toroidal diamond-square height map of side ``mapsize`` (a power of two), scaled to [0, 1].

    As in ImageNet-C, each new point is the mean of its four neighbours plus
    ``wibble * U(-wibble, wibble)``, with ``wibble = 100`` divided by ``wibble_decay`` per octave.
    """
    if mapsize < 2 or mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two >= 2, got {mapsize}")
    grid = np.zeros((mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def noisy_mean(total: np.ndarray) -> np.ndarray:
        return total / 4.0 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = grid[::step, ::step]
        # Square step: the centre of every square from its four corners (wrapping around).
        pair = corners + np.roll(corners, -1, axis=0)
        grid[half::step, half::step] = noisy_mean(pair + np.roll(pair, -1, axis=1))
        centres = grid[half::step, half::step]
        # Diamond step: edge midpoints from the two corners and two centres around them.
        top = corners + np.roll(corners, -1, axis=1) + centres + np.roll(centres, 1, axis=0)
        grid[::step, half::step] = noisy_mean(top)
        left = corners + np.roll(corners, -1, axis=0) + centres + np.roll(centres, 1, axis=1)
        grid[half::step, ::step] = noisy_mean(left)
        step, wibble = half, wibble / wibble_decay
    grid -= grid.min()
    peak = grid.max()
    return grid / peak if peak > 0 else grid


def _equalize_histogram(x: np.ndarray) -> np.ndarray:
    """Histogram equalisation of a uint8 array (textbook CDF mapping, as ``cv2.equalizeHist``)."""
    cdf = np.cumsum(np.bincount(x.ravel(), minlength=256))
    cdf_min = cdf[cdf > 0][0]
    if cdf[-1] == cdf_min:  # a constant image stays as it is
        return x
    lut = np.clip(np.rint((cdf - cdf_min) * 255.0 / (cdf[-1] - cdf_min)), 0, 255)
    return lut.astype(np.uint8)[x]


def _water_mask(liquid: np.ndarray) -> np.ndarray:
    """Embossed distance-to-edge shading of the liquid blobs (ImageNet-C "water" branch).

    Deviation: the reference takes Canny edges of the uint8 liquid layer and OpenCV's 5x5
    approximate distance transform; here the edges are the inner boundary of the thresholded
    blobs (morphological erosion) and the distance is the exact Euclidean one. The remaining
    steps follow the reference: truncate at 20, 3x3 box blur, uint8, histogram equalisation,
    3x3 emboss kernel saturated to uint8, 3x3 box blur.
    """
    blobs = liquid > 0
    edges = blobs & ~ndimage.binary_erosion(blobs, border_value=1)
    if edges.any():
        dist = np.minimum(ndimage.distance_transform_edt(~edges), 20.0)
    else:
        dist = np.full(liquid.shape, 20.0)
    dist = ndimage.uniform_filter(dist, 3, mode="mirror").astype(np.uint8)
    dist = _equalize_histogram(dist).astype(np.float64)
    emboss = np.array([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])
    dist = np.clip(np.rint(ndimage.correlate(dist, emboss, mode="mirror")), 0, 255)
    dist = ndimage.uniform_filter(dist, 3, mode="mirror")
    liquid_u8 = (np.clip(liquid, 0.0, 1.0) * 255.0).astype(np.uint8)
    return liquid_u8 * dist


# ------------------------------------------------------------------ Q-Debias priors


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
    x = _to_float(img, np.float32)
    factors = np.arange(start, stop, step)
    # Accumulate in float32 in the reference's order (zooms first, then + x) so the
    # truncated uint8 output matches it bit for bit on square images.
    zooms = np.zeros_like(x)
    for factor in factors:
        _add_clipped_zoom(x, float(factor), zooms)
    return _to_uint8((x + zooms) / np.float32(len(factors) + 1))


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
    :func:`_water_mask` scaled to max ``intensity`` (an additive blend, as the reference). Mud
    (mode 1): mask ``liquid > threshold`` blurred with sigma ``intensity``, values < 0.8 zeroed,
    ``out = x * (1 - m) + m * (63, 42, 20) / 255``. Deviation: see :func:`_water_mask`; where no
    liquid survives the threshold the reference divides by zero (NaN), here the image is kept.
    """
    x = _to_float(img, np.float32)
    liquid = rng.normal(loc, scale, size=img.shape[:2])
    liquid = ndimage.gaussian_filter(liquid, sigma, mode="nearest")
    liquid[liquid < threshold] = 0.0
    if int(mode) == 0:
        m = _water_mask(liquid)
        peak = m.max()
        if peak <= 0:
            return img.copy()
        m = (m / peak * intensity)[..., None]
        return _to_uint8(x + m * (np.array([175.0, 238.0, 238.0]) / 255.0))
    m = ndimage.gaussian_filter((liquid > threshold).astype(np.float32), intensity, mode="nearest")
    m[m < 0.8] = 0.0
    m = m[..., None]
    return _to_uint8(x * (1.0 - m) + m * (np.array([63.0, 42.0, 20.0]) / 255.0))


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
    return _map_hsv(img, 1, scale, shift)


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
    x = _to_float(img)
    h, w = img.shape[:2]
    mapsize = max(2, 1 << (max(h, w) - 1).bit_length())
    peak = x.max()
    x = x + strength * plasma_fractal(mapsize, wibble_decay, rng)[:h, :w, None]
    return _to_uint8(x * peak / (peak + strength))


# -------------------------------------------------------------- common IQA ladders


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
    return _to_uint8(ndimage.gaussian_filter(_to_float(img), (sigma, sigma, 0), mode="nearest"))


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
    padded = np.pad(_to_float(img, np.float32), ((py, py), (px, px), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    out = np.zeros((h, w, 3), np.float32)
    for k, oy, ox in zip(weights, dy, dx, strict=True):
        out += np.float32(k) * padded[py + oy : py + oy + h, px + ox : px + ox + w]
    return _to_uint8(out)


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
    return _to_uint8(_filter_reflect(_to_float(img), _disk_kernel(radius, alias_blur)))


@register_distortion(
    "gaussian_noise",
    levels=_levels("sigma", [0.08, 0.12, 0.18, 0.26, 0.38]),
    description="ImageNet-C additive Gaussian noise (sigma on the [0, 1] scale)",
    random=True,
    monotone=True,
)
def gaussian_noise(img: np.ndarray, *, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """ImageNet-C Gaussian noise: ``x + N(0, sigma)`` per channel value."""
    x = _to_float(img)
    return _to_uint8(x + rng.normal(0.0, sigma, size=x.shape))


@register_distortion(
    "shot_noise",
    levels=_levels("photons", [60, 25, 12, 5, 3]),
    description="ImageNet-C shot (Poisson) noise: Poisson(x * photons) / photons",
    random=True,
    monotone=True,
)
def shot_noise(img: np.ndarray, *, rng: np.random.Generator, photons: float) -> np.ndarray:
    """ImageNet-C shot noise: ``Poisson(x * photons) / photons`` per channel value."""
    return _to_uint8(rng.poisson(_to_float(img) * photons) / photons)


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
    x = _to_float(img)
    means = x.mean(axis=(0, 1), keepdims=True)
    return _to_uint8((x - means) * factor + means)


@register_distortion(
    "brightness",
    levels=_levels("shift", [0.1, 0.2, 0.3, 0.4, 0.5]),
    description="ImageNet-C brightness increase: HSV V <- clip(V + shift)",
    random=False,
    monotone=True,
)
def brightness(img: np.ndarray, *, rng: np.random.Generator, shift: float) -> np.ndarray:
    """ImageNet-C brightness: in HSV, ``V <- clip(V + shift, 0, 1)``."""
    return _map_hsv(img, 2, 1.0, shift)


@register_distortion(
    "darken",
    levels=_levels("shift", [0.1, 0.2, 0.3, 0.4, 0.5]),
    description="Brightness decrease, mirror of ImageNet-C brightness: HSV V <- clip(V - shift)",
    random=False,
    monotone=True,
)
def darken(img: np.ndarray, *, rng: np.random.Generator, shift: float) -> np.ndarray:
    """Project ladder (not in ImageNet-C): in HSV, ``V <- clip(V - shift, 0, 1)``."""
    return _map_hsv(img, 2, 1.0, -shift)


@register_distortion(
    "desaturate",
    levels=_levels("factor", [0.8, 0.6, 0.4, 0.2, 0.0]),
    description="Colour saturation decrease: HSV S <- S * factor (0 = grey)",
    random=False,
    monotone=True,
)
def desaturate(img: np.ndarray, *, rng: np.random.Generator, factor: float) -> np.ndarray:
    """Project ladder (not in ImageNet-C): in HSV, ``S <- S * factor``; severity 5 is grey (V)."""
    return _map_hsv(img, 1, factor, 0.0)
