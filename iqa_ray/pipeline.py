"""The driver: validate -> run.json -> pending images -> Ray Data plan -> summary -> _SUCCESS."""

from __future__ import annotations

import logging
import math
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from iqa_ray import __version__, io, listing, manifest
from iqa_ray.config import RunConfig
from iqa_ray.errors import ConfigError
from iqa_ray.schema import RETRYABLE_CODES, Col
from iqa_ray.smoke import SMOKE_WARNING, is_smoke_model
from iqa_ray.stages import DecodeImages, FetchImages, ScoreImages, write_scores

logger = logging.getLogger(__name__)
_MAX_BLOCKS = 20_000  # manifest blocks handed to Ray Data: enough parallelism, bounded overhead


@dataclass(frozen=True)
class RunPaths:
    """Where one run lives in the bucket."""

    root: str

    @property
    def run_json(self) -> str:
        return io.join(self.root, "run.json")

    @property
    def scores(self) -> str:
        return io.join(self.root, "scores")

    @property
    def manifest(self) -> str:
        return io.join(self.root, "manifest")

    @property
    def success(self) -> str:
        return io.join(self.root, "_SUCCESS")


@dataclass(frozen=True)
class RunResult:
    """What a finished run reports back to the job script."""

    run_id: str
    uri: str
    summary: dict[str, Any]

    @property
    def infra_failures(self) -> int:
        """Rows whose error is retryable (fetch or model failures), not the input's fault."""
        by_code = self.summary["rows_by_error_code"]
        return sum(n for code, n in by_code.items() if code in RETRYABLE_CODES)


def run_paths(cfg: RunConfig) -> RunPaths:
    """The run folder ``<output>/runs/<run_id>``."""
    return RunPaths(io.join(cfg.output.uri, "runs", cfg.resolved_run_id()))


