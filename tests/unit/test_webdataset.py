"""WebDataset shards and Parquet tables read as samples: byte ranges that share a shard, broken
shards, brace patterns, units, and per-sample rows (ids, keys, errors, carried values)."""

from __future__ import annotations

import gzip
import io
import itertools
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from iqa_ray.devtools.corpora import KEY, image_of, sample_records, tar_bytes, write_parquet_tables
from iqa_ray.inputs.config import InputConfig
from iqa_ray.inputs.corpora import (
    CorpusUnit,
    expand_braces,
    plan_corpus_units,
    table_units,
    tar_units,
)
from iqa_ray.inputs.ids import image_id
from iqa_ray.inputs.samples import ReadLimits, UnitReadError, sample_uri, unit_samples
from iqa_ray.inputs.webdataset import TarFormatError, iter_samples, split_name
from iqa_ray.schema import ErrorCode


def _records(n: int) -> list[dict]:
    records = sample_records(n, size=(24, 16))
    records[3][KEY] = "deep/dir/" + "é" * 70 + "-long-name"  # a pax header for the path
    records[-1][KEY] = "sub/last"
    return records


def _keys(data: bytes, start: int, stop: int) -> list[str]:
    return [s.key for s in iter_samples(io.BytesIO(data), start, stop, len(data),
                                        lambda _ext: True)]


def test_byte_ranges_cover_every_sample_once() -> None:
    records = _records(30)
    data = tar_bytes(records)
    keys = [r[KEY] for r in records]
    rng = random.Random(0)
    for _ in range(60):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 9)))
        edges = [0, *cuts, len(data)]
        got = [k for a, b in itertools.pairwise(edges) for k in _keys(data, a, b)]
        assert got == keys, edges


def test_members_grouped_by_key_with_wanted_bytes_only() -> None:
    records = _records(6)
    data = tar_bytes(records)
    samples = list(iter_samples(io.BytesIO(data), 0, len(data), len(data),
                                lambda ext: ext in ("json", "png", "jpg")))
    assert [s.key for s in samples] == [r[KEY] for r in records]
    for sample, record in zip(samples, records, strict=True):
        ext, image = image_of(record)
        assert sample.members == {ext: image, "json": record["json"]}
    assert split_name("a/b.seg.png") == ("a/b", "seg.png") and split_name("x") == ("x", "")


