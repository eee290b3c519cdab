"""The driver: validate -> run.json -> pending images -> Ray Data plan -> summary -> _SUCCESS.

Reading each input kind, and its resume state, is :mod:`iqa_ray.scoring.readers`."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pyarrow.compute as pc

from iqa_ray import io
from iqa_ray.devtools.smoke import SMOKE_WARNING, is_smoke_model
from iqa_ray.errors import ConfigError
from iqa_ray.scoring.config import RunConfig
from iqa_ray.scoring.progress import start_progress
from iqa_ray.scoring.readers import ObjectsInput, Start, input_for
from iqa_ray.scoring.record import (
    RunResult,
    check_fingerprint,
    data_digests,
    mark_failed,
    run_paths,
    versions,
)

logger = logging.getLogger(__name__)


def run(cfg: RunConfig) -> RunResult:
    """Score every pending image of the input and commit the results to the run folder.

    A rerun with the same run id resumes: images already committed are skipped. ``ray.init``
    is the caller's job (the job script), never this library's. A run that fails after it
    started marks its run.json ``failed`` with the reason; ``_SUCCESS`` is the last thing a
    complete run writes.
    """
    paths = run_paths(cfg)
    opts = cfg.output.storage_options
    digests = data_digests(cfg)
    check_fingerprint(cfg, paths, digests)
    source = input_for(cfg, paths)
    start = source.start()  # manifest or units, and the resume state: Ray tasks, counts only
    if start.counts.get("images", start.counts.get("units")) == 0:
        # The preflight catches most; an empty manifest table or shard list ends here.
        io.delete_tree(paths.manifest, opts)
        raise ConfigError(f"the input has no images ({cfg.input.uri or cfg.input.manifest}): "
                          "nothing to score")
    record = {
        "run_id": cfg.resolved_run_id(), "fingerprint": cfg.fingerprint(),
        "config": cfg.model_dump(mode="json"), "data_digests": digests, "versions": versions(),
        "status": "running",
        "started_at": datetime.now(UTC).isoformat(), "attempt": start.attempt,
        "counts_at_start": start.counts,
    }
    if cfg.model.backend == "transformers" and is_smoke_model(cfg.model.id):
        record["smoke_model"] = True
        logger.warning("%s\n%s\n%s", "!" * 72, SMOKE_WARNING, "!" * 72)
    io.write_json_atomic(paths.run_json, record, opts)
    logger.info("run %s: %s -> %s", record["run_id"], start.counts, paths.root)
    try:
        if start.work:
            io.delete(paths.success, opts)  # not complete until every pending image is written
            _execute(source, start, exact=isinstance(source, ObjectsInput))
        summary = source.summary()
        io.delete_tree(paths.state, opts)
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


def _execute(source: Any, start: Start, exact: bool) -> None:
    """Stream the plan with live progress on stdout (score actors report every batch; Ray
    Data's own bars are off meanwhile), and log each committed file. ``exact``: the pending
    count is exact (objects); a corpus's is an estimate until its shards are read."""
    import ray
    from ray.util.debug import log_once

    context = ray.data.DataContext.get_current()
    bars = context.enable_progress_bars
    counter, printer = start_progress(start.pending, estimate=not exact)
    context.enable_progress_bars = False  # ours says the same with a total, rate and ETA
    log_once("ray_data_progress_manager_disabled")  # spends Ray's "bars disabled" warning
    try:
        ds = source.dataset(start.attempt, progress=counter)
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            printer.committed += int(pc.sum(batch.column("images")).as_py())
            logger.info("committed %s: %d images so far", batch.column("file")[0],
                        printer.committed)
    finally:
        printer.stop()
        context.enable_progress_bars = bars
        ray.kill(counter)
