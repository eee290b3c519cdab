"""The scoring job's driver, shared by ``jobs/score.py``, the ``iqa-ray`` CLI and
:func:`iqa_ray.score`: preflight (before Ray), connect to Ray, run, write the HTML report, and
turn the outcome into the job's exit status.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from dataclasses import dataclass

from iqa_ray.errors import ConfigError
from iqa_ray.logs import setup_logging
from iqa_ray.scoring.config import RunConfig
from iqa_ray.scoring.preflight import preflight
from iqa_ray.scoring.record import RunResult

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_INFRA = 0, 1, 2, 3


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The scoring job's flags shared by ``jobs/score.py`` and ``iqa-ray score``."""
    parser.add_argument("--run-id", help="run folder name (same id = resume)")
    parser.add_argument("--limit", type=int, help="score only the first N images")
    parser.add_argument("--retry-errors", action="store_true", help="recompute retryable errors")
    parser.add_argument("--set", action="append", default=[], metavar="a.b=value",
                        help="override a config field (repeatable)")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--no-report", action="store_true", help="skip the run's report.html")


def job_overrides(sets: list[str], run_id: str | None = None, limit: int | None = None,
                  retry_errors: bool = False) -> list[str]:
    """``--set`` overrides plus the shortcut flags of the job and the CLI."""
    overrides = list(sets)
    if run_id:
        overrides.append(f"run_id={json.dumps(run_id)}")
    if limit:
        overrides.append(f"input.limit={limit}")
    if retry_errors:
        overrides.append("retry_errors=true")
    return overrides


def start_ray(address: str | None = None, *, quiet: bool = False) -> bool:
    """Connect to Ray unless already connected: ``address``, else ``RAY_ADDRESS``, else a new
    local Ray in this process. Returns True when this call started or joined it.

    Never a bare ``ray.init()``: on a shared machine it would attach to someone else's cluster.
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict[str, object] = {"include_dashboard": False} if address == "local" else {}
    if quiet:
        kwargs.update(log_to_driver=False, logging_level=logging.WARNING)
    ray.init(address=address, **kwargs)
    return True


def execute(cfg: RunConfig, address: str | None = None, *, quiet: bool = False,
            report: bool = True) -> tuple[RunResult, str | None]:
    """Preflight, Ray, the run and its report; returns (result, report URI or None).

    Raises:
        ConfigError: the preflight or the run refused the configuration (nothing written).
        Exception: the run failed after starting (run.json says ``failed`` with the reason).
    """
    from iqa_ray.scoring.pipeline import run

    preflight(cfg)
    start_ray(address, quiet=quiet)
    result = run(cfg)
    return result, write_report(result, cfg) if report else None


def write_report(result: RunResult, cfg: RunConfig) -> str | None:
    """The run's HTML report (a failure to draw it never fails the run: logged, None)."""
    from iqa_ray.analysis.report_run import write_run_report

    try:
        return write_run_report(result.uri, cfg.output.storage_options)
    except Exception as exc:
        logger.warning("could not write the HTML report of %s: %s: %s", result.uri,
                       type(exc).__name__, exc)
        return None


@dataclass(frozen=True)
class JobOutcome:
    """Exit status, and the run's result and report when it ran."""

    code: int
    result: RunResult | None = None
    report: str | None = None


def run_job(cfg: RunConfig, address: str | None = None, *, report: bool = True,
            summary_json: bool = True) -> JobOutcome:
    """The job: messages on stderr, the summary as JSON on stdout (unless ``summary_json`` is
    False: the CLI prints its own), and the exit status (0 ok, 2 configuration, 3 rows failed
    for an infrastructure reason, 1 the run failed)."""
    setup_logging(cfg.resolved_run_id())
    try:
        result, report_uri = execute(cfg, address, report=report)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return JobOutcome(EXIT_CONFIG)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        print(f"error: the run failed: {reason}\nrun.json says status: failed with this reason; "
              "committed rows are kept, and the same command resumes the run.", file=sys.stderr)
        return JobOutcome(EXIT_FAILED)
    if summary_json:
        print(json.dumps({"run_id": result.run_id, "uri": result.uri, "report": report_uri,
                          **result.summary}, indent=2))
    if cfg.fail_on_infra_errors and result.infra_failures:
        print(f"{result.infra_failures} rows (or shards / tables not read to their end) failed "
              "for infrastructure reasons: rerun with "
              "--retry-errors", file=sys.stderr)
        return JobOutcome(EXIT_INFRA, result, report_uri)
    return JobOutcome(EXIT_OK, result, report_uri)
