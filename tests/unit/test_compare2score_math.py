"""Compare2Score math: reference values, solver cross-checks, properties, anchor selection."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import norm

from iqa_ray.errors import ConfigError
from iqa_ray.methods.compare2score import maths as c2s
from iqa_ray.methods.compare2score.maths import (
    OFFICIAL_ANCHOR_MATRIX,
    anchor_matrix_from_pairs,
    build_comparison_matrix,
    map_estimate,
    map_estimate_reference_adam,
    soft_comparison,
    torch_cpu_rand,
)
from iqa_ray.methods.compare2score.selection import (
    empty_mos_intervals,
    select_anchors_by_mos,
    select_anchors_by_quantiles,
)

# (b against the five official anchors, converged score) from the spec, methods.md section 2.
SPEC_CASES = [
    ([0.50] * 5, 54.06),
    ([0.45] * 5, 45.51),
    ([0.55] * 5, 62.61),
    ([0.60] * 5, 71.19),
    ([0.75, 0.5, 0.25, 0.25, 0.0], 32.10),
    ([1.0, 1.0, 0.75, 0.75, 0.5], 100.0),
    ([1.0] * 5, 100.0),
    ([0.0] * 5, 0.0),
]
SPEC_B = np.array([b for b, _ in SPEC_CASES])
SPEC_SCORES = np.array([s for _, s in SPEC_CASES])


def _random_b(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 5))


# ---------------------------------------------------------------- soft comparison, matrix C


def test_soft_comparison_uniform_logits_give_half() -> None:
    assert soft_comparison(np.zeros(5), 100.0) == pytest.approx(0.5)
    assert soft_comparison(np.full((3, 5), 7.0), 1.0) == pytest.approx([0.5] * 3)


def test_soft_comparison_one_hot_superior_gives_one() -> None:
    logits = np.array([0.0, 0.0, 0.0, 0.0, 50.0])
    assert soft_comparison(logits, 1.0) == pytest.approx(1.0, abs=1e-12)
    inferior = np.array([50.0, 0.0, 0.0, 0.0, 0.0])
    assert soft_comparison(inferior, 1.0) == pytest.approx(0.0, abs=1e-12)


def test_soft_comparison_is_stable_and_paper_temperature_flattens() -> None:
    assert soft_comparison(np.array([0.0, 0.0, 0.0, 0.0, 1e6]), 1.0) == 1.0
    # T = 100 (paper mode) turns a 10-logit margin into a small move away from 0.5.
    assert 0.5 < soft_comparison(np.array([0.0, 0.0, 0.0, 0.0, 10.0]), 100.0) < 0.55


def test_soft_comparison_rejects_bad_inputs() -> None:
    with pytest.raises(ConfigError):
        soft_comparison(np.zeros(5), 0.0)
    with pytest.raises(ValueError):
        soft_comparison(np.zeros(4), 1.0)


def test_build_comparison_matrix_layout_single_batched_and_general_n() -> None:
    b = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    c = build_comparison_matrix(OFFICIAL_ANCHOR_MATRIX, b)
    assert c.shape == (6, 6)
    np.testing.assert_array_equal(c[:5, :5], OFFICIAL_ANCHOR_MATRIX)
    np.testing.assert_array_equal(c[5, :5], b)
    np.testing.assert_array_equal(c[:5, 5], 1 - b)
    assert c[5, 5] == 0.5
    batched = build_comparison_matrix(OFFICIAL_ANCHOR_MATRIX, np.stack([b, 1 - b]))
    assert batched.shape == (2, 6, 6)
    np.testing.assert_array_equal(batched[0], c)
    three = build_comparison_matrix(np.full((3, 3), 0.5), np.array([0.2, 0.4, 0.9]))
    assert three.shape == (4, 4)
    np.testing.assert_array_equal(three[3], [0.2, 0.4, 0.9, 0.5])


def test_build_comparison_matrix_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError):
        build_comparison_matrix(OFFICIAL_ANCHOR_MATRIX, np.zeros(4))
    with pytest.raises(ValueError):
        build_comparison_matrix(OFFICIAL_ANCHOR_MATRIX, np.array([0.5, 0.5, np.nan, 0.5, 0.5]))
    with pytest.raises(ValueError):
        build_comparison_matrix(np.full((2, 3), 0.5), np.zeros(3))


# ---------------------------------------------------------------- MAP: values and solvers


def test_map_estimate_matches_spec_reference_values() -> None:
    result = map_estimate(OFFICIAL_ANCHOR_MATRIX, SPEC_B)
    np.testing.assert_allclose(result.score, SPEC_SCORES, atol=0.01)
    # Saturated cases converge too: the optimum is interior in q, only the score is clipped.
    assert result.converged.all()
    assert result.iterations.max() <= 10
    assert result.score[-2] == 100.0 and result.score[-1] == 0.0


def _independent_negative_objective(q: np.ndarray, c: np.ndarray) -> tuple[float, np.ndarray]:
    """-L and its gradient written with scipy.stats.norm directly (probit link)."""
    d = q[:, None] - q[None, :]
    cdf = norm.cdf(d)
    value = np.sum(c * np.log(np.maximum(cdf, 1e-6))) - q @ q / 2
    ratio = np.where(cdf > 1e-6, norm.pdf(d) / np.maximum(cdf, 1e-300), 0.0)
    weighted = c * ratio
    grad = weighted.sum(axis=1) - weighted.sum(axis=0) - q
    return -value, -grad


def test_map_estimate_agrees_with_scipy_lbfgsb() -> None:
    b = np.vstack([_random_b(20, seed=1), SPEC_B])
    result = map_estimate(OFFICIAL_ANCHOR_MATRIX, b)
    assert result.converged.all()
    c = build_comparison_matrix(OFFICIAL_ANCHOR_MATRIX, b)
    for k in range(len(b)):
        fit = minimize(
            _independent_negative_objective,
            np.zeros(6),
            args=(c[k],),
            jac=True,
            method="L-BFGS-B",
            options={"ftol": 1e-16, "gtol": 1e-12, "maxiter": 10_000},
        )
        np.testing.assert_allclose(result.q[k], fit.x, atol=1e-6)


def test_map_estimate_handles_the_floor_region() -> None:
    # Forty strictly ordered anchors with near-certain comparisons spread q far enough (about
    # 6) that many pairs sit in the floored region (F(q_i - q_j) < 1e-6) at the optimum.
    n = 40
    p_a = np.where(np.arange(n)[:, None] > np.arange(n)[None, :], 1.0 - 1e-9, 1e-9)
    np.fill_diagonal(p_a, 0.5)
    b = np.stack([np.ones(n), np.zeros(n), (np.arange(n) < 30).astype(float)])
    result = map_estimate(p_a, b)
    assert result.converged.all()
    d = result.q[:, :, None] - result.q[:, None, :]
    assert (norm.cdf(d) < 1e-6).sum() > 10
    c = build_comparison_matrix(p_a, b)
    for k in range(len(b)):
        fit = minimize(
            _independent_negative_objective,
            np.zeros(n + 1),
            args=(c[k],),
            jac=True,
            method="L-BFGS-B",
            options={"ftol": 1e-16, "gtol": 1e-12, "maxiter": 10_000},
        )
        np.testing.assert_allclose(result.q[k], fit.x, atol=1e-6)
        value = -_independent_negative_objective(result.q[k], c[k])[0]
        for seed in range(5):  # no nearby point is better
            probe = result.q[k] + 1e-4 * np.random.default_rng(seed).standard_normal(n + 1)
            assert -_independent_negative_objective(probe, c[k])[0] <= value


@pytest.mark.parametrize("link", ["probit", "logistic"])
def test_analytic_gradient_and_hessian_match_finite_differences(link: str) -> None:
    rng = np.random.default_rng(3)
    c = build_comparison_matrix(OFFICIAL_ANCHOR_MATRIX, rng.random((1, 5)))
    q = 4.0 * rng.standard_normal((1, 6))  # wide spread: several pairs are floored
    grad, hess = c2s._gradient_hessian(c, q, link)
    h = 1e-6
    for i in range(6):
        step = np.zeros((1, 6))
        step[0, i] = h
        f_plus, f_minus = c2s._objective(c, q + step, link), c2s._objective(c, q - step, link)
        assert grad[0, i] == pytest.approx((f_plus - f_minus)[0] / (2 * h), abs=1e-6)
        g_plus = c2s._gradient(c, q + step, link)
        g_minus = c2s._gradient(c, q - step, link)
        np.testing.assert_allclose(hess[0, :, i], (g_plus - g_minus)[0] / (2 * h), atol=1e-5)
    assert np.linalg.eigvalsh(hess[0]).max() <= -1.0 + 1e-12


def test_batch_equals_one_image_at_a_time() -> None:
    b = np.vstack([_random_b(50, seed=2), SPEC_B])
    batched = map_estimate(OFFICIAL_ANCHOR_MATRIX, b)
    for k in range(len(b)):
        single = map_estimate(OFFICIAL_ANCHOR_MATRIX, b[k])
        np.testing.assert_allclose(single.q[0], batched.q[k], rtol=0, atol=1e-12)
        assert single.score[0] == pytest.approx(batched.score[k], abs=1e-12)
        assert single.iterations[0] == batched.iterations[k]


def test_score_is_monotone_in_each_comparison_and_in_a_common_one() -> None:
    grid = np.linspace(0.0, 1.0, 41)
    for base in _random_b(5, seed=4):
        for k in range(5):
            b = np.tile(base, (len(grid), 1))
            b[:, k] = grid
            assert np.all(np.diff(map_estimate(OFFICIAL_ANCHOR_MATRIX, b).score) >= -1e-9)
    common = map_estimate(OFFICIAL_ANCHOR_MATRIX, np.tile(grid[:, None], (1, 5))).score
    assert np.all(np.diff(common) >= -1e-9)
    assert common[0] == 0.0 and common[-1] == 100.0


@pytest.mark.parametrize("link", ["probit", "logistic"])
def test_reversing_every_comparison_mirrors_the_score(link: str) -> None:
    # L(q; C^T) = L(-q; C), and C^T is the matrix built from (P_a^T, 1 - b): q -> -q and
    # score -> 100 - score exactly, saturated cases included.
    b = np.vstack([_random_b(30, seed=5), SPEC_B])
    forward = map_estimate(OFFICIAL_ANCHOR_MATRIX, b, link=link)
    mirrored = map_estimate(OFFICIAL_ANCHOR_MATRIX.T, 1.0 - b, link=link)
    np.testing.assert_allclose(mirrored.q, -forward.q, atol=1e-9)
    np.testing.assert_allclose(mirrored.score, 100.0 - forward.score, atol=1e-7)
    # For a consistent anchor matrix (P_a + P_a^T = 1), P_a^T is 1 - P_a.
    consistent = 0.5 * (OFFICIAL_ANCHOR_MATRIX + 1.0 - OFFICIAL_ANCHOR_MATRIX.T)
    np.testing.assert_allclose(
        map_estimate(1.0 - consistent, 1.0 - b, link=link).score,
        100.0 - map_estimate(consistent, b, link=link).score,
        atol=1e-7,
    )


def test_scores_stay_in_range_and_ties_give_fifty() -> None:
    score = map_estimate(OFFICIAL_ANCHOR_MATRIX, _random_b(200, seed=6)).score
    assert score.min() >= 0.0 and score.max() <= 100.0
    tie = map_estimate(np.full((5, 5), 0.5), np.full(5, 0.5))
    assert tie.score[0] == 50.0 and tie.converged[0]


def test_non_convergence_is_reported() -> None:
    result = map_estimate(OFFICIAL_ANCHOR_MATRIX, SPEC_B, max_iter=1)
    assert not result.converged.any()
    assert (result.iterations == 1).all()


# ---------------------------------------------------------------- reference-compatible Adam


def test_torch_cpu_rand_reproduces_torch_manual_seed_zero() -> None:
    # torch.manual_seed(0); torch.rand(6) on CPU
    expected = [
        0.49625658988952637,
        0.7682217955589294,
        0.08847743272781372,
        0.13203048706054688,
        0.30742281675338745,
        0.6340786814689636,
    ]
    np.testing.assert_array_equal(torch_cpu_rand(0, 6), expected)


@pytest.mark.parametrize("link", ["probit", "logistic"])
def test_reference_adam_is_close_to_the_converged_optimum(link: str) -> None:
    adam = map_estimate_reference_adam(OFFICIAL_ANCHOR_MATRIX, SPEC_B, link=link)
    newton = map_estimate(OFFICIAL_ANCHOR_MATRIX, SPEC_B, link=link)
    assert np.abs(adam.score - newton.score).max() <= 0.3  # spec: "at most about 0.3 points"
    assert (adam.iterations == 100).all()
    long_run = map_estimate_reference_adam(
        OFFICIAL_ANCHOR_MATRIX, SPEC_B[:4], steps=3000, lr=0.01, link=link, tol=1e-4
    )
    assert long_run.converged.all()
    np.testing.assert_allclose(long_run.score, newton.score[:4], atol=1e-2)


def test_reference_adam_matches_a_torch_replica_of_the_reference_loop() -> None:
    torch = pytest.importorskip("torch")
    b = np.vstack([SPEC_B[:5], _random_b(3, seed=7)])
    ours = map_estimate_reference_adam(OFFICIAL_ANCHOR_MATRIX, b, link="logistic")
    for k in range(len(b)):
        c = torch.tensor(build_comparison_matrix(OFFICIAL_ANCHOR_MATRIX, b[k]), dtype=torch.float32)
        torch.manual_seed(0)
        s = torch.rand(6, requires_grad=True)
        optimizer = torch.optim.Adam([s], lr=0.1)
        for _ in range(100):
            optimizer.zero_grad()
            pairs = torch.maximum(torch.sigmoid(s[:, None] - s), torch.tensor(1e-6))
            loss = -(torch.sum(c * torch.log(pairs)) - torch.sum(s**2) / 2)
            loss.backward()
            optimizer.step()
        q = s.detach().double().numpy()
        score = 100 * (q[-1] - q.min()) / (q.max() - q.min())
        assert ours.score[k] == pytest.approx(score, abs=1e-2)


# ---------------------------------------------------------------- anchor selection

# MOS in [0, 100]: intervals [0,20) [20,40) [40,60) [60,80) [80,100].
LABELLED_MOS = np.array([0.0, 10.0, 19.9, 25.0, 31.0, 29.0, 40.0, 59.999, 60.0, 79.0, 100.0, 85.0])
LABELLED_STD = np.array([5.0, 1.0, 2.0, 3.0, 3.0, 3.0, 0.5, 0.9, 2.0, 1.5, 9.0, 10.0])


def test_select_anchors_by_mos_smallest_std_per_interval() -> None:
    # 1: smallest std; 4: std tie with 3 and 5, 4 and 5 equally close to the centre 30,
    # lowest index; 6: MOS 40 sits on an edge and belongs to the upper interval; 10: max MOS.
    chosen = select_anchors_by_mos(LABELLED_MOS, LABELLED_STD, alpha=5)
    np.testing.assert_array_equal(chosen, [1, 4, 6, 9, 10])
    assert empty_mos_intervals(LABELLED_MOS, alpha=5).size == 0


def test_select_anchors_by_mos_without_std_takes_the_centre() -> None:
    chosen = select_anchors_by_mos(LABELLED_MOS, None, alpha=5)
    np.testing.assert_array_equal(chosen, [1, 4, 7, 9, 11])


def test_select_anchors_by_mos_fills_empty_intervals_from_the_nearest_unused() -> None:
    mos = np.array([0.0, 5.0, 12.0, 50.0, 55.0, 100.0])
    np.testing.assert_array_equal(empty_mos_intervals(mos, alpha=5), [1, 3])
    chosen = select_anchors_by_mos(mos, np.ones(6), alpha=5)
    np.testing.assert_array_equal(chosen, [1, 2, 3, 4, 5])
    assert len(set(chosen.tolist())) == 5


def test_select_anchors_by_mos_rejects_bad_tables() -> None:
    with pytest.raises(ConfigError):
        select_anchors_by_mos(np.arange(4.0), None, alpha=5)
    with pytest.raises(ConfigError):
        select_anchors_by_mos(np.full(10, 3.0), None, alpha=5)
    with pytest.raises(ConfigError):
        select_anchors_by_mos(np.array([1.0, np.nan, 3.0, 4.0, 5.0]), None, alpha=5)
    with pytest.raises(ConfigError):
        select_anchors_by_mos(np.arange(10.0), -np.ones(10), alpha=5)


def test_select_anchors_by_quantiles_known_answer() -> None:
    values = np.random.default_rng(8).permutation(101).astype(float)
    chosen = select_anchors_by_quantiles(values, alpha=5)
    # Quantiles at 0.1, 0.3, ..., 0.9 of 0..100 are exactly 10, 30, 50, 70, 90.
    np.testing.assert_array_equal(values[chosen], [10.0, 30.0, 50.0, 70.0, 90.0])


def test_select_anchors_by_quantiles_distinct_under_ties() -> None:
    chosen = select_anchors_by_quantiles(np.array([0.0] * 10 + [1.0]), alpha=5)
    np.testing.assert_array_equal(chosen, [0, 1, 2, 3, 4])
    with pytest.raises(ConfigError):
        select_anchors_by_quantiles(np.arange(3.0), alpha=5)


def test_anchor_matrix_from_pairs_is_antisymmetric_and_cancels_position_bias() -> None:
    true = 0.5 * (OFFICIAL_ANCHOR_MATRIX + 1.0 - OFFICIAL_ANCHOR_MATRIX.T)
    # comparisons[i, j]: anchor i first, j second, b = P(j better than i) = true[j, i],
    # plus a constant bias towards the second image, which the two orders cancel.
    comparisons = np.clip(true.T + 0.1, 0.0, 1.0)
    bias_free = true.T.copy()
    np.testing.assert_allclose(anchor_matrix_from_pairs(bias_free), true, atol=1e-15)
    mid = (true > 0.1) & (true < 0.9)
    np.testing.assert_allclose(anchor_matrix_from_pairs(comparisons)[mid], true[mid], atol=1e-15)
    random = np.random.default_rng(9).random((7, 7))
    random[np.diag_indices(7)] = np.nan
    p_a = anchor_matrix_from_pairs(random)
    np.testing.assert_allclose(p_a + p_a.T, 1.0, atol=1e-15)
    np.testing.assert_array_equal(np.diag(p_a), 0.5)
    with pytest.raises(ValueError):
        anchor_matrix_from_pairs(np.full((3, 3), 1.5))
