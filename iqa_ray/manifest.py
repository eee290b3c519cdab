"""Manifests: input URIs with stable int64 ids; the done set read back from committed scores."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from iqa_ray import io
from iqa_ray.config import InputConfig
from iqa_ray.errors import ConfigError
from iqa_ray.schema import RETRYABLE_CODES, Col

MANIFEST_SCHEMA = pa.schema([(Col.IMAGE_ID, pa.int64()), (Col.URI, pa.string())])
_ID_MASK = (1 << 63) - 1


def image_id(uri: str) -> int:
    """Stable non-negative int64 id of a URI: the first 8 bytes of its sha256.

    Derived from the URI alone (never listing order), so reruns and resumes agree. Collisions
    between distinct URIs have probability ~n^2/2^64 (about 3e-8 for 1M images) and are
    detected by :func:`build_manifest`.
    """
    digest = hashlib.sha256(uri.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & _ID_MASK


def manifest_table(uris: list[str]) -> pa.Table:
    """Build (image_id, uri) rows from URIs: duplicates collapse to one row, sorted by URI."""
    unique = sorted(set(uris))
    ids = np.fromiter((image_id(u) for u in unique), dtype=np.int64, count=len(unique))
    if len(np.unique(ids)) != len(ids):
        raise ConfigError("two distinct URIs hash to one image_id; rename one of them")
    return pa.table({Col.IMAGE_ID: ids, Col.URI: pa.array(unique, pa.string())})


def build_manifest(cfg: InputConfig) -> pa.Table:
    """The whole manifest in this process, as (image_id, uri) rows sorted by URI.

    For small inputs (anchor sets, tests, tools); the scoring job builds Parquet shards with
    :func:`iqa_ray.listing.build_shards` instead, so the driver never holds every URI.
    """
    from iqa_ray import listing

    uris = [
        u for unit in listing.plan_units(cfg, parallelism=1) for u in listing.unit_uris(unit, cfg)
    ]
    table = manifest_table(uris)
    if cfg.limit is not None:
        table = table.slice(0, cfg.limit)
    return table


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


def pending(manifest: pa.Table, done: np.ndarray) -> pa.Table:
    """Anti-join: manifest rows whose image_id is not done."""
    if len(done) == 0:
        return manifest
    ids = manifest.column(Col.IMAGE_ID).to_numpy()
    return manifest.filter(pa.array(~np.isin(ids, done)))


def next_attempt(keys: pa.Table) -> int:
    """Attempt number for rows written by this run: one more than any stored attempt."""
    if keys.num_rows == 0:
        return 0
    return int(pc.max(keys.column(Col.ATTEMPT)).as_py()) + 1
