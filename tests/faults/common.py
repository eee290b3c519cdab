"""What the reliability scenarios share: reconciling committed rows, the job as a subprocess,
S3 options for moto, and the README table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from iqa_ray.inputs.ids import image_id
from iqa_ray.scoring.config import RunConfig

REPO = Path(__file__).resolve().parents[2]
METHODS = ("qalign_levels", "qbench_binary")


@dataclass(frozen=True)
class Tally:
    """Reconciliation of a run's committed rows against its input.

    Attributes:
        rows_expected: distinct input images x methods.
        rows_written: rows in the committed files (superseded attempts included).
        rows_current: rows left after keeping the latest attempt of each (image_id, method).
        duplicates: rows repeating an (image_id, method, attempt) key: a double write.
        missing: expected (image_id, method) keys with no row at all.
    """

    rows_expected: int
    rows_written: int
    rows_current: int
    duplicates: int
    missing: int


@dataclass
class Outcome:
    """One scenario's row of the README table, plus whatever its test wants to check."""

    scenario: str
    inputs: str
    faults: str
    tally: Tally
    detail: dict[str, Any] = field(default_factory=dict)


def tally(df: pd.DataFrame, uris: list[str], methods: tuple[str, ...] = METHODS) -> Tally:
    """Count expected, written, current, duplicated and missing rows of a run's score table."""
    ids = {image_id(u) for u in uris}
    expected = {(i, m) for i in ids for m in methods}
    if df.empty:
        return Tally(len(expected), 0, 0, 0, len(expected))
    keys = df[["image_id", "method", "attempt"]]
    current = latest(df)
    present = set(zip(current["image_id"].tolist(), current["method"].tolist(), strict=True))
    return Tally(
        rows_expected=len(expected),
        rows_written=len(df),
        rows_current=len(current),
        duplicates=int(keys.duplicated().sum()),
        missing=len(expected - present),
    )


def latest(df: pd.DataFrame) -> pd.DataFrame:
    """The current rows: the highest attempt of each (image_id, method)."""
    return df.sort_values("attempt").drop_duplicates(["image_id", "method"], keep="last")


def s3_options(endpoint: str, read_timeout_s: float | None = None) -> dict[str, Any]:
    """fsspec options for an S3 endpoint on loopback.

    botocore's own retries are switched off (``total_max_attempts: 1``) so that what a test
    counts is the job's bounded retry (``iqa_ray.io.read_bytes``), not the client's.
    """
    config: dict[str, Any] = {"retries": {"total_max_attempts": 1}, "connect_timeout": 5}
    if read_timeout_s is not None:
        config["read_timeout"] = read_timeout_s
    return {"client_kwargs": {"endpoint_url": endpoint}, "skip_instance_cache": True,
            "config_kwargs": config}


def write_job_config(cfg: RunConfig, path: Path) -> Path:
    """The YAML a user would hand to jobs/score.py (run id left to ``--run-id``)."""
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude={"run_id"})))
    return path


@dataclass(frozen=True)
class JobResult:
    """Exit status of one jobs/score.py process and the summary it printed (None on failure)."""

    returncode: int
    summary: dict[str, Any] | None
    stderr: str


def job_command(config: Path, run_id: str, address: str, *extra: str) -> list[str]:
    """The command line of one jobs/score.py run attached to an existing Ray cluster."""
    return [sys.executable, str(REPO / "jobs" / "score.py"), "--config", str(config),
            "--run-id", run_id, "--address", address, *extra]


def run_bounded(command: list[str], timeout: float) -> tuple[int, str, str]:
    """Run a command in its own process group, killed whole (and only it) past ``timeout``.

    Returns (exit status, stdout, stderr); -9 and whatever was printed on a timeout.
    """
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\n[killed after {timeout}s]"
    return proc.returncode, out, err


def score_job(
    config: Path, run_id: str, address: str, *extra: str, timeout: float = 300
) -> JobResult:
    """Run jobs/score.py to completion; parse the summary it prints last (indented JSON)."""
    rc, out, err = run_bounded(job_command(config, run_id, address, *extra), timeout)
    start = out.find('{\n  "run_id"')
    summary = json.loads(out[start:]) if rc in (0, 3) and start >= 0 else None
    return JobResult(rc, summary, err)


def markdown_table(outcomes: list[Outcome]) -> str:
    """The README "Reliability" table (rows written: every committed row, superseded failures
    of a ``--retry-errors`` rerun included; in brackets, the current ones)."""
    lines = [
        "| scenario | inputs | faults injected | rows expected | rows written (current) "
        "| duplicates | missing |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        t = o.tally
        lines.append(f"| {o.scenario} | {o.inputs} | {o.faults} | {t.rows_expected} | "
                     f"{t.rows_written} ({t.rows_current}) | {t.duplicates} | {t.missing} |")
    return "\n".join(lines)
