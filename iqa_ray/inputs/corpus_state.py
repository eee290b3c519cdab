"""Resume state of a corpus run, off the driver: which units still need reading.

A reader writes an index when it finishes a unit, ``index/<unit>-<samples>-<ok|failed>.parquet``
(the ids of every sample of the unit, sorted; a failed unit keeps its error in the metadata).
Ray tasks, one per id range, read the committed rows' keys with their ``source`` and write the
done ids by source (``done-NNNNN.parquet``, sorted by source). A unit is skipped when its
source's done count covers the indexes of all its units; otherwise it is read again and its
reader skips the done ids of its source, read from those files. The driver holds one small row
per unit and per-source counters, never an image id.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from iqa_ray import io
from iqa_ray.inputs.corpora import CorpusUnit
from iqa_ray.inputs.shards import ID_SPACE
from iqa_ray.inputs.state import (
    KEY_COLUMNS,
    STATE_IMAGES,
    Counts,
    committed_keys,
    overlapping,
    range_counts,
    use_tasks,
)
from iqa_ray.schema import Col

_SOURCE_INDEX = "source_index"
_DONE_ROW_GROUP = 65_536
_MAX_TASKS = 4096


@dataclass(frozen=True)
class UnitIndex:
    """What a reader recorded about one unit: its index file, sample count and outcome."""

    name: str
    unit: str
    samples: int
    ok: bool


def index_name(unit: str, samples: int, ok: bool) -> str:
    """File name of a unit's index (the counts are in the name: listing the folder is enough)."""
    return f"{unit}-{samples}-{'ok' if ok else 'failed'}.parquet"


def list_indexes(folder: str, options: dict[str, Any] | None) -> dict[str, UnitIndex]:
    """The index of each unit in ``folder`` (a complete read wins over a failed one, then the
    larger count: a re-read that was cut short never hides a better one)."""
    best: dict[str, UnitIndex] = {}
    for uri in io.list_parquet(folder, options):
        parts = uri.rsplit("/", 1)[-1].removesuffix(".parquet").split("-")
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        found = UnitIndex(uri.rsplit("/", 1)[-1], parts[0], int(parts[1]), parts[2] == "ok")
        old = best.get(found.unit)
        if old is None or (found.ok, found.samples) > (old.ok, old.samples):
            best[found.unit] = found
    return best


def write_index(folder: str, unit: str, ids: np.ndarray, error: str | None,
                options: dict[str, Any] | None, previous: str = "") -> str:
    """Write a unit's index (sorted ids; the error in the metadata) and drop the one it
    replaces; returns the new file name."""
    name = index_name(unit, len(ids), error is None)
    table = pa.table({Col.IMAGE_ID: np.sort(np.asarray(ids, dtype=np.int64))})
    table = table.replace_schema_metadata({"error": error or ""})
    io.write_parquet_atomic(io.join(folder, name), table, options)
    if previous and previous != name:
        io.delete(io.join(folder, previous), options)
    return name


def read_index(folder: str, name: str, options: dict[str, Any] | None) -> tuple[np.ndarray, str]:
    """(sorted ids, error message or "") of an index file."""
    table = io.read_parquet(io.join(folder, name), options)
    error = (table.schema.metadata or {}).get(b"error", b"").decode()
    return table.column(Col.IMAGE_ID).to_numpy(), error


@dataclass(frozen=True)
class UnitTask:
    """A unit to read now, with what its reader needs: the index of its source in the done
    files (if the source has done samples) and its current index file (``""`` if none)."""

    unit: CorpusUnit
    source_index: int
    has_done: bool
    index: str
    index_ok: bool


@dataclass(frozen=True)
class CorpusState:
    """Counts of a corpus run, the units to read and the files of done ids by source."""

    counts: Counts
    to_read: list[UnitTask]
    done_files: list[str]
    units: int
    units_indexed: int
    units_unread: int
    read_bytes: int
    unread_bytes: int
    failed: list[tuple[CorpusUnit, UnitIndex]]


