"""The driver: validate -> run.json -> pending images -> Ray Data plan -> summary -> _SUCCESS."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow.compute as pc

from iqa_ray import io
from iqa_ray.devtools.smoke import SMOKE_WARNING, is_smoke_model
from iqa_ray.errors import ConfigError
from iqa_ray.inputs import done as done_set
from iqa_ray.inputs.shards import Shards, build_shards
from iqa_ray.schema import Col
from iqa_ray.scoring.config import RunConfig
from iqa_ray.scoring.progress import start_progress
from iqa_ray.scoring.record import (
    RunResult,
    check_fingerprint,
    data_digests,
    mark_failed,
    run_paths,
    summarize,
    versions,
)
from iqa_ray.scoring.stages import DecodeImages, FetchImages, ScoreImages, write_scores

logger = logging.getLogger(__name__)
_MAX_BLOCKS = 20_000  # manifest blocks handed to Ray Data: enough parallelism, bounded overhead


def build_dataset(cfg: RunConfig, shards: Shards, done: np.ndarray, scores_uri: str,
                  attempt: int, progress: Any = None) -> Any:
    """The lazy Ray Data plan over the manifest shards' pending images (no shuffle; one output
    row per file). Tasks cut each shard's pending rows into blocks; the driver holds only refs.
    """
    import ray

    st = cfg.stages
    # Small blocks spread the work over every pool (a stage actor takes whole blocks).
    block_rows = max(st.fetch.batch_size, math.ceil(shards.pending_images / _MAX_BLOCKS))
    done_ref = ray.put(done)
    split = ray.remote(num_cpus=0.25, max_retries=3)(pending_blocks)
    refs: list[Any] = []
    for uri, n in zip(shards.uris, shards.pending, strict=True):
        if n:
            count = math.ceil(n / block_rows)
            out = split.options(num_returns=count).remote(
                uri, cfg.output.storage_options, done_ref, block_rows, count)
            refs.extend([out] if count == 1 else out)
    ds = ray.data.from_arrow_refs(refs)
    ds = ds.map_batches(
        FetchImages, fn_constructor_kwargs={"cfg": cfg}, batch_size=st.fetch.batch_size,
        batch_format="numpy", num_cpus=st.fetch.num_cpus,
        compute=ray.data.ActorPoolStrategy(
            min_size=st.fetch.min_actors, max_size=st.fetch.max_actors
        ),
    )
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


def pending_blocks(shard_uri: str, storage_options: dict[str, Any], done: np.ndarray,
                   block_rows: int, count: int) -> Any:
    """Task: a manifest shard's not-done rows as ``count`` blocks of ``block_rows`` rows.

    Blocks are made by small tasks (a quarter CPU: stage actors may hold the rest of a small
    machine), so the driver never holds the URIs. ``done``: ids of done images.
    """
    table = done_set.pending(io.read_parquet(shard_uri, storage_options, [Col.IMAGE_ID, Col.URI]),
                             done)
    blocks = [table.slice(i * block_rows, block_rows) for i in range(count)]
    if sum(b.num_rows for b in blocks) != table.num_rows:
        raise RuntimeError(f"{shard_uri}: {table.num_rows} pending rows, {count} blocks planned")
    return blocks[0] if count == 1 else tuple(blocks)


def run(cfg: RunConfig) -> RunResult:
    """Score every pending image of the input and commit the results to the run folder.

    A rerun with the same run id resumes: images already committed are skipped. ``ray.init``
    is the caller's job (the job script), never this library's.
    """
    paths = run_paths(cfg)
    opts = cfg.output.storage_options
    digests = data_digests(cfg)
    check_fingerprint(cfg, paths, digests)
    methods = [m.name for m in cfg.methods]
    keys = done_set.load_score_keys(paths.scores, opts)
    done = done_set.done_ids(keys, methods, cfg.retry_errors)
    attempt = done_set.next_attempt(keys)
    del keys
    shards = build_shards(cfg.input, paths.manifest, opts, done, cfg.input.shard_rows,
                                  cfg.input.list_parallelism)
    images, pending = shards.images, shards.pending_images
    if images == 0:  # the preflight catches most; an empty manifest table ends here
        io.delete_tree(paths.manifest, opts)
        raise ConfigError(f"the input has no images ({cfg.input.uri or cfg.input.manifest}): "
                          "nothing to score")
    record = {
        "run_id": cfg.resolved_run_id(), "fingerprint": cfg.fingerprint(),
        "config": cfg.model_dump(mode="json"), "data_digests": digests, "versions": versions(),
        "status": "running",
        "started_at": datetime.now(UTC).isoformat(), "attempt": attempt,
        "counts_at_start": {"images": images, "done": images - pending, "pending": pending,
                            "manifest_shards": len(shards.uris)},
    }
    if cfg.model.backend == "transformers" and is_smoke_model(cfg.model.id):
        record["smoke_model"] = True
        logger.warning("%s\n%s\n%s", "!" * 72, SMOKE_WARNING, "!" * 72)
    io.write_json_atomic(paths.run_json, record, opts)
    logger.info("run %s: %d images in %d manifest shards, %d done, %d pending -> %s",
                record["run_id"], images, len(shards.uris), images - pending, pending, paths.root)
    try:
        if pending:
            io.delete(paths.success, opts)  # not complete until every pending image is written
            _execute(cfg, shards, done, paths.scores, attempt, pending)
        summary = summarize(done_set.load_score_keys(paths.scores, opts), shards, methods, opts)
        if summary["images_missing"]:
            raise RuntimeError(
                f"{summary['images_missing']} images have no committed rows: rerun to resume"
            )
    except BaseException as exc:  # interrupts too: run.json must not say "running" for ever
        mark_failed(paths, record, exc, opts)
        raise
    record.update(status="complete", finished_at=datetime.now(UTC).isoformat(), summary=summary)
    io.write_json_atomic(paths.run_json, record, opts)
    io.write_bytes_atomic(paths.success, b"", opts)  # the last thing written
    return RunResult(record["run_id"], paths.root, summary)


def _execute(cfg: RunConfig, shards: Shards, done: np.ndarray, scores_uri: str, attempt: int,
             total: int) -> None:
    """Stream the plan with live progress on stdout (score actors report every batch; Ray
    Data's own bars are off meanwhile), and log each committed file."""
    import ray
    from ray.util.debug import log_once

    context = ray.data.DataContext.get_current()
    bars = context.enable_progress_bars
    counter, printer = start_progress(total)
    context.enable_progress_bars = False  # ours says the same with a total, rate and ETA
    log_once("ray_data_progress_manager_disabled")  # spends Ray's "bars disabled" warning
    try:
        ds = build_dataset(cfg, shards, done, scores_uri, attempt, counter)
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            printer.committed += int(pc.sum(batch.column("images")).as_py())
            logger.info("committed %s: %d/%d images", batch.column("file")[0],
                        printer.committed, total)
    finally:
        printer.stop()
        context.enable_progress_bars = bars
        ray.kill(counter)
