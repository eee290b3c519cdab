"""Keep/reject rules over a wide score frame (thresholds, per-group top-k) and copying kept images.

Rules are pure pandas; every rejected row says why in ``reason`` and ``reason_code``. The job
that reads runs and writes ``<output>/filters/<name>/`` is :mod:`iqa_ray.analysis.filter_job`.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from iqa_ray import io
from iqa_ray.analysis.scores import (
    ALL_GROUP,
    SEP,
    methods_of,
    relative_key,
)
from iqa_ray.errors import ConfigError
from iqa_ray.schema import Col
from iqa_ray.settings import StrictModel

logger = logging.getLogger(__name__)

REASON = "reason"  # human-readable: "below threshold q_debias < 0.5"
REASON_CODE = "reason_code"  # one of error, missing, threshold, group, rank
RANK = "rank"  # 1-based position within the group among rows that passed the thresholds
_COPY_CHUNK = 10_000


class Condition(StrictModel):
    """One method's accepted score interval, inclusive at both ends."""

    method: str = Field(..., description="Method label (the score table's `method` value).")
    min: float | None = Field(None, description="Keep scores >= min.")
    max: float | None = Field(None, description="Keep scores <= max.")

    @model_validator(mode="after")
    def _ordered(self) -> Condition:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"condition on {self.method!r}: min {self.min} > max {self.max}")
        return self


class FilterConfig(StrictModel):
    """Thresholds on one or more methods, then optionally the best k (or fraction) per group."""

    conditions: list[Condition] = Field(default_factory=list, description="Per-method intervals.")
    combine: Literal["all", "any"] = Field(
        "all", description="Keep when all / any conditions hold."
    )
    top_k: int | None = Field(None, ge=1, description="Keep the k best rows per group.")
    top_fraction: float | None = Field(
        None, gt=0, le=1, description="Keep ceil(fraction * group size) best rows per group."
    )
    rank_method: str | None = Field(
        None, description="Method ranked by top_k (default: first condition's)."
    )
    ascending: bool = Field(False, description="Rank lower scores first (lower-is-better methods).")
    group_by: str | None = Field(None, description="Group column (folder, a metadata column, ...).")

    @model_validator(mode="after")
    def _coherent(self) -> FilterConfig:
        if self.top_k is not None and self.top_fraction is not None:
            raise ValueError("set at most one of top_k and top_fraction")
        if not self.conditions and not self.ranks:
            raise ValueError("a rule needs at least one condition or top_k/top_fraction")
        if self.ranks and self.rank_method is None and not self.conditions:
            raise ValueError("top_k/top_fraction without conditions needs rank_method")
        return self

    @property
    def ranks(self) -> bool:
        """Whether the rule keeps only the best rows of each group."""
        return self.top_k is not None or self.top_fraction is not None

    @property
    def ranked_method(self) -> str | None:
        """The method whose score orders rows for top_k/top_fraction."""
        if not self.ranks:
            return None
        return self.rank_method or self.conditions[0].method

    def methods(self) -> list[str]:
        """Every method the rule reads, in order, without repeats."""
        names = [c.method for c in self.conditions] + [self.ranked_method or ""]
        return [m for m in dict.fromkeys(names) if m]


@dataclass(frozen=True)
class FilterResult:
    """Kept rows (``rank`` added when ranking); rejected rows (``reason`` and ``reason_code``)."""

    keep: pd.DataFrame
    reject: pd.DataFrame


