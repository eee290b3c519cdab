"""Model folders in a bucket copied once per node to a local cache (file lock + marker)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from iqa_ray.io.core import filesystem


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
