"""The read stage of corpus runs (``ReadUnits``): one unit (a shard, a byte range of one, or row
groups of a table) per call, streamed, its samples yielded in batches for the decode stage."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from iqa_ray.inputs.corpora import CorpusUnit
from iqa_ray.inputs.corpus_state import read_index, source_done_ids, write_index
from iqa_ray.inputs.samples import ReadLimits, SampleRow, UnitReadError, sample_uri, unit_samples
from iqa_ray.schema import Batch, Col, carry_column
from iqa_ray.scoring.config import RunConfig
from iqa_ray.scoring.stages import object_array

logger = logging.getLogger(__name__)
UNIT_COLUMNS = ("source", "size", "start", "stop", "first_row", "source_index", "has_done",
                "index", "index_ok")


class ReadUnits:
    """CPU stage: read each unit of a batch and yield its not-done samples, ``batch_rows`` at a
    time, as (image_id, uri, source, key, bytes, error) rows plus carried columns.

    A sample's own problem (no image member, too large) is its error row; a unit that cannot be
    read to its end keeps the samples read before the fault and records the failure in its
    index, which the driver reports (run.json, exit status) and ``--retry-errors`` re-reads.
    """

    def __init__(self, cfg: RunConfig, index_folder: str, done_files: list[str],
                 batch_rows: int) -> None:
        self._cfg = cfg
        self._index = index_folder
        self._done_files = done_files
        self._batch_rows = batch_rows
        self._opts = cfg.output.storage_options
        self._limits = ReadLimits(cfg.retry.attempts, cfg.retry.base_delay_s,
                                  cfg.retry.max_delay_s, cfg.image.max_bytes)

    def __call__(self, batch: Batch) -> Iterator[Batch]:
        for i in range(len(batch["source"])):
            row = {name: batch[name][i] for name in UNIT_COLUMNS}
            unit = CorpusUnit(str(row["source"]), int(row["size"]), int(row["start"]),
                              int(row["stop"]), int(row["first_row"]))
            done = (source_done_ids(self._done_files, int(row["source_index"]), self._opts)
                    if row["has_done"] else np.array([], np.int64))
            if self._nothing_left(str(row["index"]), bool(row["index_ok"]), done):
                continue
            yield from self._read(unit, done, str(row["index"]))

    def _nothing_left(self, index: str, index_ok: bool, done: np.ndarray) -> bool:
        """A unit already read whose every sample is done (its source was not)."""
        if not index or not len(done) or (not index_ok and self._cfg.retry_errors):
            return False
        ids, _ = read_index(self._index, index, self._opts)
        return bool(np.isin(ids, done).all())

    def _read(self, unit: CorpusUnit, done: np.ndarray, previous: str) -> Iterator[Batch]:
        skip = set(done.tolist())
        seen: set[int] = set()
        rows: list[SampleRow] = []
        error = None
        try:
            for sample in unit_samples(unit, self._cfg.input, self._limits):
                if sample.image_id in seen:
                    logger.warning("%s: sample %r repeats an id already read; skipped",
                                   unit.source, sample.key)
                    continue
                seen.add(sample.image_id)
                if sample.image_id in skip:
                    continue
                rows.append(sample)
                if len(rows) >= self._batch_rows:
                    yield self._batch(unit.source, rows)
                    rows = []
        except UnitReadError as exc:
            error = str(exc)
        except Exception as exc:  # the per-unit boundary: the run goes on, the failure is kept
            error = f"{type(exc).__name__}: {exc}"
        if error is not None:
            logger.warning("%s [%d, %d): %s", unit.source, unit.start, unit.stop, error)
        if rows:
            yield self._batch(unit.source, rows)
        write_index(self._index, unit.key, np.fromiter(seen, np.int64, len(seen)), error,
                    self._opts, previous)

    def _batch(self, source: str, rows: list[SampleRow]) -> Batch:
        out: dict[str, Any] = {
            Col.IMAGE_ID: np.array([r.image_id for r in rows], dtype=np.int64),
            Col.URI: object_array([sample_uri(source, r.key) for r in rows]),
            Col.SOURCE: object_array([source] * len(rows)),
            Col.KEY: object_array([r.key for r in rows]),
            Col.BYTES: object_array([r.data for r in rows]),
            Col.ERROR_CODE: object_array([r.code for r in rows]),
            Col.ERROR_MESSAGE: object_array([r.message for r in rows]),
        }
        for name in self._cfg.input.carry:  # "" between stages (all-null columns do not survive)
            out[carry_column(name)] = object_array([r.carry.get(name) or "" for r in rows])
        return out
