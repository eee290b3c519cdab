"""Storage probes for the preflight: is a location there and readable, does a folder hold any
wanted file, can we write beside it; every failure is explained in one sentence with its fix.

Probes use short client timeouts and no retries (a run's reads keep their bounded retries), so
a wrong endpoint or missing credentials are reported in seconds, not after minutes of backoff.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from iqa_ray.errors import ConfigError
from iqa_ray.io.core import filesystem, is_remote
from iqa_ray.io.listing import list_page, lists_key_ranges

PROBE_CONNECT_TIMEOUT_S = 5
PROBE_READ_TIMEOUT_S = 10
_SCAN_LIMIT = 1000  # entries a probe looks at before it gives up deciding "empty"
_PROBE_NAME = ".iqa_ray-write-probe-"


class StorageProblem(ConfigError):
    """A location that cannot be used, with a message that says what to change."""


def probe_options(uri: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """The options of a probe: the user's, with short timeouts and one attempt on S3."""
    options = dict(storage_options or {})
    if uri.startswith(("s3://", "s3a://")):
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("connect_timeout", PROBE_CONNECT_TIMEOUT_S)
        config.setdefault("read_timeout", PROBE_READ_TIMEOUT_S)
        config.setdefault("retries", {"max_attempts": 1, "mode": "standard"})
        options.update(config_kwargs=config, skip_instance_cache=True)
    return options


def explain(exc: BaseException, uri: str, action: str) -> str:
    """One sentence saying why ``action`` on ``uri`` failed and what fixes it."""
    name, text = type(exc).__name__, " ".join(str(exc).split())[:240]
    low = f"{name} {text}".lower()
    if "nocredentials" in low or "unable to locate credentials" in low:
        return (f"cannot {action} {uri}: no credentials found. Fix: export AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run where an instance role provides "
                "them); for a public bucket set storage_options: {anon: true}")
    if any(w in low for w in ("endpointconnection", "connecttimeout", "could not connect",
                              "name or service not known", "connection refused")):
        return (f"cannot {action} {uri}: the storage endpoint is unreachable ({text}). Fix: check "
                "the network, or point storage_options.client_kwargs.endpoint_url at your "
                "S3-compatible server (MinIO, Ceph, ...)")
    if any(w in low for w in ("invalidaccesskeyid", "signaturedoesnotmatch", "accessdenied",
                              "forbidden", "403", "permissionerror", "permission denied",
                              "read-only file system")):
        fix = ("use credentials (AWS_*) allowed to do this, or another location" if is_remote(uri)
               else "choose a folder this user can write to, or fix its permissions")
        return f"cannot {action} {uri}: access denied ({text}). Fix: {fix}"
    if "not a directory" in low or "file exists" in low:
        return (f"cannot {action} {uri}: part of the path is a file, not a folder ({text}). "
                "Fix: choose another folder")
    if "nosuchbucket" in low or "bucket does not exist" in low:
        return f"cannot {action} {uri}: the bucket does not exist. Fix: create it or fix the name"
    return f"cannot {action} {uri}: {name}: {text}"


def _resolve(uri: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    return filesystem(uri, probe_options(uri, storage_options))


def info(uri: str, storage_options: dict[str, Any] | None, what: str = "read") -> dict[str, Any]:
    """The location's fsspec info (``type`` is ``file`` or ``directory``).

    Raises:
        StorageProblem: it does not exist, or storage refused to say (with the fix).
    """
    fs, path = _resolve(uri, storage_options)
    try:
        found = fs.info(path)
    except FileNotFoundError:
        raise StorageProblem(_missing(uri, what)) from None
    except Exception as exc:
        raise StorageProblem(explain(exc, uri, what)) from exc
    return dict(found)


def _missing(uri: str, what: str) -> str:
    where = ""
    if not is_remote(uri) and not os.path.isabs(uri.removeprefix("file://")):
        where = f" (a relative path, resolved against the current directory {os.getcwd()})"
    return f"{what} {uri} does not exist{where}"


def glob_count(uri: str, storage_options: dict[str, Any] | None) -> int:
    """How many paths a glob pattern matches.

    Raises:
        StorageProblem: storage refused the listing.
    """
    fs, path = _resolve(uri, storage_options)
    try:
        return len(fs.glob(path))
    except Exception as exc:
        raise StorageProblem(explain(exc, uri, "list")) from exc


def names_in(uri: str, storage_options: dict[str, Any] | None) -> list[str]:
    """Names of the entries directly under a folder or bucket prefix.

    Raises:
        StorageProblem: storage refused the listing.
    """
    fs, path = _resolve(uri, storage_options)
    try:
        return sorted(Path(p.rstrip("/")).name for p in fs.ls(path, detail=False))
    except FileNotFoundError:
        raise StorageProblem(_missing(uri, "folder")) from None
    except Exception as exc:
        raise StorageProblem(explain(exc, uri, "list")) from exc


def has_wanted_file(
    uri: str, storage_options: dict[str, Any] | None, suffixes: tuple[str, ...]
) -> bool | None:
    """Whether a folder holds a file ending in one of ``suffixes`` (lower case): True/False,
    or None when the first entries looked at settle nothing (a big tree: not worth listing).

    Raises:
        StorageProblem: storage refused the listing.
    """
    fs, path = _resolve(uri, storage_options)
    try:
        if lists_key_ranges(fs):
            keys, _, truncated = list_page(fs, path, None, _SCAN_LIMIT)
            if any(k.lower().endswith(suffixes) for k in keys):
                return True
            return None if truncated else False
        if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
            return _local_has(path, suffixes)
        return None
    except Exception as exc:
        raise StorageProblem(explain(exc, uri, "list")) from exc


def _local_has(root: str, suffixes: tuple[str, ...]) -> bool | None:
    for seen, name in enumerate(_walk_names(root)):
        if name.lower().endswith(suffixes):
            return True
        if seen >= _SCAN_LIMIT:
            return None
    return False


def _walk_names(root: str) -> Iterator[str]:
    """File names below a local folder, breadth first, lazily."""
    queue = [root]
    while queue:
        with os.scandir(queue.pop(0)) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=True):
                    queue.append(entry.path)
                else:
                    yield entry.name


def check_writable(uri: str, storage_options: dict[str, Any] | None) -> None:
    """Write a small probe object under ``uri`` and delete it again; local folders the probe
    had to create are removed too, so a failed preflight leaves nothing behind.

    Raises:
        StorageProblem: the write or the delete failed (with the fix).
    """
    fs, path = _resolve(uri, storage_options)
    probe = f"{path.rstrip('/')}/{_PROBE_NAME}{secrets.token_hex(6)}"
    created = _first_missing_dir(path) if not is_remote(uri) else None
    try:
        if created is not None:
            fs.makedirs(path, exist_ok=True)
        fs.pipe_file(probe, b"iqa_ray preflight probe\n")
        fs.rm_file(probe)
    except Exception as exc:
        raise StorageProblem(explain(exc, uri, "write to")) from exc
    finally:
        if created is not None:
            _remove_empty_dirs(Path(path), created)


def _first_missing_dir(path: str) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (None: it exists)."""
    missing = None
    for folder in (Path(path), *Path(path).parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _remove_empty_dirs(path: Path, stop: Path) -> None:
    """Remove ``path`` and its parents up to ``stop`` while they are empty."""
    for folder in (path, *path.parents):
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == stop:
            return
