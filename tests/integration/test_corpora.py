"""Corpora as they are stored: WebDataset shards and Parquet tables in a bucket (moto on
loopback), scored end to end with the fake backend; resume after a crash, broken shards and
``--retry-errors``, large shards split into byte ranges, and the filter writing kept samples
back in the input's format."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from iqa_ray import io as iqa_io
from iqa_ray.analysis.filter_job import FilterJobConfig, run_filter
from iqa_ray.devtools.corpora import (
    KEY,
    image_of,
    sample_records,
    tar_bytes,
    truncate_object,
    write_parquet_tables,
    write_webdataset,
)
from iqa_ray.inputs.ids import image_id
from iqa_ray.scoring.pipeline import run
from tests.helpers import config, files_in, read_scores

pytestmark = pytest.mark.usefixtures("ray_local")
METHODS = ["qalign_levels", "qbench_binary"]


def corpus_config(input_uri: str | None, out: str, options: dict | None, fmt: str,
                  **extra: Any) -> Any:
    """A small fake-backend config reading a corpus of ``fmt``."""
    source: dict[str, Any] = {"format": fmt, "storage_options": options or {}, "uri": input_uri}
    source.update(extra.pop("input", {}))
    return config(input_uri or "", out, input=source,
                  output={"uri": out, "storage_options": options or {}, "rows_per_file": 8},
                  **extra)


def assert_once(df: pd.DataFrame, expected: dict[str, str]) -> None:
    """Exactly one row per (sample, method): ``expected`` maps uri -> source."""
    assert not df.duplicated(["image_id", "method"]).any(), "duplicate rows"
    assert len(df) == len(expected) * len(METHODS)
    got = df.drop_duplicates("uri").set_index("uri")["source"].to_dict()
    plain = {k.removeprefix("file://"): v.removeprefix("file://") for k, v in got.items()}
    assert plain == {k.removeprefix("file://"): v.removeprefix("file://")
                     for k, v in expected.items()}
    assert (df["image_id"] == df["uri"].map(image_id)).all()


def test_webdataset_bucket_end_to_end(s3_bucket: tuple[str, dict]) -> None:
    bucket, options = s3_bucket
    records = sample_records(21)
    ext, _ = image_of(records[3])
    records[3][ext] = b"not an image at all" * 10  # a corrupt member: one error row
    records.insert(10, {KEY: "no-image", "txt": b"only a caption"})
    shards = write_webdataset(f"{bucket}/shards", records, 6, options)
    pattern = f"{bucket}/shards/shard-{{00000..{len(shards) - 1:05d}}}.tar"
    cfg = corpus_config(pattern, f"{bucket}/out", options, "webdataset",
                        input={"carry": ["json"]})
    result = run(cfg)
    df = read_scores(result.uri, options)
    expected = {f"{shards[i // 6]}#{r[KEY]}": shards[i // 6] for i, r in enumerate(records)}
    assert_once(df, expected)
    codes = df.drop_duplicates("key").set_index("key")["error_code"]
    assert codes[records[3][KEY]] == "decode_failed" and codes["no-image"] == "not_found"
    assert codes.drop([records[3][KEY], "no-image"]).isna().all()
    carried = df.drop_duplicates("key").set_index("key")["carry_json"]
    assert json.loads(carried[records[5][KEY]]) == json.loads(records[5]["json"])
    summary = result.summary
    assert summary["units"] == len(shards) == summary["units_read"]
    assert summary["units_failed"] == 0 and summary["images"] == len(records)
    assert result.infra_failures == 0
    files = files_in(result.uri, options)
    again = run(cfg)  # nothing missing: no shard is read, no file written
    assert files_in(again.uri, options) == files
    assert again.summary["rows_written"] == len(df)


def test_parquet_tables_by_id_column_and_by_row(s3_bucket: tuple[str, dict]) -> None:
    bucket, options = s3_bucket
    records = sample_records(17)
    tables = write_parquet_tables(f"{bucket}/tables", records, 7, 3, options)
    write_parquet_tables(f"{bucket}/tables/raw", sample_records(4, seed=1, prefix="r"), 4, 2,
                         options, layout="bytes")
    by_id = corpus_config(f"{bucket}/tables", f"{bucket}/out", options, "parquet",
                          input={"id_column": "sample_id", "carry": ["caption"]})
    result = run(by_id)
    df = read_scores(result.uri, options)
    assert df["image_id"].nunique() == 21 and len(df) == 21 * len(METHODS)
    assert (df["image_id"] == df["key"].map(image_id)).all()  # the id's text is the identity
    assert df["error_code"].isna().all()
    row = df[df["key"] == records[9][KEY]].iloc[0]
    assert row["source"] == tables[1] and row["carry_caption"] == records[9]["txt"].decode()
    # Without an id column a sample is (file, row index); a small split_bytes reads each file
    # as several runs of row groups, with the same ids as a whole-file read.
    by_row = corpus_config(None, f"{bucket}/out2", options, "parquet",
                           input={"paths": tables, "split_bytes": 1 << 16})
    rows = read_scores(run(by_row).uri, options)
    expected = {f"{t}#{i}": t for t in tables for i in range(7 if t != tables[-1] else 3)}
    assert_once(rows, expected)


def _crashing(cfg_input: str, out: str, run_id: str, **model: Any) -> Any:
    committed = str(Path(out) / "runs" / run_id / "scores" / "*.parquet")
    return corpus_config(cfg_input, out, None, "webdataset", run_id=run_id, model={
        "backend": "fake", "options": {"fail_after_batches": 4, "fail_delay_s": 3,
                                       "fail_after_glob": committed}, **model})


def test_killed_webdataset_run_resumes_without_duplicates_or_gaps(tmp_path: Path) -> None:
    records = sample_records(40)
    shards = write_webdataset(str(tmp_path / "shards"), records, 9)
    out = str(tmp_path / "out")
    with pytest.raises(Exception, match="injected failure"):
        run(_crashing(str(tmp_path / "shards"), out, "crash"))
    run_uri = iqa_io.join(out, "runs", "crash")
    partial = read_scores(run_uri)
    assert 0 < partial["image_id"].nunique() < len(records), "the crash must leave partial rows"
    result = run(corpus_config(str(tmp_path / "shards"), out, None, "webdataset",
                               run_id="crash"))
    df = read_scores(result.uri)
    assert_once(df, {f"{shards[i // 9]}#{r[KEY]}": shards[i // 9] for i, r in enumerate(records)})
    kept = df.merge(partial, on=["image_id", "method"], suffixes=("", "_before"))
    assert len(kept) == len(partial) and (kept["attempt"] == 0).all()  # not recomputed
    assert result.summary["images_missing"] == 0 and result.summary["units_unread"] == 0


def test_truncated_shard_is_reported_then_reread_by_retry_errors(s3_bucket: tuple[str, dict],
                                                                  ) -> None:
    bucket, options = s3_bucket
    records = sample_records(24)
    shards = write_webdataset(f"{bucket}/shards", records, 8, options)
    whole = iqa_io.read_bytes(shards[1], options)
    truncate_object(shards[1], 0.55, options)
    cfg = corpus_config(f"{bucket}/shards", f"{bucket}/out", options, "webdataset")
    first = run(cfg)
    summary = first.summary
    assert summary["units_failed"] == 1 and first.infra_failures >= 1  # exit status 3
    failure = summary["unit_failures"][0]
    assert failure["source"] == shards[1] and "truncated" in failure["error"]
    read = failure["samples_read"]
    assert 0 < read < 8 and summary["images"] == 16 + read and summary["images_missing"] == 0
    df = read_scores(first.uri, options)
    assert df[df["source"] == shards[1]]["key"].nunique() == read
    # Without --retry-errors a rerun does not read the shard again (and still reports it).
    files = files_in(first.uri, options)
    assert run(cfg).summary["units_failed"] == 1 and files_in(first.uri, options) == files
    # The shard is restored; --retry-errors re-reads it and scores only what was missing.
    iqa_io.write_bytes_atomic(shards[1], whole, options)
    healed = run(cfg.model_copy(update={"retry_errors": True}))
    assert healed.summary["units_failed"] == 0 and healed.infra_failures == 0
    after = read_scores(healed.uri, options)
    assert_once(after, {f"{shards[i // 8]}#{r[KEY]}": shards[i // 8]
                        for i, r in enumerate(records)})
    again = after[after["source"] == shards[1]].drop_duplicates("key")
    assert (again["attempt"] == 0).sum() == read and (again["attempt"] == 1).sum() == 8 - read


def test_large_shard_read_as_byte_ranges_gives_the_same_rows(tmp_path: Path) -> None:
    records = sample_records(30)
    for i, record in enumerate(records):  # a bulky member that is not read: 8 KiB a sample
        record["npy"] = bytes([i % 251]) * 8192
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "big.tar").write_bytes(tar_bytes(records))
    uri = str(tmp_path / "shards")
    whole = read_scores(run(corpus_config(uri, str(tmp_path / "a"), None, "webdataset")).uri)
    split = run(corpus_config(uri, str(tmp_path / "b"), None, "webdataset",
                              input={"split_bytes": 1 << 16}))
    assert split.summary["units"] >= 4
    rows = read_scores(split.uri)
    assert not rows.duplicated(["image_id", "method"]).any()
    columns = ["image_id", "method", "score"]
    pd.testing.assert_frame_equal(
        whole[columns].sort_values(columns[:2]).reset_index(drop=True),
        rows[columns].sort_values(columns[:2]).reset_index(drop=True))


def _filter(bucket: str, options: dict, run_id: str, copy_to: str) -> dict:
    job = FilterJobConfig.model_validate({
        "scores": {"output": f"{bucket}/out", "runs": [run_id], "storage_options": options},
        "rule": {"conditions": [{"method": "qbench_binary", "min": 0.0}]},
        "name": f"keep-{run_id}", "copy_to": copy_to, "shard_samples": 5})
    return run_filter(job).summary


def test_filter_writes_kept_samples_in_the_input_format(s3_bucket: tuple[str, dict]) -> None:
    bucket, options = s3_bucket
    records = sample_records(12)
    shards = write_webdataset(f"{bucket}/shards", records, 5, options)
    write_parquet_tables(f"{bucket}/tables", records, 7, 3, options)
    run(corpus_config(f"{bucket}/shards", f"{bucket}/out", options, "webdataset", run_id="w"))
    run(corpus_config(f"{bucket}/tables", f"{bucket}/out", options, "parquet", run_id="p"))
    copy = _filter(bucket, options, "w", f"{bucket}/kept-wds")["copy"]
    assert copy["written"] == 3 and copy["samples"] == 12 and copy["missing"] == 0
    written = iqa_io.list_files(f"{bucket}/kept-wds", options, (".tar",))
    members: dict[str, bytes] = {}
    for uri in written:  # Python's plain tarfile reads them
        with tarfile.open(fileobj=io.BytesIO(iqa_io.read_bytes(uri, options))) as tar:
            members.update({m.name: tar.extractfile(m).read() for m in tar.getmembers()})
    for record in records:
        for ext, data in record.items():
            assert ext == KEY or members[f"{record[KEY]}.{ext}"] == data
        scores = json.loads(members[f"{record[KEY]}.iqa.json"])
        assert scores["source"] in shards and set(scores["scores"]) == set(METHODS)
    again = _filter(bucket, options, "w", f"{bucket}/kept-wds")["copy"]
    assert again["written"] == 0 and again["skipped"] == 3  # a rerun writes nothing new
    copy = _filter(bucket, options, "p", f"{bucket}/kept-pq")["copy"]
    assert copy["written"] == 3 and copy["missing"] == 0
    tables = [pq.read_table(io.BytesIO(iqa_io.read_bytes(u, options)))
              for u in iqa_io.list_files(f"{bucket}/kept-pq", options, (".parquet",))]
    kept = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    assert len(kept) == 12 and set(kept["sample_id"]) == {r[KEY] for r in records}
    assert {"image", "caption", "iqa_image_id", "iqa_qalign_levels"} <= set(kept.columns)
    assert _filter(bucket, options, "p", f"{bucket}/kept-pq")["copy"]["written"] == 0
