"""Output tables: the per-image wide rows between stages and the long score table in the bucket.

The score table has one row per (image_id, method): ``score`` (null on failure), ``status``
(``ok`` or ``error``, :func:`iqa_ray.schema.row_status`), the error columns, ``attempt``, the
original size, and each method's extra columns (null for the rows of other methods). Its
schema is fixed by the run's methods, so every file of a run agrees. A corpus input
(WebDataset, Parquet) adds ``source``, ``key`` and any carried ``carry_<name>`` columns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from iqa_ray.schema import CARRY_PREFIX, Batch, Col, carry_column, row_status

if TYPE_CHECKING:
    from iqa_ray.inputs.config import InputConfig
    from iqa_ray.methods import MethodResult, ScoringMethod

_PER_IMAGE = (Col.IMAGE_ID, Col.URI, Col.WIDTH, Col.HEIGHT)
_BASE_FIELDS = [
    pa.field(Col.IMAGE_ID, pa.int64(), nullable=False),
    pa.field(Col.URI, pa.string()),
    pa.field(Col.METHOD, pa.string()),
    pa.field(Col.SCORE, pa.float64()),
    pa.field(Col.STATUS, pa.string()),
    pa.field(Col.ERROR_CODE, pa.string()),
    pa.field(Col.ERROR_MESSAGE, pa.string()),
    pa.field(Col.ATTEMPT, pa.int32()),
    pa.field(Col.WIDTH, pa.int32()),
    pa.field(Col.HEIGHT, pa.int32()),
]


def input_fields(cfg: InputConfig) -> list[pa.Field]:
    """Per-image columns the input adds (none for objects: their tables keep the 0.2 layout)."""
    if not cfg.is_corpus:
        return []
    return [pa.field(Col.SOURCE, pa.string()), pa.field(Col.KEY, pa.string()),
            *(pa.field(carry_column(n), pa.string()) for n in cfg.carry)]


def _sep(label: str, column: str) -> str:
    return f"{label}::{column}"


def extra_fields(
    methods: Sequence[tuple[str, type[ScoringMethod] | ScoringMethod]],
) -> list[pa.Field]:
    """Union of the methods' extra columns; one name must keep one type across methods."""
    fields: dict[str, pa.DataType] = {}
    for _, method in methods:
        for name, dtype in method.extra_columns.items():
            if fields.setdefault(name, dtype) != dtype:
                raise ValueError(f"extra column {name!r} declared with two types")
    return [pa.field(n, t) for n, t in fields.items()]


def long_schema(methods: Sequence[tuple[str, type[ScoringMethod] | ScoringMethod]],
                inputs: Sequence[pa.Field] = ()) -> pa.Schema:
    """Schema of the score table of a run with these (label, method) pairs (``inputs``: see
    :func:`input_fields`)."""
    return pa.schema(_BASE_FIELDS + list(inputs) + extra_fields(methods))


def wide_schema(methods: Sequence[tuple[str, ScoringMethod]],
                inputs: Sequence[pa.Field] = ()) -> pa.Schema:
    """Schema of the score stage's output: one row per image, columns per method."""
    long_only = (Col.METHOD, Col.SCORE, Col.STATUS, Col.ATTEMPT)
    fields = [f for f in _BASE_FIELDS if f.name not in long_only]
    fields += list(inputs)
    for label, method in methods:
        fields += [
            pa.field(_sep(label, Col.SCORE), pa.float64()),
            pa.field(_sep(label, Col.ERROR_CODE), pa.string()),
            pa.field(_sep(label, Col.ERROR_MESSAGE), pa.string()),
        ]
        fields += [pa.field(_sep(label, n), t) for n, t in method.extra_columns.items()]
    return pa.schema(fields)


def error_code_columns(wide: pa.Schema) -> list[str]:
    """The per-method error code columns of a wide (score stage) schema."""
    return [name for name in wide.names if name.endswith(_sep("", Col.ERROR_CODE))]


def wide_table(
    batch: Batch, ok: list[int], results: dict[str, MethodResult], schema: pa.Schema
) -> pa.Table:
    """Assemble the score stage's rows: upstream errors are repeated under every method."""
    n = len(batch[Col.IMAGE_ID])
    data: dict[str, list[Any]] = {
        Col.IMAGE_ID: [int(v) for v in batch[Col.IMAGE_ID]],
        Col.URI: [str(v) for v in batch[Col.URI]],
        Col.WIDTH: [int(v) for v in batch[Col.WIDTH]],
        Col.HEIGHT: [int(v) for v in batch[Col.HEIGHT]],
        # Between stages "" means "no error"; in the output it becomes null.
        Col.ERROR_CODE: [str(v) or None for v in batch[Col.ERROR_CODE]],
        Col.ERROR_MESSAGE: [str(v) or None for v in batch[Col.ERROR_MESSAGE]],
    }
    for field in schema:  # the input's per-image columns ("" between stages: absent)
        if _is_input(field.name):
            data[field.name] = [str(v) or None for v in batch[field.name]]
    position = {row: k for k, row in enumerate(ok)}
    for label, result in results.items():
        for column, values in result.columns.items():
            data[_sep(label, column)] = [
                values[position[i]] if i in position else None for i in range(n)
            ]
        codes, messages = [], []
        for i in range(n):
            err = result.errors[position[i]] if i in position else None
            codes.append(str(err.code) if err else data[Col.ERROR_CODE][i])
            messages.append(err.message if err else data[Col.ERROR_MESSAGE][i])
        data[_sep(label, Col.ERROR_CODE)] = codes
        data[_sep(label, Col.ERROR_MESSAGE)] = messages
    return pa.table({f.name: pa.array(data[f.name], f.type) for f in schema}, schema=schema)


def long_table(wide: pa.Table, labels: Sequence[str], attempt: int, schema: pa.Schema) -> pa.Table:
    """Explode wide rows into one row per (image, method), sorted by (image_id, method)."""
    parts = []
    n = wide.num_rows
    for label in labels:
        columns: dict[str, pa.Array] = {}
        for field in schema:
            name = field.name
            if name == Col.METHOD:
                columns[name] = pa.array([label] * n, pa.string())
            elif name == Col.ATTEMPT:
                columns[name] = pa.array(np.full(n, attempt, dtype=np.int32))
            elif name in _PER_IMAGE or _is_input(name):
                columns[name] = wide.column(name).cast(field.type)
            elif name == Col.STATUS:
                codes = wide.column(_sep(label, Col.ERROR_CODE)).to_pylist()
                columns[name] = pa.array([str(row_status(c)) for c in codes], pa.string())
            elif _sep(label, name) in wide.column_names:
                columns[name] = wide.column(_sep(label, name)).cast(field.type)
            else:
                columns[name] = pa.nulls(n, field.type)
        parts.append(pa.table(columns, schema=schema))
    table = pa.concat_tables(parts)
    order = pc.sort_indices(
        table, sort_keys=[(Col.IMAGE_ID, "ascending"), (Col.METHOD, "ascending")]
    )
    return table.take(order)


def _is_input(name: str) -> bool:
    """A per-image column added by a corpus input (see :func:`input_fields`)."""
    return name in (Col.SOURCE, Col.KEY) or name.startswith(CARRY_PREFIX)


def part_name(image_ids: np.ndarray, attempt: int) -> str:
    """File name from the content's keys: the same images and attempt give the same name."""
    ids = np.sort(np.asarray(image_ids, dtype=np.int64))
    digest = hashlib.sha256(ids.tobytes() + attempt.to_bytes(4, "big")).hexdigest()[:20]
    return f"part-{digest}.parquet"
