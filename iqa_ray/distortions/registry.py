"""The distortion registry: name -> pure seeded function with per-severity parameter tables.

:func:`apply_distortion` seeds the function's rng from ``sha256(f"{seed_key}|{name}|{severity}")``
so priors are identical across reruns and processes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from iqa_ray.errors import ConfigError, unknown_name

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
    raise unknown_name("distortion", name, DISTORTIONS)


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
