"""Manifests at corpus scale: sources split into units, units into deduplicated Parquet shards.

A source is a prefix to list, or manifest tables: one file, a folder or glob of shards, or an
S3 Inventory report (its ``manifest.json``; Parquet or CSV data files, or any table with
``bucket`` and ``key`` columns). The source is cut into *units* (a group of sub-prefixes listed
recursively, a group of loose files, a key range of a large S3 folder, a row-group slice of a
Parquet manifest, a CSV file):

1. one task per unit turns it into (image_id, uri) rows sorted by id, in a part file with small
   row groups;
2. one task per id range reads the overlapping row groups of every part, drops duplicate URIs,
   rejects id collisions, sorts by URI and writes ``<run>/manifest/part-NNNNN.parquet``.

The driver holds the unit list and counts, never the URIs, so listing a prefix of millions of
keys is spread over the cluster. With one unit everything runs in the calling process.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from iqa_ray import io
from iqa_ray.config import InputConfig
from iqa_ray.errors import ConfigError
from iqa_ray.schema import Col

MANIFEST_SCHEMA = pa.schema([(Col.IMAGE_ID, pa.int64()), (Col.URI, pa.string())])
_ID_SPACE = 1 << 63  # image ids are non-negative int64
_ROW_GROUP = 16_384  # rows per Parquet row group in parts and shards: cheap range pruning
_LOOSE_PER_UNIT = 50_000  # loose files listed by the driver are handed out in groups of this
_PARQUET_ROWS_PER_UNIT = 1_000_000  # a Parquet manifest is read in slices of about this many rows
_MAX_DEPTH = 4  # sub-prefix levels explored by the driver when looking for parallelism
_TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz")
_PAGE = 1000  # keys per S3 list request (its maximum); a folder level filling one page is large
# Key-range boundaries: stem + each printable ASCII character. Keys whose next character is
# outside it (control characters, non-ASCII) land in the first or last range of their stem.
_SPLIT_CHARS = tuple(chr(c) for c in range(0x20, 0x7F))
_MAX_SPLIT_DEPTH = 3  # characters after a folder's prefix used to split its key space
_PROBE_THREADS = 32  # concurrent one-page probes made by the driver while planning key ranges


@dataclass(frozen=True)
class Unit:
    """One piece of a source, turned into rows by one task."""

    # "prefixes" (listed recursively), "uris" (already listed), "keyrange" (keys of an S3 folder
    # in (after, upto], listed recursively), "table" (a manifest file)
    kind: str
    items: tuple[str, ...]
    key_range: tuple[str | None, str | None] | None = None  # (after, upto] of a "keyrange" unit
    row_groups: tuple[int, int] | None = None  # Parquet slice [start, stop) of a "table" unit
    csv_columns: tuple[str, ...] | None = None  # names for a header-less CSV (S3 Inventory)


@dataclass(frozen=True)
class Shards:
    """The run's manifest: Parquet shards of (image_id, uri), and per-shard counts."""

    uris: tuple[str, ...]
    rows: tuple[int, ...]
    pending: tuple[int, ...]

    @property
    def images(self) -> int:
        return sum(self.rows)

    @property
    def pending_images(self) -> int:
        return sum(self.pending)


# --- sources into units -------------------------------------------------------------------------


def plan_units(cfg: InputConfig, parallelism: int) -> list[Unit]:
    """Cut the input into units (the driver lists at most a few prefix levels to find them)."""
    if cfg.manifest is None:
        assert cfg.uri is not None  # guaranteed by InputConfig validation
        return _prefix_units(cfg, parallelism)
    if cfg.manifest.endswith("manifest.json"):
        return _inventory_units(cfg)
    return [unit for path in _manifest_files(cfg)
            for unit in _table_units(path, cfg.storage_options)]


