"""The run's manifest at corpus scale: sources cut into units, units into deduplicated shards.

1. one task per unit turns it into (image_id, uri) rows sorted by id, in a part file with small
   row groups;
2. one task per id range reads the overlapping row groups of every part, drops duplicate URIs,
   rejects id collisions, sorts by URI and writes ``<run>/manifest/part-NNNNN.parquet``.

The driver holds the unit list and counts, never the URIs, so listing a prefix of millions of
keys is spread over the cluster. With one unit everything runs in the calling process.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from iqa_ray import io
from iqa_ray.inputs.config import InputConfig
from iqa_ray.inputs.done import count_pending
from iqa_ray.inputs.ids import ids_of, manifest_table, unique_rows
from iqa_ray.inputs.prefixes import listed_uris, prefix_units
from iqa_ray.inputs.tables import manifest_units, table_unit_uris
from iqa_ray.inputs.unit import Unit
from iqa_ray.schema import MANIFEST_SCHEMA, Col

ID_SPACE = 1 << 63  # image ids are non-negative int64
ROW_GROUP = 16_384  # rows per Parquet row group in parts and shards: cheap range pruning


@dataclass(frozen=True)
class Shards:
    """The run's manifest: Parquet shards of (image_id, uri), and per-shard counts."""

    uris: tuple[str, ...]
    rows: tuple[int, ...]
    pending: tuple[int, ...]
    # Id range of shard i: [bounds[i], bounds[i + 1]); ranges past the last shard (cut by
    # ``limit``) hold no manifest rows but may hold committed ones.
    bounds: tuple[int, ...] = ()

    @property
    def images(self) -> int:
        return sum(self.rows)

    @property
    def pending_images(self) -> int:
        return sum(self.pending)


def plan_units(cfg: InputConfig, parallelism: int) -> list[Unit]:
    """Cut the input into units (the driver lists at most a few prefix levels to find them)."""
    if cfg.manifest is None:
        return prefix_units(cfg, parallelism)
    return manifest_units(cfg)


def unit_uris(unit: Unit, cfg: InputConfig) -> list[str]:
    """Every URI of one unit (extension-filtered for listings and inventories)."""
    if unit.kind == "uris":
        return list(unit.items)
    if unit.kind in ("keyrange", "prefixes"):
        return listed_uris(unit, cfg)
    return table_unit_uris(unit, cfg)


def build_manifest(cfg: InputConfig) -> pa.Table:
    """The whole manifest in this process, as (image_id, uri) rows sorted by URI.

    For small inputs (anchor sets, tests, tools); the scoring job builds Parquet shards with
    :func:`build_shards` instead, so the driver never holds every URI.
    """
    uris = [u for unit in plan_units(cfg, parallelism=1) for u in unit_uris(unit, cfg)]
    table = manifest_table(uris)
    if cfg.limit is not None:
        table = table.slice(0, cfg.limit)
    return table


def load_unit(unit: Unit, cfg: InputConfig, part_uri: str, out_options: dict[str, Any]) -> int:
    """Phase 1: one unit's rows, sorted by image id, into a part file; returns the row count."""
    uris = unit_uris(unit, cfg)
    ids = ids_of(uris)
    order = np.argsort(ids, kind="stable")
    table = pa.table({Col.IMAGE_ID: ids[order], Col.URI: pa.array(uris, pa.string()).take(order)},
                     schema=MANIFEST_SCHEMA)
    io.write_parquet_atomic(part_uri, table, out_options, row_group_size=ROW_GROUP)
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
    io.write_parquet_atomic(shard_uri, table, out_options, row_group_size=ROW_GROUP)
    return table.num_rows, count_pending(table.column(Col.IMAGE_ID).to_numpy(), done)


def _read_id_range(uri: str, lo: int, hi: int, options: dict[str, Any]) -> pa.Table:
    """Rows of a part with lo <= id < hi, reading only the row groups whose id range overlaps."""

    def overlapping(meta: Any) -> list[int]:
        groups = []
        for i in range(meta.num_row_groups):
            stats = meta.row_group(i).column(0).statistics
            if stats is None or not stats.has_min_max or (stats.min < hi and stats.max >= lo):
                groups.append(i)
        return groups

    table = io.read_row_groups(uri, options, overlapping)
    if table is None:
        return MANIFEST_SCHEMA.empty_table()
    ids = table.column(Col.IMAGE_ID).to_numpy()
    return table.filter(pa.array((ids >= lo) & (ids <= hi - 1)))  # hi - 1 fits in int64


def shard_uri(folder: str, index: int) -> str:
    """URI of manifest shard ``index`` under ``folder``."""
    return io.join(folder, f"part-{index:05d}.parquet")


def build_shards(
    cfg: InputConfig,
    folder: str,
    out_options: dict[str, Any],
    done: np.ndarray | None,
    shard_rows: int,
    parallelism: int,
) -> Shards:
    """The whole manifest of a run as shards under ``folder`` (replacing any older ones).

    ``done``: ids counted as not pending (None: count every row as pending; the scoring job
    computes its resume state afterwards with :mod:`iqa_ray.inputs.state`, off the driver).
    """
    io.delete_tree(folder, out_options)
    units = plan_units(cfg, parallelism)
    tmp = io.join(folder, "_parts")
    parts = [io.join(tmp, f"unit-{i:06d}.parquet") for i in range(len(units))]
    counts = _map(load_unit, [(u, cfg, p, out_options) for u, p in zip(units, parts, strict=True)])
    n_shards = max(1, math.ceil(sum(counts) / shard_rows))
    bounds = [i * ID_SPACE // n_shards for i in range(n_shards + 1)]
    done_arg = _shared(done, n_shards)
    live = [p for p, n in zip(parts, counts, strict=True) if n]
    outs = [shard_uri(folder, i) for i in range(n_shards)]
    merged = _map(merge_range, [(live, bounds[i], bounds[i + 1], outs[i], out_options, done_arg)
                                for i in range(n_shards)])
    io.delete_tree(tmp, out_options)
    shards = Shards(tuple(outs), tuple(m[0] for m in merged), tuple(m[1] for m in merged),
                    tuple(bounds))
    if cfg.limit is not None and cfg.limit < shards.images:
        shards = _truncate(shards, cfg.limit, out_options, done)
    return shards


def _truncate(shards: Shards, limit: int, options: dict[str, Any],
              done: np.ndarray | None) -> Shards:
    """Keep the first ``limit`` rows in shard order (sorted by URI within each shard)."""
    uris, rows, pending, left = [], [], [], limit
    for uri, n, p in zip(shards.uris, shards.rows, shards.pending, strict=True):
        if left <= 0:
            io.delete(uri, options)
            continue
        if n > left:
            table = io.read_parquet(uri, options).slice(0, left)
            io.write_parquet_atomic(uri, table, options, row_group_size=ROW_GROUP)
            n, p = left, count_pending(table.column(Col.IMAGE_ID).to_numpy(), done)
        uris.append(uri)
        rows.append(n)
        pending.append(p)
        left -= n
    return Shards(tuple(uris), tuple(rows), tuple(pending), shards.bounds)


def _shared(done: np.ndarray | None, tasks: int) -> Any:
    """``done`` as it is for one task, or put in the object store once for several."""
    if tasks <= 1 or done is None:
        return done
    import ray

    return ray.put(done)


def _map(fn: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``fn`` over argument tuples: inline for one call, as Ray tasks for several."""
    if len(calls) <= 1:
        return [fn(*args) for args in calls]
    import ray

    remote = ray.remote(num_cpus=0.5, max_retries=3)(fn)
    return ray.get([remote.remote(*args) for args in calls])
