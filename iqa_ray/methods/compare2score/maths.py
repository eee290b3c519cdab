"""Compare2Score math: soft comparison, comparison matrix, MAP estimation, anchor matrix P_a.

Pure numpy/scipy (no torch, no Ray). Paper: Zhu et al., "Adaptive Image Quality Assessment via
Teaching Large Multimodal Model to Compare", arXiv 2405.19298 (NeurIPS 2024). Reference
implementation: github.com/Q-Future/Compare2Score, ``q_align/evaluate/scorer.py``. Anchor
selection lives in ``iqa_ray.methods.compare2score.anchor_set``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import expit, log_expit, log_ndtr

from iqa_ray.errors import ConfigError

Link = Literal["probit", "logistic"]

# P_a[i, j] = P(anchor i better than anchor j), hard-coded in the reference scorer (float32 there).
OFFICIAL_ANCHOR_MATRIX: np.ndarray = np.array(
    [
        [0.5, 0.25912809, 3.3130276e-4, 1.6087297e-6, 1.1803027e-9],
        [0.74087191, 0.5, 0.24985345, 0.099954158, 1.8675303e-8],
        [0.99966872, 0.75014657, 0.5, 0.4996888, 0.24852838],
        [0.99999839, 0.90004587, 0.5003112, 0.5, 0.25400183],
        [1.0, 1.0, 0.75147164, 0.74599814, 0.5],
    ],
    dtype=np.float64,
)
OFFICIAL_ANCHOR_MATRIX.setflags(write=False)

# Level weights in token order inferior, worse, similar, better, superior.
COMPARISON_WEIGHTS: np.ndarray = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
COMPARISON_WEIGHTS.setflags(write=False)

PROBABILITY_FLOOR = 1e-6  # the reference's log(max(P, 1e-6))
_LOG_FLOOR = math.log(PROBABILITY_FLOOR)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_DEGENERATE_SPAN = 1e-12  # max q - min q below this: every image ties, score 50
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


@dataclass(frozen=True)
class MapResult:
    """MAP estimate for a batch of B test images against n anchors.

    Attributes:
        q: (B, n+1) latent qualities; columns 0..n-1 are the anchors, column n the test image.
        score: (B,) 100 * (q_test - min q) / (max q - min q), in [0, 100].
        converged: (B,) True where the gradient's max-norm fell below the tolerance.
        iterations: (B,) optimiser steps taken.
    """

    q: np.ndarray
    score: np.ndarray
    converged: np.ndarray
    iterations: np.ndarray


def soft_comparison(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Soft comparison b = softmax(logits / T) . [0, .25, .5, .75, 1] (arXiv 2405.19298).

    Args:
        logits: (..., 5) logits of inferior, worse, similar, better, superior.
        temperature: T > 0; the paper and reference use T = 100.

    Returns:
        (...) b = P(second image better than the first), in [0, 1].

    Raises:
        ConfigError: temperature is not a positive finite number.
        ValueError: the last axis is not of size 5.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"temperature must be positive and finite, got {temperature!r}")
    z = np.asarray(logits, dtype=np.float64)
    if z.shape[-1:] != (5,):
        raise ValueError(f"logits must have a last axis of size 5, got shape {z.shape}")
    z = z / temperature
    # Max-shift: unlike the reference's plain exp, cannot overflow for large logits.
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    # Row-wise, so an image's b does not depend on the batch it came in (see level_expectation).
    b: np.ndarray = ((p / p.sum(axis=-1, keepdims=True)) * COMPARISON_WEIGHTS).sum(axis=-1)
    return b


def build_comparison_matrix(P_a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Comparison matrix C over n anchors plus the test image (arXiv 2405.19298).

    C[:n, :n] = P_a, C[n, :n] = b, C[:n, n] = 1 - b, C[n, n] = 0.5, so C[i, j] = P(i better
    than j) with the test image last. Reference: ``update_matrix`` in the reference scorer.

    Args:
        P_a: (n, n) anchor matrix, entries in [0, 1].
        b: (n,) or (B, n) soft comparisons of the test image(s) against each anchor.

    Returns:
        (n+1, n+1) for 1-D b, (B, n+1, n+1) for 2-D b.

    Raises:
        ValueError: wrong shapes, or entries outside [0, 1] (NaN included).
    """
    pa = _check_probabilities(P_a, "P_a")
    n = pa.shape[0]
    if pa.ndim != 2 or pa.shape != (n, n):
        raise ValueError(f"P_a must be a square matrix, got shape {pa.shape}")
    bb = _check_probabilities(b, "b")
    if bb.ndim not in (1, 2) or bb.shape[-1] != n:
        raise ValueError(f"b must have shape ({n},) or (B, {n}), got {bb.shape}")
    c = np.empty((*bb.shape[:-1], n + 1, n + 1))
    c[..., :n, :n] = pa
    c[..., n, :n] = bb
    c[..., :n, n] = 1.0 - bb
    c[..., n, n] = 0.5
    return c


