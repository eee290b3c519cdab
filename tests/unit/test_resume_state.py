"""Resume state off the driver: per-range merges of committed score keys with the manifest agree
with the 0.2 driver-side done set; score files are read by id range; corpus units are skipped,
re-read or read for the first time from their indexes and the done ids by source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from iqa_ray import io as iqa_io
from iqa_ray.inputs import done as done_set
from iqa_ray.inputs import state as state_mod
from iqa_ray.inputs.config import InputConfig
from iqa_ray.inputs.corpora import CorpusUnit
from iqa_ray.inputs.corpus_state import (
    corpus_state,
    list_indexes,
    read_index,
    source_done_ids,
    write_index,
)
from iqa_ray.inputs.shards import build_shards
from iqa_ray.schema import Col

METHODS = ["qalign_levels", "qbench_binary"]


def _score_file(path: Path, rows: list[tuple[int, str, str | None, int, str]],
                row_group: int = 4) -> None:
    """Committed rows (image_id, method, error_code, attempt, source), sorted as the job
    writes them, in small row groups."""
    ordered = sorted(rows, key=lambda r: (r[0], r[1], r[3]))
    ids, methods, codes, attempts, sources = zip(*ordered, strict=True)
    table = pa.table({Col.IMAGE_ID: pa.array(ids, pa.int64()), Col.METHOD: list(methods),
                      Col.ERROR_CODE: pa.array(codes, pa.string()),
                      Col.ATTEMPT: pa.array(attempts, pa.int32()), Col.SOURCE: list(sources)})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group)


def _objects_run(tmp_path: Path) -> tuple[list[str], list[int], Path]:
    """A manifest of 60 URIs (4 shards) and committed rows for some of them: complete, missing
    a method, failed with a retryable and a permanent code, superseded by a later attempt."""
    uris = [f"s3://b/img_{i:03d}.jpg" for i in range(60)]
    pq.write_table(pa.table({"uri": uris}), tmp_path / "list.parquet")
    ids = [iqa_io_id(u) for u in uris]
    rows = []
    for i, image in enumerate(ids[:45]):
        for method in METHODS if i % 9 else METHODS[:1]:  # every 9th lacks a method
            code = "fetch_failed" if i % 7 == 0 else ("decode_failed" if i % 11 == 0 else None)
            rows.append((image, method, code, 0, ""))
            if i % 13 == 0:
                rows.append((image, method, None, 1, ""))  # a later attempt supersedes
    _score_file(tmp_path / "scores" / "part-a.parquet", rows[: len(rows) // 2])
    _score_file(tmp_path / "scores" / "part-b.parquet", rows[len(rows) // 2 :])
    return uris, ids, tmp_path / "scores"


def iqa_io_id(uri: str) -> int:
    from iqa_ray.inputs.ids import image_id

    return image_id(uri)


@pytest.mark.usefixtures("ray_local")  # the job's path: Ray tasks per id range
@pytest.mark.parametrize("retry", [False, True])
def test_objects_state_equals_the_driver_done_set(tmp_path: Path, retry: bool) -> None:
    _, ids, scores = _objects_run(tmp_path)
    cfg = InputConfig(manifest=str(tmp_path / "list.parquet"))
    shards = build_shards(cfg, str(tmp_path / "m"), {}, None, shard_rows=15, parallelism=1)
    files = iqa_io.list_parquet(str(scores), None)
    got = state_mod.objects_state(shards, files, METHODS, retry, {}, str(tmp_path / "pending"))
    keys = done_set.load_score_keys(str(scores), None)  # the 0.2 path, on the driver
    done = done_set.done_ids(keys, METHODS, retry)
    expected = sorted(set(ids) - set(done.tolist()))
    pending = [i for uri in got.pending.uris
               for i in pq.read_table(uri).column(Col.IMAGE_ID).to_pylist()]
    assert sorted(pending) == expected and got.counts.pending == len(expected)
    latest = done_set.latest_rows(keys)
    assert got.counts.by_code == done_set.current_counts(latest)
    assert got.counts.rows_written == keys.num_rows and got.counts.rows_current == latest.num_rows
    assert got.counts.next_attempt == done_set.next_attempt(keys) == 2
    complete = done_set.done_ids(keys, METHODS, retry_errors=False)
    assert got.counts.missing == len(set(ids) - set(complete.tolist()))
    assert got.counts.images == 60 and len(shards.bounds) == len(shards.uris) + 1


def test_committed_keys_read_only_overlapping_row_groups(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [(i * 1000, m, None, 0, "") for i in range(64) for m in METHODS]
    _score_file(tmp_path / "s.parquet", rows, row_group=8)  # 16 groups of 4 ids each
    read: list[int] = []
    original = iqa_io.read_row_groups

    def counting(uri: str, options: Any, select: Any, columns: Any = None) -> Any:
        def spy(meta: Any) -> list[int]:
            groups = select(meta)
            read.extend(groups)
            return groups

        return original(uri, options, spy, columns)

    monkeypatch.setattr(iqa_io, "read_row_groups", counting)
    keys = state_mod.committed_keys([str(tmp_path / "s.parquet")], 10_000, 20_000, None)
    assert keys.column(Col.IMAGE_ID).to_pylist() == sorted(
        [i * 1000 for i in range(10, 20)] * 2)
    assert len(read) == 3  # ids 8-11, 12-15, 16-19 of 16 groups


def test_index_names_prefer_complete_then_larger(tmp_path: Path) -> None:
    folder = str(tmp_path / "index")
    write_index(folder, "u1", np.array([3, 1, 2]), "truncated", None)
    write_index(folder, "u1", np.array([1]), "truncated", None)
    write_index(folder, "u2", np.array([5]), None, None)
    best = list_indexes(folder, None)
    assert (best["u1"].samples, best["u1"].ok) == (3, False) and best["u2"].ok
    ids, error = read_index(folder, best["u1"].name, None)
    assert ids.tolist() == [1, 2, 3] and error == "truncated"
    name = write_index(folder, "u1", np.array([1, 2, 3, 4]), None, None, best["u1"].name)
    assert list_indexes(folder, None)["u1"].name == name
    assert not (tmp_path / "index" / best["u1"].name).exists()  # the one it replaced


@pytest.mark.usefixtures("ray_local")
def test_corpus_units_skipped_reread_or_read(tmp_path: Path) -> None:
    units = [CorpusUnit(f"s3://b/{name}.tar", 100, 0, 100) for name in "abcd"]
    index = str(tmp_path / "index")
    samples = {"a": [1, 2, 3], "b": [4, 5, 6], "d": [9]}
    for unit, name in zip(units, "abcd", strict=True):
        if name in samples:
            write_index(index, unit.key, np.array(samples[name]), None if name != "d" else "cut",
                        None)
    rows = [(i, m, None, 0, "s3://b/a.tar") for i in (1, 2, 3) for m in METHODS]
    rows += [(i, m, None, 0, "s3://b/b.tar") for i in (4, 5) for m in METHODS]
    rows += [(7, m, None, 0, "s3://b/c.tar") for m in METHODS]  # c was cut off before its index
    rows += [(9, m, None, 0, "s3://b/d.tar") for m in METHODS]
    _score_file(tmp_path / "scores" / "p.parquet", rows)
    files = iqa_io.list_parquet(str(tmp_path / "scores"), None)

    def state(retry: bool) -> Any:
        return corpus_state(units, index, files, METHODS, retry, {}, str(tmp_path / "done"), 10)

    first = state(False)
    reading = {t.unit.source.rsplit("/", 1)[-1]: t for t in first.to_read}
    assert set(reading) == {"b.tar", "c.tar"}  # a and d (failed, not retried) are covered
    assert reading["b.tar"].has_done and reading["b.tar"].index_ok
    assert not reading["c.tar"].index and reading["c.tar"].has_done
    assert first.counts.images == 7 and first.counts.pending == 1 and first.counts.missing == 1
    assert first.units_unread == 1 and len(first.failed) == 1
    c_ids = source_done_ids(first.done_files, reading["c.tar"].source_index, None)
    assert c_ids.tolist() == [7]
    retried = {t.unit.source.rsplit("/", 1)[-1] for t in state(True).to_read}
    assert retried == {"b.tar", "c.tar", "d.tar"}  # --retry-errors re-reads the failed unit