def _prefix_units(cfg: InputConfig, parallelism: int) -> list[Unit]:
    """Breadth-first over sub-prefixes until there are enough to list in parallel.

    On S3 a folder whose own level fills a list page (a flat prefix of many keys, or very many
    sub-folders) is not listed by the driver: it becomes key-range units (see
    :func:`key_range_units`), each listed recursively by one task.
    """
    fs, root = io.filesystem(cfg.uri or "", cfg.storage_options)
    if not fs.exists(root):
        raise ConfigError(f"input prefix {cfg.uri!r} does not exist or is not readable")
    wanted = tuple(e.lower() for e in cfg.extensions)
    level, loose, units = [root], [], []
    for _ in range(_MAX_DEPTH):
        if len(level) + len(units) >= parallelism:
            break
        below = []
        for folder in level:
            listed = _list_level(fs, folder)
            if listed is None:
                units += key_range_units(fs, folder, parallelism)
                continue
            folders, files = listed
            below += folders
            loose += [io.to_uri(fs, f) for f in files if f.lower().endswith(wanted)]
        fs.invalidate_cache()  # listings of millions of keys must not stay in fsspec's cache
        level = sorted(below)
    per_unit = max(1, math.ceil(len(level) / parallelism))
    units += [Unit("prefixes", tuple(io.to_uri(fs, p) for p in group))
              for group in _chunks(level, per_unit)]
    loose.sort()
    units += [Unit("uris", tuple(group)) for group in _chunks(loose, _LOOSE_PER_UNIT)]
    return units or [Unit("uris", ())]


def _list_level(fs: Any, folder: str) -> tuple[list[str], list[str]] | None:
    """(sub-folders, files) directly under ``folder``; None for an S3 folder level too large
    to list on the driver (more entries than one list page)."""
    if not io.lists_key_ranges(fs):
        entries = fs.ls(folder, detail=True)
        return ([e["name"] for e in entries if e["type"] == "directory"],
                [e["name"] for e in entries if e["type"] != "directory"])
    keys, prefixes, truncated = io.list_page(fs, folder, None, _PAGE, delimiter="/")
    if truncated:
        return None
    if not keys and not prefixes:  # the input is one object, not a folder
        return [], [e["name"] for e in fs.ls(folder, detail=True) if e["type"] != "directory"]
    bucket = fs.split_path(folder)[0]
    return ([f"{bucket}/{p.rstrip('/')}" for p in prefixes],
            [f"{bucket}/{k}" for k in keys if not k.endswith("/")])


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


def key_range_units(fs: Any, folder: str, parallelism: int) -> list[Unit]:
    """Cut an S3 folder's keys (recursive) into contiguous ranges of similar size.

    The driver probes each range with one list request of a page: a range that fills the page
    is large and is split by the next character, up to ``_MAX_SPLIT_DEPTH`` characters or until
    there are ``parallelism`` large ranges. Consecutive small ranges are merged into units of
    about their total / ``parallelism`` keys (at least a page, at most ``_LOOSE_PER_UNIT``);
    each large range is a unit. The driver never holds the keys.
    """
    bucket, prefix = io.bucket_prefix(fs, folder)
    ranges = [KeyRange(None, None, prefix)]
    sizes: dict[KeyRange, int] = {ranges[0]: _PAGE}  # the folder fills a page: known large
    with ThreadPoolExecutor(_PROBE_THREADS) as pool:
        for _ in range(_MAX_SPLIT_DEPTH):
            large = [r for r in ranges if sizes[r] >= _PAGE]
            if not large or len(large) >= parallelism:
                break
            ranges = [piece for r in ranges
                      for piece in (split_range(r) if sizes[r] >= _PAGE else [r])]
            fresh = [r for r in ranges if r not in sizes]
            sizes.update(zip(fresh, pool.map(lambda r: _probe(fs, folder, r), fresh), strict=True))
    root = io.to_uri(fs, f"{bucket}/{prefix}".rstrip("/"))
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


def _probe(fs: Any, folder: str, r: KeyRange) -> int:
    """Keys of ``r`` in its first page (``_PAGE`` means at least a page: large)."""
    keys, _, truncated = io.list_page(fs, folder, r.after, _PAGE)
    inside = [k for k in keys if r.upto is None or k <= r.upto]
    return _PAGE if truncated and len(inside) == len(keys) else min(len(inside), _PAGE - 1)


def _range_uris(fs: Any, folder: str, after: str | None, upto: str | None,
                wanted: tuple[str, ...]) -> list[str]:
    """Every key of a folder in (after, upto] with a wanted extension, page by page."""
    bucket = fs.split_path(folder)[0]
    found = []
    while True:
        keys, _, truncated = io.list_page(fs, folder, after, _PAGE)
        for k in keys:
            if upto is not None and k > upto:
                return found
            if k.lower().endswith(wanted):
                found.append(io.to_uri(fs, f"{bucket}/{k}"))
        if not truncated or not keys:
            return found
        after = keys[-1]


