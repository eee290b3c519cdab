"""A run's HTML report (``<run>/report.html``): counts, score histograms per method, the best
and worst images per method and per folder as thumbnails, error counts with examples."""

from __future__ import annotations

from html import escape
from typing import Any

import numpy as np
import pandas as pd

from iqa_ray import io
from iqa_ray.analysis import report as rp
from iqa_ray.analysis import svg
from iqa_ray.analysis.run_digest import (
    MAX_GROUPS_SHOWN,
    N_BEST,
    N_GROUP,
    MethodStats,
    RunDigest,
    digest_run,
    display_names,
)
from iqa_ray.schema import Col

_MAX_GROUP_ROWS = 50


def _tiles(rows: pd.DataFrame) -> list[rp.Tile]:
    return [rp.Tile(r.uri, f'<span class="score">{r.score:.4g}</span> '
                           f"{escape(r.uri.rsplit('/', 1)[-1])}")
            for r in rows.itertuples(index=False)]


def _header(run_uri: str, record: dict[str, Any]) -> list[str]:
    status = str(record.get("status", "unknown"))
    css = {"complete": "ok", "failed": "failed"}.get(status, "")
    cfg = record.get("config") or {}
    model = cfg.get("model") or {}
    summary = record.get("summary") or {}
    counts = record.get("counts_at_start") or {}
    parts = [f"<h1>Run <code>{escape(str(record.get('run_id', '?')))}</code></h1>",
             f'<p>Status: <span class="{css}">{escape(status)}</span> &middot; '
             f"{escape(run_uri)}</p>"]
    if record.get("smoke_model"):
        parts.append('<p class="warn">SMOKE MODEL: random weights; these scores MEAN NOTHING. '
                     "Use it to try the plumbing only.</p>")
    if status == "failed":
        parts.append(f'<p class="bad">The run failed: {escape(str(record.get("error")))}<br>'
                     "Committed rows are kept; rerunning the same command resumes it.</p>")
    facts = [
        ("images", summary.get("images", counts.get("images"))),
        ("rows (images x methods)", summary.get("rows_current")),
        ("rows ok / error", "{ok} / {error}".format(**summary["rows_by_status"])
         if summary.get("rows_by_status") else None),
        ("methods", ", ".join(m.get("name") or m["method"] for m in cfg.get("methods", []))),
        ("model", f"{model.get('id')} ({model.get('backend')}, revision "
                  f"{model.get('revision') or 'not pinned'})"),
        ("input", (cfg.get("input") or {}).get("uri") or (cfg.get("input") or {}).get("manifest")),
        ("started / finished", f"{record.get('started_at')} / {record.get('finished_at')}"),
        ("attempt", record.get("attempt")),
    ]
    return [*parts, rp.pairs([(k, v) for k, v in facts if v is not None])]


def _method_table(digest: RunDigest) -> str:
    rows = []
    for stats in digest.methods.values():
        values = stats.values()
        errors = sum(n for (m, _), n in digest.error_counts.items() if m == stats.label)
        rows.append({"method": stats.label, "scored": stats.n, "errors": errors,
                     "mean": stats.total / stats.n if stats.n else float("nan"),
                     "median": float(np.median(values)) if values.size else float("nan"),
                     "min": stats.lo if stats.n else float("nan"),
                     "max": stats.hi if stats.n else float("nan")})
    return rp.table(pd.DataFrame(rows))


def _group_table(digest: RunDigest, names: dict[str, str]) -> tuple[str, list[str]]:
    """The per-folder table (largest first) and the folders that get thumbnails."""
    order = digest.group_images.sort_values(ascending=False, kind="stable")
    frame = pd.DataFrame({"folder": [names[g] for g in order.index],
                          "images": order.to_numpy(dtype=np.int64)})
    for stats in digest.methods.values():
        g = stats.groups.reindex(order.index)
        frame[f"mean {stats.label}"] = (g["sum"] / g["count"]).to_numpy()
    shown = list(order.index[:MAX_GROUPS_SHOWN]) if len(order) > 1 else []
    return rp.table(frame, _MAX_GROUP_ROWS), shown


