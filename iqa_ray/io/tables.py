"""Tables and records in storage: JSON records, Parquet files (atomic writes, row-group reads),
CSV tables."""

from __future__ import annotations

import io as _io
import json
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from iqa_ray.io.core import filesystem, to_uri, write_bytes_atomic


def write_json_atomic(uri: str, value: Any, storage_options: dict[str, Any] | None) -> None:
    """Atomically write ``value`` as indented JSON."""
    data = json.dumps(value, indent=2, sort_keys=True, default=str).encode()
    write_bytes_atomic(uri, data, storage_options)


def read_json(uri: str, storage_options: dict[str, Any] | None) -> Any:
    """Read a JSON object."""
    fs, path = filesystem(uri, storage_options)
    return json.loads(fs.cat_file(path))


def write_parquet_atomic(
    uri: str,
    table: pa.Table,
    storage_options: dict[str, Any] | None,
    row_group_size: int | None = None,
) -> None:
    """Atomically write a pyarrow table as one Parquet file (zstd; small row groups make
    range reads cheap)."""
    sink = _io.BytesIO()
    pq.write_table(table, sink, compression="zstd", row_group_size=row_group_size)
    write_bytes_atomic(uri, sink.getvalue(), storage_options)


def list_parquet(uri: str, storage_options: dict[str, Any] | None) -> list[str]:
    """Committed Parquet files directly under a folder, sorted (temporary files excluded)."""
    fs, path = filesystem(uri, storage_options)
    if not fs.exists(path):
        return []
    names = [p for p in fs.ls(path, detail=False) if p.endswith(".parquet")]
    return sorted(to_uri(fs, p) for p in names)


def read_parquet(
    uri: str, storage_options: dict[str, Any] | None, columns: list[str] | None = None
) -> pa.Table:
    """Read one Parquet file (optionally a subset of columns)."""
    fs, path = filesystem(uri, storage_options)
    with fs.open(path, "rb") as handle:
        return pq.read_table(handle, columns=columns)


def read_table_file(uri: str, storage_options: dict[str, Any] | None) -> pa.Table:
    """Read a Parquet or CSV table chosen by extension (manifests, label tables)."""
    fs, path = filesystem(uri, storage_options)
    with fs.open(path, "rb") as handle:
        if path.lower().endswith((".csv", ".csv.gz")):
            import pyarrow.csv as pacsv

            return pacsv.read_csv(handle)
        return pq.read_table(handle)


def parquet_metadata(uri: str, storage_options: dict[str, Any] | None) -> Any:
    """The footer metadata of a Parquet file (row groups, their sizes and statistics)."""
    fs, path = filesystem(uri, storage_options)
    with fs.open(path, "rb") as handle:
        return pq.ParquetFile(handle).metadata


def read_row_groups(
    uri: str,
    storage_options: dict[str, Any] | None,
    select: Callable[[Any], list[int]],
    columns: list[str] | None = None,
) -> pa.Table | None:
    """The row groups ``select(metadata)`` names, read in one open; None when it names none.

    ``columns``: read only these (those the file lacks are left out, not an error).
    """
    fs, path = filesystem(uri, storage_options)
    with fs.open(path, "rb") as handle:
        reader = pq.ParquetFile(handle)
        groups = select(reader.metadata)
        if not groups:
            return None
        if columns is not None:
            present = set(reader.schema_arrow.names)
            columns = [c for c in columns if c in present]
        return reader.read_row_groups(groups, columns=columns)


def read_csv(
    uri: str, storage_options: dict[str, Any] | None, column_names: list[str] | None = None
) -> pa.Table:
    """A CSV table (compression from the suffix); ``column_names`` for a header-less file."""
    import pyarrow.csv as pacsv

    fs, path = filesystem(uri, storage_options)
    read = pacsv.ReadOptions(column_names=column_names) if column_names else None
    with fs.open(path, "rb", compression="infer") as handle:
        return pacsv.read_csv(handle, read_options=read)
