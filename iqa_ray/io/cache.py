"""Model folders in a bucket copied once per node to a local cache (file lock + marker)."""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from iqa_ray.io.core import filesystem


def local_model_cache(
    uri: str,
    storage_options: dict[str, Any] | None,
    cache_dir: str | None,
    only: tuple[str, ...] = (),
) -> str:
    """Copy a model folder from a bucket to a node-local cache once per node; return the path.

    Concurrent actors on one node serialise on a file lock; a ``.completed`` marker written
    after the copy tells later actors (and later runs) that the copy is whole. ``only``: glob
    patterns of the file names to copy (e.g. a processor's files without the weights); such a
    partial copy has a folder of its own.
    """
    root = Path(cache_dir or Path.home() / ".cache" / "iqa_ray" / "models")
    key = uri if not only else f"{uri}|{','.join(only)}"
    target = root / hashlib.sha256(key.encode()).hexdigest()[:16]
    marker = target / ".completed"
    if marker.exists():
        return str(target)
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f"{target.name}.lock"):
        if not marker.exists():
            fs, path = filesystem(uri, storage_options)
            target.mkdir(parents=True, exist_ok=True)
            if only:
                _copy_matching(fs, path.rstrip("/"), target, only)
            else:
                fs.get(path.rstrip("/") + "/", str(target) + "/", recursive=True)
            marker.write_text(uri)
    return str(target)


def _copy_matching(fs: Any, folder: str, target: Path, patterns: tuple[str, ...]) -> None:
    """Copy the files directly under ``folder`` whose names match one of ``patterns``."""
    for path in fs.ls(folder, detail=False):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if any(fnmatch.fnmatch(name, p) for p in patterns) and not fs.isdir(path):
            fs.get(path, str(target / name))


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
