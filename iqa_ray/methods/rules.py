"""Pure scoring rules on next-token logits (numpy only): the one implementation the methods and
the evaluation of stored logits (``iqa_ray.analysis``) both use."""

from __future__ import annotations

import numpy as np
from scipy.special import expit

LEVEL_WEIGHTS_1_5 = np.array([5.0, 4.0, 3.0, 2.0, 1.0])  # excellent, good, fair, poor, bad
LEVEL_WEIGHTS_0_1 = np.array([1.0, 0.75, 0.5, 0.25, 0.0])  # Q-Align scorer.py's 0..1 scale


def softmax(logits: np.ndarray, temperature: float = 1.0, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax of ``logits / temperature`` along ``axis`` (float64)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def level_expectation(logits: np.ndarray, weights: np.ndarray = LEVEL_WEIGHTS_1_5) -> np.ndarray:
    """Q-Align rule: softmax over the level words' logits, dotted with the level weights.

    Args:
        logits: (..., n_levels) in the order of ``weights`` (best first by default).
        weights: value of each level; [5,4,3,2,1] gives 1..5, [1,.75,.5,.25,0] gives 0..1.
    """
    # A row-wise sum, not a matrix product: BLAS may sum a (B, n) @ (n,) product differently
    # for different B, and a row's score must not depend on the rows batched with it.
    return (softmax(logits) * np.asarray(weights, dtype=np.float64)).sum(axis=-1)


def binary_probability(logits: np.ndarray, temperature: float = 100.0) -> np.ndarray:
    """Q-Bench rule: softmax([l_pos, l_neg] / T)[0] for logits of shape (..., 2), in [0, 1].

    Computed as ``sigmoid((l_pos - l_neg) / T)``: the same quantity without overflow, and a
    function of the logit difference alone, so logits that differ by the same amount score
    exactly the same (a plain softmax splits such ties with rounding noise, which changes SRCC
    on coarse logits such as the Q-Bench A3 outputs, whose logits lie on a 0.5 grid).

    Raises:
        ValueError: ``temperature`` is not positive.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits, dtype=np.float64)
    return expit((z[..., 0] - z[..., 1]) / temperature)
