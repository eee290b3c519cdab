"""Kept samples of a corpus run written in the input's own format: WebDataset shards (every
original member plus ``<key>.iqa.json`` with the scores) or Parquet files (every original column
plus ``iqa_image_id`` and ``iqa_<method>`` score columns).

Kept rows, sorted by (source, position), are cut into files of ``per_file`` samples, each named
by a hash of the image ids it holds and written atomically: a rerun with the same kept set finds
every file in place and writes nothing; a file whose source cannot be read is not published.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import logging
import re
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from iqa_ray import io
from iqa_ray.errors import ConfigError
from iqa_ray.inputs.webdataset import iter_samples, open_archive
from iqa_ray.schema import Col

logger = logging.getLogger(__name__)
SCORES_MEMBER = "iqa.json"  # extension of the member added to each written sample
_PREFIX = "iqa_"  # score columns added to Parquet rows
_ANY = 1 << 62  # read a source shard to its end


@dataclass(frozen=True)
class ExportReport:
    """Files written, files already there, files that failed (with up to 20 reasons), and kept
    samples that were no longer in their source."""

    written: int
    skipped: int
    failed: int
    samples: int
    missing: int
    failures: list[str] = field(default_factory=list)


def export_kept(keep: pd.DataFrame, fmt: str, dest: str, methods: list[str], *,
                id_column: str | None = None, per_file: int = 10_000,
                storage_options: dict[str, Any] | None = None,
                dest_storage_options: dict[str, Any] | None = None,
                workers: int = 8) -> ExportReport:
    """Write the kept samples under ``dest`` in ``fmt`` (``webdataset`` or ``parquet``).

    ``keep`` needs ``image_id``, ``source``, ``key`` and one score column per method;
    ``id_column``: the Parquet input's id column (keys are row indices without one).
    """
    missing_cols = [c for c in (Col.IMAGE_ID, Col.SOURCE, Col.KEY, *methods) if c not in keep]
    if missing_cols:
        raise ConfigError(f"kept rows lack {missing_cols}: not a webdataset/parquet run?")
    dest_opts = storage_options if dest_storage_options is None else dest_storage_options
    order = keep.assign(_pos=pd.to_numeric(keep[Col.KEY], errors="coerce"))
    order = order.sort_values([Col.SOURCE, "_pos", Col.KEY], kind="stable")
    chunks = [order.iloc[i : i + per_file] for i in range(0, len(order), per_file)]
    suffix = ".tar" if fmt == "webdataset" else ".parquet"
    write = _write_tar if fmt == "webdataset" else _write_table

    def one(chunk: pd.DataFrame) -> tuple[str, int, str | None]:
        uri = io.join(dest, _file_name(chunk[Col.IMAGE_ID].to_numpy(), suffix))
        if io.exists(uri, dest_opts):
            return "skipped", 0, None
        try:
            lost = write(chunk, uri, methods, id_column, storage_options, dest_opts)
            return "written", lost, None
        except Exception as exc:  # the per-file boundary: record, go on, publish nothing
            return "failed", 0, f"{uri}: {type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max(1, workers)) as pool:
        outcomes = list(pool.map(one, chunks))
    states = [s for s, _, _ in outcomes]
    failures = [e for _, _, e in outcomes if e]
    if failures:
        logger.warning("%d files failed, e.g. %s", len(failures), failures[0])
    return ExportReport(states.count("written"), states.count("skipped"), len(failures),
                        len(keep), sum(n for _, n, _ in outcomes), failures[:20])


def _file_name(ids: np.ndarray, suffix: str) -> str:
    digest = hashlib.sha256(np.sort(ids.astype(np.int64)).tobytes()).hexdigest()[:20]
    return f"part-{digest}{suffix}"


def _write_tar(chunk: pd.DataFrame, uri: str, methods: list[str], _id_column: str | None,
               options: dict[str, Any] | None, dest_options: dict[str, Any] | None) -> int:
    """One output shard: the kept samples' members in source order, then their scores."""
    found = 0
    with io.atomic_writer(uri, dest_options) as out, tarfile.open(fileobj=out, mode="w") as tar:
        for source, group in chunk.groupby(Col.SOURCE, sort=False):
            wanted = {str(r[Col.KEY]): r for r in group.to_dict("records")}
            with io.open_stream(str(source), options) as stream:
                for sample in iter_samples(open_archive(stream, str(source)), 0, _ANY, _ANY,
                                           lambda _ext: True):
                    row = wanted.get(sample.key)
                    if row is None:
                        continue
                    found += 1
                    for ext, data in sample.members.items():
                        _add(tar, f"{sample.key}.{ext}", data)
                    payload = {"image_id": int(row[Col.IMAGE_ID]), "source": str(source),
                               "key": sample.key,
                               "scores": {m: _number(row.get(m)) for m in methods}}
                    _add(tar, f"{sample.key}.{SCORES_MEMBER}",
                         json.dumps(payload, sort_keys=True).encode())
    return len(chunk) - found


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """A member with fixed metadata: equal content gives equal bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, _io.BytesIO(data))


def score_column(method: str) -> str:
    """Parquet output column of a method's score (``run/label`` -> ``iqa_run_label``)."""
    return _PREFIX + re.sub(r"\W", "_", method)


