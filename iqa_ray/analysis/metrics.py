"""Agreement metrics between model scores and human opinion scores (the logit scoring rules are
``iqa_ray.methods.rules``).

Pure numpy/scipy (no Ray, no I/O). Conventions: methods.md "Evaluation conventions" (SRCC/PLCC on
raw scores first; the 4-parameter logistic fit before PLCC is an optional, labelled extra).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, special, stats

logger = logging.getLogger(__name__)

MetricFn = Callable[[np.ndarray, np.ndarray], float]

# Bootstrap resamples are processed in chunks of about this many elements per array (~32 MB of
# float64), so 1000 resamples of 100k scores never materialise an 800 MB index matrix at once.
_CHUNK_ELEMENTS = 4_000_000


def finite_pairs(pred: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray, int]:
    """Float64 copies of the pairs where both values are finite, and how many pairs were dropped.

    ``None``, NaN, ``pd.NA`` and infinities count as missing. Every metric here uses only these
    pairs; :func:`evaluate` reports the dropped count.

    Raises:
        ValueError: if the inputs are not 1-D or differ in length.
    """
    p, t = _as_float_1d(pred, "pred"), _as_float_1d(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target differ in length: {p.size} vs {t.size}")
    keep = np.isfinite(p) & np.isfinite(t)
    return p[keep], t[keep], int(p.size - keep.sum())


def _as_float_1d(values: ArrayLike, name: str) -> np.ndarray:
    if hasattr(values, "to_numpy"):  # pandas Series/arrays: map pd.NA to NaN
        values = values.to_numpy(dtype=np.float64, na_value=np.nan)
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _constant_rows(x: np.ndarray) -> np.ndarray:
    return x.max(axis=-1) == x.min(axis=-1)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis; NaN where either side is constant."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((xc * xc).sum(axis=-1) * (yc * yc).sum(axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.array(np.clip((xc * yc).sum(axis=-1) / den, -1.0, 1.0), dtype=np.float64)
    # An exact constancy test: centring a constant leaves rounding noise, not zeros.
    r[np.asarray(_constant_rows(x) | _constant_rows(y))] = np.nan
    return r


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Average ranks for ties, as scipy.stats.spearmanr.
    return _pearson_rows(stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1))


def _rmse_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean((x - y) ** 2, axis=-1))


def _resample_ranks(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Average ranks within each row of ``values[idx]``, without sorting every resample.

    Each drawn element's rank follows from how many drawn elements fall in lower tie groups of
    the original values: O(n) per row instead of O(n log n), equal to ``rankdata(values[idx])``.
    """
    uniq, groups = np.unique(values, return_inverse=True)
    g = groups[idx]
    k, n_groups = len(idx), len(uniq)
    flat = (np.arange(k)[:, None] * n_groups + g).ravel()
    counts = np.bincount(flat, minlength=k * n_groups).reshape(k, n_groups)
    average_rank = np.cumsum(counts, axis=1) - (counts - 1) / 2.0
    return np.take_along_axis(average_rank, g, axis=1)


def srcc(pred: ArrayLike, target: ArrayLike) -> float:
    """Spearman rank correlation (average ranks for ties); NaN if n < 2 or a side is constant."""
    p, t, _ = finite_pairs(pred, target)
    return float(_spearman_rows(p, t)) if p.size >= 2 else float("nan")


def plcc(pred: ArrayLike, target: ArrayLike) -> float:
    """Pearson linear correlation on raw scores; NaN if n < 2 or a side is constant."""
    p, t, _ = finite_pairs(pred, target)
    return float(_pearson_rows(p, t)) if p.size >= 2 else float("nan")


def krcc(pred: ArrayLike, target: ArrayLike) -> float:
    """Kendall tau-b (scipy.stats.kendalltau); NaN if n < 2 or a side is constant."""
    p, t, _ = finite_pairs(pred, target)
    if p.size < 2 or _constant_rows(p) or _constant_rows(t):
        return float("nan")
    return float(stats.kendalltau(p, t).statistic)


def rmse(pred: ArrayLike, target: ArrayLike) -> float:
    """Root mean squared error (meaningful only on a shared scale); NaN if no pair is left."""
    p, t, _ = finite_pairs(pred, target)
    return float(_rmse_rows(p, t)) if p.size else float("nan")


@dataclass(frozen=True)
class Logistic4Params:
    """Parameters of ``f(x) = (beta1 - beta2) / (1 + exp(-(x - beta3) / |beta4|)) + beta2``.

    ``converged`` is False when the least-squares fit was not possible or failed and the
    parameters are the linear fallback described in :func:`logistic4_fit`.
    """

    beta1: float
    beta2: float
    beta3: float
    beta4: float
    converged: bool = True

    def as_tuple(self) -> tuple[float, float, float, float]:
        """The four betas, in order."""
        return (self.beta1, self.beta2, self.beta3, self.beta4)


