"""HTML reports of the filter job (counts per group and reason, kept and rejected examples as
thumbnails) and of the evaluate job (the metrics table, score-vs-MOS scatter plots with the
fitted logistic, score histograms), written beside their other outputs as ``report.html``."""

from __future__ import annotations

import json
from html import escape
from typing import Any

import numpy as np
import pandas as pd

from iqa_ray import io
from iqa_ray.analysis import metrics, svg
from iqa_ray.analysis import report as rp
from iqa_ray.analysis.scores import ALL_GROUP
from iqa_ray.schema import Col

N_EXAMPLES = 12


def _tiles(frame: pd.DataFrame, caption: str, method: str | None) -> list[rp.Tile]:
    tiles = []
    for row in frame.head(N_EXAMPLES).to_dict("records"):
        name = escape(str(row[Col.URI]).rsplit("/", 1)[-1])
        score = row.get(method) if method else None
        head = f'<span class="score">{score:.4g}</span> ' if isinstance(score, float) else ""
        text = escape(str(row.get(caption, ""))) if caption in row else ""
        tiles.append(rp.Tile(str(row[Col.URI]), f"{head}{name}", f"{row[Col.URI]}\n{text}"))
    return tiles


def filter_page(summary: dict[str, Any], keep: pd.DataFrame, reject: pd.DataFrame,
                per_group: pd.DataFrame, storage_options: dict[str, Any] | None) -> str:
    """The filter report: the rule, counts, per-group table, reasons, examples."""
    rule = summary.get("rule") or {}
    method = next((c["method"] for c in rule.get("conditions") or []), None) or rule.get(
        "rank_method")
    order = [method] if method in keep.columns else []
    kept = keep.sort_values(order, ascending=False) if order else keep
    reasons = pd.DataFrame(sorted((summary.get("rejected_by_reason_code") or {}).items()),
                           columns=["reason_code", "images"])
    kept_tiles = _tiles(kept, "rank", method)
    rejected_tiles = _tiles(reject, "reason", method)
    thumbs = rp.thumbnails([t.uri for t in kept_tiles + rejected_tiles], storage_options)
    body = [
        f"<h1>Filter <code>{escape(str(summary.get('name')))}</code></h1>",
        rp.pairs([("runs", ", ".join(summary.get("runs") or [])),
                  ("images", summary.get("images")), ("kept", summary.get("kept")),
                  ("rejected", summary.get("rejected")),
                  ("dry run", "yes" if summary.get("dry_run") else "no")]),
        "<h2>Rule</h2>", f"<pre>{escape(json.dumps(rule, indent=2))}</pre>",
        "<h2>Per group</h2>", rp.table(per_group),
        "<h2>Rejected by reason</h2>", rp.table(reasons),
        f"<h2>Kept (first {N_EXAMPLES}{', best ' + escape(method) + ' first' if order else ''})"
        "</h2>", rp.gallery(kept_tiles, thumbs),
        f"<h2>Rejected (first {N_EXAMPLES}; hover for the reason)</h2>",
        rp.gallery(rejected_tiles, thumbs),
        rp.table(reject.head(N_EXAMPLES)[[Col.URI, "reason"]]) if "reason" in reject else "",
    ]
    return rp.page(f"iqa_ray filter {summary.get('name')}", body)


def write_filter_report(uri: str, summary: dict[str, Any], keep: pd.DataFrame,
                        reject: pd.DataFrame, per_group: pd.DataFrame,
                        storage_options: dict[str, Any] | None) -> str:
    """Write ``<filter folder>/report.html``; returns its URI."""
    html = filter_page(summary, keep, reject, per_group, storage_options)
    return rp.write_page(io.join(uri, "report.html"), html, storage_options)


def write_page_name(folder: str, html: str, storage_options: dict[str, Any] | None) -> str:
    """Write ``<folder>/report.html``; returns the file name (for a job's list of files)."""
    rp.write_page(io.join(folder, "report.html"), html, storage_options)
    return "report.html"


def _metric_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The metrics table as shown: CIs in brackets, the logistic PLCC labelled."""

    def ci(value: float, low: float, high: float) -> str:
        if pd.isna(value):
            return "n/a"
        return f"{value:.3f}" + ("" if pd.isna(low) else f" [{low:.3f}, {high:.3f}]")

    return pd.DataFrame({
        "group": table["group"], "method": table["method"], "n": table["n"],
        "errors": table["n_errors"],
        "SRCC [95% CI]": [ci(*r) for r in table[["srcc", "srcc_ci_low", "srcc_ci_high"]].values],
        "PLCC [95% CI]": [ci(*r) for r in table[["plcc", "plcc_ci_low", "plcc_ci_high"]].values],
        "KRCC": table["krcc"], "RMSE": table["rmse"],
        "PLCC (4-param logistic)": table["plcc_logistic"],
    })


def _scatter(method: str, scores: pd.Series, mos: pd.Series, index: int) -> str:
    p, t, _ = metrics.finite_pairs(scores, mos)
    curve = None
    if p.size >= 2:
        fit = metrics.logistic4_fit(p, t)
        xs = np.linspace(p.min(), p.max(), 100)
        curve = (xs, metrics.logistic4(xs, fit))
    title = f"{method}: SRCC {metrics.srcc(p, t):.3f} (n={p.size})" if p.size >= 2 else method
    return svg.scatter_svg(p, t, title, f"{method} score", "MOS", svg.color(index), curve)


def evaluation_page(name: str, info: dict[str, Any], table: pd.DataFrame,
                    scores: dict[str, pd.Series], mos: pd.Series, runs: list[str],
                    labels_uri: str) -> str:
    """The evaluation report: the label join, metrics (all, then per group), plots."""
    overall = table[table["group"] == ALL_GROUP]
    grouped = table[table["group"] != ALL_GROUP]
    scatters = [_scatter(m, s, mos, i) for i, (m, s) in enumerate(scores.items())]
    hists = [svg.histogram_svg(s.to_numpy(dtype=float, na_value=np.nan), f"{m} (labelled images)",
                               svg.color(i)) for i, (m, s) in enumerate(scores.items())]
    body = [
        f"<h1>Evaluation <code>{escape(name)}</code></h1>",
        rp.pairs([("runs", ", ".join(runs)), ("labels", labels_uri),
                  *[(f"match: {k}", v) for k, v in info.items()]]),
        "<p>SRCC, PLCC, KRCC and RMSE on raw scores; PLCC (4-param logistic) after fitting the "
        "VQEG logistic from score to MOS (the red curve). 95% CIs: percentile bootstrap.</p>",
        "<h2>All images</h2>", rp.table(_metric_rows(overall).drop(columns="group")),
    ]
    if len(grouped):
        body += ["<h2>Per group</h2>", rp.table(_metric_rows(grouped))]
    body += ["<h2>Score vs MOS</h2>", f'<div class="charts">{"".join(scatters)}</div>',
             "<h2>Score histograms</h2>", f'<div class="charts">{"".join(hists)}</div>']
    return rp.page(f"iqa_ray evaluation {name}", body)
