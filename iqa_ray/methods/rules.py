"""Pure scoring rules on next-token logits (numpy only; shared by methods and evaluation)."""

from __future__ import annotations

import numpy as np

LEVEL_WEIGHTS_1_5 = np.array([5.0, 4.0, 3.0, 2.0, 1.0])  # excellent, good, fair, poor, bad


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
    return softmax(logits) @ np.asarray(weights, dtype=np.float64)


def binary_probability(logits: np.ndarray, temperature: float = 100.0) -> np.ndarray:
    """Q-Bench rule: softmax([l_pos, l_neg] / T)[0] for logits of shape (..., 2)."""
    return softmax(logits, temperature)[..., 0]