def _manifest_files(cfg: InputConfig) -> list[str]:
    """The table files of a manifest: one file, every table file under a folder, or a glob."""
    assert cfg.manifest is not None
    fs, path = io.filesystem(cfg.manifest, cfg.storage_options)
    if any(ch in path for ch in "*?["):
        found = fs.glob(path)
    elif fs.isdir(path):
        found = [p for p in fs.find(path) if p.lower().endswith(_TABLE_SUFFIXES)]
    elif fs.exists(path):
        found = [path]
    else:
        raise ConfigError(f"manifest {cfg.manifest!r} does not exist or is not readable")
    if not found:
        raise ConfigError(f"manifest {cfg.manifest!r} names no Parquet or CSV files")
    return [io.to_uri(fs, p) for p in sorted(found)]


def _table_units(
    uri: str, storage_options: dict[str, Any], csv_columns: tuple[str, ...] | None = None
) -> list[Unit]:
    """A CSV file is one unit; a Parquet file is cut into slices of whole row groups."""
    if uri.lower().endswith((".csv", ".csv.gz")):
        return [Unit("table", (uri,), csv_columns=csv_columns)]
    fs, path = io.filesystem(uri, storage_options)
    with fs.open(path, "rb") as handle:
        meta = pq.ParquetFile(handle).metadata
    units, start, rows = [], 0, 0
    for i in range(meta.num_row_groups):
        rows += meta.row_group(i).num_rows
        if rows >= _PARQUET_ROWS_PER_UNIT:
            units.append(Unit("table", (uri,), row_groups=(start, i + 1)))
            start, rows = i + 1, 0
    if start < meta.num_row_groups or not units:
        units.append(Unit("table", (uri,), row_groups=(start, meta.num_row_groups)))
    return units


def _inventory_units(cfg: InputConfig) -> list[Unit]:
    """An S3 Inventory ``manifest.json``: its data files live in the destination bucket."""
    assert cfg.manifest is not None
    report = io.read_json(cfg.manifest, cfg.storage_options)
    try:
        fmt = str(report["fileFormat"]).lower()
        destination = str(report["destinationBucket"]).split(":::")[-1]
        keys = [f["key"] for f in report["files"]]
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"{cfg.manifest!r} is not an S3 Inventory manifest.json: {exc!r}"
        ) from exc
    if fmt not in ("parquet", "csv"):
        raise ConfigError(f"S3 Inventory format {fmt!r} is not supported (use Parquet or CSV)")
    scheme = cfg.manifest.split("://", 1)[0] if "://" in cfg.manifest else "s3"
    columns = None
    if fmt == "csv":
        columns = tuple(_snake(c) for c in str(report.get("fileSchema", "")).split(","))
    units = []
    for key in keys:
        data_uri = f"{scheme}://{destination}/{key}"
        units += _table_units(data_uri, cfg.storage_options, csv_columns=columns)
    return units


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _snake(name: str) -> str:
    """S3 Inventory column names: ``IsDeleteMarker`` in CSV, ``is_delete_marker`` in Parquet."""
    name = name.strip()
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


# --- units into rows ----------------------------------------------------------------------------


def unit_uris(unit: Unit, cfg: InputConfig) -> list[str]:
    """Every URI of one unit (extension-filtered for listings and inventories)."""
    if unit.kind == "uris":
        return list(unit.items)
    if unit.kind not in ("keyrange", "prefixes"):
        return _table_rows(unit, cfg)
    fs, folder = io.filesystem(unit.items[0], cfg.storage_options)
    wanted = tuple(e.lower() for e in cfg.extensions)
    if unit.kind == "keyrange":
        assert unit.key_range is not None
        return _range_uris(fs, folder, *unit.key_range, wanted)
    found = []
    for prefix in unit.items:
        found += [io.to_uri(fs, p) for p in fs.find(prefix) if p.lower().endswith(wanted)]
        fs.invalidate_cache()
    return found


def _table_rows(unit: Unit, cfg: InputConfig) -> list[str]:
    uri = unit.items[0]
    fs, path = io.filesystem(uri, cfg.storage_options)
    if unit.row_groups is not None:
        with fs.open(path, "rb") as handle:
            table = pq.ParquetFile(handle).read_row_groups(list(range(*unit.row_groups)))
    else:
        import pyarrow.csv as pacsv

        read = pacsv.ReadOptions(column_names=list(unit.csv_columns)) if unit.csv_columns else None
        with fs.open(path, "rb", compression="infer") as handle:
            table = pacsv.read_csv(handle, read_options=read)
    return table_uris(table, cfg, source=uri, url_encoded=unit.csv_columns is not None)


