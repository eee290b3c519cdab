"""All storage access (fsspec): listing, reads with bounded retry, atomic writes, model cache."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io as _io
import json
import os
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from iqa_ray.errors import ConfigError, RowError
from iqa_ray.schema import ErrorCode

# Exception type names treated as transient (retried). botocore/aiohttp errors are matched by
# name so that this module does not import them.
_TRANSIENT_NAMES = frozenset(
    {
        "ConnectionError",
        "TimeoutError",
        "ClientOSError",
        "ServerDisconnectedError",
        "ClientPayloadError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "EndpointConnectionError",
        "ResponseStreamingError",
        "IncompleteReadError",
    }
)
_TRANSIENT_WORDS = ("slowdown", "throttl", "internalerror", "serviceunavailable")
# HTTP 5xx statuses standing alone: messages also carry object keys such as ".../503.jpg".
_TRANSIENT_STATUS = re.compile(r"(?<![\w./-])(?:500|502|503|504)(?!\w|\.\w)")
# s3fs turns S3 error replies into OSErrors whose message names neither code nor status:
# SlowDown and ServiceUnavailable become EBUSY, InternalError EREMOTEIO.
_TRANSIENT_ERRNOS = frozenset(
    {errno.EBUSY, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED,
     getattr(errno, "EREMOTEIO", errno.EIO)}
)


def filesystem(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """Resolve a URI into (fsspec filesystem, path) once, with non-secret options."""
    try:
        return url_to_fs(uri, **(storage_options or {}))
    except ImportError as exc:
        raise ConfigError(
            f"no filesystem for {uri!r}: {exc} (gs:// needs `pip install gcsfs`, s3:// s3fs)"
        ) from exc


def join(base: str, *parts: str) -> str:
    """Join URI parts with '/' (URIs are not OS paths)."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def to_uri(fs: Any, path: str) -> str:
    """Turn a filesystem-relative path back into a full URI with the protocol."""
    return fs.unstrip_protocol(path)


def list_files(
    uri: str, storage_options: dict[str, Any] | None, extensions: tuple[str, ...]
) -> list[str]:
    """List every file under a prefix with one of ``extensions``, sorted, as full URIs."""
    fs, root = filesystem(uri, storage_options)
    if not fs.exists(root):
        raise ConfigError(f"input prefix {uri!r} does not exist or is not readable")
    wanted = tuple(e.lower() for e in extensions)
    found = [p for p in fs.find(root) if p.lower().endswith(wanted)]
    return sorted(to_uri(fs, p) for p in found)


def lists_key_ranges(fs: Any) -> bool:
    """True for stores whose listings can start after a given key (S3 and S3-compatible)."""
    return hasattr(fs, "call_s3") and hasattr(fs, "split_path")


def bucket_prefix(fs: Any, path: str) -> tuple[str, str]:
    """(bucket, key prefix of the folder ``path``: ending in "/", or "" at the bucket root)."""
    bucket, key, _ = fs.split_path(path)
    return bucket, key.rstrip("/") + "/" if key else ""


def list_page(
    fs: Any,
    path: str,
    start_after: str | None,
    max_keys: int,
    delimiter: str | None = None,
) -> tuple[list[str], list[str], bool]:
    """One page of an S3 listing under folder ``path``, in key order.

    Keys are returned relative to the bucket, after ``start_after`` (exclusive) when given.
    Returns (keys, common prefixes with a ``delimiter``, truncated). Only for stores where
    :func:`lists_key_ranges` is true.
    """
    bucket, prefix = bucket_prefix(fs, path)
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys}
    if start_after is not None:
        kwargs["StartAfter"] = start_after
    if delimiter is not None:
        kwargs["Delimiter"] = delimiter
    reply = fs.call_s3("list_objects_v2", **kwargs)
    keys = [item["Key"] for item in reply.get("Contents", [])]
    prefixes = [item["Prefix"] for item in reply.get("CommonPrefixes", [])]
    return keys, prefixes, bool(reply.get("IsTruncated"))


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: connection drops, timeouts, throttling, 5xx."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return False
    if type(exc).__name__ in _TRANSIENT_NAMES or isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    text = f"{type(exc).__name__} {exc}"
    squeezed = text.lower().replace(" ", "")
    if any(w in squeezed for w in _TRANSIENT_WORDS) or _TRANSIENT_STATUS.search(text):
        return True
    # A translated error keeps the client's original one (botocore ClientError) as its cause.
    return exc.__cause__ is not None and is_transient(exc.__cause__)


def read_bytes(
    uri: str,
    storage_options: dict[str, Any] | None = None,
    *,
    attempts: int = 5,
    base_delay_s: float = 0.2,
    max_delay_s: float = 5.0,
    max_bytes: int | None = None,
) -> bytes:
    """Read a whole object, retrying transient errors with bounded jittered backoff.

    Raises:
        RowError: ``not_found`` for a missing object, ``too_large`` over ``max_bytes``,
            ``fetch_failed`` once retries are exhausted or for a permanent error.
    """
    fs, path = filesystem(uri, storage_options)
    for attempt in range(1, attempts + 1):
        try:
            if max_bytes is not None:
                size = fs.size(path)
                if size is not None and size > max_bytes:
                    raise RowError(ErrorCode.TOO_LARGE, f"{size} bytes > max_bytes {max_bytes}")
            return fs.cat_file(path)
        except RowError:
            raise
        except FileNotFoundError as exc:
            raise RowError(ErrorCode.NOT_FOUND, f"object not found: {uri}") from exc
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise RowError(
                    ErrorCode.FETCH_FAILED,
                    f"{type(exc).__name__} after {attempt} attempt(s): {exc}",
                ) from exc
            delay = min(max_delay_s, base_delay_s * 2 ** (attempt - 1))
            time.sleep(delay * (0.5 + random.random()))  # jitter spreads retries of many actors
            # s3fs caches listings and connections; a fresh read avoids a poisoned one.
            fs.invalidate_cache(path)
    raise AssertionError("unreachable")