def versions() -> dict[str, str | None]:
    """Library versions recorded in run.json (heavy ones only if importable here)."""
    import ray

    found: dict[str, str | None] = {"iqa_ray": __version__, "ray": ray.__version__,
                                    "python": platform.python_version()}
    for name in ("torch", "transformers"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            found[name] = None
    return found


def data_digests(cfg: RunConfig) -> dict[str, str]:
    """Per method, the digest of external data its scores depend on (anchor sets, weights)."""
    from iqa_ray.methods import get_method

    found = {}
    for spec in cfg.methods:
        digest = get_method(spec.method)(spec.params).data_digest()
        if digest is not None:
            found[spec.name] = digest
    return found


def check_fingerprint(cfg: RunConfig, paths: RunPaths, digests: dict[str, str] | None = None,
                      ) -> dict[str, Any] | None:
    """Refuse to resume a run whose stored fingerprint or data digests differ; return the
    stored record."""
    opts = cfg.output.storage_options
    if not io.exists(paths.run_json, opts):
        return None
    stored = io.read_json(paths.run_json, opts)
    changed = [name for name, digest in (digests or {}).items()
               if stored.get("data_digests", {}).get(name, digest) != digest]
    if changed:
        raise ConfigError(
            f"run {cfg.resolved_run_id()!r} at {paths.root}: the data behind method(s) {changed} "
            "(an anchor set or trained weights) changed since the run started; resuming would "
            "mix scores made with different data. Pick a new run_id or restore the data."
        )
    if stored.get("fingerprint") != cfg.fingerprint():
        raise ConfigError(
            f"run {cfg.resolved_run_id()!r} at {paths.root} was made with a different "
            "result-affecting configuration (model, methods, prompts, distortions or image "
            "guards); resuming would mix incompatible scores. Pick a new run_id, or restore "
            f"the original configuration (stored in {paths.run_json})."
        )
    return stored


def build_dataset(cfg: RunConfig, shards: listing.Shards, done: np.ndarray, scores_uri: str,
                  attempt: int) -> Any:
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
        ScoreImages, fn_constructor_kwargs={"cfg": cfg}, batch_size=st.score.batch_size,
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
    table = io.read_parquet(shard_uri, storage_options, [Col.IMAGE_ID, Col.URI])
    if len(done):
        table = table.filter(pa.array(~np.isin(table.column(Col.IMAGE_ID).to_numpy(), done)))
    blocks = [table.slice(i * block_rows, block_rows) for i in range(count)]
    if sum(b.num_rows for b in blocks) != table.num_rows:
        raise RuntimeError(f"{shard_uri}: {table.num_rows} pending rows, {count} blocks planned")
    return blocks[0] if count == 1 else tuple(blocks)


def summarize(keys: pa.Table, shards: listing.Shards, methods: list[str],
              storage_options: dict[str, Any]) -> dict[str, Any]:
    """Counts derived from the committed rows: by method and error code, and reconciliation."""
    latest = manifest.latest_rows(keys)
    counts = _counts(latest)
    by_code: dict[str, int] = {}
    for (_, code), n in counts.items():
        by_code[code] = by_code.get(code, 0) + n
    done = manifest.done_ids(keys, methods, retry_errors=False)
    return {
        "images": shards.images,
        "manifest_shards": len(shards.uris),
        "methods": methods,
        "rows_expected": int(shards.images * len(methods)),
        "rows_written": int(keys.num_rows),
        "rows_current": int(latest.num_rows),
        "rows_superseded": int(keys.num_rows - latest.num_rows),
        "rows_by_method": {m: sum(n for (mm, _), n in counts.items() if mm == m) for m in methods},
        "rows_by_error_code": dict(sorted(by_code.items())),
        "images_missing": listing.missing_images(shards, storage_options, done),
        **status_counts(latest, methods),
    }


def _counts(latest: pa.Table) -> dict[tuple[str, str], int]:
    """Current rows per (method, error code or "ok"), aggregated in Arrow (no per-row objects)."""
    if latest.num_rows == 0:
        return {}
    grouped = latest.select([Col.METHOD, Col.ERROR_CODE]).group_by(
        [Col.METHOD, Col.ERROR_CODE]).aggregate([([], "count_all")])
    return {(m, c or "ok"): int(n) for m, c, n in zip(
        grouped.column(Col.METHOD).to_pylist(), grouped.column(Col.ERROR_CODE).to_pylist(),
        grouped.column("count_all").to_pylist(), strict=True)}


def status_counts(latest: pa.Table, methods: list[str]) -> dict[str, Any]:
    """Current rows by status (ok/error), by method and error code, and the infrastructure
    failures among them (retryable codes: the job's exit status and ``--retry-errors`` key on it).
    """
    per_method: dict[str, dict[str, int]] = {m: {} for m in methods}
    ok = errors = infra = 0
    for (method, code), n in _counts(latest).items():
        if method in per_method:
            per_method[method][code] = n
        if code == "ok":
            ok += n
        else:
            errors += n
        infra += n if code in RETRYABLE_CODES else 0
    return {
        "rows_by_status": {"ok": ok, "error": errors},
        "rows_by_method_and_error_code": {m: dict(sorted(c.items())) for m, c in
                                          per_method.items()},
        "infra_failures": infra,
    }


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
    keys = manifest.load_score_keys(paths.scores, opts)
    done = manifest.done_ids(keys, methods, cfg.retry_errors)
    attempt = manifest.next_attempt(keys)
    del keys
    shards = listing.build_shards(cfg.input, paths.manifest, opts, done, cfg.input.shard_rows,
                                  cfg.input.list_parallelism)
    images, pending = shards.images, shards.pending_images
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
    if pending:
        io.delete(paths.success, opts)  # not complete again until every pending image is written
        _execute(build_dataset(cfg, shards, done, paths.scores, attempt), pending)
    summary = summarize(manifest.load_score_keys(paths.scores, opts), shards, methods, opts)
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
        eta = (total - done) / rate if rate > 0 else float("inf")
        logger.info("progress: %d/%d images (%.1f%%), %.2f images/s, ETA %.0fs",
                    done, total, 100.0 * done / total, rate, eta)