def map_estimate(
    P_a: np.ndarray,
    b: np.ndarray,
    *,
    tol: float = 1e-10,
    max_iter: int = 100,
    link: Link = "probit",
) -> MapResult:
    """Converged MAP qualities and scores (arXiv 2405.19298), by vectorised damped Newton.

    Maximises L(q) = sum_ij C_ij log(max(F(q_i - q_j), 1e-6)) - sum_i q_i^2 / 2 in float64,
    F = Phi (Thurstone Case V, as in the paper), from q = 0. Each step solves the Newton system
    with the analytic Hessian, which is <= -I, so the step is always an ascent direction, then
    backtracks (Armijo) on L. Where the floor is active the log term is constant, so its
    gradient and curvature are 0 there; the floor's edge is a convex kink (slope jumps up), so
    L is concave piecewise and no maximum sits on a kink. Converged: max_i |dL/dq_i| < tol
    (absolute; the gradient entries are O(1) sums of bounded terms). Images that converge stop
    updating, so a batch gives the same numbers as one image at a time.

    Deviations from the reference (100 Adam steps, lr 0.1, float32): solved to convergence in
    float64 (the paper's MAP estimate; use ``map_estimate_reference_adam`` for the reference's
    numbers). The reference code uses the logistic link despite the paper's Phi: choose it with
    ``link="logistic"``. If all q are equal (max - min < 1e-12) the score is 50.0 instead of NaN.

    Args:
        P_a: (n, n) anchor matrix.
        b: (n,) or (B, n) soft comparisons; 1-D input is treated as a batch of one.
        tol: absolute gradient max-norm for convergence.
        max_iter: Newton steps at most.
        link: "probit" (paper, default) or "logistic" (reference code).

    Returns:
        MapResult with q (B, n+1), score (B,), converged (B,), iterations (B,).
    """
    c = build_comparison_matrix(P_a, np.atleast_2d(b))
    _check_link(link)
    batch, size = c.shape[0], c.shape[1]
    q = np.zeros((batch, size))
    iterations = np.zeros(batch, dtype=np.int64)
    converged = np.zeros(batch, dtype=bool)
    active = np.arange(batch)
    for step_number in range(max_iter + 1):
        grad, hess = _gradient_hessian(c[active], q[active], link)
        done = np.abs(grad).max(axis=1) < tol
        converged[active[done]] = True
        active, grad, hess = active[~done], grad[~done], hess[~done]
        if active.size == 0 or step_number == max_iter:
            break
        direction = np.linalg.solve(-hess, grad[..., None])[..., 0]
        q[active] = _backtrack(c[active], q[active], direction, grad, link)
        iterations[active] += 1
    return MapResult(q=q, score=_scores(q), converged=converged, iterations=iterations)


