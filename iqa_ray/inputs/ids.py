"""Stable image ids and the manifest's row rules: one row per distinct URI, no id collisions."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from iqa_ray.errors import ConfigError
from iqa_ray.schema import MANIFEST_SCHEMA, Col

_ID_MASK = (1 << 63) - 1


def image_id(uri: str) -> int:
    """Stable non-negative int64 id of a URI: the first 8 bytes of its sha256.

    Derived from the URI alone (never listing order), so reruns and resumes agree. Collisions
    between distinct URIs have probability ~n^2/2^64 (about 3e-8 for 1M images) and are
    detected by :func:`unique_rows`.
    """
    digest = hashlib.sha256(uri.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & _ID_MASK


def ids_of(uris: list[str]) -> np.ndarray:
    """Image ids of URIs (see :func:`image_id`)."""
    return np.fromiter((image_id(u) for u in uris), dtype=np.int64, count=len(uris))


def manifest_table(uris: list[str]) -> pa.Table:
    """(image_id, uri) rows of URIs: duplicates collapse to one row, sorted by URI."""
    ids = ids_of(uris)
    table = pa.table({Col.IMAGE_ID: ids, Col.URI: pa.array(uris, pa.string())})
    return unique_rows(table.cast(MANIFEST_SCHEMA))


def unique_rows(table: pa.Table) -> pa.Table:
    """Drop repeated URIs, refuse two URIs with one id, and sort by URI."""
    table = table.take(pc.sort_indices(table, [(Col.URI, "ascending")]))
    uris = table.column(Col.URI).to_numpy(zero_copy_only=False)
    first = np.ones(len(uris), dtype=bool)
    first[1:] = uris[1:] != uris[:-1]
    table = table.filter(pa.array(first))
    ids = table.column(Col.IMAGE_ID).to_numpy()
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        clash = unique[counts > 1][0]
        uris = table.column(Col.URI).to_pylist()
        names = [u for u, i in zip(uris, ids, strict=True) if i == clash]
        raise ConfigError(f"two distinct URIs hash to one image_id ({names}); rename one of them")
    return table.cast(MANIFEST_SCHEMA)