def apply_filter(wide: pd.DataFrame, cfg: FilterConfig) -> FilterResult:
    """Split a wide score frame into keep and reject, in this order of checks:

    1. an error code, or no score, in any method the rule reads: ``error:<code> in <m>`` or
       ``missing score in <m>`` (regardless of ``combine``: errors are never kept);
    2. thresholds, combined with all/any: ``below threshold <m> < <min>``;
    3. a null group value when ranking per group: ``no value for group column <g>``;
    4. per-group rank by score, ties broken by ascending image_id: ``not in top-<k> of group <g>``.

    Raises:
        ConfigError: a method or group column the frame does not have.
    """
    _check_columns(wide, cfg)
    reason = pd.Series(pd.NA, index=wide.index, dtype=object)
    code = reason.copy()
    for method in cfg.methods():
        err = wide[f"{method}{SEP}{Col.ERROR_CODE}"]
        _mark(reason, code, err.notna(), "error:" + err.astype(str) + f" in {method}", "error")
        _mark(reason, code, wide[method].isna(), f"missing score in {method}", "missing")
    _mark(reason, code, *_threshold_failures(wide, cfg), "threshold")
    rank = pd.Series(pd.NA, index=wide.index, dtype="Int64")
    if cfg.ranks:
        group = wide[cfg.group_by] if cfg.group_by else pd.Series(ALL_GROUP, index=wide.index)
        _mark(reason, code, group.isna(), f"no value for group column {cfg.group_by}", "group")
        rank, limit = _ranks(wide, group, reason.isna(), cfg)
        over = rank > limit
        text = "not in " + _top_label(cfg, limit) + " of group " + group.astype(str)
        _mark(reason, code, over.fillna(False).astype(bool), text, "rank")
    kept = reason.isna()
    keep = wide.loc[kept].assign(**({RANK: rank[kept]} if cfg.ranks else {}))
    reject = wide.loc[~kept].assign(**{REASON: reason[~kept], REASON_CODE: code[~kept]})
    return FilterResult(keep.reset_index(drop=True), reject.reset_index(drop=True))


def _check_columns(wide: pd.DataFrame, cfg: FilterConfig) -> None:
    missing = [m for m in cfg.methods() if m not in wide.columns]
    if missing:
        raise ConfigError(f"methods {missing} are not in the scores; available: {methods_of(wide)}")
    if cfg.group_by is not None and cfg.group_by not in wide.columns:
        raise ConfigError(f"group column {cfg.group_by!r} not found; columns: {list(wide.columns)}")


def _mark(
    reason: pd.Series, code: pd.Series, mask: pd.Series, text: pd.Series | str, kind: str
) -> None:
    """Record ``text`` for rows in ``mask`` that have no reason yet (the first reason wins)."""
    new = mask & reason.isna()
    reason[new] = text[new] if isinstance(text, pd.Series) else text
    code[new] = kind


def _threshold_failures(wide: pd.DataFrame, cfg: FilterConfig) -> tuple[pd.Series, pd.Series]:
    """Rows failing the combined conditions, and the text of every condition each row fails."""
    texts = []
    for cond in cfg.conditions:
        score = wide[cond.method]
        text = pd.Series(pd.NA, index=wide.index, dtype=object)
        if cond.min is not None:
            text[score < cond.min] = f"below threshold {cond.method} < {cond.min:g}"
        if cond.max is not None:
            text[score > cond.max] = f"above threshold {cond.method} > {cond.max:g}"
        texts.append(text)
    if not texts:
        return pd.Series(False, index=wide.index), pd.Series(dtype=object)
    failed_any = pd.concat([t.notna() for t in texts], axis=1)
    failed = failed_any.any(axis=1) if cfg.combine == "all" else failed_any.all(axis=1)
    joined = texts[0]
    for text in texts[1:]:  # "a; b" listing every failed condition, vectorised
        both = joined.notna() & text.notna()
        joined = joined.where(joined.notna(), text)
        joined[both] = joined[both] + "; " + text[both]
    return failed, joined