def map_estimate_reference_adam(
    P_a: np.ndarray,
    b: np.ndarray,
    *,
    steps: int = 100,
    lr: float = 0.1,
    seed: int = 0,
    link: Link = "probit",
    tol: float = 1e-6,
) -> MapResult:
    """Reference-compatible MAP: the reference's fixed Adam run, in numpy.

    Reproduces ``optimize_score_map_pytorch_cuda`` of the reference scorer: init q =
    torch.rand(n+1) after torch.manual_seed(seed) (emulated exactly for torch's CPU generator:
    MT19937 words masked to 24 bits; the reference on CUDA draws different numbers), then
    ``steps`` torch-style Adam steps (betas 0.9/0.999, eps 1e-8) on -L(q). Every image starts
    from the same init, as the reference reseeds per image. Deviations: float64 instead of
    float32; analytic gradient; link defaults to the paper's probit (the reference code uses
    the logistic: pass ``link="logistic"``).

    Args:
        P_a: (n, n) anchor matrix.
        b: (n,) or (B, n) soft comparisons.
        steps: Adam steps (reference: 100).
        lr: Adam learning rate (reference: 0.1).
        seed: torch.manual_seed value, in [0, 2**32).
        link: "probit" or "logistic".
        tol: ``converged`` reports max |dL/dq| < tol at the final q.

    Returns:
        MapResult; iterations is ``steps`` for every image.
    """
    c = build_comparison_matrix(P_a, np.atleast_2d(b))
    _check_link(link)
    batch, size = c.shape[0], c.shape[1]
    q = np.tile(torch_cpu_rand(seed, size), (batch, 1))
    first, second = np.zeros_like(q), np.zeros_like(q)
    beta1, beta2 = _ADAM_BETAS
    for t in range(1, steps + 1):
        loss_grad = -_gradient(c, q, link)
        first = beta1 * first + (1.0 - beta1) * loss_grad
        second = beta2 * second + (1.0 - beta2) * loss_grad * loss_grad
        denom = np.sqrt(second) / math.sqrt(1.0 - beta2**t) + _ADAM_EPS
        q = q - (lr / (1.0 - beta1**t)) * first / denom
    grad = _gradient(c, q, link)
    converged = np.abs(grad).max(axis=1) < tol
    return MapResult(q, _scores(q), converged, np.full(batch, steps, dtype=np.int64))


def torch_cpu_rand(seed: int, size: int) -> np.ndarray:
    """``torch.manual_seed(seed); torch.rand(size)`` on CPU, as float64 (exact float32 values).

    torch's CPU generator is MT19937 seeded with init_genrand(seed), as numpy's legacy
    RandomState; a float32 uniform keeps the low 24 bits of one 32-bit word, times 2**-24.
    """
    if not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be in [0, 2**32), got {seed}")
    words = np.random.RandomState(seed).randint(0, 2**32, size=size, dtype=np.uint32)
    return (words & 0xFFFFFF).astype(np.float64) * 2.0**-24


