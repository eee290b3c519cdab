"""Anchor sets as data: record round trips (folder and moto bucket), validation, label selection."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqa_ray.errors import ConfigError
from iqa_ray.methods.compare2score.anchor_set import (
    Anchor,
    AnchorSet,
    Calibration,
    anchor_file,
    from_record,
    read_anchor_images,
    read_anchor_set,
    sha256_hex,
    to_record,
    validate_anchor_set,
    write_anchor_set,
)
from iqa_ray.methods.compare2score.build import (
    AnchorBuildSpec,
    AnchorRun,
    candidates_from_labels,
    comparison_setup,
)
from iqa_ray.methods.compare2score.maths import anchor_matrix_from_pairs
from tests.helpers import config

CALIBRATION = Calibration(
    "tiny/model", "abc123", "Compare?", "It is", ("w", "x", "y", "z", "v"), 100.0
)


def _image_bytes(k: int, fmt: str) -> bytes:
    rng = np.random.default_rng(k)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def make_set(n: int = 3) -> tuple[AnchorSet, list[bytes]]:
    """n anchors (PNG and JPEG sources), a P_a from random comparisons, labels on some."""
    data = [_image_bytes(k, "PNG" if k % 2 == 0 else "JPEG") for k in range(n)]
    sources = [f"s3://src/img_{k}.{'png' if k % 2 == 0 else 'JPG'}" for k in range(n)]
    anchors = tuple(
        Anchor(str(1000 + k), sources[k], anchor_file(k, sources[k]), sha256_hex(data[k]),
               mos=10.0 * k if k else None, mos_std=0.5 if k else None)
        for k in range(n)
    )
    comparisons = np.random.default_rng(5).random((n, n))
    comparisons[np.diag_indices(n)] = np.nan
    p_a = anchor_matrix_from_pairs(comparisons)
    return AnchorSet(anchors, p_a, CALIBRATION, {"rule": "test", "alpha": n}, comparisons), data


def _assert_same(got: AnchorSet, want: AnchorSet) -> None:
    assert got.anchors == want.anchors and got.calibration == want.calibration
    assert got.selection == want.selection
    np.testing.assert_array_equal(got.matrix, want.matrix)  # exact: JSON floats round-trip
    np.testing.assert_array_equal(got.comparisons, want.comparisons)  # NaN diagonal kept


def test_anchor_file_keeps_the_extension() -> None:
    assert anchor_file(0, "s3://b/x/a.JPEG") == "images/0.jpeg"
    assert anchor_file(3, "file:///data/noext") == "images/3.jpg"


def test_round_trip_through_a_folder(tmp_path: Path) -> None:
    anchor_set, data = make_set()
    uri = str(tmp_path / "anchors")
    write_anchor_set(uri, anchor_set, data, None)
    assert sorted(p.name for p in (tmp_path / "anchors" / "images").iterdir()) == [
        "0.png", "1.jpg", "2.png"]
    record = json.loads((tmp_path / "anchors" / "anchors.json").read_text())
    assert record["schema_version"] == 1 and record["comparisons"][0][0] is None
    assert record["calibration"]["model_id"] == "tiny/model"
    assert record["anchors"][1]["mos"] == 10.0 and record["anchors"][0]["mos"] is None
    loaded = read_anchor_set(uri, None)
    _assert_same(loaded, anchor_set)
    assert read_anchor_images(uri, loaded, None) == data
    assert loaded.anchors[0].key == f"anchor-{sha256_hex(data[0])[:16]}"


def test_round_trip_through_a_bucket(s3_bucket: tuple[str, dict]) -> None:
    bucket, options = s3_bucket
    anchor_set, data = make_set(2)  # each request costs a fresh S3 client with moto
    uri = f"{bucket}/anchors/set-a"
    write_anchor_set(uri, anchor_set, data, options)
    loaded = read_anchor_set(uri, options)
    _assert_same(loaded, anchor_set)
    assert read_anchor_images(uri, loaded, options) == data


def test_validation_rejects_bad_matrices() -> None:
    anchor_set, _ = make_set()
    with pytest.raises(ConfigError, match="must be 3x3"):
        validate_anchor_set(replace(anchor_set, matrix=np.full((2, 2), 0.5)))
    skewed = anchor_set.matrix.copy()
    skewed[0, 1] += 0.1
    with pytest.raises(ConfigError, match="not antisymmetric"):
        validate_anchor_set(replace(anchor_set, matrix=skewed))
    diagonal = anchor_set.matrix.copy()
    diagonal[1, 1] = 0.4
    with pytest.raises(ConfigError, match="diagonal"):
        validate_anchor_set(replace(anchor_set, matrix=diagonal))
    with pytest.raises(ConfigError, match="probabilities"):
        validate_anchor_set(replace(anchor_set, matrix=np.full((3, 3), np.nan)))
    renamed = (replace(anchor_set.anchors[0], file="images/7.png"), *anchor_set.anchors[1:])
    with pytest.raises(ConfigError, match="images/0"):
        validate_anchor_set(replace(anchor_set, anchors=renamed))


def test_validation_rejects_bad_records_and_files(tmp_path: Path) -> None:
    anchor_set, data = make_set()
    with pytest.raises(ConfigError, match="schema_version"):
        from_record({**to_record(anchor_set), "schema_version": 99})
    with pytest.raises(ConfigError, match="malformed"):
        from_record({k: v for k, v in to_record(anchor_set).items() if k != "calibration"})
    with pytest.raises(ConfigError, match="do not match"):
        write_anchor_set(str(tmp_path / "bad"), anchor_set, [data[1], data[0], data[2]], None)
    assert not (tmp_path / "bad" / "anchors.json").exists()
    with pytest.raises(ConfigError, match="no anchor set"):
        read_anchor_set(str(tmp_path / "nothing"), None)
    uri = str(tmp_path / "anchors")
    write_anchor_set(uri, anchor_set, data, None)
    (tmp_path / "anchors" / "images" / "1.jpg").write_bytes(b"changed")
    with pytest.raises(ConfigError, match="changed since"):
        read_anchor_images(uri, read_anchor_set(uri, None), None)
    (tmp_path / "anchors" / "images" / "1.jpg").unlink()
    with pytest.raises(ConfigError, match=r"lacks images \['images/1.jpg'\]"):
        read_anchor_set(uri, None)


def test_label_table_selection_known_answer(tmp_path: Path) -> None:
    # MOS 1..5 in five intervals of width 0.8; per interval the smaller std must win, and a
    # NaN std counts as unknown (never preferred).
    rows = [("a", 1.0, 0.9), ("b", 1.5, 0.2), ("c", 2.0, 0.3), ("d", 2.5, 0.1),
            ("e", 3.0, float("nan")), ("f", 3.1, 0.8), ("g", 4.0, 0.5), ("h", 4.3, 0.6),
            ("i", 4.9, 0.4), ("j", 5.0, 0.7)]
    table = "uri,mos,mos_std\n" + "\n".join(f"file:///x/{u}.png,{m},{s}" for u, m, s in rows)
    (tmp_path / "labels.csv").write_text(table.replace("nan", ""))
    anchors, selection = candidates_from_labels(str(tmp_path / "labels.csv"), None, 5)
    assert [a.source_uri.rsplit("/", 1)[-1] for a in anchors] == [
        "b.png", "d.png", "f.png", "g.png", "i.png"]
    assert [a.mos for a in anchors] == [1.5, 2.5, 3.1, 4.0, 4.9]
    assert selection["rule"] == "mos_intervals" and selection["candidates"] == 10
    (tmp_path / "bad.csv").write_text("path,mos\nx,1\n")
    with pytest.raises(ConfigError, match="lacks columns"):
        candidates_from_labels(str(tmp_path / "bad.csv"), None, 5)


def test_comparison_setup_follows_the_config_method() -> None:
    cfg = config("/in", "/out", methods=[
        {"method": "qbench_binary"},
        {"method": "compare2score", "name": "c2s", "params": {
            "anchors": "s3://b/anchors", "temperature": 10.0,
            "anchor_storage_options": {"anon": False}}},
    ])
    run = AnchorRun.of(cfg)
    params, uri, options = comparison_setup(run, AnchorBuildSpec())
    assert (uri, params.temperature, options) == ("s3://b/anchors", 10.0, {"anon": False})
    assert comparison_setup(run, AnchorBuildSpec(output="/elsewhere"))[1] == "/elsewhere"
    with pytest.raises(ConfigError, match="no compare2score method labelled"):
        comparison_setup(run, AnchorBuildSpec(method="other"))
    plain_run = AnchorRun.of(config("/in", "/out"))
    with pytest.raises(ConfigError, match="--output"):
        comparison_setup(plain_run, AnchorBuildSpec())
    assert comparison_setup(plain_run, AnchorBuildSpec(output="/a"))[0].temperature == 100.0