def exists(uri: str, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether an object or folder exists."""
    fs, path = filesystem(uri, storage_options)
    return bool(fs.exists(path))


def write_bytes_atomic(uri: str, data: bytes, storage_options: dict[str, Any] | None) -> None:
    """Write an object so that readers see all of it or nothing.

    Object stores make a PUT visible only once complete; on local disks we write a temporary
    file beside the target and rename it.
    """
    fs, path = filesystem(uri, storage_options)
    if _is_local(fs):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}-{random.getrandbits(32):08x}"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
    else:
        fs.pipe_file(path, data)


def write_json_atomic(uri: str, value: Any, storage_options: dict[str, Any] | None) -> None:
    """Atomically write ``value`` as indented JSON."""
    data = json.dumps(value, indent=2, sort_keys=True, default=str).encode()
    write_bytes_atomic(uri, data, storage_options)


def read_json(uri: str, storage_options: dict[str, Any] | None) -> Any:
    """Read a JSON object."""
    fs, path = filesystem(uri, storage_options)
    return json.loads(fs.cat_file(path))


def write_parquet_atomic(uri: str, table: pa.Table, storage_options: dict[str, Any] | None) -> None:
    """Atomically write a pyarrow table as one Parquet file (zstd)."""
    sink = _io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
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


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def is_remote(uri: str) -> bool:
    """True for URIs with a non-local protocol (s3://, gs://, ...)."""
    return "://" in uri and not uri.startswith("file://")


def local_model_cache(
    uri: str, storage_options: dict[str, Any] | None, cache_dir: str | None
) -> str:
    """Copy a model folder from a bucket to a node-local cache once per node; return the path.

    Concurrent actors on one node serialise on a file lock; a ``.completed`` marker written
    after the copy tells later actors (and later runs) that the copy is whole.
    """
    root = Path(cache_dir or Path.home() / ".cache" / "iqa_ray" / "models")
    target = root / hashlib.sha256(uri.encode()).hexdigest()[:16]
    marker = target / ".completed"
    if marker.exists():
        return str(target)
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f"{target.name}.lock"):
        if not marker.exists():
            fs, path = filesystem(uri, storage_options)
            target.mkdir(parents=True, exist_ok=True)
            fs.get(path.rstrip("/") + "/", str(target) + "/", recursive=True)
            marker.write_text(uri)
    return str(target)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def delete(uri: str, storage_options: dict[str, Any] | None) -> None:
    """Remove one object if it exists."""
    fs, path = filesystem(uri, storage_options)
    if fs.exists(path):
        fs.rm_file(path)


def sha256_file(uri: str, storage_options: dict[str, Any] | None) -> str:
    """Hex sha256 of an object's content, streamed in 8 MiB chunks."""
    fs, path = filesystem(uri, storage_options)
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def delete_tree(uri: str, storage_options: dict[str, Any] | None) -> None:
    """Remove a folder (prefix) and everything under it, if it exists."""
    fs, path = filesystem(uri, storage_options)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs.invalidate_cache(path)


def copy_object(
    src: str,
    dst: str,
    storage_options: dict[str, Any] | None = None,
    dst_storage_options: dict[str, Any] | None = None,
) -> bool:
    """Copy one object, skipping it when ``dst`` already exists with the same size.

    On one filesystem the copy is ``fs.copy`` (a server-side CopyObject on S3: the bytes never
    pass through this process); across filesystems the bytes are read and written atomically.
    ``dst_storage_options`` defaults to ``storage_options``.

    Returns:
        True if bytes were copied, False if an equal-sized destination made it a no-op.
    """
    src_fs, src_path = filesystem(src, storage_options)
    dst_opts = storage_options if dst_storage_options is None else dst_storage_options
    dst_fs, dst_path = filesystem(dst, dst_opts)
    try:
        dst_size = dst_fs.size(dst_path)
    except FileNotFoundError:
        dst_size = None
    if dst_size is not None and dst_size == src_fs.size(src_path):
        return False  # idempotent reruns: an object of the same size is taken as already copied
    same_fs = (src_fs.protocol, src_fs.storage_options) == (dst_fs.protocol, dst_fs.storage_options)
    if same_fs and not _is_local(dst_fs):
        src_fs.copy(src_path, dst_path)
    elif same_fs:
        # Local copies go through a temporary name, so a crash never leaves a short file behind.
        Path(dst_path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{dst_path}.tmp-{os.getpid()}-{random.getrandbits(32):08x}"
        try:
            src_fs.copy(src_path, tmp)
            os.replace(tmp, dst_path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
    else:
        write_bytes_atomic(dst, read_bytes(src, storage_options), dst_opts)
    return True


def pyarrow_filesystem(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """(pyarrow filesystem, path without protocol) for Ray readers and Ray Train storage.

    Wraps the same fsspec filesystem as every other function here, so custom endpoints
    (MinIO, moto) configured in ``storage_options`` work for Ray too.
    """
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, path = filesystem(uri, storage_options)
    return PyFileSystem(FSSpecHandler(fs)), path
