"""Scoring rules on next-token logits: softmax, level expectation, binary probability."""

from __future__ import annotations

import math

import numpy as np
import pytest

from iqa_ray.methods import get_method
from iqa_ray.methods.rules import binary_probability, level_expectation, softmax

ZERO_TO_ONE = np.array([1.0, 0.75, 0.5, 0.25, 0.0])


def reference_softmax(row: list[float]) -> list[float]:
    """Softmax of one small row in plain Python (exact for moderate logits)."""
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


@pytest.mark.parametrize("shift", [0.0, 1e3, -1e3, 1e6, 1e300])
def test_softmax_is_shift_invariant_and_finite(shift: float) -> None:
    logits = np.array([1.0, 2.0, 3.0]) + shift
    probs = softmax(logits)
    assert np.isfinite(probs).all()
    assert probs.sum() == pytest.approx(1.0)
    if shift < 1e300:  # at 1e300 the float spacing swallows the 1.0 differences
        np.testing.assert_allclose(probs, reference_softmax([1.0, 2.0, 3.0]), rtol=1e-6)


def test_softmax_huge_margin_and_axis() -> None:
    probs = softmax(np.array([[1e4, 0.0], [0.0, 1e4]]))
    np.testing.assert_array_equal(probs, [[1.0, 0.0], [0.0, 1.0]])
    cols = softmax(np.array([[0.0, 5.0], [0.0, 5.0]]), axis=0)
    np.testing.assert_allclose(cols, 0.5)
    assert softmax(np.array([1, 2], dtype=np.float16)).dtype == np.float64


def test_softmax_temperature() -> None:
    np.testing.assert_allclose(
        softmax(np.array([4.0, 2.0]), temperature=2.0), reference_softmax([2.0, 1.0])
    )


def test_level_expectation_uniform_and_one_hot() -> None:
    assert level_expectation(np.zeros(5)) == pytest.approx(3.0)
    for best in range(5):
        logits = np.zeros(5)
        logits[best] = 1e3
        assert level_expectation(logits) == pytest.approx(5.0 - best)


def test_level_expectation_zero_to_one_weights() -> None:
    assert level_expectation(np.zeros(5), ZERO_TO_ONE) == pytest.approx(0.5)
    assert level_expectation(np.array([50.0, 0, 0, 0, 0]), ZERO_TO_ONE) == pytest.approx(1.0)
    assert level_expectation(np.array([0, 0, 0, 0, 50.0]), ZERO_TO_ONE) == pytest.approx(0.0)
    scores = level_expectation(np.random.default_rng(0).normal(0, 10, (200, 5)), ZERO_TO_ONE)
    assert scores.shape == (200,)
    assert ((scores >= 0) & (scores <= 1)).all()


def test_level_expectation_matches_reference() -> None:
    row = [2.0, 1.5, 0.0, -1.0, -3.0]
    expected = sum(p * w for p, w in zip(reference_softmax(row), [5, 4, 3, 2, 1], strict=True))
    assert level_expectation(np.array(row)) == pytest.approx(expected)


@pytest.mark.parametrize(("good", "poor"), [(0.0, 0.0), (25.0, 3.0), (-7.0, 40.0), (1e4, 0.0)])
def test_binary_probability_closed_form(good: float, poor: float) -> None:
    expected = 1.0 / (1.0 + math.exp(-(good - poor) / 100.0))
    assert binary_probability(np.array([good, poor]), 100.0) == pytest.approx(expected)


def test_binary_probability_batch_and_temperature() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    out = binary_probability(logits, temperature=1.0)
    assert out.shape == (3,)
    np.testing.assert_allclose(out, [1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2)), 0.5])


LEVEL_CASES = [
    # (method params, logits rows); expected scores come from the plain-Python reference.
    ({}, [[0.0] * 5]),
    ({}, [[3.0, 1.0, 0.0, -1.0, -2.0], [-2.0, -1.0, 0.0, 1.0, 3.0]]),
    ({"weights": [1.0, 0.75, 0.5, 0.25, 0.0]}, [[1.0, 2.0, 3.0, 2.0, 1.0]]),
    ({"words": ["high", "low"], "weights": [1.0, 0.0]}, [[2.0, 0.0], [0.0, 0.0]]),
]


@pytest.mark.parametrize(("params", "rows"), LEVEL_CASES)
def test_qalign_levels_reduce(params: dict, rows: list[list[float]]) -> None:
    method = get_method("qalign_levels")(params)
    weights = method.params.weights
    out = method.reduce([np.array(rows)])
    assert set(out) == {"score", "level_probs"}
    for row, score, probs in zip(rows, out["score"], out["level_probs"], strict=True):
        reference = reference_softmax(row)
        np.testing.assert_allclose(probs, reference, rtol=1e-9)
        assert score == pytest.approx(sum(p * w for p, w in zip(reference, weights, strict=True)))
        assert min(weights) <= score <= max(weights)


@pytest.mark.parametrize(
    ("temperature", "rows"),
    [(100.0, [[10.0, 2.0], [2.0, 10.0]]), (1.0, [[0.5, 0.0]]), (100.0, [[0.0, 0.0]])],
)
def test_qbench_binary_reduce(temperature: float, rows: list[list[float]]) -> None:
    method = get_method("qbench_binary")({"temperature": temperature})
    out = method.reduce([np.array(rows)])
    assert out["word_logits"] == rows  # raw logits kept for audits
    for (good, poor), score in zip(rows, out["score"], strict=True):
        assert score == pytest.approx(1.0 / (1.0 + math.exp(-(good - poor) / temperature)))


def test_qbench_default_temperature_is_q_bench() -> None:
    assert get_method("qbench_binary")({}).params.temperature == 100.0


def test_binary_probability_matches_the_softmax_and_keeps_ties() -> None:
    assert binary_probability(np.array([3.0, 3.0])) == 0.5
    expected = math.exp(0.15) / (math.exp(0.15) + math.exp(0.05))
    assert binary_probability(np.array([15.0, 5.0])) == pytest.approx(expected)
    assert binary_probability(np.array([1e6, -1e6]), temperature=1.0) == 1.0  # no overflow
    logits = np.random.default_rng(3).normal(0, 5, (1000, 2))
    np.testing.assert_allclose(binary_probability(logits, 7.0), softmax(logits, 7.0)[:, 0],
                               rtol=0, atol=1e-15)
    # Same difference, different offsets on a 0.5 grid: exactly one value.
    grid = np.array([[2.5, 0.5], [10.0, 8.0], [-3.0, -5.0], [101.5, 99.5]])
    assert len(set(binary_probability(grid, 100.0).tolist())) == 1
    with pytest.raises(ValueError):
        binary_probability(np.array([1.0, 2.0]), temperature=0.0)
