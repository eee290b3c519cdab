"""Core storage access: URI resolution, reads with bounded jittered retry, atomic writes, copies."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import re
import time
from pathlib import Path
from typing import Any

from fsspec.core import url_to_fs
from pydantic import Field

from iqa_ray.errors import ConfigError, RowError
from iqa_ray.schema import ErrorCode
from iqa_ray.settings import StrictModel

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


class RetryConfig(StrictModel):
    """Bounded retries of storage reads."""

    attempts: int = Field(5, ge=1, description="Tries per object read.")
    base_delay_s: float = Field(0.2, ge=0, description="First backoff delay (doubles, jittered).")
    max_delay_s: float = Field(5.0, ge=0, description="Cap on one backoff delay.")


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


def is_remote(uri: str) -> bool:
    """True for URIs with a non-local protocol (s3://, gs://, ...)."""
    return "://" in uri and not uri.startswith("file://")


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def exists(uri: str, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether an object or folder exists."""
    fs, path = filesystem(uri, storage_options)
    return bool(fs.exists(path))


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


def delete(uri: str, storage_options: dict[str, Any] | None) -> None:
    """Remove one object if it exists."""
    fs, path = filesystem(uri, storage_options)
    if fs.exists(path):
        fs.rm_file(path)


def delete_tree(uri: str, storage_options: dict[str, Any] | None) -> None:
    """Remove a folder (prefix) and everything under it, if it exists."""
    fs, path = filesystem(uri, storage_options)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs.invalidate_cache(path)


def sha256_file(uri: str, storage_options: dict[str, Any] | None) -> str:
    """Hex sha256 of an object's content, streamed in 8 MiB chunks."""
    fs, path = filesystem(uri, storage_options)
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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
