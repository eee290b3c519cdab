"""The driver: validate -> run.json -> pending images -> Ray Data plan -> summary -> _SUCCESS.

Reading each input kind, and its resume state, is :mod:`iqa_ray.scoring.readers`."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import pyarrow.compute as pc

from iqa_ray import io
from iqa_ray.devtools.smoke import SMOKE_WARNING, is_smoke_model
from iqa_ray.scoring.config import RunConfig
from iqa_ray.scoring.readers import input_for
from iqa_ray.scoring.record import RunResult, check_fingerprint, data_digests, run_paths, versions

logger = logging.getLogger(__name__)


def run(cfg: RunConfig) -> RunResult:
    """Score every pending image of the input and commit the results to the run folder.

    A rerun with the same run id resumes: images already committed are skipped. ``ray.init``
    is the caller's job (the job script), never this library's.
    """
    paths = run_paths(cfg)
    opts = cfg.output.storage_options
    digests = data_digests(cfg)
    check_fingerprint(cfg, paths, digests)
    source = input_for(cfg, paths)
    start = source.start()  # manifest or units, and the resume state: Ray tasks, counts only
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
    if start.work:
        io.delete(paths.success, opts)  # not complete again until every pending image is written
        _execute(source.dataset(start.attempt), start.pending)
    summary = source.summary()
    io.delete_tree(paths.state, opts)
    if summary["images_missing"]:
        raise RuntimeError(
            f"{summary['images_missing']} images have no committed rows: rerun to resume"
        )
    record.update(status="complete", finished_at=datetime.now(UTC).isoformat(), summary=summary)
    io.write_json_atomic(paths.run_json, record, opts)
    io.write_bytes_atomic(paths.success, b"", opts)  # the last thing written
    return RunResult(record["run_id"], paths.root, summary)


def _execute(ds: Any, total: int) -> None:
    """Stream the plan; log a progress line per committed file (images, rate, ETA)."""
    start, done = time.monotonic(), 0
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        done += int(pc.sum(batch.column("images")).as_py())
        elapsed = time.monotonic() - start
        rate = done / elapsed if elapsed > 0 else 0.0
        total = max(total, done)  # a corpus's total is an estimate until its shards are read
        eta = (total - done) / rate if rate > 0 else float("inf")
        logger.info("progress: %d/%d images (%.1f%%), %.2f images/s, ETA %.0fs",
                    done, total, 100.0 * done / total, rate, eta)
