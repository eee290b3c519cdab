"""The done set of a run, read back from its committed score files: which images still need
work (resume), which rows are current (later attempts supersede), and the next attempt number."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from iqa_ray import io
from iqa_ray.schema import RETRYABLE_CODES, Col


def load_score_keys(scores_uri: str, storage_options: dict[str, Any] | None) -> pa.Table:
    """Read only the key columns (image_id, method, error_code, attempt) of committed scores."""
    columns = [Col.IMAGE_ID, Col.METHOD, Col.ERROR_CODE, Col.ATTEMPT]
    tables = [
        io.read_parquet(f, storage_options, columns)
        for f in io.list_parquet(scores_uri, storage_options)
    ]
    if not tables:
        return pa.table(
            {
                Col.IMAGE_ID: pa.array([], pa.int64()),
                Col.METHOD: pa.array([], pa.string()),
                Col.ERROR_CODE: pa.array([], pa.string()),
                Col.ATTEMPT: pa.array([], pa.int32()),
            }
        )
    return pa.concat_tables(tables)


def _latest_positions(keys: pa.Table) -> np.ndarray:
    """Row positions of the highest attempt per (image_id, method), sorted by id then method.

    Works on integer arrays (ids, method codes, attempts) so that resuming a corpus of many
    millions of rows costs tens of bytes per row, not Python objects.
    """
    ids = keys.column(Col.IMAGE_ID).to_numpy()
    methods = keys.column(Col.METHOD)
    names = pc.unique(methods)
    names = names.take(pc.array_sort_indices(names))
    codes = pc.fill_null(pc.index_in(methods, value_set=names), -1).to_numpy()
    attempts = pc.fill_null(keys.column(Col.ATTEMPT), 0).to_numpy().astype(np.int64)
    order = np.lexsort((-attempts, codes, ids))
    del attempts
    sorted_ids, sorted_codes = ids[order], codes[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (sorted_ids[1:] != sorted_ids[:-1]) | (sorted_codes[1:] != sorted_codes[:-1])
    return order[first]


def latest_rows(keys: pa.Table) -> pa.Table:
    """Keep, per (image_id, method), the row of the highest attempt (later tries supersede)."""
    if keys.num_rows == 0:
        return keys
    return keys.take(pa.array(_latest_positions(keys)))


def done_ids(keys: pa.Table, methods: list[str], retry_errors: bool) -> np.ndarray:
    """Ids of images with a current row for every method.

    When retrying, the row must also carry no retryable error.
    """
    if keys.num_rows == 0:
        return np.array([], dtype=np.int64)
    positions = _latest_positions(keys)
    wanted = pc.fill_null(pc.is_in(keys.column(Col.METHOD), pa.array(methods, pa.string())), False)
    positions = positions[wanted.to_numpy(zero_copy_only=False)[positions]]
    ids = keys.column(Col.IMAGE_ID).to_numpy()[positions]
    unique, counts = np.unique(ids, return_counts=True)
    complete = unique[counts == len(methods)]
    if retry_errors:
        codes = keys.column(Col.ERROR_CODE)
        retry = pc.fill_null(pc.is_in(codes, pa.array(sorted(RETRYABLE_CODES), pa.string())), False)
        complete = np.setdiff1d(complete, ids[retry.to_numpy(zero_copy_only=False)[positions]])
    return complete.astype(np.int64)


def not_done(ids: np.ndarray, done: np.ndarray) -> np.ndarray:
    """Boolean mask of the ``ids`` that are not in ``done`` (the one "pending" rule)."""
    if len(done) == 0:
        return np.ones(len(ids), dtype=bool)
    return ~np.isin(ids, done)


def count_pending(ids: np.ndarray, done: Any) -> int:
    """How many ids are not in ``done`` (an int64 array, an object ref to one, or None)."""
    if done is None:
        return len(ids)
    if not isinstance(done, np.ndarray):
        import ray

        done = ray.get(done)
    return int(np.sum(not_done(ids, done)))


def next_attempt(keys: pa.Table) -> int:
    """Attempt number for rows written by this run: one more than any stored attempt."""
    if keys.num_rows == 0:
        return 0
    return int(pc.max(keys.column(Col.ATTEMPT)).as_py()) + 1


def current_counts(latest: pa.Table) -> dict[tuple[str, str], int]:
    """Current rows per (method, error code or "ok"), aggregated in Arrow (no per-row objects)."""
    if latest.num_rows == 0:
        return {}
    grouped = latest.select([Col.METHOD, Col.ERROR_CODE]).group_by(
        [Col.METHOD, Col.ERROR_CODE]).aggregate([([], "count_all")])
    return {(m, c or "ok"): int(n) for m, c, n in zip(
        grouped.column(Col.METHOD).to_pylist(), grouped.column(Col.ERROR_CODE).to_pylist(),
        grouped.column("count_all").to_pylist(), strict=True)}
