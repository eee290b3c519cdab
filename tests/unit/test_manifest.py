"""Manifests with stable ids, and the done/pending sets read back from committed rows."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from iqa_ray import io as iqa_io
from iqa_ray.errors import ConfigError
from iqa_ray.inputs import done as done_set
from iqa_ray.inputs import ids as input_ids
from iqa_ray.inputs import shards
from iqa_ray.inputs.config import InputConfig
from iqa_ray.schema import MANIFEST_SCHEMA, Col

METHODS = ["qalign_levels", "qbench_binary"]


def documented_id(uri: str) -> int:
    """The formula in ``image_id``'s docstring: first 8 bytes of sha256, big-endian, 63 bits."""
    return int.from_bytes(hashlib.sha256(uri.encode("utf-8")).digest()[:8], "big") & (2**63 - 1)


def keys(rows: list[tuple[int, str, str | None, int]]) -> pa.Table:
    """A score-key table from (image_id, method, error_code, attempt) rows."""
    ids, methods, codes, attempts = zip(*rows, strict=True) if rows else ((), (), (), ())
    return pa.table(
        {
            Col.IMAGE_ID: pa.array(ids, pa.int64()),
            Col.METHOD: pa.array(methods, pa.string()),
            Col.ERROR_CODE: pa.array(codes, pa.string()),
            Col.ATTEMPT: pa.array(attempts, pa.int32()),
        }
    )


@pytest.mark.parametrize(
    "uri", ["s3://bucket/a.jpg", "file:///tmp/x y/é 图.png", "gs://b/" + "k" * 500, ""]
)
def test_image_id_formula_and_range(uri: str) -> None:
    first, second = input_ids.image_id(uri), input_ids.image_id(uri)
    assert first == second == documented_id(uri)
    assert 0 <= first <= np.iinfo(np.int64).max


def test_image_ids_differ_and_fit_int64() -> None:
    uris = [f"s3://b/img_{i:05d}.jpg" for i in range(2000)]
    ids = np.array([input_ids.image_id(u) for u in uris], dtype=np.int64)
    assert len(np.unique(ids)) == len(uris)
    assert (ids >= 0).all()
    # The top bit is masked off, so about half the ids use bit 62: the full range is used.
    assert 0.4 < np.mean(ids >= 2**62) < 0.6


def test_manifest_independent_of_listing_order() -> None:
    uris = [f"s3://b/{i}.jpg" for i in range(50)]
    shuffled = uris[:]
    random.Random(7).shuffle(shuffled)
    first, second = input_ids.manifest_table(uris), input_ids.manifest_table(shuffled)
    assert first.equals(second)
    assert first.schema.equals(MANIFEST_SCHEMA)
    assert first.column(Col.URI).to_pylist() == sorted(uris)
    pairs = dict(
        zip(
            first.column(Col.URI).to_pylist(),
            first.column(Col.IMAGE_ID).to_pylist(),
            strict=True,
        )
    )
    assert pairs == {u: documented_id(u) for u in uris}


def test_duplicate_uris_collapse() -> None:
    table = input_ids.manifest_table(["s3://b/a.jpg", "s3://b/b.jpg", "s3://b/a.jpg"])
    assert table.column(Col.URI).to_pylist() == ["s3://b/a.jpg", "s3://b/b.jpg"]
    assert table.num_rows == 2


def test_id_collision_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(input_ids, "image_id", lambda uri: 42)
    with pytest.raises(ConfigError, match="hash to one image_id"):
        input_ids.manifest_table(["s3://b/a.jpg", "s3://b/b.jpg"])


def _images(folder: Path) -> list[str]:
    (folder / "nested").mkdir(parents=True)
    names = ["b.jpg", "a.PNG", "nested/c.webp"]
    for name in names:
        (folder / name).write_bytes(b"x")
    (folder / "readme.txt").write_text("not an image")
    return sorted(f"file://{folder}/{n}" for n in names)


def test_build_manifest_from_prefix(tmp_path: Path) -> None:
    expected = _images(tmp_path)
    table = shards.build_manifest(InputConfig(uri=str(tmp_path)))
    assert table.column(Col.URI).to_pylist() == expected
    assert table.column(Col.IMAGE_ID).to_pylist() == [documented_id(u) for u in expected]
    limited = shards.build_manifest(InputConfig(uri=str(tmp_path), limit=2))
    assert limited.equals(table.slice(0, 2))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_build_manifest_from_table(tmp_path: Path, fmt: str) -> None:
    uris = ["s3://b/2.jpg", "s3://b/1.jpg", "s3://b/2.jpg", "s3://b/3.jpg"]
    source = pa.table({"path": uris, "label": [1, 2, 3, 4]})
    path = tmp_path / f"manifest.{fmt}"
    if fmt == "csv":
        pacsv.write_csv(source, path)
    else:
        pq.write_table(source, path)
    cfg = InputConfig(manifest=str(path), manifest_uri_column="path")
    table = shards.build_manifest(cfg)
    assert table.column(Col.URI).to_pylist() == ["s3://b/1.jpg", "s3://b/2.jpg", "s3://b/3.jpg"]
    assert table.column(Col.IMAGE_ID).to_pylist() == [documented_id(u) for u in sorted(set(uris))]
    limited = shards.build_manifest(cfg.model_copy(update={"limit": 1}))
    assert limited.column(Col.URI).to_pylist() == ["s3://b/1.jpg"]


