"""How good are the scores: metrics per method and group against human labels, and the report
(``report.md``, ``report.html``, ``metrics.parquet``, PNG plots, ``summary.json``) in
``<output>/evaluations/<name>/``.

The maths lives in :mod:`iqa_ray.analysis.metrics` (raw-score SRCC/PLCC/KRCC/RMSE first; the
4-parameter logistic PLCC is a labelled extra, methods.md "Evaluation conventions"); this module
joins, tabulates and writes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
from pydantic import Field

from iqa_ray import io
from iqa_ray.analysis import metrics, report_post
from iqa_ray.analysis.labels import KEY, LABEL_KEY, MATCH, MOS, match_labels, read_labels
from iqa_ray.analysis.scores import (
    ALL_GROUP,
    SEP,
    ScoresConfig,
    load_scores,
    methods_of,
    valid_scores,
)
from iqa_ray.analysis.splits import parse_split_keys, split_markdown, split_medians, split_metrics
from iqa_ray.errors import ConfigError, RowError
from iqa_ray.schema import Col
from iqa_ray.settings import StrictModel

logger = logging.getLogger(__name__)

PLCC_LOGISTIC_LABEL = "PLCC (4-param logistic)"
_LABEL_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}


class LabelsConfig(StrictModel):
    """A human-label table: CSV (image path, mos), JSON with img_path/gt_score, or image_id keys."""

    uri: str = Field(..., description="Label file (local path or bucket URI).")
    key_column: str | None = Field(
        None, description="Image path/uri/image_id column (default: detected)."
    )
    mos_column: str | None = Field(None, description="MOS column (default: mos, gt_score, ...).")
    format: Literal["auto", "csv", "json"] = Field("auto", description="auto: from the suffix.")


class EvaluateJobConfig(StrictModel):
    """The evaluate job: runs, labels, grouping, bootstrap settings, output name."""

    scores: ScoresConfig = Field(..., description="Runs to read and group columns to attach.")
    labels: LabelsConfig = Field(..., description="Human opinion scores.")
    name: str = Field("default", pattern=r"^[A-Za-z0-9._-]+$", description="Output folder name.")
    methods: list[str] | None = Field(None, description="Methods to evaluate (default: all).")
    group_by: str | None = Field(None, description="Column for a per-group breakdown.")
    n_boot: int = Field(1000, ge=0, description="Bootstrap resamples for 95% CIs (0: none).")
    seed: int = Field(0, description="Bootstrap seed.")
    plots: bool = Field(
        True, description="Write PNG plots (needs `pip install 'iqa_ray[report]'`)."
    )
    splits: list[str] = Field(
        default_factory=list,
        description="Test-split files (one image key per line, or the references' test JSONs): "
        "adds the papers' protocol, the median over splits of SRCC, PLCC and logistic PLCC.",
    )


def read_labels_uri(cfg: LabelsConfig, storage_options: dict[str, Any] | None) -> pd.DataFrame:
    """Read and parse a label file through :mod:`iqa_ray.io`; without ``key_column``, a table
    with none of the usual path columns is keyed on its ``image_id`` column.

    Raises:
        ConfigError: a missing file or an unusable table.
    """
    try:
        data = io.read_bytes(cfg.uri, storage_options)
    except RowError as exc:
        raise ConfigError(f"cannot read labels {cfg.uri!r}: {exc.message}") from exc
    suffix = "." + cfg.uri.rsplit(".", 1)[-1].lower() if "." in cfg.uri else ""
    fmt = _LABEL_FORMATS.get(suffix, "auto") if cfg.format == "auto" else cfg.format
    try:
        return read_labels(data, key_column=cfg.key_column, mos_column=cfg.mos_column, fmt=fmt)
    except ConfigError as first:
        if cfg.key_column is not None:
            raise
        try:
            return read_labels(data, key_column=Col.IMAGE_ID, mos_column=cfg.mos_column, fmt=fmt)
        except ConfigError:
            raise first from None


def attach_labels(wide: pd.DataFrame, labels: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Inner-join MOS onto the wide frame: on ``image_id`` when the labels are keyed by it, else
    by exact uri then path suffix (:func:`iqa_ray.analysis.labels.match_labels`).

    Returns:
        The matched rows with a ``mos`` column, and the match counts for the report.

    Raises:
        ConfigError: if no image matched a label (with an example of each side), or the score
            table already has a ``mos``, ``label_key`` or ``match`` column.
    """
    taken = [c for c in (MOS, LABEL_KEY, MATCH) if c in wide.columns]
    if taken:
        raise ConfigError(f"score table columns {taken} clash with the label join; rename them")
    if labels.attrs.get("key_column") == Col.IMAGE_ID:
        ids = pd.to_numeric(labels[KEY], errors="coerce")
        if ids.isna().any():
            raise ConfigError("label image_id values must be integers")
        right = pd.DataFrame({Col.IMAGE_ID: ids.astype("int64"), MOS: labels[MOS]})
        table = wide.merge(right, on=Col.IMAGE_ID, how="inner")
        info = {"by": "image_id", "matched": len(table), "unmatched_images": len(wide) - len(table),
                "unused_labels": len(right) - len(table)}  # fmt: skip
    else:
        match = match_labels(wide, labels)
        table = match.table
        info = {
            "by": "uri", "matched": len(table), "exact": match.n_exact, "suffix": match.n_suffix,
            "unmatched_images": match.n_unmatched_uris, "unused_labels": match.n_unused_labels,
        }  # fmt: skip
    if table.empty:
        raise ConfigError(
            f"no scored image matched a label: e.g. uri {wide[Col.URI].iloc[0]!r} vs label key "
            f"{labels[KEY].iloc[0]!r}; give labels relative paths that end the uris, or image_id"
        )
    return table, info


