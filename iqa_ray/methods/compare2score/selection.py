"""Choosing Compare2Score anchors: the paper's rule on MOS-labelled images (per MOS interval,
the smallest MOS std), and our quantile rule for unlabelled images. Pure numpy.

Paper: arXiv 2405.19298 (anchor selection, section 3.3).
"""

from __future__ import annotations

import numpy as np

from iqa_ray.errors import ConfigError


def select_anchors_by_mos(
    mos: np.ndarray, mos_std: np.ndarray | None = None, alpha: int = 5
) -> np.ndarray:
    """Anchor indices from a MOS-labelled set (anchor selection of arXiv 2405.19298).

    Splits [min(mos), max(mos)] into ``alpha`` equal intervals (half-open, the last one closed)
    and picks, in each, the image with the smallest MOS std; ties go to the MOS closest to the
    interval centre, then to the lowest index. Without ``mos_std`` the image closest to the
    centre is picked. NaN stds count as +inf. Deviation (the paper does not cover it): an empty
    interval takes the unused image closest to its centre; ``empty_mos_intervals`` reports
    which intervals were filled that way, so callers can warn.

    Args:
        mos: (N,) mean opinion scores.
        mos_std: (N,) MOS standard deviations, or None.
        alpha: number of anchors (paper: 5).

    Returns:
        (alpha,) distinct indices, sorted by MOS (then index): interval order when none is empty.

    Raises:
        ConfigError: fewer than ``alpha`` images, non-finite MOS, zero MOS range, bad std.
    """
    values = _check_labels(mos, "mos", alpha)
    std = None if mos_std is None else _check_std(mos_std, values.shape)
    interval, centres = _mos_intervals(values, alpha)
    chosen = np.full(alpha, -1, dtype=np.int64)
    for k in range(alpha):
        members = np.flatnonzero(interval == k)
        if members.size:
            distance = np.abs(values[members] - centres[k])
            keys = (members, distance) if std is None else (members, distance, std[members])
            chosen[k] = members[np.lexsort(keys)[0]]
    for empty in np.flatnonzero(chosen < 0):
        distance = np.abs(values - centres[empty])
        distance[chosen[chosen >= 0]] = np.inf
        chosen[empty] = int(np.argmin(distance))  # first minimum: lowest index on ties
    return chosen[np.lexsort((chosen, values[chosen]))]


def empty_mos_intervals(mos: np.ndarray, alpha: int = 5) -> np.ndarray:
    """Indices of the MOS intervals of ``select_anchors_by_mos`` that hold no image."""
    values = _check_labels(mos, "mos", alpha)
    interval, _ = _mos_intervals(values, alpha)
    return np.flatnonzero(np.bincount(interval, minlength=alpha) == 0)


def select_anchors_by_quantiles(scores: np.ndarray, alpha: int = 5) -> np.ndarray:
    """Anchor indices without labels: the images closest to the score quantiles.

    An extension for unlabelled data (the paper needs MOS): targets are the quantiles at
    (k + 0.5) / alpha, k = 0..alpha-1 (numpy's linear interpolation); each target, from low to
    high, takes the closest image not yet taken (ties: lowest index).

    Args:
        scores: (N,) model scores, e.g. a cheap scorer's output on a sample.
        alpha: number of anchors.

    Returns:
        (alpha,) distinct indices sorted by score (then index).

    Raises:
        ConfigError: fewer than ``alpha`` images or non-finite scores.
    """
    values = _check_labels(scores, "scores", alpha)
    targets = np.quantile(values, (np.arange(alpha) + 0.5) / alpha)
    chosen: list[int] = []
    for target in targets:
        distance = np.abs(values - target)
        distance[chosen] = np.inf
        chosen.append(int(np.argmin(distance)))
    picked = np.asarray(chosen, dtype=np.int64)
    return picked[np.lexsort((picked, values[picked]))]


def _check_labels(x: np.ndarray, name: str, alpha: int) -> np.ndarray:
    values = np.asarray(x, dtype=np.float64)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, np.integer)) or alpha < 1:
        raise ConfigError(f"alpha must be a positive integer, got {alpha!r}")
    if values.ndim != 1 or values.size < alpha:
        raise ConfigError(
            f"{name} must be 1-D with at least alpha={alpha} entries, got {values.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise ConfigError(f"{name} must be finite")
    return values


def _check_std(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    std = np.asarray(x, dtype=np.float64)
    if std.shape != shape or np.any(std < 0):
        raise ConfigError(f"mos_std must be non-negative with shape {shape}, got {std.shape}")
    return np.where(np.isnan(std), np.inf, std)


def _mos_intervals(values: np.ndarray, alpha: int) -> tuple[np.ndarray, np.ndarray]:
    """Interval index of each image, and the interval centres."""
    lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        raise ConfigError(f"MOS range is empty (all values are {lo}): cannot split into intervals")
    edges = np.linspace(lo, hi, alpha + 1)
    # side="right" on the inner edges: [e_k, e_k+1) intervals, and max(mos) lands in the last.
    return np.searchsorted(edges[1:-1], values, side="right"), 0.5 * (edges[:-1] + edges[1:])
