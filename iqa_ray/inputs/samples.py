"""The samples of one corpus unit as rows: a stable id, the sample key, the image bytes or the
sample's own error, and the carried members or columns. A shard or table that cannot be read
to the end of the unit raises :class:`UnitReadError` after the samples read before the fault."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from iqa_ray import io
from iqa_ray.errors import RowError
from iqa_ray.inputs.config import InputConfig
from iqa_ray.inputs.corpora import CorpusUnit
from iqa_ray.inputs.ids import image_id
from iqa_ray.inputs.webdataset import TarFormatError, iter_samples, open_archive, splittable
from iqa_ray.schema import ErrorCode

_TABLE_BATCH = 256  # rows per Arrow batch read from a row group (bounds a reader's memory)
_NO_STOP = 1 << 62  # a compressed shard is one unit: read it to its end


class UnitReadError(Exception):
    """A shard or table could not be read to the end of its unit (truncated, corrupt,
    unreadable); samples after the fault are unknown."""


@dataclass(frozen=True)
class ReadLimits:
    """How hard to try a read, and the largest image accepted (``image.max_bytes``)."""

    attempts: int = 5
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0
    max_bytes: int | None = None


@dataclass(frozen=True)
class SampleRow:
    """One sample: ``code`` is "" when its image bytes are there to decode."""

    image_id: int
    key: str
    data: bytes
    code: str
    message: str
    carry: dict[str, str | None]


def sample_uri(source: str, key: str) -> str:
    """The ``uri`` of a sample: its shard or table URI, ``#``, its key."""
    return f"{source}#{key}"


def unit_samples(unit: CorpusUnit, cfg: InputConfig, limits: ReadLimits) -> Iterator[SampleRow]:
    """Every sample of ``unit``, in file order.

    Raises:
        UnitReadError: the file could not be read on (the samples before it were yielded).
    """
    stream = io.open_stream(unit.source, cfg.storage_options, size=unit.size,
                            attempts=limits.attempts, base_delay_s=limits.base_delay_s,
                            max_delay_s=limits.max_delay_s)
    try:
        rows = _tar_rows if cfg.format == "webdataset" else _table_rows
        yield from rows(stream, unit, cfg, limits)
    except (TarFormatError, RowError, EOFError, OSError, ValueError, pa.ArrowException) as exc:
        raise UnitReadError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        stream.close()


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return json.dumps(value, default=str, sort_keys=True)


def _checked(image: int, key: str, data: bytes, limits: ReadLimits,
             carry: dict[str, str | None]) -> SampleRow:
    if limits.max_bytes is not None and len(data) > limits.max_bytes:
        return SampleRow(image, key, b"", str(ErrorCode.TOO_LARGE),
                         f"{len(data)} bytes > max_bytes {limits.max_bytes}", carry)
    return SampleRow(image, key, data, "", "", carry)


def _tar_rows(stream: Any, unit: CorpusUnit, cfg: InputConfig,
              limits: ReadLimits) -> Iterator[SampleRow]:
    images, carried = cfg.wanted_suffixes, set(cfg.carry)

    def want(ext: str) -> bool:
        return f".{ext.lower()}" in images or ext in carried

    stop = unit.stop if splittable(unit.source) else _NO_STOP
    archive = open_archive(stream, unit.source)
    for sample in iter_samples(archive, unit.start, stop, unit.size, want):
        uri = sample_uri(unit.source, sample.key)
        carry = {name: _text(sample.members.get(name)) for name in cfg.carry}
        ext = next((e for e in sample.members if f".{e.lower()}" in images), None)
        if ext is None:
            yield SampleRow(image_id(uri), sample.key, b"", str(ErrorCode.NOT_FOUND),
                            f"sample has no member with an image extension {list(images)}",
                            carry)
            continue
        yield _checked(image_id(uri), sample.key, sample.members[ext], limits, carry)


def _table_rows(stream: Any, unit: CorpusUnit, cfg: InputConfig,
                limits: ReadLimits) -> Iterator[SampleRow]:
    reader = pq.ParquetFile(stream)
    stop = reader.metadata.num_row_groups if unit.stop < 0 else unit.stop
    columns = list(dict.fromkeys([cfg.image_column, *filter(None, [cfg.id_column]), *cfg.carry]))
    row = unit.first_row
    for group in range(unit.start, stop):
        for batch in reader.iter_batches(batch_size=_TABLE_BATCH, row_groups=[group],
                                         columns=columns):
            yield from _batch_rows(batch, unit.source, row, cfg, limits)
            row += batch.num_rows


def _batch_rows(batch: pa.RecordBatch, source: str, first: int, cfg: InputConfig,
                limits: ReadLimits) -> Iterator[SampleRow]:
    column = batch.column(batch.schema.get_field_index(cfg.image_column))
    paths: list[Any] = [None] * batch.num_rows
    if pa.types.is_struct(column.type):
        names = [column.type.field(i).name for i in range(column.type.num_fields)]
        if "path" in names:
            paths = pc.struct_field(column, "path").to_pylist()
        column = pc.struct_field(column, "bytes") if "bytes" in names else pa.nulls(len(column))
    data = column.to_pylist()
    ids = batch.column(cfg.id_column).to_pylist() if cfg.id_column else [None] * len(data)
    carried = {name: batch.column(name).to_pylist() for name in cfg.carry}
    for i, value in enumerate(data):
        carry = {name: _text(values[i]) for name, values in carried.items()}
        if ids[i] is not None:  # an id column: the id's text is the identity
            key = str(ids[i])
            image = image_id(key)
        else:  # the row index in its file (also for a null id)
            key = str(first + i)
            image = image_id(sample_uri(source, key))
        if value is None:
            code, message = ((ErrorCode.NOT_FOUND, f"no image bytes, only a path: {paths[i]}")
                             if paths[i] else (ErrorCode.EMPTY_FILE, "image column is null"))
            yield SampleRow(image, key, b"", str(code), message, carry)
            continue
        yield _checked(image, key, bytes(value), limits, carry)
