"""Listing primitives: files under a prefix, one S3 list page at a time (key ranges), and a
resolved ``Location`` that the input planner walks without touching fsspec itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iqa_ray.errors import ConfigError
from iqa_ray.io.core import filesystem, to_uri


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


@dataclass(frozen=True)
class Location:
    """A URI resolved once into its filesystem and path: the view of a store that the input
    planner walks (listing levels, S3 pages, globs) without touching fsspec itself."""

    fs: Any
    path: str

    @classmethod
    def of(cls, uri: str, storage_options: dict[str, Any] | None) -> Location:
        """Resolve ``uri`` with non-secret options."""
        fs, path = filesystem(uri, storage_options)
        return cls(fs, path)

    def at(self, path: str) -> Location:
        """Another path on the same store."""
        return Location(self.fs, path)

    def uri(self, path: str | None = None) -> str:
        """Full URI (with protocol) of ``path``, by default this location's."""
        return to_uri(self.fs, self.path if path is None else path)

    def exists(self) -> bool:
        """Whether an object or folder is there."""
        return bool(self.fs.exists(self.path))

    def isdir(self) -> bool:
        """Whether this is a folder."""
        return bool(self.fs.isdir(self.path))

    def glob(self) -> list[str]:
        """Paths matching this location as a glob pattern."""
        return list(self.fs.glob(self.path))

    def find(self) -> list[str]:
        """Every file path below this folder (recursive)."""
        return list(self.fs.find(self.path))

    def find_sizes(self) -> dict[str, int]:
        """Every file below this folder (recursive; this file itself if it is one) -> size."""
        return _files(self.fs.find(self.path, detail=True))

    def glob_sizes(self) -> dict[str, int]:
        """Files matching this location as a glob pattern -> size."""
        return _files(self.fs.glob(self.path, detail=True))

    def entries(self) -> tuple[list[str], list[str]]:
        """(sub-folder paths, file paths) directly under this folder."""
        found = self.fs.ls(self.path, detail=True)
        return ([e["name"] for e in found if e["type"] == "directory"],
                [e["name"] for e in found if e["type"] != "directory"])

    def forget(self) -> None:
        """Drop cached listings (listings of millions of keys must not stay in memory)."""
        self.fs.invalidate_cache()

    @property
    def pages_by_key(self) -> bool:
        """True for stores listed in key order from any start key (S3 and compatible)."""
        return lists_key_ranges(self.fs)

    def bucket_prefix(self) -> tuple[str, str]:
        """(bucket, key prefix of this folder); S3-style stores only."""
        return bucket_prefix(self.fs, self.path)

    def list_page(
        self, start_after: str | None, max_keys: int, delimiter: str | None = None
    ) -> tuple[list[str], list[str], bool]:
        """One S3 list page under this folder (see :func:`list_page`)."""
        return list_page(self.fs, self.path, start_after, max_keys, delimiter)


def _files(found: dict[str, Any]) -> dict[str, int]:
    """path -> size of the files (not folders) of a detailed listing."""
    return {p: int(i.get("size") or 0) for p, i in found.items() if i.get("type") != "directory"}
