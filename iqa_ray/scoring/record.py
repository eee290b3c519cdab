"""A run's record in the bucket: its folder layout, run.json (versions, data digests,
fingerprint guard) and the summary derived from committed rows (counts by method, status and
error code; reconciliation against the manifest)."""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from iqa_ray import io
from iqa_ray._version import __version__
from iqa_ray.errors import ConfigError
from iqa_ray.inputs.state import Counts
from iqa_ray.methods import get_method
from iqa_ray.schema import RETRYABLE_CODES, Status, row_status
from iqa_ray.scoring.config import RunConfig

logger = logging.getLogger(__name__)


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
    def index(self) -> str:
        """Corpus runs: one index per unit read (sample ids, outcome)."""
        return io.join(self.root, "index")

    @property
    def state(self) -> str:
        """Working files of one attempt's resume state (pending rows, done ids by source)."""
        return io.join(self.root, "state")

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
        """Rows whose error is retryable (fetch or model failures), not the input's fault, plus
        corpus units (shards, tables) that could not be read to their end."""
        by_code = self.summary["rows_by_error_code"]
        rows = sum(n for code, n in by_code.items() if code in RETRYABLE_CODES)
        # A shard or table that could not be read to its end may hide samples: re-read it.
        return rows + int(self.summary.get("units_failed", 0))


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


def mark_failed(paths: RunPaths, record: dict[str, Any], exc: BaseException,
                storage_options: dict[str, Any]) -> None:
    """Rewrite run.json with ``status: failed`` and the reason (best effort: the original error
    is what the caller raises). Committed rows stay; a rerun with the same run id resumes."""
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:2000]
    failed = {**record, "status": "failed", "error": reason,
              "finished_at": datetime.now(UTC).isoformat()}
    try:
        io.write_json_atomic(paths.run_json, failed, storage_options)
    except Exception as write_error:  # storage itself may be what failed
        logger.warning("could not mark %s failed: %s", paths.run_json, write_error)


def summarize(counts: Counts, methods: list[str], **extra: Any) -> dict[str, Any]:
    """The run's counts, summed by the state tasks from the committed rows: by method and error
    code, and reconciliation against the input. ``extra``: input-specific entries
    (``manifest_shards`` for objects; units and unit failures for a corpus)."""
    by_code: dict[str, int] = {}
    for (_, code), n in counts.by_code.items():
        by_code[code] = by_code.get(code, 0) + n
    return {
        "images": counts.images,
        **extra,
        "methods": methods,
        "rows_expected": int(counts.images * len(methods)),
        "rows_written": counts.rows_written,
        "rows_current": counts.rows_current,
        "rows_superseded": counts.rows_written - counts.rows_current,
        "rows_by_method": {m: sum(n for (mm, _), n in counts.by_code.items() if mm == m)
                           for m in methods},
        "rows_by_error_code": dict(sorted(by_code.items())),
        "images_missing": counts.missing,
        **status_counts(counts.by_code, methods),
    }


def status_counts(by_code: dict[tuple[str, str], int], methods: list[str]) -> dict[str, Any]:
    """Current rows by status (ok/error), by method and error code, and the infrastructure
    failures among them (retryable codes: the job's exit status and ``--retry-errors`` key on it).
    """
    per_method: dict[str, dict[str, int]] = {m: {} for m in methods}
    by_status = {str(Status.OK): 0, str(Status.ERROR): 0}
    infra = 0
    for (method, code), n in by_code.items():
        if method in per_method:
            per_method[method][code] = n
        # The score table's ``status`` column applies the same rule to the same error code.
        by_status[str(row_status(None if code == Status.OK else code))] += n
        infra += n if code in RETRYABLE_CODES else 0
    return {
        "rows_by_status": by_status,
        "rows_by_method_and_error_code": {m: dict(sorted(c.items())) for m, c in
                                          per_method.items()},
        "infra_failures": infra,
    }