def table_uris(
    table: pa.Table, cfg: InputConfig, source: str, url_encoded: bool = False
) -> list[str]:
    """URIs of a manifest table: its URI column, or ``bucket`` + ``key`` (S3 Inventory style).

    Inventory rows that are delete markers or non-current versions are dropped and keys are
    extension-filtered (an inventory lists every object); CSV inventory keys are URL-encoded.
    """
    column = cfg.manifest_uri_column
    if column in table.column_names:
        return [u for u in table.column(column).to_pylist() if u]
    table = table.rename_columns([_snake(c) for c in table.column_names])
    if not {"bucket", "key"} <= set(table.column_names):
        raise ConfigError(
            f"manifest {source!r} has no column {column!r} "
            f"(columns: {table.column_names}); an S3 Inventory table needs bucket and key"
        )
    keep = pa.array(np.ones(table.num_rows, dtype=bool))
    if "is_delete_marker" in table.column_names:
        keep = pc.and_(keep, pc.invert(pc.fill_null(_flag(table, "is_delete_marker"), False)))
    if "is_latest" in table.column_names:
        keep = pc.and_(keep, pc.fill_null(_flag(table, "is_latest"), True))
    table = table.filter(keep)
    wanted = tuple(e.lower() for e in cfg.extensions)
    scheme = "s3"
    out = []
    buckets, keys = table.column("bucket").to_pylist(), table.column("key").to_pylist()
    for bucket, key in zip(buckets, keys, strict=True):
        if not bucket or not key:
            continue
        key = unquote_plus(key) if url_encoded else key
        if key.lower().endswith(wanted):
            out.append(f"{scheme}://{bucket}/{key}")
    return out


def _flag(table: pa.Table, name: str) -> pa.ChunkedArray:
    """A boolean inventory column (CSV inventories write "true"/"false" strings)."""
    column = table.column(name)
    if pa.types.is_boolean(column.type):
        return column
    return pc.equal(pc.utf8_lower(column.cast(pa.string())), "true")


def ids_of(uris: list[str]) -> np.ndarray:
    """Image ids of URIs (see :func:`iqa_ray.manifest.image_id`)."""
    from iqa_ray.manifest import image_id

    return np.fromiter((image_id(u) for u in uris), dtype=np.int64, count=len(uris))


# --- the two phases -----------------------------------------------------------------------------


def _write(uri: str, table: pa.Table, storage_options: dict[str, Any]) -> None:
    fs, path = io.filesystem(uri, storage_options)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as handle:
        pq.write_table(table, handle, row_group_size=_ROW_GROUP)


def load_unit(unit: Unit, cfg: InputConfig, part_uri: str, out_options: dict[str, Any]) -> int:
    """Phase 1: one unit's rows, sorted by image id, into a part file; returns the row count."""
    uris = unit_uris(unit, cfg)
    ids = ids_of(uris)
    order = np.argsort(ids, kind="stable")
    table = pa.table({Col.IMAGE_ID: ids[order], Col.URI: pa.array(uris, pa.string()).take(order)},
                     schema=MANIFEST_SCHEMA)
    _write(part_uri, table, out_options)
    return table.num_rows


def merge_range(
    part_uris: list[str], lo: int, hi: int, shard_uri: str, out_options: dict[str, Any], done: Any
) -> tuple[int, int]:
    """Phase 2: rows with lo <= id < hi from every part, deduplicated and sorted by URI.

    Returns (rows, pending rows): pending counts ids not in ``done`` (an array or object ref).
    """
    pieces = [_read_id_range(uri, lo, hi, out_options) for uri in part_uris]
    table = pa.concat_tables(pieces) if pieces else MANIFEST_SCHEMA.empty_table()
    table = unique_rows(table)
    _write(shard_uri, table, out_options)
    return table.num_rows, count_pending(table.column(Col.IMAGE_ID).to_numpy(), done)


def _read_id_range(uri: str, lo: int, hi: int, options: dict[str, Any]) -> pa.Table:
    """Rows of a part with lo <= id < hi, reading only the row groups whose id range overlaps."""
    fs, path = io.filesystem(uri, options)
    with fs.open(path, "rb") as handle:
        reader = pq.ParquetFile(handle)
        meta = reader.metadata
        groups = []
        for i in range(meta.num_row_groups):
            stats = meta.row_group(i).column(0).statistics
            if stats is None or not stats.has_min_max or (stats.min < hi and stats.max >= lo):
                groups.append(i)
        if not groups:
            return MANIFEST_SCHEMA.empty_table()
        table = reader.read_row_groups(groups)
    ids = table.column(Col.IMAGE_ID).to_numpy()
    return table.filter(pa.array((ids >= lo) & (ids <= hi - 1)))  # hi - 1 fits in int64


