"""Unit tests for iqa_ray.distortions: registry, determinism, strength ladders, reference checks."""

from __future__ import annotations

import colorsys
import hashlib
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from iqa_ray import distortions as dist
from iqa_ray.distortions import registry
from iqa_ray.errors import ConfigError

PRIORS = ("zoom_blur", "spatter", "saturate", "fog")
LADDERS = (
    "gaussian_blur", "motion_blur", "defocus_blur", "gaussian_noise", "shot_noise",
    "impulse_noise", "jpeg", "pixelate", "contrast", "brightness", "darken", "desaturate",
)  # fmt: skip


def _natural_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Colour test image: smooth gradients, a 1/f-noise texture and a checkerboard of edges."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    freq = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    freq[0, 0] = 1.0
    spectrum = (rng.normal(size=(h, w)) + 1j * rng.normal(size=(h, w))) / freq
    texture = np.real(np.fft.ifft2(spectrum))
    texture = (texture - texture.mean()) / texture.std()
    checker = ((np.arange(h)[:, None] // 6 + np.arange(w)[None, :] // 6) % 2) - 0.5
    rgb = np.stack(
        [
            0.15 + 0.6 * xx + 0.08 * texture + 0.12 * checker,
            0.25 + 0.45 * yy + 0.06 * texture - 0.1 * checker,
            0.55 + 0.25 * np.sin(6.0 * xx + 3.0 * yy) + 0.07 * texture,
        ],
        axis=-1,
    )
    return (np.clip(rgb, 0.02, 0.97) * 255).astype(np.uint8)


IMG = _natural_image(48, 64)
ODD = _natural_image(37, 53, seed=1)  # non-square, odd sides
ALL_LEVELS = [
    (name, severity)
    for name in dist.list_distortions()
    for severity in range(1, dist.DISTORTIONS[name].n_levels + 1)
]
MONOTONE = [n for n in dist.list_distortions() if dist.DISTORTIONS[n].monotone]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) on luma, Gaussian window sigma 1.5, K1 = 0.01, K2 = 0.03."""
    luma = np.array([0.299, 0.587, 0.114])
    x, y = a.astype(np.float64) @ luma, b.astype(np.float64) @ luma

    def blur(z: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(z, 1.5, truncate=3.5, mode="reflect")

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ssim = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(ssim.mean())


def _ladder(name: str, img: np.ndarray = IMG) -> list[np.ndarray]:
    return [dist.apply_distortion(img, name, s, seed_key="ladder") for s in range(1, 6)]


# ------------------------------------------------------------------------ registry


def test_registry_lists_priors_and_ladders() -> None:
    names = dist.list_distortions()
    assert names == sorted(names)
    assert set(PRIORS) | set(LADDERS) <= set(names)
    for name in names:
        info = dist.get_distortion(name)
        assert info.name == name and info.n_levels == len(info.levels) >= 1
        assert all(isinstance(level, dict) for level in info.levels) and info.description
    for name in (*PRIORS, *LADDERS):
        assert dist.DISTORTIONS[name].n_levels == 5
    assert all(dist.DISTORTIONS[n].monotone for n in (*LADDERS, "zoom_blur"))
    # ImageNet-C tables that are not strength ladders (checked: PSNR is not monotone on them).
    assert not any(dist.DISTORTIONS[n].monotone for n in ("spatter", "saturate", "fog"))
    assert {n for n in PRIORS if dist.DISTORTIONS[n].random} == {"spatter", "fog"}


def test_prior_tables_match_spec() -> None:
    """Q-Debias spec severities (zoom_blur 3, spatter 3, saturate 3, fog 4) = ImageNet-C values."""
    zoom = dist.get_distortion("zoom_blur").params(3)
    factors = np.arange(zoom["start"], zoom["stop"], zoom["step"])
    np.testing.assert_allclose(factors, np.linspace(1.0, 1.2, 11))
    assert dist.get_distortion("spatter").params(3) == {
        "loc": 0.65, "scale": 0.3, "sigma": 2, "threshold": 0.68, "intensity": 0.5, "mode": 0,
    }  # fmt: skip
    assert dist.get_distortion("saturate").params(3) == {"scale": 2.0, "shift": 0.0}
    assert dist.get_distortion("fog").params(4) == {"strength": 2.5, "wibble_decay": 1.5}


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(ConfigError, match="did you mean 'zoom_blur'"):
        dist.get_distortion("zoom_blr")
    with pytest.raises(ConfigError, match="did you mean"):
        dist.apply_distortion(IMG, "spater", 1, seed_key=0)


@pytest.mark.parametrize("severity", [0, 6, -1, 2.0, True, "3", None])
def test_bad_severity_is_config_error(severity: object) -> None:
    with pytest.raises(ConfigError):
        dist.apply_distortion(IMG, "fog", severity, seed_key=0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        IMG.astype(np.float32),
        IMG.astype(np.uint16),
        IMG[..., 0],
        np.concatenate([IMG, IMG[..., :1]], axis=-1),
        IMG[None],
        np.zeros((0, 5, 3), np.uint8),
        IMG.tolist(),
    ],
    ids=["float32", "uint16", "2d", "rgba", "4d", "empty", "list"],
)
def test_bad_image_is_value_error(bad: object) -> None:
    with pytest.raises(ValueError):
        dist.apply_distortion(bad, "jpeg", 1, seed_key=0)  # type: ignore[arg-type]


def test_register_rejects_duplicates_and_ragged_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "DISTORTIONS", dict(registry.DISTORTIONS))
    with pytest.raises(ValueError, match="already registered"):
        dist.register_distortion("jpeg", levels=[{"quality": 1}], description="x", random=False)
    with pytest.raises(ValueError, match="share one set"):
        dist.register_distortion("odd", levels=[{"a": 1}, {"b": 2}], description="x", random=False)

    @dist.register_distortion("identity_test", levels=[{}], description="copy", random=False)
    def identity_test(img: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
        return img.copy()

    assert dist.get_distortion("identity_test").n_levels == 1
    np.testing.assert_array_equal(dist.apply_distortion(IMG, "identity_test", 1, seed_key=1), IMG)


def test_seed_is_documented_sha256_formula() -> None:
    expected = int.from_bytes(hashlib.sha256(b"abc|fog|4").digest()[:8], "big")
    assert dist.distortion_seed("abc", "fog", 4) == expected
    # Pinned literal: guards against any change of the formula between releases/processes.
    assert expected == 0xC25CC77168AE4C63
    assert dist.distortion_seed(7, "fog", 4) == dist.distortion_seed("7", "fog", 4)
    assert dist.distortion_seed("abc", "fog", 3) != expected


def test_priors_identical_in_a_fresh_process() -> None:
    """Another interpreter (other PYTHONHASHSEED) derives the same seed and the same fog prior."""
    code = (
        "import hashlib, numpy as np; from iqa_ray import distortions as d; "
        "img = np.arange(48 * 64 * 3, dtype=np.uint64).reshape(48, 64, 3).astype(np.uint8); "
        "out = d.apply_distortion(img, 'fog', 4, seed_key='img-9'); "
        "print(d.distortion_seed('abc', 'fog', 4), hashlib.sha256(out.tobytes()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    root = Path(dist.__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, check=True
    )
    img = np.arange(48 * 64 * 3, dtype=np.uint64).reshape(48, 64, 3).astype(np.uint8)
    out = dist.apply_distortion(img, "fog", 4, seed_key="img-9")
    expected = (
        f"{dist.distortion_seed('abc', 'fog', 4)} {hashlib.sha256(out.tobytes()).hexdigest()}"
    )
    assert result.stdout.strip() == expected


# ------------------------------------------------------------ every distortion, every level


@pytest.mark.parametrize(("name", "severity"), ALL_LEVELS)
def test_contract_shape_dtype_determinism(name: str, severity: int) -> None:
    before = IMG.copy()
    out = dist.apply_distortion(IMG, name, severity, seed_key="img-1")
    np.testing.assert_array_equal(IMG, before)  # the input is never modified
    assert out.shape == IMG.shape and out.dtype == np.uint8
    again = dist.apply_distortion(IMG.copy(), name, severity, seed_key="img-1")
    np.testing.assert_array_equal(out, again)
    assert not np.array_equal(out, IMG)
    odd = dist.apply_distortion(ODD, name, severity, seed_key="img-1")
    assert odd.shape == ODD.shape and odd.dtype == np.uint8


@pytest.mark.parametrize(("name", "severity"), ALL_LEVELS)
def test_seed_dependence_matches_random_flag(name: str, severity: int) -> None:
    a = dist.apply_distortion(IMG, name, severity, seed_key="a")
    b = dist.apply_distortion(IMG, name, severity, seed_key="b")
    assert np.array_equal(a, b) is not dist.DISTORTIONS[name].random


# ---------------------------------------------------------------------- strength ladders


@pytest.mark.parametrize("name", MONOTONE)
def test_ladder_psnr_decreases(name: str) -> None:
    psnr = [_psnr(IMG, out) for out in _ladder(name)]
    assert all(b <= a for a, b in itertools.pairwise(psnr)), psnr
    assert psnr[-1] < psnr[0] - 1.0, psnr


# SSIM is checked on the same set as PSNR: every distortion flagged ``monotone`` (the twelve
# ladders and zoom_blur). It is not checked on fog, spatter and saturate, whose ImageNet-C
# tables are not strength ladders (e.g. saturate 1-2 desaturate, spatter 4-5 switch to mud).
@pytest.mark.parametrize("name", MONOTONE)
def test_ladder_ssim_decreases(name: str) -> None:
    ssim = [_ssim(IMG, out) for out in _ladder(name)]
    assert all(b <= a for a, b in itertools.pairwise(ssim)), ssim
    assert ssim[-1] < ssim[0], ssim


# ------------------------------------------------- independent reference implementations


def _reference_zoom_blur(img: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """ImageNet-C zoom blur written the reference's way: scipy.ndimage.zoom per factor, float32."""
    x = img.astype(np.float32) / 255.0
    h, w = x.shape[:2]
    total = np.zeros_like(x)
    for z in factors:
        ch, cw = math.ceil(h / z), math.ceil(w / z)
        top, left = (h - ch) // 2, (w - cw) // 2
        big = ndimage.zoom(x[top : top + ch, left : left + cw], (z, z, 1), order=1)
        t, u = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
        total += big[t : t + h, u : u + w]
    return (np.clip((x + total) / (len(factors) + 1), 0, 1) * 255).astype(np.uint8)


SQUARE = _natural_image(40, 40, seed=2)


@pytest.mark.parametrize("img", [IMG, ODD, SQUARE], ids=["48x64", "37x53", "40x40"])
@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_zoom_blur_matches_scipy_zoom_reference(img: np.ndarray, severity: int) -> None:
    """Tolerance: at most 1 grey level, on at most 0.5 % of values.

    Both paths interpolate in float64 and accumulate in float32 in the same order, so they
    agree bit for bit today; the tolerance only allows for a different rounding inside a future
    scipy, which can flip the truncation of a value lying next to an integer.
    """
    p = dist.get_distortion("zoom_blur").params(severity)
    expected = _reference_zoom_blur(img, np.arange(p["start"], p["stop"], p["step"]))
    got = dist.apply_distortion(img, "zoom_blur", severity, seed_key="any")
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and np.mean(diff > 0) <= 0.005


def _reference_hsv_op(img: np.ndarray, channel: int, scale: float, shift: float) -> np.ndarray:
    out = np.empty(img.shape, np.float64)
    for idx in np.ndindex(*img.shape[:2]):
        hsv = list(colorsys.rgb_to_hsv(*(img[idx] / 255.0)))
        hsv[channel] = min(max(hsv[channel] * scale + shift, 0.0), 1.0)
        out[idx] = colorsys.hsv_to_rgb(*hsv)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_saturate_matches_colorsys_reference(severity: int) -> None:
    """Per-pixel ``colorsys`` loop vs the vectorised HSV path.

    Tolerance: at most 1 grey level on at most 3 % of values (1.8 % at worst today).
    ``colorsys`` computes hue with a different (equivalent) formula, so a few results differ
    in the last bit; after truncation that is one grey level when the value lies just next to
    an integer.
    """
    small = _natural_image(24, 20, seed=3)
    p = dist.get_distortion("saturate").params(severity)
    expected = _reference_hsv_op(small, 1, p["scale"], p["shift"])
    got = dist.apply_distortion(small, "saturate", severity, seed_key=0)
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and np.mean(diff > 0) <= 0.03


def test_hsv_conversion_matches_colorsys() -> None:
    rgb = np.random.default_rng(4).random((300, 3))
    rgb[:20] = rgb[:20, :1]  # greys (zero saturation)
    rgb[20:40, 1] = rgb[20:40, 0]  # ties between maximum channels
    hsv = dist.rgb_to_hsv(rgb)
    np.testing.assert_allclose(hsv, [colorsys.rgb_to_hsv(*p) for p in rgb], atol=1e-12)
    np.testing.assert_allclose(dist.hsv_to_rgb(hsv), rgb, atol=1e-12)


# ---------------------------------------------------------- fog, spatter and plasma details


def test_plasma_fractal_range_determinism_and_size_check() -> None:
    a = dist.plasma_fractal(64, 1.5, np.random.default_rng(0))
    b = dist.plasma_fractal(64, 1.5, np.random.default_rng(0))
    assert a.shape == (64, 64) and a.min() == 0.0 and a.max() == 1.0
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        dist.plasma_fractal(48, 1.5, np.random.default_rng(0))


def test_fog_works_on_wide_image_and_lowers_contrast() -> None:
    wide = _natural_image(20, 130, seed=5)  # fractal side 256, cropped to 20 x 130
    out = dist.apply_distortion(wide, "fog", 4, seed_key="wide")
    assert out.shape == wide.shape
    assert out.astype(float).std() < wide.astype(float).std()


def test_spatter_water_only_adds_and_mud_moves_towards_brown() -> None:
    for severity in (1, 2, 3):  # water: x + m * colour, m >= 0
        out = dist.apply_distortion(IMG, "spatter", severity, seed_key="w")
        assert np.all(out >= IMG)
    mud = np.array([63, 42, 20], dtype=float)
    for severity in (4, 5):  # mud: x * (1 - m) + m * brown
        out = dist.apply_distortion(IMG, "spatter", severity, seed_key="m").astype(float)
        changed = np.any(out != IMG, axis=-1)
        assert changed.any()
        before = np.abs(IMG[changed] - mud).sum(axis=-1)
        after = np.abs(out[changed] - mud).sum(axis=-1)
        assert np.all(after <= before + 3)  # + 3: truncation of each channel
