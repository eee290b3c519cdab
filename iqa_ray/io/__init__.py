"""All storage access (fsspec): the only package that talks to local disks and buckets.

``core`` resolves URIs, reads with bounded retry and writes atomically; ``tables`` reads and
writes JSON, Parquet and CSV; ``listing`` lists prefixes and S3 key pages; ``streams`` streams
large objects (shards) with resumable reads and writes them atomically; ``cache`` copies
model folders from a bucket to a node-local cache. Callers pass URIs plus non-secret
``storage_options``; Ray readers get a pyarrow filesystem from :func:`pyarrow_filesystem`.
"""

from __future__ import annotations

from iqa_ray.io.cache import local_model_cache
from iqa_ray.io.core import (
    RetryConfig,
    copy_object,
    delete,
    delete_tree,
    exists,
    filesystem,
    is_remote,
    is_transient,
    join,
    pyarrow_filesystem,
    read_bytes,
    sha256_file,
    to_uri,
    write_bytes_atomic,
)
from iqa_ray.io.listing import Location, bucket_prefix, list_files, list_page, lists_key_ranges
from iqa_ray.io.streams import RetryingReader, atomic_writer, object_sizes, open_stream
from iqa_ray.io.tables import (
    list_parquet,
    parquet_metadata,
    read_csv,
    read_json,
    read_parquet,
    read_row_groups,
    read_table_file,
    write_json_atomic,
    write_parquet_atomic,
)

__all__ = [
    "Location",
    "RetryConfig",
    "RetryingReader",
    "atomic_writer",
    "bucket_prefix",
    "copy_object",
    "delete",
    "delete_tree",
    "exists",
    "filesystem",
    "is_remote",
    "is_transient",
    "join",
    "list_files",
    "list_page",
    "list_parquet",
    "lists_key_ranges",
    "local_model_cache",
    "object_sizes",
    "open_stream",
    "parquet_metadata",
    "pyarrow_filesystem",
    "read_bytes",
    "read_csv",
    "read_json",
    "read_parquet",
    "read_row_groups",
    "read_table_file",
    "sha256_file",
    "to_uri",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_parquet_atomic",
]