def _errors(record: dict[str, Any], digest: RunDigest) -> list[str]:
    if not digest.error_counts:
        return ["<h2>Errors</h2><p>No row failed.</p>"]
    counts = pd.DataFrame([{"method": m, "error_code": c, "rows": n}
                           for (m, c), n in sorted(digest.error_counts.items())])
    examples = pd.DataFrame([e for rows in digest.examples.values() for e in rows])
    note = ""
    if (record.get("summary") or {}).get("rows_superseded"):
        note = ('<p class="muted">Counts include rows that a later --retry-errors attempt '
                "superseded; run.json's summary counts current rows only.</p>")
    return ["<h2>Errors</h2>", rp.table(counts), note,
            f"<h3>Examples (up to {len(next(iter(digest.examples.values())))} per code)</h3>",
            rp.table(examples)]


def _galleries(stats: MethodStats, group: str | None, n: int) -> list[tuple[str, pd.DataFrame]]:
    return [(f"best {n}", stats.top(True, group)), (f"worst {n}", stats.top(False, group))]


def histograms(digest: RunDigest) -> str:
    """One histogram per method, side by side."""
    charts = []
    for i, stats in enumerate(digest.methods.values()):
        values = stats.values()
        sampled = f", sample of {values.size:,}" if values.size < stats.n else ""
        title = f"{stats.label} (n={stats.n:,}{sampled})"
        charts.append(svg.histogram_svg(values, title, svg.color(i)))
    return f'<div class="charts">{"".join(charts)}</div>'


def render_run_page(run_uri: str, record: dict[str, Any], digest: RunDigest,
                    storage_options: dict[str, Any] | None) -> str:
    """The whole page; thumbnails of every image shown are fetched once, in parallel."""
    names = display_names([str(g) for g in digest.group_images.index])
    group_html, shown = _group_table(digest, names)
    blocks: list[tuple[str, list[tuple[str, pd.DataFrame]]]] = []
    for stats in digest.methods.values():
        blocks.append((f"<h3>{escape(stats.label)}</h3>", _galleries(stats, None, N_BEST)))
    for group in shown:
        for stats in digest.methods.values():
            title = f"<h3>{escape(names[group])} &middot; {escape(stats.label)}</h3>"
            blocks.append((title, _galleries(stats, group, N_GROUP)))
    uris = [u for _, parts in blocks for _, rows in parts for u in rows[Col.URI]]
    thumbs = rp.thumbnails(uris, (record.get("config") or {}).get("input", {}).get(
        "storage_options") or storage_options)
    body = [*_header(run_uri, record), "<h2>Scores</h2>", _method_table(digest),
            histograms(digest), "<h2>Best and worst images</h2>"]
    split = len(digest.methods)
    for i, (title, parts) in enumerate(blocks):
        if i == split:
            body += ["<h2>Per folder</h2>", group_html]
        body.append(title)
        body += [f"<p class=\"muted\">{label}</p>" + rp.gallery(_tiles(rows), thumbs)
                 for label, rows in parts]
    if split == len(blocks) and len(names) > 1:
        body += ["<h2>Per folder</h2>", group_html]
    body += _errors(record, digest)
    body.append('<h2>Run folder</h2><pre>run.json  manifest/  scores/*.parquet  _SUCCESS  '
                "report.html</pre>")
    return rp.page(f"iqa_ray run {record.get('run_id', '')}", body)


def write_run_report(run_uri: str, storage_options: dict[str, Any] | None = None) -> str:
    """Write ``<run>/report.html`` (thumbnails read through ``io``); returns its URI."""
    record = io.read_json(io.join(run_uri, "run.json"), storage_options)
    digest = digest_run(run_uri, record, storage_options)
    html = render_run_page(run_uri, record, digest, storage_options)
    return rp.write_page(io.join(run_uri, "report.html"), html, storage_options)
