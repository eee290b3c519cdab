"""Committed score tables read back for post-processing: latest attempts, several runs joined into
one wide frame keyed on ``image_id``, and group columns (``folder``, user metadata).

Wide frame columns: ``image_id``, ``uri``, ``width``, ``height`` (a corpus adds ``source``,
``key`` and ``carry_*``), ``folder``, then per method
``<method>`` (the score), ``<method>__error_code``, ``<method>__error_message`` and
``<method>__<extra>`` for each extra column the method filled.
"""

from __future__ import annotations

import logging
import posixpath
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

import pandas as pd
import pyarrow as pa
from pydantic import Field, field_validator

from iqa_ray import io
from iqa_ray.errors import ConfigError
from iqa_ray.inputs.done import latest_rows
from iqa_ray.schema import CARRY_PREFIX, Col
from iqa_ray.settings import StrictModel, check_storage_options

logger = logging.getLogger(__name__)

FOLDER = "folder"  # derived group column: the uri's parent relative to the root
SEP = "__"  # <method>__<column> in the wide frame
ALL_GROUP = "(all)"  # the group value of whole-table rows (no group column, or overall)
_BASE = (Col.IMAGE_ID, Col.URI, Col.WIDTH, Col.HEIGHT, Col.SOURCE, Col.KEY)
_LONG_ONLY = (Col.METHOD, Col.SCORE, Col.STATUS, Col.ATTEMPT)
_READ_THREADS = 16
ModelT = TypeVar("ModelT", bound=StrictModel)


class ScoresConfig(StrictModel):
    """Which committed runs to read, and how to attach group columns to their images."""

    output: str = Field(
        ..., description="The scoring job's output.uri; runs live in <output>/runs/."
    )
    runs: list[str] = Field(
        ...,
        min_length=1,
        description="Run ids, joined on image_id (a label in several runs becomes <run>/<label>).",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options without secrets (bucket reads and writes).",
    )
    root: str | None = Field(
        None, description="Prefix that `folder` and copied paths are relative to (default: common)."
    )
    metadata: str | None = Field(None, description="Parquet or CSV table of extra group columns.")
    metadata_on: Literal["auto", "uri", "image_id"] = Field(
        "auto", description="Join key of the metadata table (auto: image_id if present, else uri)."
    )

    _check_options = field_validator("storage_options")(check_storage_options)

    def run_uri(self, run_id: str) -> str:
        """``<output>/runs/<run_id>``."""
        return io.join(self.output, "runs", run_id)


def read_run_scores(run_uri: str, storage_options: dict[str, Any] | None = None) -> pd.DataFrame:
    """Every committed score row of one run, reduced to the highest attempt per (image, method).

    Raises:
        ConfigError: if the run has no committed score files.
    """
    files = io.list_parquet(io.join(run_uri, "scores"), storage_options)
    if not files:
        raise ConfigError(f"no committed scores under {run_uri}/scores (wrong output or run id?)")
    # Threads overlap the per-object latency of a bucket; parsing releases the GIL in pyarrow.
    with ThreadPoolExecutor(max_workers=_READ_THREADS) as pool:
        tables = list(pool.map(lambda f: io.read_parquet(f, storage_options), files))
    return latest_rows(pa.concat_tables(tables, promote_options="default")).to_pandas()


def load_scores(cfg: ScoresConfig) -> pd.DataFrame:
    """The configured runs as one wide frame with ``folder`` and metadata columns attached."""
    frames = {
        run_id: read_run_scores(cfg.run_uri(run_id), cfg.storage_options) for run_id in cfg.runs
    }
    wide = wide_scores(qualify_methods(frames))
    wide = add_folder(wide, cfg.root)
    if cfg.metadata is not None:
        meta = io.read_table_file(cfg.metadata, cfg.storage_options).to_pandas()
        wide = attach_metadata(wide, meta, cfg.metadata_on)
    logger.info("loaded %d images, methods %s, from runs %s", len(wide), methods_of(wide), cfg.runs)
    return wide


