"""Resume state off the driver: Ray tasks, one per id range, merge the committed score files'
key columns with the run's manifest shards (a sorted merge on ``image_id``) and return counts.

Score files are sorted by ``image_id`` and written in row groups of :data:`SCORE_ROW_GROUP` rows,
so a task reads only the row groups that overlap its range; the driver never holds a key, only
the sums of the tasks' counts. Files written before 0.3 hold one row group each and are read
whole by every task (correct, just more bytes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from iqa_ray import io
from iqa_ray.inputs import done as done_set
from iqa_ray.inputs.shards import ID_SPACE, ROW_GROUP, Shards
from iqa_ray.schema import Col

SCORE_ROW_GROUP = 8_192  # rows per row group of committed score files (id-range pruning)
STATE_IMAGES = 1_000_000  # manifest images per state task: bounds each task's memory
KEY_COLUMNS = [Col.IMAGE_ID, Col.METHOD, Col.ERROR_CODE, Col.ATTEMPT]
_READ_THREADS = 16
_KEY_TYPES = {Col.IMAGE_ID: pa.int64(), Col.METHOD: pa.string(), Col.ERROR_CODE: pa.string(),
              Col.ATTEMPT: pa.int32(), Col.SOURCE: pa.string()}


@dataclass(frozen=True)
class Counts:
    """What the state tasks add up: committed rows, current rows by (method, code), images."""

    rows_written: int = 0
    rows_current: int = 0
    max_attempt: int = -1
    by_code: dict[tuple[str, str], int] = field(default_factory=dict)
    images: int = 0  # input images (manifest rows, or samples in the indexes of read units)
    pending: int = 0  # images to score now (the retry rule applied)
    missing: int = 0  # images without a current row for every method

    def __add__(self, other: Counts) -> Counts:
        by_code = dict(self.by_code)
        for key, n in other.by_code.items():
            by_code[key] = by_code.get(key, 0) + n
        return Counts(self.rows_written + other.rows_written,
                      self.rows_current + other.rows_current,
                      max(self.max_attempt, other.max_attempt), by_code,
                      self.images + other.images, self.pending + other.pending,
                      self.missing + other.missing)

    @property
    def next_attempt(self) -> int:
        """Attempt number of rows written now: one more than any committed attempt."""
        return self.max_attempt + 1


def committed_keys(score_files: list[str], lo: int, hi: int, options: dict[str, Any] | None,
                   columns: list[str] = KEY_COLUMNS) -> pa.Table:
    """Key columns of committed rows with ``lo <= image_id < hi``, reading only overlapping row
    groups (threads overlap a bucket's per-request latency); absent columns come back null."""
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        pieces = [t for t in pool.map(lambda f: _range_rows(f, lo, hi, options, columns),
                                      score_files) if t is not None]
    schema = pa.schema([(c, _KEY_TYPES[c]) for c in columns])
    if not pieces:
        return schema.empty_table()
    return pa.concat_tables([_conform(t, schema) for t in pieces])


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    arrays = [table.column(f.name).cast(f.type) if f.name in table.column_names
              else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def overlapping(column: str, lo: int, hi: int) -> Callable[[Any], list[int]]:
    """Row-group selector: groups whose ``column`` statistics may hold values in [lo, hi)."""

    def select(meta: Any) -> list[int]:
        index = meta.schema.names.index(column)
        groups = []
        for i in range(meta.num_row_groups):
            stats = meta.row_group(i).column(index).statistics
            if stats is None or not stats.has_min_max or (stats.min < hi and stats.max >= lo):
                groups.append(i)
        return groups

    return select


def _range_rows(uri: str, lo: int, hi: int, options: dict[str, Any] | None,
                columns: list[str]) -> pa.Table | None:
    table = io.read_row_groups(uri, options, overlapping(Col.IMAGE_ID, lo, hi), columns)
    if table is None:
        return None
    ids = table.column(Col.IMAGE_ID).to_numpy()
    return table.filter(pa.array((ids >= lo) & (ids <= hi - 1)))  # hi - 1 fits in int64


def range_counts(keys: pa.Table, methods: list[str],
                 retry_errors: bool) -> tuple[Counts, np.ndarray, np.ndarray]:
    """Counts of one range's committed rows, the ids done under the retry rule (skipped now)
    and the ids done outright (a current row for every method: not missing)."""
    latest = done_set.latest_rows(keys)
    attempts = keys.column(Col.ATTEMPT)
    top = pc.max(attempts).as_py() if keys.num_rows else None
    counts = Counts(keys.num_rows, latest.num_rows, -1 if top is None else int(top),
                    done_set.current_counts(latest))
    complete = done_set.done_ids(keys, methods, retry_errors=False)
    done = done_set.done_ids(keys, methods, True) if retry_errors else complete
    return counts, done, complete


@dataclass(frozen=True)
class ObjectsState:
    """Resume state of an objects run: counts, and the pending rows as shards (one per range)."""

    counts: Counts
    pending: Shards


def objects_state(shards: Shards, score_files: list[str], methods: list[str],
                  retry_errors: bool, options: dict[str, Any], pending_folder: str | None,
                  ) -> ObjectsState:
    """Counts of the run and, with ``pending_folder``, a shard of the not-done rows of each
    manifest shard there (``pending/part-NNNNN.parquet``); one task per group of ranges."""
    bounds = shards.bounds or (0, ID_SPACE)
    ranges = []
    for i in range(len(bounds) - 1):
        shard = shards.uris[i] if i < len(shards.uris) else None
        pending = io.join(pending_folder, f"part-{i:05d}.parquet") if pending_folder else None
        rows = shards.rows[i] if i < len(shards.rows) else 0
        ranges.append((bounds[i], bounds[i + 1], shard, pending, rows))
    calls = [(group, score_files, methods, retry_errors, options) for group in _groups(ranges)]
    results = map_calls(_objects_group, calls)
    total, uris, rows = Counts(), [], []
    for counts, written in results:
        total += counts
        for uri, n in written:
            uris.append(uri)
            rows.append(n)
    return ObjectsState(total, Shards(tuple(uris), tuple(rows), tuple(rows)))


def _groups(ranges: list[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    """Consecutive ranges holding about :data:`STATE_IMAGES` manifest rows together."""
    group: list[tuple[Any, ...]] = []
    rows = 0
    for item in ranges:
        if group and rows + item[4] > STATE_IMAGES:
            yield group
            group, rows = [], 0
        group.append(item)
        rows += item[4]
    if group:
        yield group


def _objects_group(group: list[tuple[Any, ...]], score_files: list[str], methods: list[str],
                   retry_errors: bool, options: dict[str, Any],
                   ) -> tuple[Counts, list[tuple[str, int]]]:
    """Task: one group of id ranges: committed keys in it against its manifest shards."""
    keys = committed_keys(score_files, group[0][0], group[-1][1], options)
    counts, done, complete = range_counts(keys, methods, retry_errors)
    del keys
    images = pending = missing = 0
    written = []
    for _, _, shard, pending_uri, _ in group:
        if shard is None:
            continue
        table = io.read_parquet(shard, options, [Col.IMAGE_ID, Col.URI])
        ids = table.column(Col.IMAGE_ID).to_numpy()
        todo = done_set.not_done(ids, done)
        images += len(ids)
        pending += int(todo.sum())
        missing += int(done_set.not_done(ids, complete).sum())
        if pending_uri is not None and todo.any():
            io.write_parquet_atomic(pending_uri, table.filter(pa.array(todo)), options,
                                    row_group_size=ROW_GROUP)
            written.append((pending_uri, int(todo.sum())))
    counts = counts + Counts(images=images, pending=pending, missing=missing)
    return counts, written


def use_tasks(calls: int) -> bool:
    """Ray tasks whenever Ray is up (the driver's memory stays flat even for one range);
    inline only without Ray (tools and unit tests) or with nothing to do."""
    if calls == 0:
        return False
    import ray

    return bool(ray.is_initialized())


def map_calls(fn: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``fn`` over argument tuples as Ray tasks (see :func:`use_tasks`), results in call
    order; keep them small: they all come back to the driver."""
    if not use_tasks(len(calls)):
        return [fn(*args) for args in calls]
    import ray

    remote = ray.remote(num_cpus=0.5, max_retries=3)(fn)
    return ray.get([remote.remote(*args) for args in calls])
