"""Streamed reads and writes of large objects: a seekable reader that resumes after transient
errors (shards, tables), object sizes, and an atomic writer for files too large for memory."""

from __future__ import annotations

import contextlib
import io as _io
import os
import random
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from iqa_ray.errors import RowError
from iqa_ray.io.core import _is_local, filesystem, is_transient
from iqa_ray.schema import ErrorCode

_BLOCK = 16 << 20  # bytes per ranged GET of a streamed object: few requests, bounded memory
_SIZE_THREADS = 32  # concurrent HEAD requests when sizing an explicit list of objects


class RetryingReader(_io.RawIOBase):
    """A read-only, seekable view of one object that survives transient storage errors.

    Reads go through an fsspec file with a read-ahead cache of ``block_size`` bytes (one ranged
    GET per block on S3). A transient error (reset, timeout, throttling, 5xx) reopens the object
    at the current offset after a jittered backoff, up to ``attempts`` tries per read; so a
    multi-GB shard streamed for minutes does not restart from zero after one dropped connection.

    Raises (from any read):
        RowError: ``not_found`` for a missing object, ``fetch_failed`` for a permanent error or
            once retries are exhausted.
    """

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None, *,
                 size: int | None = None, attempts: int = 5, base_delay_s: float = 0.2,
                 max_delay_s: float = 5.0, block_size: int = _BLOCK) -> None:
        super().__init__()
        self.uri = uri
        self._fs, self._path = filesystem(uri, storage_options)
        self._size = size
        self._attempts, self._base, self._cap = attempts, base_delay_s, max_delay_s
        self._block = block_size
        self._pos = 0
        self._file: Any = None

    def _open(self) -> Any:
        # A known size spares fsspec's size lookup (s3fs still makes one HEAD per open: it
        # checks the object's ETag on every ranged read).
        extra = {} if self._size is None else {"size": self._size}
        handle = self._fs.open(self._path, "rb", block_size=self._block,
                               cache_type="readahead", **extra)
        handle.seek(self._pos)
        return handle

    def _retrying(self, action: Any) -> Any:
        for attempt in range(1, self._attempts + 1):
            try:
                if self._file is None:
                    self._file = self._open()
                return action(self._file)
            except FileNotFoundError as exc:
                raise RowError(ErrorCode.NOT_FOUND, f"object not found: {self.uri}") from exc
            except Exception as exc:
                self._drop()
                if attempt == self._attempts or not is_transient(exc):
                    raise RowError(ErrorCode.FETCH_FAILED, f"{type(exc).__name__} after "
                                   f"{attempt} attempt(s) at byte {self._pos}: {exc}") from exc
                delay = min(self._cap, self._base * 2 ** (attempt - 1))
                time.sleep(delay * (0.5 + random.random()))
                self._fs.invalidate_cache(self._path)
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:  # type: ignore[override]
        data = self._retrying(lambda f: f.read(len(buffer)))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        data = self._retrying(lambda f: f.read(size))
        self._pos += len(data)
        return bytes(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == os.SEEK_SET:
            target = offset
        elif whence == os.SEEK_CUR:
            target = self._pos + offset
        else:
            target = self.size() + offset
        self._pos = max(0, target)
        if self._file is not None:
            self._retrying(lambda f: f.seek(self._pos))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def size(self) -> int:
        """The object's size in bytes (one HEAD request unless given)."""
        if self._size is None:
            self._size = int(self._retrying(lambda _f: self._fs.size(self._path)))
        return self._size

    def close(self) -> None:
        self._drop()
        super().close()


def open_stream(uri: str, storage_options: dict[str, Any] | None = None, *,
                size: int | None = None, attempts: int = 5, base_delay_s: float = 0.2,
                max_delay_s: float = 5.0) -> RetryingReader:
    """A :class:`RetryingReader` of ``uri`` (pass ``size`` when it is known from a listing)."""
    return RetryingReader(uri, storage_options, size=size, attempts=attempts,
                          base_delay_s=base_delay_s, max_delay_s=max_delay_s)


def object_sizes(uris: list[str], storage_options: dict[str, Any] | None) -> dict[str, int | None]:
    """Size in bytes of each URI, None for a missing object (HEAD requests in a thread pool)."""
    if not uris:
        return {}
    fs, _ = filesystem(uris[0], storage_options)

    def one(uri: str) -> int | None:
        try:
            return int(fs.size(filesystem(uri, storage_options)[1]))
        except FileNotFoundError:
            return None

    with ThreadPoolExecutor(min(_SIZE_THREADS, len(uris))) as pool:
        return dict(zip(uris, pool.map(one, uris), strict=True))


@contextlib.contextmanager
def atomic_writer(uri: str, storage_options: dict[str, Any] | None) -> Iterator[BinaryIO]:
    """A binary file to write ``uri`` through: the object appears whole, or not at all.

    Bytes go to a temporary local file first (written shards can be larger than memory); on
    success it is renamed into place (local) or uploaded with one PUT or multipart upload (a
    bucket makes the object visible only once complete). On an exception nothing is published.
    """
    fs, path = filesystem(uri, storage_options)
    local = _is_local(fs)
    folder = Path(path).parent if local else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (published or removed below)
        "w+b", dir=folder, prefix=".tmp-", delete=False)
    try:
        yield handle  # type: ignore[misc]
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        if local:
            os.replace(handle.name, path)
        else:
            fs.put_file(handle.name, path)
    finally:
        handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(handle.name)
