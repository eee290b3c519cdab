"""Label readers (CSV, JSON list, JSON Lines, back-to-back JSON) and label-to-score matching."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iqa_ray.analysis.labels import match_labels, parse_json_stream, read_labels, read_labels_file
from iqa_ray.errors import ConfigError

QBENCH = Path(__file__).resolve().parents[2] / ".." / "shared" / "eval" / "qbench_a3"


@pytest.mark.parametrize(
    ("header", "key_source", "mos_source"),
    [
        ("image,mos", "image", "mos"),
        ("img_path,gt_score", "img_path", "gt_score"),
        ("Image name,MOS", "Image name", "MOS"),  # SPAQ-style header
        ("image_name,c1,MOS,SD", "image_name", "MOS"),  # KonIQ-style header
        ("dist_img,ref_img,dmos,var", "dist_img", "dmos"),  # KADID-style header
        ("filename,score", "filename", "score"),
        ("uri,MOS", "uri", "MOS"),
    ],
)
def test_csv_headers(header: str, key_source: str, mos_source: str) -> None:
    columns = header.split(",")
    rows = [
        [f"dir/{i:05d}.jpg" if c == key_source else f"{i + 0.5}" for c in columns] for i in (1, 2)
    ]
    text = "\n".join([header] + [",".join(r) for r in rows]) + "\n"
    labels = read_labels(text)
    assert list(labels.columns[:2]) == ["key", "mos"]
    assert list(labels["key"]) == ["dir/00001.jpg", "dir/00002.jpg"]  # leading zeros kept
    assert list(labels["mos"]) == [1.5, 2.5]
    assert labels.attrs == {"key_column": key_source, "mos_column": mos_source}
    assert len(labels.columns) == len(columns)


def test_csv_tab_separated_extra_columns_and_missing_mos() -> None:
    labels = read_labels(
        b"\xef\xbb\xbfpath\tmos\tsplit\tstd\na.png\t3.5\ttrain\t0.1\nb.png\t\ttest\t0.2\n"
    )
    assert list(labels["key"]) == ["a.png", "b.png"]
    assert labels["mos"][0] == 3.5 and math.isnan(labels["mos"][1])
    assert list(labels["split"]) == ["train", "test"]
    assert labels["std"].dtype == np.float64


def test_explicit_columns_override_aliases() -> None:
    text = "image,mos,file,quality\na.jpg,1,x/a.jpg,4.5\n"
    labels = read_labels(text, key_column="file", mos_column="quality")
    assert (labels["key"][0], labels["mos"][0]) == ("x/a.jpg", 4.5)
    assert list(labels.columns) == ["key", "mos", "image", "original_mos"]
    with pytest.raises(ConfigError, match="both"):
        read_labels(text, key_column="quality", mos_column="quality")


def test_json_list() -> None:
    text = json.dumps(
        [{"img_path": "a.jpg", "gt_score": 3.1}, {"img_path": "b.jpg", "gt_score": "2"}]
    )
    labels = read_labels(text)
    assert list(labels["key"]) == ["a.jpg", "b.jpg"]
    assert list(labels["mos"]) == [3.1, 2.0]


def test_back_to_back_json_objects() -> None:
    text = (
        '{"img_path": "x.jpg", "gt_score": "0.96", "logit_good": 5.5, "logit_poor": 6.0}'
        '{"img_path": "y.jpg", "gt_score": 1.5, "logit_good": 7.0, "logit_poor": 2.5}\n'
    )
    labels = read_labels(text)
    assert list(labels.columns) == ["key", "mos", "logit_good", "logit_poor"]
    assert list(labels["mos"]) == [0.96, 1.5]
    assert labels["logit_poor"].tolist() == [6.0, 2.5]


def test_json_lines_and_stream_parser() -> None:
    text = '{"path": "a.jpg", "mos": 1}\n\n{"path": "b.jpg", "mos": 2}\n'
    assert list(read_labels(text)["mos"]) == [1.0, 2.0]
    assert parse_json_stream('[{"a": 1}, {"a": 2}]{"a": 3}') == [{"a": 1}, {"a": 2}, {"a": 3}]
    with pytest.raises(ConfigError, match="offset"):
        parse_json_stream('{"a": 1}{"a": ')
    with pytest.raises(ConfigError, match="objects"):
        parse_json_stream("[1, 2]")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image,mos\na.jpg,1\na.jpg,2\n", "duplicate"),
        ("image,mos\na.jpg,good\n", "non-numeric"),
        ("image,mos\n,1\n", "no 'image' value"),
        ("picture,rating\na.jpg,1\n", "no label column"),
        ("image,mos\n", "no rows"),
    ],
)
def test_bad_label_tables(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read_labels(text)


def test_dataframe_input_and_file(tmp_path: Path) -> None:
    frame = pd.DataFrame({"filename": [1, 2], "MOS": [3.0, 4.0]})
    assert list(read_labels(frame)["key"]) == ["1", "2"]
    path = tmp_path / "labels.jsonl"
    path.write_text('{"image": "a.jpg", "mos": 2.5}\n{"image": "b.jpg", "mos": 3.5}\n')
    assert list(read_labels_file(path)["mos"]) == [2.5, 3.5]


def test_qbench_agi_string_scores_parse() -> None:
    path = QBENCH / "qwen-vl" / "agi.json"
    if not path.is_file():
        pytest.skip(f"Q-Bench A3 outputs not found at {QBENCH.resolve()} (shared eval data absent)")
    assert path.read_text()[:200].count('"gt_score": "') >= 1  # strings in the file
    labels = read_labels_file(path)
    assert len(labels) == 2982
    assert labels["mos"].dtype == np.float64 and labels["mos"].notna().all()
    assert {"logit_excellent", "logit_good", "logit_poor"} <= set(labels.columns)
    assert labels["key"][0] == "AttnGAN_normal_000.jpg"
    assert labels["mos"][0] == pytest.approx(0.965602553)


def _scores(uris: list[str]) -> pd.DataFrame:
    # Two score rows (methods) per image, as in the score table.
    return pd.DataFrame(
        {
            "uri": np.repeat(uris, 2),
            "image_id": np.repeat(np.arange(len(uris)), 2),
            "method": ["a", "b"] * len(uris),
            "score": np.linspace(0.0, 1.0, 2 * len(uris)),
        }
    )


def test_match_by_exact_uri_and_suffix() -> None:
    scores = _scores(
        [
            "s3://bucket/prefix/koniq/1.jpg",  # exact
            "s3://bucket/prefix/koniq/2.jpg",  # relative path
            "s3://bucket/prefix/livec/t3.bmp",  # bare filename
            "s3://bucket/prefix/koniq/12.jpg",  # "2.jpg" must not match (different basename)
            "s3://bucket/prefix/xkoniq/4.jpg",  # "koniq/4.jpg" must not match mid-component
        ]
    )
    labels = read_labels(
        "path,mos\ns3://bucket/prefix/koniq/1.jpg,1\nkoniq/2.jpg,2\nt3.bmp,3\n"
        "koniq/4.jpg,4\nunused.jpg,5\n"
    )
    result = match_labels(scores, labels)
    assert (result.n_uris, result.n_exact, result.n_suffix) == (5, 1, 2)
    assert (result.n_unmatched_uris, result.n_unused_labels) == (2, 2)
    assert result.unmatched_examples == (
        "s3://bucket/prefix/koniq/12.jpg",
        "s3://bucket/prefix/xkoniq/4.jpg",
    )
    table = result.table
    assert len(table) == 6  # both method rows of each matched uri
    by_uri = table.drop_duplicates("uri").set_index("uri")
    assert by_uri["mos"].to_dict() == {
        "s3://bucket/prefix/koniq/1.jpg": 1.0,
        "s3://bucket/prefix/koniq/2.jpg": 2.0,
        "s3://bucket/prefix/livec/t3.bmp": 3.0,
    }
    assert by_uri["match"].tolist() == ["exact", "suffix", "suffix"]
    assert by_uri["label_key"].tolist() == [
        "s3://bucket/prefix/koniq/1.jpg",
        "koniq/2.jpg",
        "t3.bmp",
    ]


def test_match_normalises_label_paths() -> None:
    labels = read_labels("path,mos\n./koniq\\1.jpg,1\n/livec/2.jpg,2\n")
    result = match_labels(_scores(["s3://b/koniq/1.jpg", "/data/livec/2.jpg"]), labels)
    assert result.n_suffix == 2


def test_match_ambiguous_label_matches_several_uris() -> None:
    scores = _scores(["s3://b/koniq/1.jpg", "s3://b/spaq/1.jpg"])
    with pytest.raises(ConfigError, match=r"ambiguous.*'1\.jpg'"):
        match_labels(scores, read_labels("image,mos\n1.jpg,3\n"))


def test_match_ambiguous_uri_matches_several_labels() -> None:
    scores = _scores(["s3://b/koniq/1.jpg"])
    with pytest.raises(ConfigError, match=r"ambiguous.*several labels"):
        match_labels(scores, read_labels("image,mos\n1.jpg,3\nkoniq/1.jpg,4\n"))


def test_match_requires_columns() -> None:
    labels = read_labels("image,mos\n1.jpg,3\n")
    with pytest.raises(ValueError, match="image_id"):
        match_labels(pd.DataFrame({"uri": ["s3://b/1.jpg"]}), labels)


def test_match_scales_to_100k_rows() -> None:
    n = 100_000
    uris = [f"s3://bucket/run/{'koniq' if i % 2 else 'spaq'}/{i}.jpg" for i in range(n)]
    keys = [u.split("/", 4)[-1] for u in uris]  # koniq/1.jpg, spaq/2.jpg, ...
    labels = read_labels(pd.DataFrame({"image": keys, "mos": np.arange(n, dtype=float)}))
    scores = pd.DataFrame({"uri": uris, "image_id": np.arange(n)})
    result = match_labels(scores, labels)
    assert result.n_suffix == n
    assert (result.table["mos"].to_numpy() == np.arange(n)).all()
