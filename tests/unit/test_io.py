"""Storage access: listing, reads with bounded retry, atomic writes and the model cache."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from iqa_ray import io as iqa_io
from iqa_ray.errors import ConfigError, RowError
from iqa_ray.io import cache as io_cache
from iqa_ray.io import core as io_core
from iqa_ray.schema import ErrorCode


class SlowDown(Exception):
    """Shaped like botocore's throttling error, matched by name only."""


class ServiceUnavailable(Exception):
    """Another S3-style error name."""


class FlakyFs:
    """A minimal fsspec stand-in whose ``cat_file`` fails ``failures`` times, then succeeds."""

    def __init__(self, failures: int, error: BaseException, payload: bytes = b"data") -> None:
        self.failures = failures
        self.error = error
        self.payload = payload
        self.calls = 0
        self.invalidated = 0

    def cat_file(self, path: str) -> bytes:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.payload

    def size(self, path: str) -> int:
        return len(self.payload)

    def invalidate_cache(self, path: str | None = None) -> None:
        self.invalidated += 1


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Install a FlakyFs behind ``iqa_ray.io.core.filesystem``; returns a factory."""

    def install(failures: int, error: BaseException) -> FlakyFs:
        fs = FlakyFs(failures, error)
        monkeypatch.setattr(io_core, "filesystem", lambda uri, options=None: (fs, "bucket/key"))
        return fs

    return install


def test_list_files_sorted_filtered_full_uris(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ["b.JPG", "a.png", "sub/c.jpeg", "z.Png", "notes.txt", "x.jpg.bak"]:
        (tmp_path / name).write_bytes(b"x")
    uris = iqa_io.list_files(str(tmp_path), None, (".jpg", ".jpeg", ".PNG"))
    names = [u.removeprefix(f"file://{tmp_path}/") for u in uris]
    assert names == ["a.png", "b.JPG", "sub/c.jpeg", "z.Png"]
    assert uris == sorted(uris)
    assert all(u.startswith("file:///") for u in uris)
    # A file:// prefix lists the same objects.
    assert iqa_io.list_files(f"file://{tmp_path}", None, (".jpg", ".jpeg", ".png")) == uris


def test_list_missing_prefix_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        iqa_io.list_files(str(tmp_path / "absent"), None, (".jpg",))


def test_read_bytes_roundtrip_and_missing(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"\x00\x01payload")
    assert iqa_io.read_bytes(f"file://{tmp_path}/a.bin") == b"\x00\x01payload"
    with pytest.raises(RowError) as info:
        iqa_io.read_bytes(str(tmp_path / "missing.jpg"), base_delay_s=0)
    assert info.value.code == ErrorCode.NOT_FOUND
    assert "missing.jpg" in info.value.message


def test_read_bytes_max_bytes(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"x" * 101)
    with pytest.raises(RowError) as info:
        iqa_io.read_bytes(str(tmp_path / "big.bin"), max_bytes=100)
    assert info.value.code == ErrorCode.TOO_LARGE
    assert "101" in info.value.message
    assert iqa_io.read_bytes(str(tmp_path / "big.bin"), max_bytes=101) == b"x" * 101


@pytest.mark.parametrize("failures", [1, 3])
def test_transient_errors_are_retried(flaky: Any, failures: int) -> None:
    fs = flaky(failures, ConnectionError("connection reset"))
    assert iqa_io.read_bytes("s3://bucket/key", attempts=5, base_delay_s=0) == b"data"
    assert fs.calls == failures + 1
    assert fs.invalidated == failures  # a fresh read after each failure


def test_permanent_error_is_not_retried(flaky: Any) -> None:
    fs = flaky(10, PermissionError("access denied"))
    with pytest.raises(RowError) as info:
        iqa_io.read_bytes("s3://bucket/key", attempts=5, base_delay_s=0)
    assert info.value.code == ErrorCode.FETCH_FAILED
    assert fs.calls == 1
    assert "PermissionError" in info.value.message and "1 attempt" in info.value.message


def test_exhausted_attempts_are_fetch_failed(flaky: Any) -> None:
    fs = flaky(10, TimeoutError("read timed out"))
    with pytest.raises(RowError) as info:
        iqa_io.read_bytes("s3://bucket/key", attempts=3, base_delay_s=0)
    assert info.value.code == ErrorCode.FETCH_FAILED
    assert fs.calls == 3
    assert "3 attempt" in info.value.message


def test_backoff_is_bounded(flaky: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    delays: list[float] = []
    monkeypatch.setattr(io_core.time, "sleep", delays.append)
    flaky(10, ConnectionError("reset"))
    with pytest.raises(RowError):
        iqa_io.read_bytes("s3://b/k", attempts=6, base_delay_s=1.0, max_delay_s=3.0)
    assert len(delays) == 5  # no sleep after the last attempt
    # Jitter is 0.5x..1.5x of min(max_delay, base * 2^k).
    for k, delay in enumerate(delays):
        nominal = min(3.0, 1.0 * 2**k)
        assert 0.5 * nominal <= delay <= 1.5 * nominal


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionError("reset"), True),
        (ConnectionResetError("peer"), True),
        (TimeoutError("timed out"), True),
        (SlowDown("Please reduce your request rate."), True),
        (ServiceUnavailable("try later"), True),
        (OSError("503 Service Unavailable"), True),
        (OSError("ClientResponseError: 500, message='Internal Server Error'"), True),
        (OSError("An error occurred (SlowDown) when calling GetObject"), True),
        (OSError("Request was throttled"), True),
        (RuntimeError("HTTP status 503."), True),
        (FileNotFoundError("s3://b/k"), False),
        (FileNotFoundError("503 in a message does not make a missing file transient"), False),
        (PermissionError("denied"), False),
        (IsADirectoryError("dir"), False),
        (ValueError("bad value"), False),
        (OSError("Forbidden: s3://b/photos/1500.jpg"), False),  # digits in a key, not a status
        (OSError("Access denied for s3://b/503.jpg"), False),
        (OSError("AccessDenied"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_is_transient(exc: BaseException, transient: bool) -> None:
    assert iqa_io.is_transient(exc) is transient


def test_write_bytes_atomic_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "out.bin"
    iqa_io.write_bytes_atomic(str(target), b"one", None)
    iqa_io.write_bytes_atomic(f"file://{target}", b"two", None)
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]


@pytest.mark.parametrize("failing", ["os.replace", "fsync"])
def test_failed_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(io_core.os, "replace" if failing == "os.replace" else "fsync", boom)
    target = tmp_path / "out.bin"
    with pytest.raises(OSError, match="disk full"):
        iqa_io.write_bytes_atomic(str(target), b"x" * 1000, None)
    assert list(tmp_path.iterdir()) == []  # neither the final file nor a temporary one


def test_failed_overwrite_keeps_previous_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.bin"
    iqa_io.write_bytes_atomic(str(target), b"old", None)
    real_open = open

    class HalfWriter:
        """A handle that writes part of the data, then fails."""

        def __init__(self, path: str, mode: str) -> None:
            self._handle = real_open(path, mode)

        def __enter__(self) -> HalfWriter:
            return self

        def __exit__(self, *exc: object) -> None:
            self._handle.close()

        def write(self, data: bytes) -> int:
            self._handle.write(data[:2])
            raise OSError("connection to NFS lost")

    monkeypatch.setattr("builtins.open", HalfWriter)
    with pytest.raises(OSError, match="NFS"):
        iqa_io.write_bytes_atomic(str(target), b"new content", None)
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_parquet_roundtrip_and_listing(tmp_path: Path) -> None:
    table = pa.table(
        {
            "image_id": pa.array([3, 1, 2], pa.int64()),
            "score": pa.array([0.5, None, 4.25], pa.float64()),
            "uri": ["s3://b/é 1.jpg", "s3://b/2.png", "s3://b/3.png"],
        }
    )
    uri = f"file://{tmp_path}/scores/part-b.parquet"
    iqa_io.write_parquet_atomic(uri, table, None)
    iqa_io.write_parquet_atomic(f"file://{tmp_path}/scores/part-a.parquet", table.slice(0, 1), None)
    (tmp_path / "scores" / "part-c.parquet.tmp-1-2").write_bytes(b"partial")
    assert iqa_io.read_parquet(uri, None).equals(table)
    assert iqa_io.read_parquet(uri, None, ["score"]).column_names == ["score"]
    listed = iqa_io.list_parquet(f"file://{tmp_path}/scores", None)
    assert [u.rsplit("/", 1)[-1] for u in listed] == ["part-a.parquet", "part-b.parquet"]
    assert iqa_io.list_parquet(str(tmp_path / "nothing"), None) == []


def test_json_roundtrip(tmp_path: Path) -> None:
    value = {"b": [1, 2], "a": {"nested": "é"}}
    iqa_io.write_json_atomic(str(tmp_path / "run.json"), value, None)
    assert iqa_io.read_json(str(tmp_path / "run.json"), None) == value
    assert iqa_io.exists(str(tmp_path / "run.json"))
    iqa_io.delete(str(tmp_path / "run.json"), None)
    assert not iqa_io.exists(str(tmp_path / "run.json"))
    iqa_io.delete(str(tmp_path / "run.json"), None)  # deleting a missing object is a no-op


def test_join() -> None:
    assert iqa_io.join("s3://b/out/", "runs", "/r1/", "scores") == "s3://b/out/runs/r1/scores"


def _model_folder(root: Path) -> Path:
    src = root / "model src"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text('{"a": 1}')
    (src / "sub" / "weights.bin").write_bytes(os.urandom(256))
    return src


def test_local_model_cache_copies_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _model_folder(tmp_path)
    cache = tmp_path / "cache"
    path = Path(iqa_io.local_model_cache(f"file://{src}", None, str(cache)))
    assert path.parent == cache
    assert (path / "config.json").read_text() == '{"a": 1}'
    assert (path / "sub" / "weights.bin").read_bytes() == (src / "sub" / "weights.bin").read_bytes()
    assert (path / ".completed").exists()
    mtime = (path / "config.json").stat().st_mtime_ns

    def no_storage(*args: object, **kwargs: object) -> None:
        raise AssertionError("a completed cache must not touch storage again")

    monkeypatch.setattr(io_cache, "filesystem", no_storage)
    again = iqa_io.local_model_cache(f"file://{src}", None, str(cache))
    assert Path(again) == path
    assert (path / "config.json").stat().st_mtime_ns == mtime


def test_local_model_cache_redoes_an_incomplete_copy(tmp_path: Path) -> None:
    # A copy interrupted before its marker (crash mid-download) is redone, not trusted.
    src = _model_folder(tmp_path)
    cache = tmp_path / "cache"
    path = Path(iqa_io.local_model_cache(str(src), None, str(cache)))
    (path / ".completed").unlink()
    (path / "config.json").write_text("partial")
    assert Path(iqa_io.local_model_cache(str(src), None, str(cache))) == path
    assert (path / "config.json").read_text() == '{"a": 1}'
    assert (path / ".completed").exists()


def test_local_model_cache_distinct_sources_distinct_folders(tmp_path: Path) -> None:
    first = _model_folder(tmp_path / "one")
    second = _model_folder(tmp_path / "two")
    cache = str(tmp_path / "cache")
    assert iqa_io.local_model_cache(str(first), None, cache) != iqa_io.local_model_cache(
        str(second), None, cache
    )
