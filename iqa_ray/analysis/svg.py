"""Inline SVG charts for the HTML reports (histogram, scatter with a fitted curve): plain strings,
no plotting library, so a report needs nothing beyond the base install and any browser."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
_W, _H = 360, 200
_L, _R, _T, _B = 44, 10, 22, 30  # margins: left, right, top, bottom
_MAX_POINTS = 5000


def color(index: int) -> str:
    """The palette colour of series ``index``."""
    return PALETTE[index % len(PALETTE)]


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _frame(title: str, x_label: str, y_label: str, x_range: tuple[float, float],
           y_range: tuple[float, float]) -> list[str]:
    """The SVG head, title, axes and end-of-axis tick labels."""
    x0, x1 = x_range
    y0, y1 = y_range
    bottom, right = _H - _B, _W - _R
    return [
        f'<svg width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" role="img" aria-label="{escape(title)}">',
        f'<text x="{_W / 2}" y="14" text-anchor="middle" font-size="12">{escape(title)}</text>',
        f'<line x1="{_L}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#444"/>',
        f'<line x1="{_L}" y1="{_T}" x2="{_L}" y2="{bottom}" stroke="#444"/>',
        f'<text x="{_L}" y="{bottom + 12}" font-size="10">{_fmt(x0)}</text>',
        f'<text x="{right}" y="{bottom + 12}" font-size="10" text-anchor="end">{_fmt(x1)}</text>',
        f'<text x="{(_L + right) / 2}" y="{_H - 4}" font-size="10" text-anchor="middle">'
        f"{escape(x_label)}</text>",
        f'<text x="{_L - 4}" y="{bottom}" font-size="10" text-anchor="end">{_fmt(y0)}</text>',
        f'<text x="{_L - 4}" y="{_T + 8}" font-size="10" text-anchor="end">{_fmt(y1)}</text>',
        f'<text x="10" y="{(_T + bottom) / 2}" font-size="10" text-anchor="middle" '
        f'transform="rotate(-90 10 {(_T + bottom) / 2})">{escape(y_label)}</text>',
    ]


def _span(values: np.ndarray) -> tuple[float, float]:
    lo, hi = float(values.min()), float(values.max())
    return (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)


def histogram_svg(values: Sequence[float] | np.ndarray, title: str, fill: str = PALETTE[0],
                  bins: int = 30) -> str:
    """A histogram of the finite ``values`` (an empty frame says "no scores")."""
    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    if data.size == 0:
        head = _frame(title, "score", "images", (0.0, 1.0), (0.0, 1.0))
        return "".join([*head, f'<text x="{_W / 2}" y="{_H / 2}" text-anchor="middle">no scores'
                        "</text></svg>"])
    counts, edges = np.histogram(data, bins=bins, range=_span(data))
    top = max(int(counts.max()), 1)
    parts = _frame(title, "score", "images", (float(edges[0]), float(edges[-1])), (0, top))
    width = (_W - _L - _R) / bins
    height = _H - _T - _B
    for i, n in enumerate(counts):
        h = height * n / top
        parts.append(f'<rect x="{_L + i * width:.1f}" y="{_H - _B - h:.1f}" '
                     f'width="{max(width - 1, 1):.1f}" height="{h:.1f}" fill="{fill}"/>')
    return "".join([*parts, "</svg>"])


def scatter_svg(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, title: str,
                x_label: str, y_label: str, fill: str = PALETTE[0],
                curve: tuple[np.ndarray, np.ndarray] | None = None, seed: int = 0) -> str:
    """A scatter of the finite (x, y) pairs (a seeded subset above 5000), with an optional
    fitted curve given as (xs, ys)."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if xs.size == 0:
        head = _frame(title, x_label, y_label, (0.0, 1.0), (0.0, 1.0))
        return "".join([*head, "</svg>"])
    if xs.size > _MAX_POINTS:
        pick = np.random.default_rng(seed).choice(xs.size, _MAX_POINTS, replace=False)
        xs, ys = xs[pick], ys[pick]
    (x0, x1), (y0, y1) = _span(xs), _span(ys)

    def px(v: np.ndarray) -> np.ndarray:
        return _L + (v - x0) / (x1 - x0) * (_W - _L - _R)

    def py(v: np.ndarray) -> np.ndarray:
        return _H - _B - (v - y0) / (y1 - y0) * (_H - _T - _B)

    parts = _frame(title, x_label, y_label, (x0, x1), (y0, y1))
    parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2" fill="{fill}" fill-opacity="0.6"/>'
              for a, b in zip(px(xs), py(ys), strict=True)]
    if curve is not None:
        cx, cy = np.asarray(curve[0], float), np.clip(np.asarray(curve[1], float), y0, y1)
        points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px(cx), py(cy), strict=True))
        parts.append(f'<polyline points="{points}" fill="none" stroke="#d62728" '
                     'stroke-width="1.5"/>')
    return "".join([*parts, "</svg>"])
