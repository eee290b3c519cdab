"""Keep/reject rules on constructed score tables with known answers, reading runs back (latest
attempt, several runs, folder and metadata groups), dry runs, and idempotent copies (local, and
across filesystems)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from iqa_ray import io as iqa_io
from iqa_ray.analysis.filter import (
    REASON,
    REASON_CODE,
    FilterConfig,
    apply_filter,
    copy_kept,
    group_counts,
)
from iqa_ray.analysis.filter_job import FilterJobConfig, run_filter
from iqa_ray.analysis.scores import (
    ScoresConfig,
    add_folder,
    attach_metadata,
    load_scores,
    wide_scores,
)
from iqa_ray.errors import ConfigError
from iqa_ray.inputs.ids import image_id
from tests.helpers import write_score_run

ROOT = "s3://bucket/corpus"


def long_rows(spec: dict[str, dict[str, float | str | None]]) -> list[dict]:
    """{relative path: {method: score, or "!code" for an error}} -> long score rows."""
    rows = []
    for rel, scores in spec.items():
        for method, value in scores.items():
            error = value[1:] if isinstance(value, str) else None
            rows.append(
                {
                    "image_id": image_id(f"{ROOT}/{rel}"),
                    "uri": f"{ROOT}/{rel}",
                    "method": method,
                    "score": None if error else value,
                    "error_code": error,
                    "error_message": f"{error} details" if error else None,
                }
            )
    return rows


def wide(spec: dict[str, dict[str, float | str | None]]) -> pd.DataFrame:
    return add_folder(wide_scores(pd.DataFrame(long_rows(spec))), ROOT)


def names(frame: pd.DataFrame) -> set[str]:
    return {u.removeprefix(ROOT + "/") for u in frame["uri"]}


def by_name(frame: pd.DataFrame, column: str) -> dict[str, object]:
    return frame.set_index(frame["uri"].str.removeprefix(ROOT + "/"))[column].to_dict()


# Two folders; q is the score ranked, t a second method. Hand-computed answers below.
SPEC = {
    "a/1.jpg": {"q": 0.9, "t": 4.0},
    "a/2.jpg": {"q": 0.7, "t": 2.0},
    "a/3.jpg": {"q": 0.6, "t": 5.0},
    "a/4.jpg": {"q": 0.2, "t": 5.0},
    "a/5.jpg": {"q": "!decode_failed", "t": "!decode_failed"},
    "b/1.jpg": {"q": 0.8, "t": 1.0},
    "b/2.jpg": {"q": 0.55, "t": 3.0},
    "b/3.jpg": {"q": 0.4, "t": 3.5},
}


def test_threshold_then_top_k_per_folder_known_answer() -> None:
    rule = FilterConfig(conditions=[{"method": "q", "min": 0.5}], top_k=2, group_by="folder")
    result = apply_filter(wide(SPEC), rule)
    assert names(result.keep) == {"a/1.jpg", "a/2.jpg", "b/1.jpg", "b/2.jpg"}
    assert by_name(result.reject, REASON) == {
        "a/3.jpg": "not in top-2 of group a",
        "a/4.jpg": "below threshold q < 0.5",
        "a/5.jpg": "error:decode_failed in q",
        "b/3.jpg": "below threshold q < 0.5",
    }
    assert by_name(result.keep, "rank") == {"a/1.jpg": 1, "a/2.jpg": 2, "b/1.jpg": 1, "b/2.jpg": 2}
    counts = group_counts(result, "folder").set_index("group")
    assert counts.loc["a"].tolist() == [2, 3, 5] and counts.loc["b"].tolist() == [2, 1, 3]


def test_combine_all_and_any_of_two_methods() -> None:
    conditions = [{"method": "q", "min": 0.5}, {"method": "t", "min": 3.0, "max": 4.5}]
    both = apply_filter(wide(SPEC), FilterConfig(conditions=conditions, combine="all"))
    assert names(both.keep) == {"a/1.jpg", "b/2.jpg"}
    assert (
        by_name(both.reject, REASON)["a/4.jpg"]
        == "below threshold q < 0.5; above threshold t > 4.5"
    )
    either = apply_filter(wide(SPEC), FilterConfig(conditions=conditions, combine="any"))
    assert names(either.keep) == {"a/1.jpg", "a/2.jpg", "a/3.jpg", "b/1.jpg", "b/2.jpg", "b/3.jpg"}


def test_top_fraction_rounds_up_and_ties_break_by_image_id() -> None:
    spec = {f"x/{i}.jpg": {"q": 1.0} for i in range(5)}  # all tied
    result = apply_filter(wide(spec), FilterConfig(top_fraction=0.3, rank_method="q"))
    ids = sorted(image_id(f"{ROOT}/x/{i}.jpg") for i in range(5))
    assert result.keep["image_id"].tolist() == ids[:2]  # ceil(0.3 * 5) = 2, lowest ids win
    assert set(result.reject[REASON]) == {"not in top 0.3 (2) of group (all)"}
    ten = {f"x/{i}.jpg": {"q": float(i)} for i in range(10)}
    best = apply_filter(wide(ten), FilterConfig(top_fraction=0.3, rank_method="q"))
    assert names(best.keep) == {"x/9.jpg", "x/8.jpg", "x/7.jpg"}  # 0.3 * 10 is 3, not 4
    low = apply_filter(wide(SPEC), FilterConfig(top_k=1, rank_method="t", ascending=True))
    assert names(low.keep) == {"b/1.jpg"}


def test_error_and_missing_rows_are_never_kept() -> None:
    spec = {
        "e/1.jpg": {"q": 0.99, "t": "!model_error"},  # error in one method, passes the other
        "e/2.jpg": {"q": 0.98},  # no row at all for t
        "e/3.jpg": {"q": 0.97, "t": 1.0},
    }
    rows = long_rows(spec)
    rows[0]["score"] = 0.99  # an error row that still carries a score is rejected all the same
    frame = add_folder(wide_scores(pd.DataFrame(rows)), ROOT)
    for combine in ("all", "any"):
        rule = FilterConfig(
            conditions=[{"method": "q", "min": 0.5}, {"method": "t"}], combine=combine
        )
        result = apply_filter(frame, rule)
        assert names(result.keep) == {"e/3.jpg"}
        assert names(result.reject) == {"e/1.jpg", "e/2.jpg"}
        assert sorted(result.reject[REASON]) == ["error:model_error in t", "missing score in t"]
        assert sorted(result.reject[REASON_CODE]) == ["error", "missing"]


def test_null_group_values_are_rejected_when_ranking() -> None:
    frame = wide(SPEC)
    meta = pd.DataFrame({"uri": [f"{ROOT}/a/1.jpg", f"{ROOT}/a/2.jpg"], "prompt": ["p1", "p1"]})
    frame = attach_metadata(frame, meta)
    result = apply_filter(frame, FilterConfig(top_k=1, rank_method="q", group_by="prompt"))
    assert names(result.keep) == {"a/1.jpg"}
    assert (result.reject[REASON_CODE] == "group").sum() == 5  # 6 unlabelled, one of them errored


def test_invalid_rules_and_unknown_columns() -> None:
    for bad in (
        {"conditions": [{"method": "q", "min": 2, "max": 1}]},
        {"conditions": [{"method": "q"}], "top_k": 1, "top_fraction": 0.5},
        {},
        {"top_k": 2},
        {"conditions": [{"method": "q", "minimum": 1}]},
    ):
        with pytest.raises(ValueError):
            FilterConfig.model_validate(bad)
    with pytest.raises(ConfigError, match=r"\['zz'\] are not in the scores"):
        apply_filter(wide(SPEC), FilterConfig(conditions=[{"method": "zz"}]))
    with pytest.raises(ConfigError, match="group column"):
        apply_filter(wide(SPEC), FilterConfig(top_k=1, rank_method="q", group_by="prompt"))


def test_runs_read_back_latest_attempt_joined_with_metadata(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    first = [
        {"uri": f"{ROOT}/a/1.jpg", "method": "q", "score": None, "error_code": "model_error"},
        {"uri": f"{ROOT}/b/2.jpg", "method": "q", "score": 0.3},
    ]
    retry = [{"uri": f"{ROOT}/a/1.jpg", "method": "q", "score": 0.8, "attempt": 1}]
    write_score_run(out, "r1", first)
    write_score_run(out, "r1", retry, part="part-1")
    write_score_run(
        out,
        "r2",
        [
            {"uri": f"{ROOT}/a/1.jpg", "method": "q", "score": 0.1},
            {"uri": f"{ROOT}/a/1.jpg", "method": "t", "score": 2.0},
        ],
    )
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"image_id": [image_id(f"{ROOT}/b/2.jpg")], "prompt": ["p9"]}).to_csv(
        meta, index=False
    )
    frame = load_scores(ScoresConfig(output=out, runs=["r1", "r2"], metadata=str(meta)))
    frame = frame.set_index(frame["uri"].str.removeprefix(ROOT + "/"))
    assert frame.loc["a/1.jpg", "r1/q"] == 0.8 and pd.isna(frame.loc["a/1.jpg", "r1/q__error_code"])
    assert frame.loc["a/1.jpg", "r2/q"] == 0.1 and frame.loc["a/1.jpg", "t"] == 2.0
    assert pd.isna(frame.loc["b/2.jpg", "t"])  # not scored by r2: a missing value, not a pass
    assert frame["folder"].to_dict() == {"a/1.jpg": "a", "b/2.jpg": "b"}  # common root: .../corpus
    assert frame.loc["b/2.jpg", "prompt"] == "p9" and pd.isna(frame.loc["a/1.jpg", "prompt"])


def _local_job(tmp_path: Path, **extra: object) -> FilterJobConfig:
    images = tmp_path / "images"
    rows = []
    for rel, score in {"a/1.jpg": 0.9, "a/2.jpg": 0.1, "b/3.jpg": 0.7}.items():
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        (images / rel).write_bytes(b"x" * int(score * 100))
        rows.append({"uri": str(images / rel), "method": "q", "score": score})
    write_score_run(str(tmp_path / "out"), "r", rows)
    scores = {"output": str(tmp_path / "out"), "runs": ["r"]}
    return FilterJobConfig.model_validate(
        {"scores": scores, "rule": {"conditions": [{"method": "q", "min": 0.5}]}, **extra}
    )


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    job = _local_job(tmp_path, copy_to=str(tmp_path / "kept"))
    before = sorted(p for p in tmp_path.rglob("*"))
    outcome = run_filter(job, dry_run=True)
    assert outcome.per_group["kept"].sum() == 2
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert not (tmp_path / "kept").exists() and not (tmp_path / "out" / "filters").exists()


def test_local_copy_is_idempotent_and_recopies_a_short_file(tmp_path: Path) -> None:
    job = _local_job(tmp_path, copy_to=str(tmp_path / "kept"), name="best")
    first = run_filter(job)
    assert first.summary["copy"]["copied"] == 2
    assert sorted(
        p.relative_to(tmp_path / "kept").as_posix() for p in (tmp_path / "kept").rglob("*.jpg")
    ) == ["a/1.jpg", "b/3.jpg"]
    assert run_filter(job).summary["copy"] == {**first.summary["copy"], "copied": 0, "skipped": 2}
    (tmp_path / "kept" / "b" / "3.jpg").write_bytes(b"x")  # a partial copy is redone
    assert run_filter(job).summary["copy"]["copied"] == 1
    assert (tmp_path / "kept" / "b" / "3.jpg").read_bytes() == b"x" * 70
    keep = pd.read_parquet(tmp_path / "out" / "filters" / "best" / "keep.parquet")
    assert len(keep) == 2 and (tmp_path / "out" / "filters" / "best" / "summary.json").exists()


def test_copy_across_filesystems_reads_and_writes_once(tmp_path: Path) -> None:
    job = _local_job(tmp_path)
    keep = run_filter(job, dry_run=True).result.keep
    dest = f"memory://kept-{tmp_path.name}"  # another filesystem than the local source
    first = copy_kept(keep, dest, str(tmp_path / "images"))
    assert (first.copied, first.skipped, first.failed) == (2, 0, 0)
    assert (
        iqa_io.read_bytes(f"{dest}/b/3.jpg") == (tmp_path / "images" / "b" / "3.jpg").read_bytes()
    )
    second = copy_kept(keep, dest, str(tmp_path / "images"))
    assert (second.copied, second.skipped) == (0, 2)
