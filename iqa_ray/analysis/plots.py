"""PNG plots for evaluation reports (matplotlib, the optional ``report`` extra), returned as bytes.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), never
through pyplot, so no global backend is switched and nothing needs a display.
"""

from __future__ import annotations

import io as _io
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from iqa_ray.analysis import metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_SCATTER_POINTS = 20_000  # more points only slow the drawing; the fit uses every pair
_HINT = "evaluation plots need matplotlib: pip install 'iqa_ray[report]'"


def require_matplotlib() -> None:
    """Raise ImportError with the install hint when matplotlib is missing."""
    _canvas_classes()


def _canvas_classes() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(_HINT) from exc
    return Figure, FigureCanvasAgg


def _png(fig: Figure, canvas_cls: type) -> bytes:
    canvas_cls(fig)  # attaches the Agg canvas that savefig renders with
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def scatter_png(score: pd.Series, mos: pd.Series, method: str, seed: int = 0) -> bytes:
    """Score vs MOS scatter with the fitted 4-parameter logistic curve and SRCC/PLCC in the title.

    Above ``MAX_SCATTER_POINTS`` pairs a seeded random subset is drawn (the caption says so).
    """
    figure_cls, canvas_cls = _canvas_classes()
    p, t, _ = metrics.finite_pairs(score, mos)
    fig = figure_cls(figsize=(5, 4))
    ax = fig.add_subplot()
    shown = np.arange(p.size)
    if p.size > MAX_SCATTER_POINTS:
        shown = np.random.default_rng(seed).choice(p.size, MAX_SCATTER_POINTS, replace=False)
    ax.scatter(p[shown], t[shown], s=6, alpha=0.3 if shown.size > 2000 else 0.8, linewidths=0)
    if p.size >= 2:
        fit = metrics.logistic4_fit(p, t)
        xs = np.linspace(p.min(), p.max(), 200)
        label = "4-param logistic" + ("" if fit.converged else " (linear fallback)")
        ax.plot(xs, metrics.logistic4(xs, fit), color="C3", label=label)
        ax.legend(loc="best", fontsize=8)
    subset = f", {shown.size} shown" if shown.size < p.size else ""
    ax.set_title(f"{method}: SRCC {metrics.srcc(p, t):.3f}, PLCC {metrics.plcc(p, t):.3f}"
                 f" (n={p.size}{subset})", fontsize=9)  # fmt: skip
    ax.set_xlabel(f"{method} score")
    ax.set_ylabel("MOS")
    fig.tight_layout()
    return _png(fig, canvas_cls)


def histograms_png(wide: pd.DataFrame, methods: list[str], bins: int = 50) -> bytes:
    """One histogram panel per method (own x axis: methods have different ranges)."""
    figure_cls, canvas_cls = _canvas_classes()
    fig = figure_cls(figsize=(4 * len(methods), 3))
    for i, method in enumerate(methods):
        ax = fig.add_subplot(1, len(methods), i + 1)
        values = wide[method].to_numpy(dtype=np.float64, na_value=np.nan)
        values = values[np.isfinite(values)]
        if values.size:
            ax.hist(values, bins=bins, color=f"C{i % 10}")
        ax.set_title(f"{method} (n={values.size})", fontsize=9)
        ax.set_xlabel("score")
    fig.tight_layout()
    return _png(fig, canvas_cls)