def logistic4(x: ArrayLike, params: Logistic4Params | Sequence[float]) -> np.ndarray:
    """Evaluate the VQEG 4-parameter logistic (see :class:`Logistic4Params`) at ``x``."""
    b1, b2, b3, b4 = params.as_tuple() if isinstance(params, Logistic4Params) else params
    xs = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (b1 - b2) * special.expit((xs - b3) / abs(b4)) + b2


def _logistic_z(z: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    return (b1 - b2) * special.expit((z - b3) / abs(b4)) + b2


def _near_linear(x: np.ndarray, t: np.ndarray, width: float) -> tuple[float, float, float, float]:
    """Betas of a logistic that equals the least-squares line through (x, t) to first order.

    Around its centre the logistic is ``mid + (b1 - b2) (x - b3) / (4 |b4|)``; with ``|b4|`` =
    ``width`` times the spread of x the curvature over the data is negligible.
    """
    mu, sd = float(x.mean()), float(x.std())
    if sd == 0.0:
        return (float(t.mean()), float(t.mean()), mu, 1.0)
    slope = float(np.mean((x - mu) * (t - t.mean()))) / sd**2
    b4 = width * sd
    return (float(t.mean()) + 2 * b4 * slope, float(t.mean()) - 2 * b4 * slope, mu, b4)


def logistic4_fit(pred: ArrayLike, target: ArrayLike) -> Logistic4Params:
    """Least-squares fit of :func:`logistic4` mapping ``pred`` onto ``target`` (finite pairs).

    The fit runs on standardised ``pred`` from two starts (a sigmoid spanning the target range,
    oriented by the sign of the correlation, and the near-linear logistic of the least-squares
    line) and keeps the lower residual, so it never ends worse than a straight line.

    Fallback, never an exception: with fewer than 5 pairs, a constant side, or when every start
    fails, it returns the near-linear logistic of the least-squares line (``converged=False``)
    and logs a WARNING; for a constant ``pred`` that line is flat, so PLCC after it is NaN.
    """
    p, t, _ = finite_pairs(pred, target)
    if p.size == 0:
        return Logistic4Params(np.nan, np.nan, np.nan, 1.0, converged=False)
    fallback = Logistic4Params(*_near_linear(p, t, 1e3), converged=False)
    if p.size < 5 or _constant_rows(p) or _constant_rows(t):
        logger.warning("logistic4_fit: %d pairs or a constant side: linear fallback", p.size)
        return fallback
    mu, sd = float(p.mean()), float(p.std())
    z = (p - mu) / sd  # conditioning: betas 3 and 4 then live on a unit scale whatever pred is
    hi, lo = float(t.max()), float(t.min())
    if np.corrcoef(z, t)[0, 1] < 0:
        hi, lo = lo, hi
    popt = _best_fit(z, t, [(hi, lo, float(np.median(z)), 1.0), _near_linear(z, t, 10.0)])
    if popt is None:
        logger.warning("logistic4_fit: curve_fit failed from every start: linear fallback")
        return fallback
    b1, b2, b3, b4 = (float(v) for v in popt)
    return Logistic4Params(b1, b2, mu + sd * b3, sd * abs(b4), converged=True)


def _best_fit(z: np.ndarray, t: np.ndarray, starts: list[tuple[float, ...]]) -> np.ndarray | None:
    """The finite curve_fit result with the lowest squared error over ``starts``, or None."""
    best: tuple[float, np.ndarray] | None = None
    for p0 in starts:
        try:
            with warnings.catch_warnings():
                # A singular covariance only means the betas' errors are unknown: irrelevant here.
                warnings.simplefilter("ignore", optimize.OptimizeWarning)
                popt, _ = optimize.curve_fit(_logistic_z, z, t, p0=p0, maxfev=20_000)
        except (RuntimeError, ValueError, FloatingPointError):
            continue
        sse = float(np.sum((_logistic_z(z, *popt) - t) ** 2))
        if np.all(np.isfinite(popt)) and math.isfinite(sse) and (best is None or sse < best[0]):
            best = (sse, popt)
    return None if best is None else best[1]


def plcc_logistic(pred: ArrayLike, target: ArrayLike) -> float:
    """PLCC after the 4-parameter logistic fit (the labelled extra; not the primary PLCC)."""
    p, t, _ = finite_pairs(pred, target)
    return plcc(logistic4(p, logistic4_fit(p, t)), t) if p.size >= 2 else float("nan")


# Metrics with a vectorised form, looked up by name or by the public function itself.
_ROW_METRICS: dict[Any, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    key: rows
    for fn, rows in ((srcc, _spearman_rows), (plcc, _pearson_rows), (rmse, _rmse_rows))
    for key in (fn, fn.__name__)
}
_NAMED_METRICS: dict[str, MetricFn] = {"krcc": krcc, "plcc_logistic": plcc_logistic}


def bootstrap_ci(
    pred: ArrayLike,
    target: ArrayLike,
    metric: str | MetricFn = "srcc",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``metric`` over finite (pred, target) pairs.

    Args:
        metric: a name (srcc, plcc, rmse, krcc, plcc_logistic) or a callable ``(pred, target)``;
            srcc, plcc and rmse (by name or as these functions) run vectorised over resamples,
            anything else runs once per resample.
        n_boot: number of resamples (pairs drawn with replacement, n per resample).
        seed: seed of ``numpy.random.default_rng``; equal inputs and seed give equal intervals.
        level: two-sided coverage, e.g. 0.95 for the 2.5 and 97.5 percentiles.

    Returns:
        ``(low, high)``; resamples whose metric is NaN (e.g. a constant resample) are ignored, and
        ``(nan, nan)`` comes back when fewer than 2 pairs or no finite resample value remain.

    Raises:
        ValueError: on an unknown metric name, ``n_boot < 1`` or ``level`` outside (0, 1).
    """
    if n_boot < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"need n_boot >= 1 and 0 < level < 1, got {n_boot}, {level}")
    rows = _ROW_METRICS.get(metric)
    scalar = _NAMED_METRICS.get(metric) if isinstance(metric, str) else metric
    if rows is None and scalar is None:
        raise ValueError(f"unknown metric {metric!r}; known: srcc, plcc, rmse, krcc, plcc_logistic")
    p, t, _ = finite_pairs(pred, target)
    if p.size < 2:
        return (float("nan"), float("nan"))
    values = np.concatenate(
        [
            _resample_values(p, t, idx, rows, scalar)
            for idx in _resample_indices(p.size, n_boot, seed)
        ]
    )
    if np.isnan(values).all():
        return (float("nan"), float("nan"))
    alpha = (1.0 - level) / 2.0
    low, high = np.nanquantile(values, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def _resample_indices(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of the ``(n_boot, n)`` resample-index matrix; the chunk size depends on n only,
    so the draws are a function of (n, n_boot, seed)."""
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_boot, step):
        yield rng.integers(0, n, size=(min(step, n_boot - start), n))


def _resample_values(
    p: np.ndarray,
    t: np.ndarray,
    idx: np.ndarray,
    rows: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
    scalar: MetricFn | None,
) -> np.ndarray:
    if rows is _spearman_rows:
        return _pearson_rows(_resample_ranks(p, idx), _resample_ranks(t, idx))
    if rows is not None:
        return rows(p[idx], t[idx])
    return np.array([scalar(p[i], t[i]) for i in idx], dtype=np.float64)  # type: ignore[misc]


def evaluate(
    pred: ArrayLike, target: ArrayLike, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """All agreement metrics of one score column against MOS.

    Pairs with a missing or non-finite value on either side are dropped and counted.

    Returns:
        ``n``, ``n_dropped``, ``srcc``, ``plcc``, ``krcc``, ``rmse`` (all on raw scores),
        ``plcc_logistic`` and ``rmse_logistic`` (after the 4-parameter fit), ``logistic_converged``,
        and ``srcc_ci``/``plcc_ci`` as ``(low, high)`` (``(nan, nan)`` when ``n_boot`` is 0).
    """
    p, t, n_dropped = finite_pairs(pred, target)
    fit = logistic4_fit(p, t)
    mapped = logistic4(p, fit)
    no_ci = (float("nan"), float("nan"))
    return {
        "n": int(p.size),
        "n_dropped": n_dropped,
        "srcc": srcc(p, t),
        "plcc": plcc(p, t),
        "krcc": krcc(p, t),
        "rmse": rmse(p, t),
        "plcc_logistic": plcc(mapped, t),
        "rmse_logistic": rmse(mapped, t),
        "logistic_converged": fit.converged,
        "srcc_ci": bootstrap_ci(p, t, "srcc", n_boot, seed, level) if n_boot else no_ci,
        "plcc_ci": bootstrap_ci(p, t, "plcc", n_boot, seed, level) if n_boot else no_ci,
    }