def _write_table(chunk: pd.DataFrame, uri: str, methods: list[str], id_column: str | None,
                 options: dict[str, Any] | None, dest_options: dict[str, Any] | None) -> int:
    """One output file: the kept rows of each source table with score columns appended."""
    pieces, lost = [], 0
    for source, group in chunk.groupby(Col.SOURCE, sort=False):
        table, positions = _source_rows(str(source), group[Col.KEY].astype(str).tolist(),
                                        id_column, options)
        clash = [c for c in table.column_names if c.startswith(_PREFIX)]
        if clash:
            raise ConfigError(f"{source} already has columns {clash}: cannot add score columns")
        keep = [i for i, p in enumerate(positions) if p is not None]
        lost += len(positions) - len(keep)
        rows = table.take(pa.array([positions[i] for i in keep], pa.int64()))
        picked = group.iloc[keep]
        rows = rows.append_column(_PREFIX + Col.IMAGE_ID,
                                  pa.array(picked[Col.IMAGE_ID].to_numpy(np.int64)))
        for method in methods:
            scores = [_number(v) for v in picked[method].tolist()]
            rows = rows.append_column(score_column(method), pa.array(scores, pa.float64()))
        pieces.append(rows)
    io.write_parquet_atomic(uri, pa.concat_tables(pieces, promote_options="default"), dest_options)
    return lost


def _source_rows(source: str, keys: list[str], id_column: str | None,
                 options: dict[str, Any] | None) -> tuple[pa.Table, list[int | None]]:
    """The row groups of a table holding ``keys`` (row indices, or id column values) and each
    key's position in them (None: not there)."""
    meta = io.parquet_metadata(source, options)
    starts = np.cumsum([0] + [meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
    if id_column is None:
        rows = {k: int(k) for k in keys if k.isdigit() and int(k) < starts[-1]}
    else:
        ids = io.read_parquet(source, options, [id_column]).column(id_column).to_pylist()
        where = {str(v): i for i, v in reversed(list(enumerate(ids))) if v is not None}
        rows = {k: where[k] for k in keys if k in where}
    groups = sorted({int(np.searchsorted(starts, r, side="right") - 1) for r in rows.values()})
    table = io.read_row_groups(source, options, lambda _meta: groups)
    base, offset = {}, 0
    for g in groups:
        base[g] = offset
        offset += int(starts[g + 1] - starts[g])
    positions: list[int | None] = []
    for k in keys:
        if k not in rows:
            positions.append(None)
            continue
        g = int(np.searchsorted(starts, rows[k], side="right") - 1)
        positions.append(base[g] + rows[k] - int(starts[g]))
    empty = pa.table({}) if table is None else table
    return empty, positions
