"""The input of a run, per kind: objects (manifest shards; each image fetched as one object) and
corpora (WebDataset shards or Parquet tables, read unit by unit). Each kind computes its resume
state with Ray tasks, builds the Ray Data plan of what is still to do, and sums the final
counts; the stages after reading (decode, score, write) are the same for every kind."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from iqa_ray import io
from iqa_ray.inputs.corpora import CorpusUnit, plan_corpus_units, units_table
from iqa_ray.inputs.corpus_state import CorpusState, corpus_state, read_index
from iqa_ray.inputs.shards import Shards, build_shards
from iqa_ray.inputs.state import objects_state
from iqa_ray.schema import Col
from iqa_ray.scoring.config import RunConfig
from iqa_ray.scoring.record import RunPaths, summarize
from iqa_ray.scoring.stages import DecodeImages, FetchImages, ScoreImages, write_scores
from iqa_ray.scoring.unit_reader import ReadUnits

_MAX_BLOCKS = 20_000  # manifest blocks handed to Ray Data: enough parallelism, bounded overhead
_FAILURES_LISTED = 20  # unit failures spelled out in run.json (all are counted)


@dataclass(frozen=True)
class Start:
    """What a run starts from: counts for run.json, images to score now (a corpus estimates
    what it has not read yet; 0: unknown), whether anything is to be read, the attempt."""

    counts: dict[str, Any]
    pending: int
    work: bool
    attempt: int


@dataclass
class ObjectsInput:
    """Loose objects: manifest shards of (image_id, uri), then the pending rows per id range."""

    cfg: RunConfig
    paths: RunPaths
    shards: Shards | None = None
    pending: Shards | None = None

    def start(self) -> Start:
        """Build the manifest shards and the pending shards (Ray tasks); the driver holds counts."""
        cfg, opts = self.cfg, self.cfg.output.storage_options
        io.delete_tree(self.paths.state, opts)
        self.shards = build_shards(cfg.input, self.paths.manifest, opts, None,
                                   cfg.input.shard_rows, cfg.input.list_parallelism)
        state = objects_state(self.shards, io.list_parquet(self.paths.scores, opts), _methods(cfg),
                              cfg.retry_errors, opts, io.join(self.paths.state, "pending"))
        self.pending = state.pending
        c = state.counts
        counts = {"images": c.images, "done": c.images - c.pending, "pending": c.pending,
                  "manifest_shards": len(self.shards.uris)}
        return Start(counts, c.pending, c.pending > 0, c.next_attempt)

    def dataset(self, attempt: int, progress: Any = None) -> Any:
        """The lazy Ray Data plan over the pending shards (no shuffle; one output row per file).
        Tasks cut each shard into blocks; the driver holds only refs. ``progress``: the
        counter actor score actors report to."""
        import ray

        assert self.pending is not None, "start() first"
        st = self.cfg.stages
        total = sum(self.pending.rows)
        # Small blocks spread the work over every pool (a stage actor takes whole blocks).
        block_rows = max(st.fetch.batch_size, math.ceil(total / _MAX_BLOCKS))
        split = ray.remote(num_cpus=0.25, max_retries=3)(pending_blocks)
        refs: list[Any] = []
        for uri, n in zip(self.pending.uris, self.pending.rows, strict=True):
            count = math.ceil(n / block_rows)
            out = split.options(num_returns=count).remote(
                uri, self.cfg.output.storage_options, block_rows, count)
            refs.extend([out] if count == 1 else out)
        ds = ray.data.from_arrow_refs(refs)
        ds = ds.map_batches(
            FetchImages, fn_constructor_kwargs={"cfg": self.cfg}, batch_size=st.fetch.batch_size,
            batch_format="numpy", num_cpus=st.fetch.num_cpus,
            compute=ray.data.ActorPoolStrategy(min_size=st.fetch.min_actors,
                                               max_size=st.fetch.max_actors),
        )
        return scoring_stages(ds, self.cfg, self.paths.scores, attempt, progress)

    def summary(self) -> dict[str, Any]:
        """Final counts from the committed rows (Ray tasks per id range)."""
        assert self.shards is not None, "start() first"
        opts = self.cfg.output.storage_options
        state = objects_state(self.shards, io.list_parquet(self.paths.scores, opts),
                              _methods(self.cfg), False, opts, None)
        return summarize(state.counts, _methods(self.cfg), manifest_shards=len(self.shards.uris))


def pending_blocks(shard_uri: str, storage_options: dict[str, Any], block_rows: int,
                   count: int) -> Any:
    """Task: a pending shard's rows as ``count`` blocks of ``block_rows`` rows.

    Blocks are made by small tasks (a quarter CPU: stage actors may hold the rest of a small
    machine), so the driver never holds the URIs.
    """
    table = io.read_parquet(shard_uri, storage_options, [Col.IMAGE_ID, Col.URI])
    blocks = [table.slice(i * block_rows, block_rows) for i in range(count)]
    if sum(b.num_rows for b in blocks) != table.num_rows:
        raise RuntimeError(f"{shard_uri}: {table.num_rows} pending rows, {count} blocks planned")
    return blocks[0] if count == 1 else tuple(blocks)


@dataclass
class CorpusInput:
    """WebDataset shards or Parquet tables: units of work, read by ``ReadUnits``."""

    cfg: RunConfig
    paths: RunPaths
    units: list[CorpusUnit] = field(default_factory=list)
    state: CorpusState | None = None

    def _state(self, done_folder: str | None, retry_errors: bool) -> CorpusState:
        opts = self.cfg.output.storage_options
        return corpus_state(self.units, self.paths.index, io.list_parquet(self.paths.scores, opts),
                            _methods(self.cfg), retry_errors, opts, done_folder,
                            self.cfg.output.rows_per_file)

    def start(self) -> Start:
        """Plan the units (the driver lists files, never samples) and the resume state."""
        opts = self.cfg.output.storage_options
        io.delete_tree(self.paths.state, opts)
        self.units = plan_corpus_units(self.cfg.input)
        io.write_parquet_atomic(io.join(self.paths.manifest, "units.parquet"),
                                units_table(self.units), opts)
        self.state = state = self._state(io.join(self.paths.state, "done"), self.cfg.retry_errors)
        c = state.counts
        counts = {"images_known": c.images, "done": c.images - c.pending,
                  "pending_known": c.pending, "units": state.units,
                  "units_to_read": len(state.to_read), "units_unread": state.units_unread}
        return Start(counts, c.pending + self._unread_estimate(state), bool(state.to_read),
                     c.next_attempt)

    @staticmethod
    def _unread_estimate(state: CorpusState) -> int:
        """Samples in units never read, at the density of those already read (0: unknown)."""
        if not state.read_bytes or not state.unread_bytes:
            return 0
        return int(state.unread_bytes * state.counts.images / state.read_bytes)

    def dataset(self, attempt: int, progress: Any = None) -> Any:
        """One block per unit to read (an actor reads a whole unit per call), then the stages."""
        import ray

        assert self.state is not None, "start() first"
        st = self.cfg.stages
        rows = [{"source": t.unit.source, "size": t.unit.size, "start": t.unit.start,
                 "stop": t.unit.stop, "first_row": t.unit.first_row,
                 "source_index": t.source_index, "has_done": t.has_done, "index": t.index,
                 "index_ok": t.index_ok} for t in self.state.to_read]
        ds = ray.data.from_arrow([pa.Table.from_pylist([r]) for r in rows])
        ds = ds.map_batches(
            ReadUnits, fn_constructor_kwargs={
                "cfg": self.cfg, "index_folder": self.paths.index,
                "done_files": self.state.done_files, "batch_rows": st.fetch.batch_size},
            batch_size=1, batch_format="numpy", num_cpus=st.fetch.num_cpus,
            compute=ray.data.ActorPoolStrategy(min_size=st.fetch.min_actors,
                                               max_size=st.fetch.max_actors),
        )
        return scoring_stages(ds, self.cfg, self.paths.scores, attempt, progress)

    def summary(self) -> dict[str, Any]:
        """Final counts, and the units that could not be read to their end."""
        state = self._state(None, False)
        failures = [{"source": u.source, "start": u.start, "stop": u.stop,
                     "samples_read": f.samples,
                     "error": read_index(self.paths.index, f.name,
                                         self.cfg.output.storage_options)[1]}
                    for u, f in state.failed[:_FAILURES_LISTED]]
        summary = summarize(state.counts, _methods(self.cfg), units=state.units,
                            units_read=state.units_indexed, units_unread=state.units_unread,
                            units_failed=len(state.failed), unit_failures=failures)
        # A unit never read hides an unknown number of samples: the run is not complete.
        summary["images_missing"] += state.units_unread
        return summary


def input_for(cfg: RunConfig, paths: RunPaths) -> ObjectsInput | CorpusInput:
    """The reader of the configured input kind."""
    return CorpusInput(cfg, paths) if cfg.input.is_corpus else ObjectsInput(cfg, paths)


def scoring_stages(ds: Any, cfg: RunConfig, scores_uri: str, attempt: int,
                   progress: Any = None) -> Any:
    """Decode (CPU pool), score (fixed GPU pool, reporting to ``progress``) and write (tasks)
    after any reader."""
    import ray

    st = cfg.stages
    ds = ds.map_batches(
        DecodeImages, fn_constructor_kwargs={"cfg": cfg}, batch_size=st.decode.batch_size,
        batch_format="numpy", num_cpus=st.decode.num_cpus,
        compute=ray.data.ActorPoolStrategy(
            min_size=st.decode.min_actors, max_size=st.decode.max_actors
        ),
    )
    ds = ds.map_batches(
        ScoreImages, fn_constructor_kwargs={"cfg": cfg, "progress": progress},
        batch_size=st.score.batch_size,
        batch_format="numpy", num_cpus=st.score.num_cpus, num_gpus=st.score.num_gpus,
        # A fixed pool: each actor holds a whole model, scaling it up and down costs a reload.
        # Ray Data restarts dead actors and retries their batches by default (max_restarts=-1).
        compute=ray.data.ActorPoolStrategy(size=st.score.max_actors),
    )
    return ds.map_batches(
        write_scores, fn_kwargs={"cfg": cfg, "scores_uri": scores_uri, "attempt": attempt},
        batch_size=cfg.output.rows_per_file, batch_format="pyarrow", num_cpus=0.25,
    )


def _methods(cfg: RunConfig) -> list[str]:
    return [m.name for m in cfg.methods]