def metrics_table(
    frame: pd.DataFrame, methods: list[str], group_by: str | None, n_boot: int, seed: int
) -> pd.DataFrame:
    """One row per (group, method): ``(all)`` first, then each group value in sorted order.

    Columns: group, method, n, n_dropped, n_errors, srcc, srcc_ci_low/high, plcc, plcc_ci_low/high,
    krcc, rmse, plcc_logistic, rmse_logistic, logistic_converged. Errored rows count as having no
    score, so they are among ``n_dropped``; ``n_errors`` counts them separately. Rows whose group
    value is null appear only in ``(all)``.
    """
    groups: list[tuple[Any, pd.DataFrame]] = [(ALL_GROUP, frame)]
    if group_by is not None:
        if group_by not in frame.columns:
            raise ConfigError(
                f"group column {group_by!r} not found; columns: {list(frame.columns)}"
            )
        groups += list(frame.groupby(group_by, sort=True))
    rows = []
    for group, sub in groups:
        for method in methods:
            n_errors = int(sub[f"{method}{SEP}{Col.ERROR_CODE}"].notna().sum())
            out = metrics.evaluate(valid_scores(sub, method), sub[MOS], n_boot=n_boot, seed=seed)
            srcc_ci, plcc_ci = out.pop("srcc_ci"), out.pop("plcc_ci")
            rows.append({
                "group": str(group), "method": method, "n_errors": n_errors, **out,
                "srcc_ci_low": srcc_ci[0], "srcc_ci_high": srcc_ci[1],
                "plcc_ci_low": plcc_ci[0], "plcc_ci_high": plcc_ci[1],
            })  # fmt: skip
    return pd.DataFrame(rows)


def _fmt(value: float, low: float | None = None, high: float | None = None) -> str:
    text = "n/a" if pd.isna(value) else f"{value:.3f}"
    if low is not None and high is not None and not (pd.isna(low) or pd.isna(high)):
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def markdown_table(table: pd.DataFrame, with_group: bool) -> str:
    """The metrics as a markdown table; CIs in brackets, the logistic PLCC labelled as such."""
    head = ["Method", "n", "errors", "SRCC [95% CI]", "PLCC [95% CI]", "KRCC", "RMSE",
            PLCC_LOGISTIC_LABEL]  # fmt: skip
    head = ["Group", *head] if with_group else head
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.itertuples(index=False):
        cells = [row.method, str(row.n), str(row.n_errors),
                 _fmt(row.srcc, row.srcc_ci_low, row.srcc_ci_high),
                 _fmt(row.plcc, row.plcc_ci_low, row.plcc_ci_high),
                 _fmt(row.krcc), _fmt(row.rmse), _fmt(row.plcc_logistic)]  # fmt: skip
        cells = [row.group, *cells] if with_group else cells
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_splits(job: EvaluateJobConfig) -> dict[str, list[str]]:
    """Each split file's keys, named by its file name (its position when names repeat)."""
    names = [uri.rstrip("/").rsplit("/", 1)[-1] for uri in job.splits]
    unique = len(set(names)) == len(names)
    splits = {}
    for k, uri in enumerate(job.splits):
        try:
            text = io.read_bytes(uri, job.scores.storage_options).decode("utf-8")
        except RowError as exc:
            raise ConfigError(f"cannot read split {uri!r}: {exc.message}") from exc
        splits[names[k] if unique else f"{k}:{names[k]}"] = parse_split_keys(text)
    return splits


