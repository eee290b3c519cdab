"""The pipeline on local Ray with the fake backend.

Counts, errors, resume and the fingerprint guard.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iqa_ray import io as iqa_io
from iqa_ray.errors import ConfigError
from iqa_ray.scoring.pipeline import run
from tests.helpers import assert_reconciled, config, files_in, make_corpus, read_scores

pytestmark = pytest.mark.usefixtures("ray_local")
METHODS = ["qalign_levels", "qbench_binary"]


def test_local_folder_end_to_end(tmp_path: Path) -> None:
    expected = make_corpus(tmp_path / "images", 17)
    cfg = config(str(tmp_path / "images"), str(tmp_path / "out"))
    result = run(cfg)
    df = read_scores(result.uri)
    assert_reconciled(df, set(expected), METHODS)
    for name, code in expected.items():
        rows = df[df["uri"].str.endswith("/" + name)]
        if code is None:
            assert rows["error_code"].isna().all() and rows["score"].notna().all(), name
        else:
            assert (rows["error_code"] == code).all(), (name, rows["error_code"].tolist())
            assert rows["score"].isna().all() and rows["error_message"].str.len().gt(0).all()
    levels = df[df["method"] == "qalign_levels"]["score"].dropna()
    assert levels.between(1, 5).all()
    # Done-ness is data: run.json (with fingerprint and counts) and _SUCCESS written last.
    record = json.loads((Path(result.uri) / "run.json").read_text())
    assert record["status"] == "complete" and record["fingerprint"] == cfg.fingerprint()
    assert record["summary"]["rows_written"] == len(df) == record["summary"]["rows_expected"]
    assert record["summary"]["rows_by_error_code"]["ok"] == 17 * 2
    assert (Path(result.uri) / "_SUCCESS").exists()
    # Files hold whole images and at most rows_per_file images each.
    per_file = df.groupby("image_id")["uri"].count()
    assert (per_file == 2).all()
    assert len(files_in(result.uri)) >= len(expected) // 8


def test_rerun_is_idempotent_and_deterministic(tmp_path: Path) -> None:
    make_corpus(tmp_path / "images", 9)
    cfg = config(str(tmp_path / "images"), str(tmp_path / "out"))
    first = run(cfg)
    before = read_scores(first.uri).sort_values(["image_id", "method"]).reset_index(drop=True)
    files = files_in(first.uri)
    second = run(cfg)
    assert second.uri == first.uri  # same config -> same derived run id -> resume
    assert files_in(second.uri) == files  # nothing pending: nothing written
    assert second.summary["images_missing"] == 0
    # A fresh run id recomputes everything and gets bit-identical scores.
    third = run(config(str(tmp_path / "images"), str(tmp_path / "out"), run_id="again"))
    after = read_scores(third.uri).sort_values(["image_id", "method"]).reset_index(drop=True)
    assert before["score"].equals(after["score"])
    assert before["image_id"].equals(after["image_id"])


def test_changed_prompt_under_same_run_id_is_refused(tmp_path: Path) -> None:
    make_corpus(tmp_path / "images", 3)
    run(config(str(tmp_path / "images"), str(tmp_path / "out"), run_id="fixed"))
    changed = config(
        str(tmp_path / "images"), str(tmp_path / "out"), run_id="fixed",
        methods=[{"method": "qalign_levels", "params": {"question": "Rate this image."}},
                 {"method": "qbench_binary"}],
    )
    with pytest.raises(ConfigError, match="different result-affecting configuration"):
        run(changed)
    # Resources are not result-affecting: a resume with other batch sizes is accepted.
    resized = config(str(tmp_path / "images"), str(tmp_path / "out"), run_id="fixed",
                     model={"backend": "fake", "batch_size": 2})
    assert run(resized).summary["images_missing"] == 0


def test_crash_then_resume_has_no_duplicates_or_gaps(tmp_path: Path) -> None:
    expected = make_corpus(tmp_path / "images", 30)
    out = str(tmp_path / "out")
    # A manifest of several shards (33 images, 10 per shard), as a large corpus would have.
    sharded = {"uri": str(tmp_path / "images"), "shard_rows": 10}
    # Calls past the 4th fail once a score file is committed (each waits up to 3 s for one,
    # then goes on), so partial output exists however the scheduler groups the batches.
    committed = str(tmp_path / "out" / "runs" / "crash" / "scores" / "*.parquet")
    crashing = config(str(tmp_path / "images"), out, run_id="crash", input=sharded,
                      model={"backend": "fake", "options": {
                          "fail_after_batches": 4, "fail_delay_s": 3,
                          "fail_after_glob": committed}})
    with pytest.raises(Exception, match="injected failure"):
        run(crashing)
    run_uri = iqa_io.join(out, "runs", "crash")
    partial = read_scores(run_uri)
    assert 0 < partial["image_id"].nunique() < len(expected), "the crash must leave partial output"
    assert not (Path(run_uri) / "_SUCCESS").exists()
    # Same run id, same result-affecting config (the failure knob is not part of it): resume.
    result = run(config(str(tmp_path / "images"), out, run_id="crash", input=sharded))
    df = read_scores(result.uri)
    assert_reconciled(df, set(expected), METHODS)
    record = json.loads((Path(result.uri) / "run.json").read_text())
    shard_files = list(Path(result.uri, "manifest").iterdir())
    assert record["summary"]["manifest_shards"] == 4 == len(shard_files)
    assert record["counts_at_start"]["pending"] == len(expected) - partial["image_id"].nunique()
    # Rows committed before the crash were kept, not recomputed.
    kept = df.merge(partial, on=["image_id", "method"], suffixes=("", "_before"))
    assert len(kept) == len(partial)
    assert (kept["attempt"] == 0).all() and (df["attempt"].max() == 1)