def test_truncated_shard_yields_whole_samples_then_fails() -> None:
    records = _records(10)
    data = tar_bytes(records)
    cut = data[: len(data) * 6 // 10]
    got = []
    with pytest.raises(TarFormatError, match="truncated"):
        for sample in iter_samples(io.BytesIO(cut), 0, len(cut), len(cut), lambda _e: True):
            got.append(sample.key)
    assert 0 < len(got) < 10 and got == [r[KEY] for r in records[: len(got)]]
    # Ended at a member boundary but without the end-of-archive blocks: also truncated.
    bare = data[: len(data) - 1024].rstrip(b"\0")
    bare += b"\0" * (-len(bare) % 512)
    with pytest.raises(TarFormatError):
        list(iter_samples(io.BytesIO(bare), 0, len(bare), len(bare), lambda _e: True))


def test_corrupt_header_and_gzip_shards() -> None:
    data = bytearray(tar_bytes(_records(4)))
    data[100] ^= 0xFF  # the first header's mode field: its checksum no longer matches
    with pytest.raises(TarFormatError, match="checksum"):
        _keys(bytes(data), 0, len(data))
    clean = tar_bytes(_records(4))
    shard = io.BytesIO(gzip.compress(clean))
    from iqa_ray.inputs.webdataset import open_archive

    keys = [s.key for s in iter_samples(open_archive(shard, "s.tar.gz"), 0, 1 << 62, 1 << 62,
                                        lambda _e: True)]
    assert keys == [r[KEY] for r in _records(4)]


def test_brace_patterns() -> None:
    assert expand_braces("s3://b/{00008..00011}.tar") == [
        "s3://b/00008.tar", "s3://b/00009.tar", "s3://b/00010.tar", "s3://b/00011.tar"]
    assert expand_braces("{a,b}/{1..2}") == ["a/1", "a/2", "b/1", "b/2"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def test_units_split_large_files_only() -> None:
    assert tar_units("s.tar", 1000, 4096) == [CorpusUnit("s.tar", 1000, 0, 1000)]
    units = tar_units("s.tar", 10_000, 4096)
    assert [(u.start, u.stop) for u in units] == [(0, 4096), (4096, 8192), (8192, 10_000)]
    units = tar_units("s.tar", 8_500, 4096)
    assert [(u.start, u.stop) for u in units] == [(0, 4096), (4096, 8_500)]  # no sliver
    assert tar_units("s.tar.gz", 10_000, 4096) == [CorpusUnit("s.tar.gz", 10_000, 0, 10_000)]
    assert len({u.key for u in tar_units("s.tar", 100_000, 4096)}) == 25


def test_table_units_are_runs_of_row_groups(tmp_path: Path) -> None:
    write_parquet_tables(str(tmp_path), sample_records(20, size=(24, 16)), 20, 3)
    meta = pq.ParquetFile(tmp_path / "part-00000.parquet").metadata
    sizes = [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]
    budget = max(sizes) * 2
    units = table_units("t", 1, meta, budget)
    assert units[0].start == 0 and units[-1].stop == meta.num_row_groups == 7
    assert all(a.stop == b.start for a, b in itertools.pairwise(units))
    for unit in units:  # within budget, and no room left for the next group
        assert sum(sizes[unit.start : unit.stop]) <= budget
        if unit.stop < len(sizes):
            assert sum(sizes[unit.start : unit.stop + 1]) > budget
        assert unit.first_row == 3 * unit.start  # 3 rows per group


def _tar_unit(tmp_path: Path, records: list[dict]) -> tuple[CorpusUnit, InputConfig]:
    path = tmp_path / "shard.tar"
    path.write_bytes(tar_bytes(records))
    cfg = InputConfig(format="webdataset", uri=str(tmp_path), carry=("json",))
    (unit,) = plan_corpus_units(cfg)
    return unit, cfg


def test_tar_sample_rows_ids_errors_and_carry(tmp_path: Path) -> None:
    records = _records(5)
    records.append({KEY: "captions-only", "txt": b"no image here"})
    unit, cfg = _tar_unit(tmp_path, records)
    rows = list(unit_samples(unit, cfg, ReadLimits(max_bytes=10**6)))
    assert [r.key for r in rows] == [r[KEY] for r in records]
    assert all(r.image_id == image_id(sample_uri(unit.source, r.key)) for r in rows)
    assert rows[0].data == image_of(records[0])[1] and rows[0].carry["json"] is not None
    assert rows[-1].code == ErrorCode.NOT_FOUND and rows[-1].carry == {"json": None}
    small = list(unit_samples(unit, cfg, ReadLimits(max_bytes=10)))
    assert {r.code for r in small[:-1]} == {ErrorCode.TOO_LARGE}


def test_tar_unit_read_error_after_the_samples_before_it(tmp_path: Path) -> None:
    data = tar_bytes(_records(8))
    (tmp_path / "shard.tar").write_bytes(data[: len(data) // 2])
    cfg = InputConfig(format="webdataset", uri=str(tmp_path))
    (unit,) = plan_corpus_units(cfg)
    got = []
    with pytest.raises(UnitReadError, match="truncated"):
        for row in unit_samples(unit, cfg, ReadLimits()):
            got.append(row.key)
    assert 0 < len(got) < 8


def test_parquet_rows_struct_bytes_nulls_and_ids(tmp_path: Path) -> None:
    records = sample_records(4, size=(24, 16))
    image = pa.array([{"bytes": image_of(records[0])[1], "path": "a.jpg"},
                      {"bytes": None, "path": "s3://elsewhere/b.jpg"}, None,
                      {"bytes": image_of(records[3])[1], "path": None}],
                     pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    table = pa.table({"image": image, "sid": ["x", "y", None, "w"],
                      "caption": ["c", "d", "e", None]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=2)
    cfg = InputConfig(format="parquet", uri=str(tmp_path), id_column="sid", carry=("caption",))
    (unit,) = plan_corpus_units(cfg)
    rows = list(unit_samples(unit, cfg, ReadLimits()))
    assert [r.key for r in rows] == ["x", "y", "2", "w"]  # a null id falls back to the row
    assert rows[0].image_id == image_id("x") and rows[2].image_id == image_id(f"{unit.source}#2")
    assert [r.code for r in rows] == ["", ErrorCode.NOT_FOUND, ErrorCode.EMPTY_FILE, ""]
    assert rows[3].data == image_of(records[3])[1] and rows[3].carry == {"caption": None}
    with pytest.raises(Exception, match="no column"):
        plan_corpus_units(InputConfig(format="parquet", uri=str(tmp_path), image_column="img"))