def render_report(
    job: EvaluateJobConfig,
    table: pd.DataFrame,
    info: dict[str, Any],
    images: list[str],
    medians: pd.DataFrame | None = None,
) -> str:
    """``report.md``: provenance, the label join, the side-by-side table, groups, plots."""
    overall = table[table["group"] == ALL_GROUP]
    suffix = (
        f" ({info['exact']} exact, {info['suffix']} by path suffix)" if info["by"] == "uri" else ""
    )
    parts = [
        f"# Evaluation `{job.name}`",
        f"Runs {', '.join(f'`{r}`' for r in job.scores.runs)} under `{job.scores.output}`; labels "
        f"`{job.labels.uri}`, matched on {info['by']}: {info['matched']} images{suffix}, "
        f"{info['unmatched_images']} scored images without a label, "
        f"{info['unused_labels']} labels unused.",
        "SRCC, PLCC, KRCC and RMSE are on raw scores (RMSE is meaningful only where a method's "
        f"scale is the MOS scale). {PLCC_LOGISTIC_LABEL} is PLCC after fitting the VQEG "
        "4-parameter logistic from score to MOS. 95% CIs: percentile bootstrap over images, "
        f"{job.n_boot} resamples, seed {job.seed}. Errored images have no score and are left out.",
        "## All images", markdown_table(overall, with_group=False),
    ]  # fmt: skip
    if job.group_by is not None:
        grouped = table[table["group"] != ALL_GROUP]
        parts += [f"## Per `{job.group_by}`", markdown_table(grouped, with_group=True)]
    if medians is not None:
        parts += ["## Test splits (the papers' protocol)",
                  f"Median over {len(job.splits)} test splits of each metric computed on that "
                  "split's images alone (per-split values in `splits.parquet`).",
                  split_markdown(medians)]
    if images:
        parts += ["## Plots", *(f"![{name}]({name})" for name in images)]
    return "\n\n".join(parts) + "\n"


def plot_name(method: str) -> str:
    """File name of a method's scatter plot (characters outside [A-Za-z0-9._-] become _)."""
    return f"scatter_{re.sub(r'[^A-Za-z0-9._-]+', '_', method)}.png"


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return table.astype(object).where(table.notna(), None).to_dict("records")  # NaN -> null


@dataclass(frozen=True)
class EvaluationOutcome:
    """Where the report went, the metrics table and the summary written last."""

    uri: str
    table: pd.DataFrame
    summary: dict[str, Any]


def run_evaluation(job: EvaluateJobConfig) -> EvaluationOutcome:
    """Load scores and labels, compute the metrics, write metrics.parquet, the PNGs, report.md
    and summary.json (last) to ``<output>/evaluations/<name>/``."""
    from iqa_ray.analysis import plots  # matplotlib itself is imported when drawing

    if job.plots:
        plots.require_matplotlib()  # fail before any work when the extra is missing
    opts = job.scores.storage_options
    wide = load_scores(job.scores)
    methods = job.methods or methods_of(wide)
    unknown = [m for m in methods if m not in wide.columns]
    if unknown:
        raise ConfigError(f"methods {unknown} are not in the scores; available: {methods_of(wide)}")
    frame, info = attach_labels(wide, read_labels_uri(job.labels, opts))
    table = metrics_table(frame, methods, job.group_by, job.n_boot, job.seed)
    uri = io.join(job.scores.output, "evaluations", job.name)
    io.write_parquet_atomic(io.join(uri, "metrics.parquet"), pa.Table.from_pandas(table), opts)
    medians = None
    if job.splits:
        per_split = split_metrics(frame, methods, read_splits(job))
        io.write_parquet_atomic(io.join(uri, "splits.parquet"), pa.Table.from_pandas(per_split),
                                opts)
        medians = split_medians(per_split)
    images = _write_plots(uri, wide, frame, methods, opts) if job.plots else []
    io.write_bytes_atomic(
        io.join(uri, "report.md"), render_report(job, table, info, images, medians).encode(), opts
    )
    html = report_post.evaluation_page(job.name, info, table,
                                       {m: valid_scores(frame, m) for m in methods}, frame[MOS],
                                       job.scores.runs, job.labels.uri)
    images.append(report_post.write_page_name(uri, html, opts))
    summary = {"name": job.name, "runs": job.scores.runs, "labels": job.labels.uri, "match": info,
               "methods": methods, "files": ["metrics.parquet", "report.md", *images],
               "metrics": _records(table)}  # fmt: skip
    if medians is not None:
        summary.update(split_medians=_records(medians), splits=job.splits)
        summary["files"].append("splits.parquet")
    io.write_json_atomic(io.join(uri, "summary.json"), summary, opts)  # written last
    logger.info("evaluation %s: %d images with labels, %d methods -> %s",
                job.name, len(frame), len(methods), uri)
    return EvaluationOutcome(uri, table, summary)


def _write_plots(uri: str, wide: pd.DataFrame, frame: pd.DataFrame, methods: list[str],
                 storage_options: dict[str, Any]) -> list[str]:
    """A scatter plot per method (score vs MOS) and the score histograms; their file names."""
    from iqa_ray.analysis import plots

    pngs = {plot_name(m): plots.scatter_png(valid_scores(frame, m), frame[MOS], m)
            for m in methods}
    all_scores = pd.DataFrame({m: valid_scores(wide, m) for m in methods})
    pngs["histograms.png"] = plots.histograms_png(all_scores, methods)
    for name, data in pngs.items():
        io.write_bytes_atomic(io.join(uri, name), data, storage_options)
    return list(pngs)