def qualify_methods(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Concatenate long frames of several runs; a method label found in more than one run
    becomes ``<run_id>/<method>`` in every run that has it, so both stay visible side by side."""
    seen: dict[str, int] = {}
    for frame in frames.values():
        for label in frame[Col.METHOD].unique():
            seen[label] = seen.get(label, 0) + 1
    parts = []
    for run_id, frame in frames.items():
        shared = frame[Col.METHOD].map(seen) > 1
        method = frame[Col.METHOD].where(~shared, run_id + "/" + frame[Col.METHOD])
        parts.append(frame.assign(**{Col.METHOD: method}))
    return pd.concat(parts, ignore_index=True)


def wide_scores(long: pd.DataFrame) -> pd.DataFrame:
    """One row per image_id (sorted), with per-method score, error and extra columns.

    Images absent from a method's rows get a null score and a null error code there; rule
    evaluation treats that as "missing", never as a pass.

    Raises:
        ConfigError: if a method label collides with a base column.
    """
    methods = sorted(long[Col.METHOD].unique())
    clash = [m for m in methods if m in (*_BASE, FOLDER) or SEP in m]
    if clash:
        raise ConfigError(f"method labels {clash} collide with table columns; rename them")
    # Per-image columns: ids, size, and a corpus's source, key and carried members.
    base_cols = [c for c in long.columns if c in _BASE or c.startswith(CARRY_PREFIX)]
    wide = long[base_cols].drop_duplicates(Col.IMAGE_ID).set_index(Col.IMAGE_ID).sort_index()
    value_cols = [c for c in long.columns if c not in (*base_cols, *_LONG_ONLY)]
    for method in methods:
        rows = long.loc[long[Col.METHOD] == method].set_index(Col.IMAGE_ID)
        extras = [c for c in value_cols if rows[c].notna().any() or c.startswith("error_")]
        part = rows[[Col.SCORE, *extras]].rename(
            columns={Col.SCORE: method, **{c: f"{method}{SEP}{c}" for c in extras}}
        )
        wide = wide.join(part, how="left")
    return wide.reset_index()


def methods_of(wide: pd.DataFrame) -> list[str]:
    """Method labels present in a wide frame (columns that have a ``__error_code`` twin)."""
    suffix = f"{SEP}{Col.ERROR_CODE}"
    return [c.removesuffix(suffix) for c in wide.columns if c.endswith(suffix)]


def valid_scores(wide: pd.DataFrame, method: str) -> pd.Series:
    """A method's scores with every errored row set to NaN (an error never counts as a score)."""
    return wide[method].where(wide[f"{method}{SEP}{Col.ERROR_CODE}"].isna())


def common_root(uris: pd.Series) -> str:
    """The longest shared directory prefix of the uris (whole path components)."""
    parents = sorted(set(uris.map(posixpath.dirname)))
    if not parents:
        return ""
    first, last = parents[0].split("/"), parents[-1].split("/")
    n = 0  # the sorted extremes share the prefix that every element shares
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return "/".join(first[:n])


def relative_key(uris: pd.Series, root: str) -> pd.Series:
    """The uris' paths below ``root`` (``a/b.jpg``).

    Raises:
        ConfigError: if a uri does not lie under ``root``.
    """
    prefix = root.rstrip("/") + "/" if root else ""
    outside = ~uris.str.startswith(prefix)
    if outside.any():
        raise ConfigError(
            f"{int(outside.sum())} uris are not under {root!r}, e.g. {uris[outside].iloc[0]!r}"
        )
    return uris.str.slice(len(prefix))


def add_folder(wide: pd.DataFrame, root: str | None = None) -> pd.DataFrame:
    """Add ``folder``: the uri's parent relative to ``root`` (``.`` for files directly in it)."""
    root = common_root(wide[Col.URI]) if root is None else root
    parent = relative_key(wide[Col.URI], root).map(posixpath.dirname)
    return wide.assign(**{FOLDER: parent.where(parent != "", ".")})


def attach_metadata(
    wide: pd.DataFrame, meta: pd.DataFrame, on: Literal["auto", "uri", "image_id"] = "auto"
) -> pd.DataFrame:
    """Left-join a user table of group columns on ``image_id`` or ``uri``.

    Images without a metadata row get nulls (a rule grouping on that column rejects them).

    Raises:
        ConfigError: missing join column, duplicate keys, or column names that already exist.
    """
    key = (Col.IMAGE_ID if Col.IMAGE_ID in meta.columns else Col.URI) if on == "auto" else on
    if key not in meta.columns:
        raise ConfigError(f"metadata has no {key!r} column (columns: {list(meta.columns)})")
    dup = meta[key][meta[key].duplicated()]
    if len(dup):
        raise ConfigError(f"metadata has {len(dup)} duplicate {key!r} values, e.g. {dup.iloc[0]}")
    extra = [c for c in meta.columns if c not in (Col.IMAGE_ID, Col.URI)]
    clash = [c for c in extra if c in wide.columns]
    if clash:
        raise ConfigError(f"metadata columns {clash} already exist in the score table")
    meta = meta[[key, *extra]].astype({key: wide[key].dtype})
    out = wide.merge(meta, on=key, how="left", validate="one_to_one")
    logger.info(
        "metadata matched %d of %d images on %s", int(out[key].isin(meta[key]).sum()), len(out), key
    )
    return out
