"""Manifest tables as input: one file, a folder or glob of shards, or an S3 Inventory report.

A Parquet table is cut into units of whole row groups, a CSV file is one unit; rows become URIs
from the URI column, or from ``bucket`` + ``key`` (S3 Inventory style, delete markers and
non-current versions dropped, keys extension-filtered).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from iqa_ray import io
from iqa_ray.errors import ConfigError
from iqa_ray.inputs.config import InputConfig
from iqa_ray.inputs.unit import Unit

_PARQUET_ROWS_PER_UNIT = 1_000_000  # a Parquet manifest is read in slices of about this many rows
_TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz")


def manifest_units(cfg: InputConfig) -> list[Unit]:
    """Units of a manifest: its table files (or an S3 Inventory's data files)."""
    assert cfg.manifest is not None  # guaranteed by InputConfig validation
    if cfg.manifest.endswith("manifest.json"):
        return _inventory_units(cfg)
    return [unit for path in _manifest_files(cfg)
            for unit in _table_units(path, cfg.storage_options)]


def _manifest_files(cfg: InputConfig) -> list[str]:
    """The table files of a manifest: one file, every table file under a folder, or a glob."""
    assert cfg.manifest is not None
    where = io.Location.of(cfg.manifest, cfg.storage_options)
    if any(ch in where.path for ch in "*?["):
        found = where.glob()
    elif where.isdir():
        found = [p for p in where.find() if p.lower().endswith(_TABLE_SUFFIXES)]
    elif where.exists():
        found = [where.path]
    else:
        raise ConfigError(f"manifest {cfg.manifest!r} does not exist or is not readable")
    if not found:
        raise ConfigError(f"manifest {cfg.manifest!r} names no Parquet or CSV files")
    return [where.uri(p) for p in sorted(found)]


def _table_units(
    uri: str, storage_options: dict[str, Any], csv_columns: tuple[str, ...] | None = None
) -> list[Unit]:
    """A CSV file is one unit; a Parquet file is cut into slices of whole row groups."""
    if uri.lower().endswith((".csv", ".csv.gz")):
        return [Unit("table", (uri,), csv_columns=csv_columns)]
    meta = io.parquet_metadata(uri, storage_options)
    units, start, rows = [], 0, 0
    for i in range(meta.num_row_groups):
        rows += meta.row_group(i).num_rows
        if rows >= _PARQUET_ROWS_PER_UNIT:
            units.append(Unit("table", (uri,), row_groups=(start, i + 1)))
            start, rows = i + 1, 0
    if start < meta.num_row_groups or not units:
        units.append(Unit("table", (uri,), row_groups=(start, meta.num_row_groups)))
    return units


def _inventory_units(cfg: InputConfig) -> list[Unit]:
    """An S3 Inventory ``manifest.json``: its data files live in the destination bucket."""
    assert cfg.manifest is not None
    report = io.read_json(cfg.manifest, cfg.storage_options)
    try:
        fmt = str(report["fileFormat"]).lower()
        destination = str(report["destinationBucket"]).split(":::")[-1]
        keys = [f["key"] for f in report["files"]]
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"{cfg.manifest!r} is not an S3 Inventory manifest.json: {exc!r}"
        ) from exc
    if fmt not in ("parquet", "csv"):
        raise ConfigError(f"S3 Inventory format {fmt!r} is not supported (use Parquet or CSV)")
    scheme = cfg.manifest.split("://", 1)[0] if "://" in cfg.manifest else "s3"
    columns = None
    if fmt == "csv":
        columns = tuple(_snake(c) for c in str(report.get("fileSchema", "")).split(","))
    units = []
    for key in keys:
        data_uri = f"{scheme}://{destination}/{key}"
        units += _table_units(data_uri, cfg.storage_options, csv_columns=columns)
    return units


def _snake(name: str) -> str:
    """S3 Inventory column names: ``IsDeleteMarker`` in CSV, ``is_delete_marker`` in Parquet."""
    name = name.strip()
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def table_unit_uris(unit: Unit, cfg: InputConfig) -> list[str]:
    """Every URI of a "table" unit (its row-group slice, or the whole CSV file)."""
    uri = unit.items[0]
    if unit.row_groups is not None:
        groups = list(range(*unit.row_groups))
        table = io.read_row_groups(uri, cfg.storage_options, lambda _meta: groups)
        if table is None:
            return []
    else:
        names = list(unit.csv_columns) if unit.csv_columns else None
        table = io.read_csv(uri, cfg.storage_options, names)
    return table_uris(table, cfg, source=uri, url_encoded=unit.csv_columns is not None)


def table_uris(
    table: pa.Table, cfg: InputConfig, source: str, url_encoded: bool = False
) -> list[str]:
    """URIs of a manifest table: its URI column, or ``bucket`` + ``key`` (S3 Inventory style).

    Inventory rows that are delete markers or non-current versions are dropped and keys are
    extension-filtered (an inventory lists every object); CSV inventory keys are URL-encoded.
    """
    column = cfg.manifest_uri_column
    if column in table.column_names:
        return [u for u in table.column(column).to_pylist() if u]
    table = table.rename_columns([_snake(c) for c in table.column_names])
    if not {"bucket", "key"} <= set(table.column_names):
        raise ConfigError(
            f"manifest {source!r} has no column {column!r} "
            f"(columns: {table.column_names}); an S3 Inventory table needs bucket and key"
        )
    keep = pa.array(np.ones(table.num_rows, dtype=bool))
    if "is_delete_marker" in table.column_names:
        keep = pc.and_(keep, pc.invert(pc.fill_null(_flag(table, "is_delete_marker"), False)))
    if "is_latest" in table.column_names:
        keep = pc.and_(keep, pc.fill_null(_flag(table, "is_latest"), True))
    table = table.filter(keep)
    wanted = cfg.wanted_suffixes
    out = []
    buckets, keys = table.column("bucket").to_pylist(), table.column("key").to_pylist()
    for bucket, key in zip(buckets, keys, strict=True):
        if not bucket or not key:
            continue
        key = unquote_plus(key) if url_encoded else key
        if key.lower().endswith(wanted):
            out.append(f"s3://{bucket}/{key}")
    return out


def _flag(table: pa.Table, name: str) -> pa.ChunkedArray:
    """A boolean inventory column (CSV inventories write "true"/"false" strings)."""
    column = table.column(name)
    if pa.types.is_boolean(column.type):
        return column
    return pc.equal(pc.utf8_lower(column.cast(pa.string())), "true")
