"""Listing a prefix at corpus scale: sub-prefixes and key ranges become units listed in parallel.

The driver explores at most a few levels of sub-prefixes until it has enough units; on S3 a
folder whose own level fills a list page is cut into key ranges probed with one page each, so
the driver never holds the keys of a large flat prefix.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from iqa_ray.errors import ConfigError
from iqa_ray.inputs.config import InputConfig
from iqa_ray.inputs.unit import Unit
from iqa_ray.io import Location

_LOOSE_PER_UNIT = 50_000  # loose files listed by the driver are handed out in groups of this
_MAX_DEPTH = 4  # sub-prefix levels explored by the driver when looking for parallelism
_PAGE = 1000  # keys per S3 list request (its maximum); a folder level filling one page is large
# Key-range boundaries: stem + each printable ASCII character. Keys whose next character is
# outside it (control characters, non-ASCII) land in the first or last range of their stem.
_SPLIT_CHARS = tuple(chr(c) for c in range(0x20, 0x7F))
_MAX_SPLIT_DEPTH = 3  # characters after a folder's prefix used to split its key space
_PROBE_THREADS = 32  # concurrent one-page probes made by the driver while planning key ranges


def prefix_units(cfg: InputConfig, parallelism: int) -> list[Unit]:
    """Breadth-first over sub-prefixes until there are enough to list in parallel.

    On S3 a folder whose own level fills a list page (a flat prefix of many keys, or very many
    sub-folders) is not listed by the driver: it becomes key-range units (see
    :func:`key_range_units`), each listed recursively by one task.
    """
    root = Location.of(cfg.uri or "", cfg.storage_options)
    if not root.exists():
        raise ConfigError(f"input prefix {cfg.uri!r} does not exist or is not readable")
    wanted = cfg.wanted_suffixes
    level, loose, units = [root.path], [], []
    for _ in range(_MAX_DEPTH):
        if len(level) + len(units) >= parallelism:
            break
        below = []
        for folder in level:
            listed = _list_level(root.at(folder))
            if listed is None:
                units += key_range_units(root.at(folder), parallelism)
                continue
            folders, files = listed
            below += folders
            loose += [root.uri(f) for f in files if f.lower().endswith(wanted)]
        root.forget()  # listings of millions of keys must not stay in fsspec's cache
        level = sorted(below)
    per_unit = max(1, math.ceil(len(level) / parallelism))
    units += [Unit("prefixes", tuple(root.uri(p) for p in group))
              for group in _chunks(level, per_unit)]
    loose.sort()
    units += [Unit("uris", tuple(group)) for group in _chunks(loose, _LOOSE_PER_UNIT)]
    return units or [Unit("uris", ())]


def _list_level(folder: Location) -> tuple[list[str], list[str]] | None:
    """(sub-folders, files) directly under ``folder``; None for an S3 folder level too large
    to list on the driver (more entries than one list page)."""
    if not folder.pages_by_key:
        return folder.entries()
    keys, prefixes, truncated = folder.list_page(None, _PAGE, delimiter="/")
    if truncated:
        return None
    if not keys and not prefixes:  # the input is one object, not a folder
        return [], folder.entries()[1]
    bucket = folder.bucket_prefix()[0]
    return ([f"{bucket}/{p.rstrip('/')}" for p in prefixes],
            [f"{bucket}/{k}" for k in keys if not k.endswith("/")])


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- key ranges of large S3 folders -------------------------------------------------------------


@dataclass(frozen=True)
class KeyRange:
    """Keys k with after < k <= upto (None: unbounded), most of them starting with ``stem``."""

    after: str | None
    upto: str | None
    stem: str


def _inside(key: str, after: str | None, upto: str | None) -> bool:
    return (after is None or key > after) and (upto is None or key < upto)


def split_range(r: KeyRange) -> list[KeyRange]:
    """Cut a range at ``stem + c`` for each printable ASCII c: contiguous pieces covering it.

    Python orders str by code point, as S3 orders keys by UTF-8 bytes, so the pieces partition
    the keys exactly whatever characters they hold; only the split points are ASCII.
    """
    bounds = [r.stem + c for c in _SPLIT_CHARS if _inside(r.stem + c, r.after, r.upto)]
    edges = [r.after, *bounds, r.upto]
    # A piece (stem+c, stem+d] holds keys starting with stem+c; the first piece holds the stem
    # itself and keys continuing below the first split character.
    stems = [r.stem, *bounds]
    return [KeyRange(edges[i], edges[i + 1], stems[i]) for i in range(len(edges) - 1)]


def _probe_sizes(folder: Location, parallelism: int) -> tuple[list[KeyRange], dict[KeyRange, int]]:
    """Ranges of a folder's keys and their probed sizes (``_PAGE``: at least a page).

    A range that fills its one-page probe is split by the next character, up to
    ``_MAX_SPLIT_DEPTH`` characters or until there are ``parallelism`` large ranges.
    """
    ranges = [KeyRange(None, None, folder.bucket_prefix()[1])]
    sizes: dict[KeyRange, int] = {ranges[0]: _PAGE}  # the folder fills a page: known large
    with ThreadPoolExecutor(_PROBE_THREADS) as pool:
        for _ in range(_MAX_SPLIT_DEPTH):
            large = [r for r in ranges if sizes[r] >= _PAGE]
            if not large or len(large) >= parallelism:
                break
            ranges = [piece for r in ranges
                      for piece in (split_range(r) if sizes[r] >= _PAGE else [r])]
            fresh = [r for r in ranges if r not in sizes]
            sizes.update(zip(fresh, pool.map(lambda r: _probe(folder, r), fresh), strict=True))
    return ranges, sizes


def key_range_units(folder: Location, parallelism: int) -> list[Unit]:
    """Cut an S3 folder's keys (recursive) into contiguous ranges of similar size.

    Consecutive small ranges (see :func:`_probe_sizes`) are merged into units of about their
    total / ``parallelism`` keys (at least a page, at most ``_LOOSE_PER_UNIT``); each large
    range is a unit. The driver never holds the keys.
    """
    ranges, sizes = _probe_sizes(folder, parallelism)
    bucket, prefix = folder.bucket_prefix()
    root = folder.uri(f"{bucket}/{prefix}".rstrip("/"))
    # Runs of small ranges are sized so that they too spread over ``parallelism`` tasks.
    small = sum(n for n in sizes.values() if n < _PAGE)
    cap = max(_PAGE, min(_LOOSE_PER_UNIT, small // parallelism))
    units: list[Unit] = []
    start: str | None = None  # the open run of small ranges begins after this key
    pending, run_open = 0, False  # keys seen in the open run
    for r in ranges:
        if sizes[r] >= _PAGE:
            if run_open:
                units.append(Unit("keyrange", (root,), (start, r.after)))
            units.append(Unit("keyrange", (root,), (r.after, r.upto)))
            start, pending, run_open = r.upto, 0, False
            continue
        if run_open and pending + sizes[r] > cap:
            units.append(Unit("keyrange", (root,), (start, r.after)))
            start, pending = r.after, 0
        pending, run_open = pending + sizes[r], True
    if run_open:
        units.append(Unit("keyrange", (root,), (start, None)))
    return units


def _probe(folder: Location, r: KeyRange) -> int:
    """Keys of ``r`` in its first page (``_PAGE`` means at least a page: large)."""
    keys, _, truncated = folder.list_page(r.after, _PAGE)
    inside = [k for k in keys if r.upto is None or k <= r.upto]
    return _PAGE if truncated and len(inside) == len(keys) else min(len(inside), _PAGE - 1)


def _range_uris(folder: Location, after: str | None, upto: str | None,
                wanted: tuple[str, ...]) -> list[str]:
    """Every key of a folder in (after, upto] with a wanted extension, page by page."""
    bucket = folder.bucket_prefix()[0]
    found = []
    while True:
        keys, _, truncated = folder.list_page(after, _PAGE)
        for k in keys:
            if upto is not None and k > upto:
                return found
            if k.lower().endswith(wanted):
                found.append(folder.uri(f"{bucket}/{k}"))
        if not truncated or not keys:
            return found
        after = keys[-1]


def listed_uris(unit: Unit, cfg: InputConfig) -> list[str]:
    """Every URI of a "prefixes" or "keyrange" unit with one of the wanted extensions."""
    folder = Location.of(unit.items[0], cfg.storage_options)
    wanted = cfg.wanted_suffixes
    if unit.kind == "keyrange":
        assert unit.key_range is not None
        return _range_uris(folder, *unit.key_range, wanted)
    found = []
    for prefix in unit.items:
        here = Location.of(prefix, cfg.storage_options)
        found += [here.uri(p) for p in here.find() if p.lower().endswith(wanted)]
        here.forget()
    return found