def corpus_state(units: list[CorpusUnit], index_folder: str, score_files: list[str],
                 methods: list[str], retry_errors: bool, options: dict[str, Any],
                 done_folder: str | None, images_per_file: int) -> CorpusState:
    """The run's state: per-range tasks over the committed rows, then a decision per unit.

    ``done_folder``: where the tasks write done ids by source for the readers (None: count
    only, as for the final summary). ``images_per_file``: sizes the id ranges.
    """
    sources = sorted({u.source for u in units})
    tasks = min(_MAX_TASKS, max(1, math.ceil(len(score_files) * images_per_file / STATE_IMAGES)))
    bounds = [i * ID_SPACE // tasks for i in range(tasks + 1)]
    outs = [io.join(done_folder, f"done-{i:05d}.parquet") if done_folder else None
            for i in range(tasks)]
    shared = _shared(sources, tasks)
    calls = [(bounds[i], bounds[i + 1], score_files, shared, methods, retry_errors, options,
              outs[i]) for i in range(tasks)]
    zero = (Counts(), np.zeros(len(sources), np.int64), np.zeros(len(sources), np.int64))
    counts, done, complete = _reduce(_range_done, calls, _add, zero)
    indexes = list_indexes(index_folder, options)
    done_files = [o for o in outs if o is not None]
    return _decide(units, sources, indexes, counts, done, complete, retry_errors, done_files)


def _add(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def _decide(units: list[CorpusUnit], sources: list[str], indexes: dict[str, UnitIndex],
            counts: Counts, done: np.ndarray, complete: np.ndarray, retry_errors: bool,
            done_files: list[str]) -> CorpusState:
    """Per source: skip its units when every one is indexed (and not to be retried) and the
    done count covers the indexed samples; per run: images, pending and missing counts."""
    position = {s: i for i, s in enumerate(sources)}
    by_source: dict[int, list[CorpusUnit]] = {}
    for unit in units:
        by_source.setdefault(position[unit.source], []).append(unit)
    to_read, failed = [], []
    images = pending = missing = unread = 0
    span = {False: 0, True: 0}  # bytes of the units read (True) and never read (False)
    for s, members in by_source.items():
        found = [indexes.get(u.key) for u in members]
        known = all(f is not None and (f.ok or not retry_errors) for f in found)
        samples = sum(f.samples for f in found if f is not None)
        images += samples
        failed += [(u, f) for u, f in zip(members, found, strict=True) if f and not f.ok]
        unread += sum(f is None for f in found)
        for unit, f in zip(members, found, strict=True):
            span[f is not None] += _unit_bytes(unit)
        missing += max(0, samples - int(complete[s])) if all(found) else 0
        if known and done[s] >= samples:
            continue
        pending += max(0, samples - int(done[s])) if all(found) else 0
        to_read += [UnitTask(u, s, bool(done[s]), f.name if f else "", bool(f and f.ok))
                    for u, f in zip(members, found, strict=True)]
    counts = counts + Counts(images=images, pending=pending, missing=missing)
    return CorpusState(counts, to_read, done_files, len(units), len(units) - unread, unread,
                       span[True], span[False], failed)


def _unit_bytes(unit: CorpusUnit) -> int:
    return (unit.stop - unit.start) if unit.stop > unit.start else unit.size


def _range_done(lo: int, hi: int, score_files: list[str], sources: list[str],
                methods: list[str], retry_errors: bool, options: dict[str, Any],
                out: str | None) -> tuple[Counts, np.ndarray, np.ndarray]:
    """Task: committed rows with ids in [lo, hi): counts, done and complete samples per
    source, and (with ``out``) the done (source index, id) pairs sorted by source."""
    keys = committed_keys(score_files, lo, hi, options, [*KEY_COLUMNS, Col.SOURCE])
    counts, done, complete = range_counts(keys, methods, retry_errors)
    where = pc.fill_null(pc.index_in(keys.column(Col.SOURCE), value_set=pa.array(sources)), -1)
    ids, where = keys.column(Col.IMAGE_ID).to_numpy(), where.to_numpy()
    order = np.argsort(ids, kind="stable")
    ids, where = ids[order], where[order]
    done_src = where[np.searchsorted(ids, done)] if len(done) else np.array([], np.int64)
    complete_src = where[np.searchsorted(ids, complete)] if len(complete) else done_src[:0]
    if out is not None:
        keep = done_src >= 0
        pairs = pa.table({_SOURCE_INDEX: done_src[keep].astype(np.int32),
                          Col.IMAGE_ID: done[keep]})
        pairs = pairs.sort_by([(_SOURCE_INDEX, "ascending"), (Col.IMAGE_ID, "ascending")])
        io.write_parquet_atomic(out, pairs, options, row_group_size=_DONE_ROW_GROUP)
    size = len(sources)
    return (counts, np.bincount(done_src[done_src >= 0], minlength=size).astype(np.int64),
            np.bincount(complete_src[complete_src >= 0], minlength=size).astype(np.int64))


def source_done_ids(done_files: list[str], source_index: int,
                    options: dict[str, Any] | None) -> np.ndarray:
    """Sorted done ids of one source, from the row groups of the done files that hold it."""
    select = overlapping(_SOURCE_INDEX, source_index, source_index + 1)
    found = []
    for uri in done_files:
        table = io.read_row_groups(uri, options, select)
        if table is None:
            continue
        mask = table.column(_SOURCE_INDEX).to_numpy() == source_index
        found.append(table.column(Col.IMAGE_ID).to_numpy()[mask])
    return np.sort(np.concatenate(found)) if found else np.array([], np.int64)


def _shared(value: Any, tasks: int) -> Any:
    """``value`` as it is inline, or put in the object store once for the tasks."""
    if not use_tasks(tasks):
        return value
    import ray

    return ray.put(value)


def _reduce(fn: Callable[..., Any], calls: list[tuple[Any, ...]],
            combine: Callable[[Any, Any], Any], initial: Any) -> Any:
    """Fold ``fn``'s results over the calls as they finish (Ray tasks, see
    :func:`~iqa_ray.inputs.state.use_tasks`), so the driver holds one result at a time besides
    the running total."""
    if not use_tasks(len(calls)):
        total = initial
        for args in calls:
            total = combine(total, fn(*args))
        return total
    import ray

    remote = ray.remote(num_cpus=0.5, max_retries=3)(fn)
    pending = [remote.remote(*args) for args in calls]
    total = initial
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        total = combine(total, ray.get(ready[0]))
    return total