def unique_rows(table: pa.Table) -> pa.Table:
    """Drop repeated URIs, refuse two URIs with one id, and sort by URI."""
    table = table.take(pc.sort_indices(table, [(Col.URI, "ascending")]))
    uris = table.column(Col.URI).to_numpy(zero_copy_only=False)
    first = np.ones(len(uris), dtype=bool)
    first[1:] = uris[1:] != uris[:-1]
    table = table.filter(pa.array(first))
    ids = table.column(Col.IMAGE_ID).to_numpy()
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        clash = unique[counts > 1][0]
        uris = table.column(Col.URI).to_pylist()
        names = [u for u, i in zip(uris, ids, strict=True) if i == clash]
        raise ConfigError(f"two distinct URIs hash to one image_id ({names}); rename one of them")
    return table.cast(MANIFEST_SCHEMA)


def count_pending(ids: np.ndarray, done: Any) -> int:
    """How many ids are not in ``done`` (an int64 array, or an object ref to one)."""
    if not isinstance(done, np.ndarray):
        import ray

        done = ray.get(done)
    if len(done) == 0:
        return len(ids)
    return int(np.sum(~np.isin(ids, done)))


def shard_uri(folder: str, index: int) -> str:
    return io.join(folder, f"part-{index:05d}.parquet")


def build_shards(
    cfg: InputConfig,
    folder: str,
    out_options: dict[str, Any],
    done: np.ndarray,
    shard_rows: int,
    parallelism: int,
) -> Shards:
    """The whole manifest of a run as shards under ``folder`` (replacing any older ones)."""
    io.delete_tree(folder, out_options)
    units = plan_units(cfg, parallelism)
    tmp = io.join(folder, "_parts")
    parts = [io.join(tmp, f"unit-{i:06d}.parquet") for i in range(len(units))]
    counts = _map(load_unit, [(u, cfg, p, out_options) for u, p in zip(units, parts, strict=True)])
    n_shards = max(1, math.ceil(sum(counts) / shard_rows))
    bounds = [i * _ID_SPACE // n_shards for i in range(n_shards + 1)]
    done_arg: Any = done
    if n_shards > 1:
        import ray

        done_arg = ray.put(done)
    live = [p for p, n in zip(parts, counts, strict=True) if n]
    outs = [shard_uri(folder, i) for i in range(n_shards)]
    merged = _map(merge_range, [(live, bounds[i], bounds[i + 1], outs[i], out_options, done_arg)
                                for i in range(n_shards)])
    io.delete_tree(tmp, out_options)
    shards = Shards(tuple(outs), tuple(m[0] for m in merged), tuple(m[1] for m in merged))
    if cfg.limit is not None and cfg.limit < shards.images:
        shards = _truncate(shards, cfg.limit, out_options, done)
    return shards


def _truncate(shards: Shards, limit: int, options: dict[str, Any], done: np.ndarray) -> Shards:
    """Keep the first ``limit`` rows in shard order (sorted by URI within each shard)."""
    uris, rows, pending, left = [], [], [], limit
    for uri, n, p in zip(shards.uris, shards.rows, shards.pending, strict=True):
        if left <= 0:
            io.delete(uri, options)
            continue
        if n > left:
            table = io.read_parquet(uri, options).slice(0, left)
            _write(uri, table, options)
            n, p = left, count_pending(table.column(Col.IMAGE_ID).to_numpy(), done)
        uris.append(uri)
        rows.append(n)
        pending.append(p)
        left -= n
    return Shards(tuple(uris), tuple(rows), tuple(pending))


def missing_images(shards: Shards, options: dict[str, Any], done: np.ndarray) -> int:
    """Manifest images not in ``done`` (one task per shard when there are several)."""
    if not shards.uris:
        return 0
    done_arg: Any = done
    if len(shards.uris) > 1:
        import ray

        done_arg = ray.put(done)
    return sum(_map(_shard_missing, [(uri, options, done_arg) for uri in shards.uris]))


def _shard_missing(uri: str, options: dict[str, Any], done: Any) -> int:
    ids = io.read_parquet(uri, options, [Col.IMAGE_ID]).column(Col.IMAGE_ID).to_numpy()
    return count_pending(ids, done)


def _map(fn: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``fn`` over argument tuples: inline for one call, as Ray tasks for several."""
    if len(calls) <= 1:
        return [fn(*args) for args in calls]
    import ray

    remote = ray.remote(num_cpus=0.5, max_retries=3)(fn)
    return ray.get([remote.remote(*args) for args in calls])