def _check_probabilities(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if not np.all((arr >= 0.0) & (arr <= 1.0)):  # NaN fails both comparisons
        raise ValueError(f"{name} must hold probabilities in [0, 1] (no NaN)")
    return arr


def _check_link(link: str) -> None:
    if link not in ("probit", "logistic"):
        raise ConfigError(f"link must be 'probit' or 'logistic', got {link!r}")


def _log_link(d: np.ndarray, link: Link) -> np.ndarray:
    """log F(d), unclamped; log_ndtr/log_expit stay finite far into the tails."""
    log_f: np.ndarray = log_ndtr(d) if link == "probit" else log_expit(d)
    return log_f


def _objective(c: np.ndarray, q: np.ndarray, link: Link) -> np.ndarray:
    log_f = np.maximum(_log_link(q[:, :, None] - q[:, None, :], link), _LOG_FLOOR)
    value: np.ndarray = (c * log_f).sum(axis=(1, 2)) - 0.5 * (q * q).sum(axis=1)
    return value


def _slopes(q: np.ndarray, link: Link) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair differences d (B, m, m), F'/F at d, and the mask of the floored (flat) region."""
    d = q[:, :, None] - q[:, None, :]
    log_f = _log_link(d, link)
    # Probit: phi/Phi via logs, exp(log phi - log Phi), has no 0/0 when Phi underflows.
    probit = link == "probit"
    slope = np.exp(-0.5 * d * d - _HALF_LOG_2PI - log_f) if probit else expit(-d)
    return d, slope, log_f < _LOG_FLOOR


def _gradient(c: np.ndarray, q: np.ndarray, link: Link) -> np.ndarray:
    """dL/dq (B, m); the floored log terms are constant, so they contribute 0."""
    _, slope, floored = _slopes(q, link)
    weighted = np.where(floored, 0.0, c * slope)
    grad: np.ndarray = weighted.sum(axis=2) - weighted.sum(axis=1) - q
    return grad


def _gradient_hessian(c: np.ndarray, q: np.ndarray, link: Link) -> tuple[np.ndarray, np.ndarray]:
    """dL/dq (B, m) and the Hessian (B, m, m), which is <= -I (negative definite)."""
    d, slope, floored = _slopes(q, link)
    weighted = np.where(floored, 0.0, c * slope)
    grad = weighted.sum(axis=2) - weighted.sum(axis=1) - q
    # (log F)'' = -r (d + r) for the probit, -r (1 - r) for the logistic, r = (log F)'.
    curvature = -slope * (d + slope) if link == "probit" else -slope * (1.0 - slope)
    w = np.where(floored, 0.0, c * curvature)
    s = w + w.transpose(0, 2, 1)  # symmetric, <= 0: a negative-weight graph Laplacian
    hess = -s
    diag = np.arange(q.shape[1])
    hess[:, diag, diag] += s.sum(axis=2) - 1.0
    return grad, hess


def _backtrack(
    c: np.ndarray, q: np.ndarray, direction: np.ndarray, grad: np.ndarray, link: Link
) -> np.ndarray:
    """Armijo backtracking per image: halve the step until L rises enough (40 halvings max)."""
    f0 = _objective(c, q, link)
    # Slack for rounding: near the optimum the true increase is below float64 resolution.
    threshold = f0 - 1e-13 * (1.0 + np.abs(f0))
    slope = 1e-4 * (grad * direction).sum(axis=1)
    q_new, t = q.copy(), np.ones(len(q))
    pending = np.arange(len(q))
    for _ in range(40):
        trial = q[pending] + t[pending, None] * direction[pending]
        ok = _objective(c[pending], trial, link) >= threshold[pending] + t[pending] * slope[pending]
        q_new[pending[ok]] = trial[ok]
        pending = pending[~ok]
        if pending.size == 0:
            break
        t[pending] *= 0.5
    return q_new


def _scores(q: np.ndarray) -> np.ndarray:
    lo, hi = q.min(axis=1), q.max(axis=1)
    span = hi - lo
    degenerate = span < _DEGENERATE_SPAN
    # Divide first: (hi - lo) / (hi - lo) is exactly 1, so a saturated score is exactly 100.
    return np.where(degenerate, 50.0, 100.0 * ((q[:, -1] - lo) / np.where(degenerate, 1.0, span)))


def anchor_matrix_from_pairs(comparisons: np.ndarray) -> np.ndarray:
    """Anchor matrix P_a from soft comparisons between anchors, both orders averaged.

    ``comparisons[i, j]`` is b for the prompt with anchor i FIRST and anchor j SECOND, i.e.
    P(j better than i) as read by ``soft_comparison``. Then P(i better than j) is estimated
    twice, as 1 - comparisons[i, j] and as comparisons[j, i], and averaged:
    P_a[i, j] = 0.5 * ((1 - comparisons[i, j]) + comparisons[j, i]); diagonal 0.5 (ignored in
    the input, may be NaN). The result satisfies P_a + P_a.T = 1 up to rounding. Deviation:
    the reference ships a fixed matrix and does not say how it was computed.

    Args:
        comparisons: (n, n) soft comparisons, off-diagonal entries in [0, 1].

    Returns:
        (n, n) float64 P_a.

    Raises:
        ValueError: not square, or an off-diagonal entry outside [0, 1].
    """
    arr = np.array(comparisons, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"comparisons must be a square matrix, got shape {arr.shape}")
    np.fill_diagonal(arr, 0.5)
    arr = _check_probabilities(arr, "comparisons")
    p_a = 0.5 * ((1.0 - arr) + arr.T)
    np.fill_diagonal(p_a, 0.5)
    return p_a
