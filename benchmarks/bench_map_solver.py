"""Benchmark the Compare2Score MAP solvers: time per image and score agreement.

Run: python benchmarks/bench_map_solver.py [--images 10000] [--seed 0]  (with iqa_ray importable:
`pip install -e .` or PYTHONPATH=.)
Prints one row per solver: batch size, images timed, microseconds per image (best of
--repeat runs), and the max |score - batched Newton score| on the same random b vectors
(official anchor matrix, probit). The per-image solvers are tiny BLAS calls: set
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 for stable timings on a shared machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_ndtr

from iqa_ray.methods.compare2score.maths import (
    OFFICIAL_ANCHOR_MATRIX,
    build_comparison_matrix,
    map_estimate,
    map_estimate_reference_adam,
)


def _lbfgsb_score(c: np.ndarray) -> float:
    """Converged score for one (m, m) C with scipy L-BFGS-B (float64, analytic gradient)."""

    def negative(q: np.ndarray) -> tuple[float, np.ndarray]:
        d = q[:, None] - q[None, :]
        log_f = log_ndtr(d)
        floored = log_f < np.log(1e-6)
        ratio = np.where(floored, 0.0, np.exp(-0.5 * d * d - 0.5 * np.log(2 * np.pi) - log_f))
        weighted = c * ratio
        grad = weighted.sum(axis=1) - weighted.sum(axis=0) - q
        value = np.sum(c * np.maximum(log_f, np.log(1e-6))) - q @ q / 2
        return -value, -grad

    options = {"ftol": 1e-16, "gtol": 1e-10, "maxiter": 10_000}
    q = minimize(negative, np.zeros(len(c)), jac=True, method="L-BFGS-B", options=options).x
    return float(100 * (q[-1] - q.min()) / (q.max() - q.min()))


def _time(fn: Callable[[], np.ndarray], repeat: int) -> tuple[np.ndarray, float]:
    """Scores of the last run and the best wall time over ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        scores = fn()
        best = min(best, time.perf_counter() - start)
    return scores, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="b vectors for batched solvers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per solver; best is shown")
    args = parser.parse_args()
    p_a = OFFICIAL_ANCHOR_MATRIX
    b = np.random.default_rng(args.seed).random((args.images, 5))
    few = min(500, args.images)  # slow per-image solvers run on a prefix of the same b

    def one_by_one(solver: Callable[..., object], count: int) -> np.ndarray:
        return np.array([solver(p_a, b[k]).score[0] for k in range(count)])  # type: ignore[attr-defined]

    reference, seconds = _time(lambda: map_estimate(p_a, b).score, args.repeat)
    rows = [("newton batched", args.images, args.images, seconds, 0.0)]
    runs: list[tuple[str, int, int, Callable[[], np.ndarray]]] = [
        ("newton one-by-one", 1, few, lambda: one_by_one(map_estimate, few)),
        (
            "reference_adam batched",
            args.images,
            args.images,
            lambda: map_estimate_reference_adam(p_a, b).score,
        ),
        ("reference_adam one-by-one", 1, few, lambda: one_by_one(map_estimate_reference_adam, few)),
        (
            "scipy L-BFGS-B per image",
            1,
            few,
            lambda: np.array(
                [_lbfgsb_score(build_comparison_matrix(p_a, b[k])) for k in range(few)]
            ),
        ),
    ]
    for name, batch, count, fn in runs:
        scores, seconds = _time(fn, args.repeat)
        rows.append((name, batch, count, seconds, float(np.abs(scores - reference[:count]).max())))
    print(f"{'solver':<28}{'batch':>8}{'images':>8}{'us/image':>11}{'max |dscore|':>15}")
    for name, batch, count, seconds, diff in rows:
        print(f"{name:<28}{batch:>8}{count:>8}{1e6 * seconds / count:>11.1f}{diff:>15.3g}")


if __name__ == "__main__":
    main()