def test_manifest_ids_match_listing_ids(tmp_path: Path) -> None:
    # A manifest naming the same objects as a listing yields the same ids: runs can switch.
    _images(tmp_path / "images")
    listed = shards.build_manifest(InputConfig(uri=str(tmp_path / "images")))
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"uri": listed.column(Col.URI).to_pylist()[::-1]}), path)
    assert shards.build_manifest(InputConfig(manifest=str(path))).equals(listed)


def test_manifest_skips_empty_uris(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"uri": pa.array(["s3://b/1.jpg", None, ""], pa.string())}), path)
    table = shards.build_manifest(InputConfig(manifest=str(path)))
    assert table.column(Col.URI).to_pylist() == ["s3://b/1.jpg"]


def test_manifest_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    pacsv.write_csv(pa.table({"url": ["s3://b/1.jpg"]}), path)
    with pytest.raises(ConfigError, match=r"no column 'uri'.*url"):
        shards.build_manifest(InputConfig(manifest=str(path)))


def test_load_score_keys_reads_committed_files(tmp_path: Path) -> None:
    scores = tmp_path / "scores"
    empty = done_set.load_score_keys(str(scores), None)
    assert empty.num_rows == 0
    assert empty.column_names == [Col.IMAGE_ID, Col.METHOD, Col.ERROR_CODE, Col.ATTEMPT]
    full = keys([(1, "m", None, 0), (2, "m", "truncated", 0)])
    extra = full.append_column(Col.SCORE, pa.array([1.5, None], pa.float64()))
    iqa_io.write_parquet_atomic(str(scores / "part-1.parquet"), extra, None)
    iqa_io.write_parquet_atomic(str(scores / "part-2.parquet"), keys([(3, "m", None, 1)]), None)
    loaded = done_set.load_score_keys(str(scores), None)
    assert loaded.column_names == empty.column_names  # only the key columns are read
    assert sorted(loaded.column(Col.IMAGE_ID).to_pylist()) == [1, 2, 3]


def test_done_requires_every_method() -> None:
    table = keys(
        [
            (1, "qalign_levels", None, 0),
            (1, "qbench_binary", None, 0),
            (2, "qalign_levels", None, 0),  # second method missing: not done
            (3, "qbench_binary", "truncated", 0),
            (3, "qalign_levels", "truncated", 0),
            (4, "other_method", None, 0),  # a method this run does not have
            (4, "qalign_levels", None, 0),
        ]
    )
    done = done_set.done_ids(table, METHODS, retry_errors=False)
    assert done.dtype == np.int64
    assert sorted(done.tolist()) == [1, 3]
    assert done_set.done_ids(keys([]), METHODS, retry_errors=False).tolist() == []


def test_latest_rows_keep_highest_attempt() -> None:
    table = keys(
        [
            (1, "m", "fetch_failed", 0),
            (1, "m", None, 2),
            (1, "m", "model_error", 1),
            (2, "m", None, 0),
            (1, "n", "model_error", 3),
        ]
    )
    latest = done_set.latest_rows(table)
    got = {
        (r[Col.IMAGE_ID], r[Col.METHOD]): (r[Col.ERROR_CODE], r[Col.ATTEMPT])
        for r in latest.to_pylist()
    }
    assert got == {(1, "m"): (None, 2), (2, "m"): (None, 0), (1, "n"): ("model_error", 3)}
    assert latest.num_rows == 3


@pytest.mark.parametrize(
    ("code", "retryable"),
    [("fetch_failed", True), ("model_error", True), ("decode_failed", False),
     ("truncated", False), ("too_small", False), ("not_found", False), (None, False)],
)
def test_retry_errors(code: str | None, retryable: bool) -> None:
    table = keys([(7, m, code, 0) for m in METHODS] + [(8, m, None, 0) for m in METHODS])
    assert done_set.done_ids(table, METHODS, retry_errors=False).tolist() == [7, 8]
    expected = [8] if retryable else [7, 8]
    assert done_set.done_ids(table, METHODS, retry_errors=True).tolist() == expected


def test_retry_looks_only_at_latest_attempt() -> None:
    table = keys(
        [
            (1, "qalign_levels", "fetch_failed", 0),  # superseded by a success
            (1, "qbench_binary", "fetch_failed", 0),
            (1, "qalign_levels", None, 1),
            (1, "qbench_binary", None, 1),
            (2, "qalign_levels", None, 0),  # superseded by an error
            (2, "qbench_binary", None, 0),
            (2, "qbench_binary", "model_error", 1),
            (2, "qalign_levels", None, 1),
        ]
    )
    assert done_set.done_ids(table, METHODS, retry_errors=True).tolist() == [1]


def test_pending_is_anti_join() -> None:
    table = input_ids.manifest_table([f"s3://b/{i}.jpg" for i in range(6)])
    ids = table.column(Col.IMAGE_ID).to_numpy()
    done = np.array([ids[1], ids[4], 123], dtype=np.int64)  # 123: not in this manifest
    todo = table.filter(pa.array(done_set.not_done(ids, done)))
    assert todo.column(Col.IMAGE_ID).to_pylist() == [ids[i] for i in (0, 2, 3, 5)]
    assert done_set.not_done(ids, np.array([], dtype=np.int64)).all()
    assert not done_set.not_done(ids, ids).any()
    assert done_set.count_pending(ids, done) == 4 and done_set.count_pending(ids, None) == 6


def test_next_attempt() -> None:
    assert done_set.next_attempt(keys([])) == 0
    assert done_set.next_attempt(keys([(1, "m", None, 0)])) == 1
    assert done_set.next_attempt(keys([(1, "m", None, 0), (2, "m", "model_error", 4)])) == 5
