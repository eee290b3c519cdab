"""The filter job's driver: read runs, apply a :class:`~iqa_ray.analysis.filter.FilterConfig`, write
``<output>/filters/<name>/{keep,reject}.parquet``, copy kept images, ``summary.json`` last."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
from pydantic import Field, field_validator

from iqa_ray import io
from iqa_ray.analysis.corpus_export import export_kept
from iqa_ray.analysis.filter import (
    REASON_CODE,
    FilterConfig,
    FilterResult,
    apply_filter,
    copy_kept,
    group_counts,
)
from iqa_ray.analysis.report_post import write_filter_report
from iqa_ray.analysis.scores import ScoresConfig, common_root, load_scores, methods_of
from iqa_ray.schema import Col
from iqa_ray.settings import StrictModel, check_storage_options

logger = logging.getLogger(__name__)


class FilterJobConfig(StrictModel):
    """The filter job: which runs, which rule, where results (and copies) go."""

    scores: ScoresConfig = Field(..., description="Runs to read and group columns to attach.")
    rule: FilterConfig = Field(..., description="The keep rule.")
    name: str = Field("default", pattern=r"^[A-Za-z0-9._-]+$", description="Output folder name.")
    copy_to: str | None = Field(None, description="Prefix to copy kept images to (optional).")
    copy_storage_options: dict[str, Any] | None = Field(
        None, description="fsspec options of copy_to (default: scores.storage_options)."
    )
    copy_workers: int = Field(16, ge=1, description="Concurrent copy requests.")
    shard_samples: int = Field(
        10_000, ge=1,
        description="Kept samples per written file when the runs read WebDataset shards or "
        "Parquet tables: copy_to then gets new shards / tables in that format.",
    )

    @field_validator("copy_storage_options")
    @classmethod
    def _no_secrets(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return value if value is None else check_storage_options(value)


@dataclass(frozen=True)
class FilterOutcome:
    """What the filter job reports: the output folder, the split, per-group counts, summary."""

    uri: str
    result: FilterResult
    per_group: pd.DataFrame
    summary: dict[str, Any]


def run_filter(job: FilterJobConfig, dry_run: bool = False) -> FilterOutcome:
    """Load scores, apply the rule, then (unless ``dry_run``) write ``keep.parquet``,
    ``reject.parquet``, copy kept images when ``copy_to`` is set, and ``summary.json`` last."""
    opts = job.scores.storage_options
    wide = load_scores(job.scores)
    result = apply_filter(wide, job.rule)
    per_group = group_counts(result, job.rule.group_by)
    uri = io.join(job.scores.output, "filters", job.name)
    summary: dict[str, Any] = {
        "name": job.name, "runs": job.scores.runs, "rule": job.rule.model_dump(mode="json"),
        "images": len(wide), "kept": len(result.keep), "rejected": len(result.reject),
        "rejected_by_reason_code": result.reject[REASON_CODE].value_counts().sort_index().to_dict(),
        "per_group": per_group.to_dict("records"), "copy": None, "dry_run": dry_run,
    }  # fmt: skip
    if dry_run:
        return FilterOutcome(uri, result, per_group, summary)
    for name, frame in (("keep", result.keep), ("reject", result.reject)):
        table = pa.Table.from_pandas(frame, preserve_index=False)
        io.write_parquet_atomic(io.join(uri, f"{name}.parquet"), table, opts)
    if job.copy_to is not None:
        summary["copy"] = _copy(job, wide, result)
    write_filter_report(uri, summary, result.keep, result.reject, per_group, opts)
    io.write_json_atomic(io.join(uri, "summary.json"), summary, opts)  # written last
    logger.info("filter %s: kept %d of %d -> %s", job.name, len(result.keep), len(wide), uri)
    return FilterOutcome(uri, result, per_group, summary)


def _copy(job: FilterJobConfig, wide: pd.DataFrame, result: FilterResult) -> dict[str, Any]:
    """Copy kept objects, or write kept samples of a corpus in its own format."""
    opts = job.scores.storage_options
    source = input_of(job.scores.run_uri(job.scores.runs[0]), opts)
    fmt = source.get("format", "objects")
    if fmt == "objects":
        root = job.scores.root if job.scores.root is not None else common_root(wide[Col.URI])
        report = copy_kept(
            result.keep, job.copy_to or "", root, opts, job.copy_storage_options, job.copy_workers
        )
        return {"to": job.copy_to, "root": root, **report.__dict__}
    exported = export_kept(
        result.keep, fmt, job.copy_to or "", methods_of(wide), id_column=source.get("id_column"),
        per_file=job.shard_samples, storage_options=opts,
        dest_storage_options=job.copy_storage_options, workers=job.copy_workers)
    # "copied"/"skipped"/"failed" count files here (shards or tables), as objects do.
    return {"to": job.copy_to, "format": fmt, "copied": exported.written,
            "skipped": exported.skipped, **exported.__dict__}


def input_of(run_uri: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """The ``input:`` section a run was made with (from its run.json; empty without one)."""
    path = io.join(run_uri, "run.json")
    if not io.exists(path, storage_options):
        return {}
    record = io.read_json(path, storage_options)
    return dict(record.get("config", {}).get("input", {}))
