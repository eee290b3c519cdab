"""Corpus inputs (WebDataset shards, Parquet tables): the input's files, found by prefix, glob,
brace pattern or explicit list, cut into units of work: a whole file, a byte range of a large
``.tar``, or a run of row groups of a large table. The driver holds one small row per unit."""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

import pyarrow as pa

from iqa_ray import io
from iqa_ray.errors import ConfigError
from iqa_ray.inputs.config import InputConfig
from iqa_ray.inputs.webdataset import BLOCK, splittable

SUFFIXES = {"webdataset": (".tar", ".tar.gz", ".tgz"), "parquet": (".parquet", ".pq")}
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
_FOOTER_THREADS = 16


@dataclass(frozen=True)
class CorpusUnit:
    """One unit of work: ``source`` (a shard or table URI of ``size`` bytes) read from
    ``start`` to ``stop``: bytes of a tar, row groups of a table (``stop`` -1: to the end).
    ``first_row``: the table row index of row group ``start`` (row keys count from it)."""

    source: str
    size: int
    start: int
    stop: int
    first_row: int = 0

    @property
    def key(self) -> str:
        """Stable name of the unit (its index file is named after it)."""
        text = f"{self.source}|{self.start}|{self.stop}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def units_table(units: list[CorpusUnit]) -> pa.Table:
    """The units as a table (``manifest/units.parquet`` of the run, for the record)."""
    rows = [asdict(u) | {"unit": u.key} for u in units]
    return pa.Table.from_pylist(rows) if rows else pa.table({"source": pa.array([], pa.string())})


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{a,b}`` alternatives and ``{000..123}`` zero-padded ranges (left to right)."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body, head, tail = match.group(1), pattern[: match.start()], pattern[match.end() :]
    numbers = _RANGE.match(body)
    if numbers:
        first, last = numbers.group(1), numbers.group(2)
        width = len(first) if first.startswith("0") else 0
        step = 1 if int(last) >= int(first) else -1
        items = [f"{n:0{width}d}" for n in range(int(first), int(last) + step, step)]
    else:
        items = body.split(",")
    return [out for item in items for out in expand_braces(head + item + tail)]


def list_sources(cfg: InputConfig) -> dict[str, int]:
    """Every shard or table of the input -> its size in bytes, sorted by URI.

    Raises:
        ConfigError: nothing found, or listed URIs that do not exist.
    """
    wanted = SUFFIXES[cfg.format]
    if cfg.paths is not None or _BRACE.search(cfg.uri or ""):
        uris = list(cfg.paths) if cfg.paths is not None else expand_braces(cfg.uri or "")
        sizes = io.object_sizes(sorted(set(uris)), cfg.storage_options)
        absent = [u for u, n in sizes.items() if n is None]
        if absent:
            raise ConfigError(f"{len(absent)} of {len(sizes)} listed {cfg.format} files do not "
                              f"exist, e.g. {absent[:3]}")
        return {u: int(n or 0) for u, n in sizes.items()}
    where = io.Location.of(cfg.uri or "", cfg.storage_options)
    glob = any(ch in where.path for ch in "*?[")
    if not glob and not where.exists():
        raise ConfigError(f"input {cfg.uri!r} does not exist or is not readable")
    found = where.glob_sizes() if glob else where.find_sizes()
    sources = {where.uri(p): n for p, n in found.items() if p.lower().endswith(wanted)}
    if not sources:
        raise ConfigError(f"no {cfg.format} files ({', '.join(wanted)}) under {cfg.uri!r}")
    return dict(sorted(sources.items()))


def plan_corpus_units(cfg: InputConfig) -> list[CorpusUnit]:
    """The input's units, in source order (large sources cut by ``input.split_bytes``).

    Raises:
        ConfigError: no files, missing listed files, or (parquet) a first table without the
            configured columns.
    """
    sources = list_sources(cfg)
    if cfg.format == "webdataset":
        return [u for uri, size in sources.items() for u in tar_units(uri, size, cfg.split_bytes)]
    check_table_columns(next(iter(sources)), cfg)
    large = [uri for uri, size in sources.items() if size > cfg.split_bytes]
    with ThreadPoolExecutor(_FOOTER_THREADS) as pool:
        metas = dict(zip(large, pool.map(
            lambda u: io.parquet_metadata(u, cfg.storage_options), large), strict=True))
    units = []
    for uri, size in sources.items():
        if uri in metas:
            units += table_units(uri, size, metas[uri], cfg.split_bytes)
        else:
            units.append(CorpusUnit(uri, size, 0, -1))
    return units


def tar_units(uri: str, size: int, split_bytes: int) -> list[CorpusUnit]:
    """Byte ranges of about ``split_bytes`` (512-aligned) for a large plain ``.tar``."""
    if size <= split_bytes or not splittable(uri):
        return [CorpusUnit(uri, size, 0, size)]
    step = max(BLOCK, split_bytes // BLOCK * BLOCK)
    edges = [*range(0, size, step), size]
    if size - edges[-2] < step // 4 and len(edges) > 2:  # no sliver of a range at the end
        edges.pop(-2)
    return [CorpusUnit(uri, size, a, b) for a, b in pairwise(edges)]


def table_units(uri: str, size: int, meta: Any, split_bytes: int) -> list[CorpusUnit]:
    """Runs of whole row groups of about ``split_bytes`` (as stored) for a large table."""
    units, start, first, row, nbytes = [], 0, 0, 0, 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        if nbytes and nbytes + group.total_byte_size > split_bytes:
            units.append(CorpusUnit(uri, size, start, i, first))
            start, first, nbytes = i, row, 0
        nbytes += group.total_byte_size
        row += group.num_rows
    units.append(CorpusUnit(uri, size, start, meta.num_row_groups, first))
    return units


def check_table_columns(uri: str, cfg: InputConfig) -> None:
    """Fail before any task starts when a table lacks a configured column (its first file)."""
    names = set(io.parquet_metadata(uri, cfg.storage_options).schema.to_arrow_schema().names)
    wanted = [cfg.image_column, *([cfg.id_column] if cfg.id_column else []), *cfg.carry]
    absent = [c for c in wanted if c not in names]
    if absent:
        raise ConfigError(f"table {uri!r} has no column(s) {absent} (columns: {sorted(names)}); "
                          "set input.image_column / input.id_column / input.carry")
