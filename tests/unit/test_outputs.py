"""The wide (per image) and long (per image x method) score tables, and output file names."""

from __future__ import annotations

import re
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pytest

from iqa_ray.errors import RowError
from iqa_ray.methods import MethodResult, ScoringMethod, get_method
from iqa_ray.schema import Col, ErrorCode
from iqa_ray.scoring import outputs

LABELS = ["qbench_binary", "qalign_levels"]  # config order, deliberately not sorted


def _methods() -> list[tuple[str, ScoringMethod]]:
    return [(label, get_method(label)({})) for label in LABELS]


def _batch() -> dict[str, np.ndarray]:
    """Four images; image 30 failed upstream (decode), the rest reach the model."""
    return {
        Col.IMAGE_ID: np.array([40, 10, 30, 20], dtype=np.int64),
        Col.URI: np.array(["s3://b/d", "s3://b/a", "s3://b/c", "s3://b/b"], dtype=object),
        Col.WIDTH: np.array([64, 32, 0, 16], dtype=np.int32),
        Col.HEIGHT: np.array([48, 24, 0, 12], dtype=np.int32),
        Col.ERROR_CODE: np.array(["", "", "decode_failed", ""], dtype=object),
        Col.ERROR_MESSAGE: np.array(["", "", "cannot identify image", ""], dtype=object),
    }


def _results() -> dict[str, MethodResult]:
    """Per-method results for the 3 good rows (batch rows 0, 1, 3); one model error on row 3."""
    unparsable = RowError(ErrorCode.MODEL_ERROR, "CUDA error on this request")
    return {
        "qbench_binary": MethodResult(
            columns={"score": [0.9, 0.1, None], "word_logits": [[1.0, 0.0], [0.0, 2.0], None]},
            errors=[None, None, unparsable],
        ),
        "qalign_levels": MethodResult(
            columns={"score": [4.5, 1.5, 3.0], "level_probs": [[0.5] * 5, [0.1] * 5, [0.2] * 5]},
            errors=[None, None, None],
        ),
    }


@pytest.fixture
def long() -> pa.Table:
    methods = _methods()
    wide = outputs.wide_table(_batch(), [0, 1, 3], _results(), outputs.wide_schema(methods))
    return outputs.long_table(wide, LABELS, attempt=2, schema=outputs.long_schema(methods))


def _row(table: pa.Table, image_id: int, method: str) -> dict[str, object]:
    rows = [
        r for r in table.to_pylist() if r[Col.IMAGE_ID] == image_id and r[Col.METHOD] == method
    ]
    assert len(rows) == 1
    return rows[0]


def test_one_row_per_image_and_method_sorted(long: pa.Table) -> None:
    assert long.num_rows == 4 * len(LABELS)
    pairs = list(
        zip(
            long.column(Col.IMAGE_ID).to_pylist(),
            long.column(Col.METHOD).to_pylist(),
            strict=True,
        )
    )
    assert pairs == sorted(pairs)
    assert set(pairs) == {(i, m) for i in (10, 20, 30, 40) for m in LABELS}
    assert set(long.column(Col.ATTEMPT).to_pylist()) == {2}
    assert long.schema.equals(outputs.long_schema(_methods()))


def test_values_follow_their_image(long: pa.Table) -> None:
    row = _row(long, 40, "qalign_levels")
    assert row[Col.URI] == "s3://b/d" and (row[Col.WIDTH], row[Col.HEIGHT]) == (64, 48)
    assert row[Col.SCORE] == 4.5 and row["level_probs"] == [0.5] * 5
    assert _row(long, 10, "qbench_binary")[Col.SCORE] == 0.1
    assert _row(long, 10, "qbench_binary")["word_logits"] == [0.0, 2.0]


def test_upstream_error_repeated_under_every_method(long: pa.Table) -> None:
    for method in LABELS:
        row = _row(long, 30, method)
        assert row[Col.ERROR_CODE] == "decode_failed"
        assert row[Col.ERROR_MESSAGE] == "cannot identify image"
        assert row[Col.SCORE] is None


def test_method_error_stays_with_its_method(long: pa.Table) -> None:
    failed = _row(long, 20, "qbench_binary")
    assert failed[Col.ERROR_CODE] == "model_error" and failed[Col.SCORE] is None
    assert "CUDA" in failed[Col.ERROR_MESSAGE]
    other = _row(long, 20, "qalign_levels")
    assert other[Col.ERROR_CODE] is None and other[Col.ERROR_MESSAGE] is None
    assert other[Col.SCORE] == 3.0


def test_other_methods_extra_columns_are_null(long: pa.Table) -> None:
    for row in long.to_pylist():
        if row[Col.METHOD] == "qalign_levels":
            assert row["word_logits"] is None
        else:
            assert row["level_probs"] is None
    # Success rows: no error columns at all ("" between stages becomes null in the output).
    ok = [r for r in long.to_pylist() if r[Col.IMAGE_ID] in (10, 40)]
    assert all(r[Col.ERROR_CODE] is None and r[Col.ERROR_MESSAGE] is None for r in ok)


def test_part_name_deterministic_and_order_independent() -> None:
    ids = np.array([5, 3, 9, 1], dtype=np.int64)
    name = outputs.part_name(ids, 0)
    assert re.fullmatch(r"part-[0-9a-f]{20}\.parquet", name)
    assert outputs.part_name(ids, 0) == name
    assert outputs.part_name(ids[::-1].copy(), 0) == name
    assert outputs.part_name(np.array([1, 3, 5, 9], dtype=np.int32), 0) == name
    assert outputs.part_name(ids, 1) != name
    assert outputs.part_name(ids[:3], 0) != name


class _FloatExtra(ScoringMethod):
    extra_columns: ClassVar[dict[str, pa.DataType]] = {"shared": pa.float64(), "a": pa.int32()}


class _StringExtra(ScoringMethod):
    extra_columns: ClassVar[dict[str, pa.DataType]] = {"shared": pa.string()}


class _SameExtra(ScoringMethod):
    extra_columns: ClassVar[dict[str, pa.DataType]] = {"shared": pa.float64()}


def test_long_schema_rejects_conflicting_extra_columns() -> None:
    with pytest.raises(ValueError, match="'shared' declared with two types"):
        outputs.long_schema([("x", _FloatExtra), ("y", _StringExtra)])


def test_long_schema_merges_compatible_extra_columns() -> None:
    schema = outputs.long_schema([("x", _FloatExtra), ("y", _SameExtra)])
    assert schema.field("shared").type == pa.float64()
    assert schema.field("a").type == pa.int32()
    assert schema.names.count("shared") == 1
    assert {Col.IMAGE_ID, Col.METHOD, Col.SCORE, Col.ERROR_CODE, Col.ATTEMPT} <= set(schema.names)


def test_status_column_says_ok_exactly_when_there_is_no_error_code(long: pa.Table) -> None:
    rows = long.to_pylist()
    assert {r[Col.STATUS] for r in rows} == {"ok", "error"}
    for r in rows:
        assert r[Col.STATUS] == ("error" if r[Col.ERROR_CODE] else "ok"), r
        assert (r[Col.STATUS] == "ok") == (r[Col.SCORE] is not None), r