def _ranks(
    wide: pd.DataFrame, group: pd.Series, eligible: pd.Series, cfg: FilterConfig
) -> tuple[pd.Series, pd.Series]:
    """Rank within group among eligible rows (best first, ties by image_id) and each row's k."""
    method = cfg.ranked_method
    sub = pd.DataFrame(
        {
            "g": group[eligible],
            "s": wide.loc[eligible, method],
            "id": wide.loc[eligible, Col.IMAGE_ID],
        }
    )
    sub = sub.sort_values(["g", "s", "id"], ascending=[True, cfg.ascending, True], kind="stable")
    rank = pd.Series(pd.NA, index=wide.index, dtype="Int64")
    rank[sub.index] = sub.groupby("g", sort=False).cumcount().to_numpy() + 1
    if cfg.top_k is not None:
        return rank, pd.Series(cfg.top_k, index=wide.index)
    sizes = group[eligible].map(group[eligible].value_counts()).astype(float)
    # The tolerance keeps 0.3 * 10 (= 3.0000000000000004 in binary) at 3 rather than 4.
    limit = np.ceil(sizes * (cfg.top_fraction or 1.0) - 1e-9).astype(int)
    return rank, limit.reindex(wide.index)


def _top_label(cfg: FilterConfig, limit: pd.Series) -> pd.Series | str:
    if cfg.top_k is not None:
        return f"top-{cfg.top_k}"
    return f"top {cfg.top_fraction:.4g} (" + limit.astype("Int64").astype(str) + ")"


def group_counts(result: FilterResult, group_by: str | None) -> pd.DataFrame:
    """Kept and rejected image counts per group value (one ``(all)`` row without a group)."""

    def counts(frame: pd.DataFrame) -> pd.Series:
        if group_by is None:
            return pd.Series({ALL_GROUP: len(frame)}, dtype=int)
        return frame[group_by].astype(object).fillna("<null>").value_counts()

    table = pd.DataFrame({"kept": counts(result.keep), "rejected": counts(result.reject)})
    table = table.fillna(0).astype(int).rename_axis("group").reset_index()
    return table.assign(total=table["kept"] + table["rejected"]).sort_values(
        "group", ignore_index=True
    )


@dataclass(frozen=True)
class CopyReport:
    """Outcome of copying kept images: counts and up to 20 ``(uri, error)`` failures."""

    copied: int
    skipped: int
    failed: int
    failures: list[tuple[str, str]] = field(default_factory=list)


def copy_kept(
    keep: pd.DataFrame,
    dest_uri: str,
    root: str,
    storage_options: dict[str, Any] | None = None,
    dest_storage_options: dict[str, Any] | None = None,
    workers: int = 16,
) -> CopyReport:
    """Copy each kept image to ``dest_uri/<path relative to root>``, idempotently.

    A thread pool fans the copies out (each is one server-side request on S3, I/O bound, so
    threads on the driver suffice; no Ray). Objects already there with the same size are skipped;
    a failed copy is counted and listed, never raised, so one bad object cannot hide the rest.
    """
    keys = relative_key(keep[Col.URI].astype(str), root)
    pairs = list(zip(keep[Col.URI], keys, strict=True))

    def one(pair: tuple[str, str]) -> tuple[str, str | None]:
        src, key = pair
        try:
            copied = io.copy_object(
                src, io.join(dest_uri, key), storage_options, dest_storage_options
            )
            return ("copied" if copied else "skipped"), None
        except Exception as exc:  # the per-object boundary: record and go on
            return "failed", f"{type(exc).__name__}: {exc}"

    outcomes: list[tuple[str, str | None]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # Chunks bound the number of pending futures (a million at once would cost ~1 GB).
        for start in range(0, len(pairs), _COPY_CHUNK):
            outcomes += pool.map(one, pairs[start : start + _COPY_CHUNK])
            logger.info("copies: %d/%d done", len(outcomes), len(pairs))
    states = [state for state, _ in outcomes]
    failures = [(src, err) for (src, _), (_, err) in zip(pairs, outcomes, strict=True) if err]
    if failures:
        logger.warning("%d copies failed, e.g. %s: %s", len(failures), *failures[0])
    return CopyReport(states.count("copied"), states.count("skipped"), len(failures), failures[:20])
