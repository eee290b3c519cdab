"""Logging setup for job scripts: one format with the run id on every line."""

from __future__ import annotations

import logging


def setup_logging(run_id: str, level: int = logging.INFO) -> None:
    """Configure the root logger of a job's driver (library code never calls this)."""
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s %(levelname)s [run={run_id}] %(name)s: %(message)s",
        force=True,
    )
    # Ray and transformers are chatty at INFO; their warnings still show.
    for noisy in ("ray.data", "transformers", "filelock", "botocore", "s3fs", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
