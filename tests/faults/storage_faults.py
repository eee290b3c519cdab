"""Reliability scenarios on the input side: hostile files, and storage faults injected by a proxy.

Both read from a moto S3 server on loopback and score with the fake backend; the caller owns the
Ray cluster (``ray.init`` done) and the moto server.
"""

from __future__ import annotations

import io
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import s3fs

from iqa_ray import io as iqa_io
from iqa_ray.devtools.samples import make_sample_images
from iqa_ray.scoring.config import RunConfig
from iqa_ray.scoring.pipeline import run
from tests.conftest import upload_folder
from tests.faults.common import (
    JobResult,
    Outcome,
    latest,
    s3_options,
    score_job,
    tally,
    write_job_config,
)
from tests.faults.s3_proxy import FaultRule, S3FaultProxy
from tests.helpers import config, read_scores
from tests.hostile import UNICODE_NAME, make_hostile_corpus

DELETED = "deleted after listing.jpg"
LAG_S, READ_TIMEOUT_S = 4.0, 2.0  # the slow read outlasts the client's read timeout once
RETRY = {"attempts": 3, "base_delay_s": 0.05, "max_delay_s": 0.2}
# One fetch, decode and score actor each: fewer processes to start on a small machine.
LEAN_STAGES = {"decode": {"batch_size": 4, "max_actors": 1, "num_cpus": 0.5}}
# Key -> (fault rule, error code the first run must record; None = scored after retries).
STORAGE_FAULTS: dict[str, tuple[dict[str, Any], str | None]] = {
    "t500.jpg": ({"status": 500, "code": "InternalError", "times": 2}, None),
    "throttled.jpg": ({"status": 503, "code": "SlowDown", "times": 2}, None),
    "reset.jpg": ({"status": None, "drop": True, "times": 1}, None),
    "lag.jpg": ({"status": None, "delay_s": LAG_S, "times": 1}, None),
    "denied.jpg": ({"status": 403, "code": "AccessDenied"}, "fetch_failed"),
    "down.jpg": ({"status": 503, "code": "ServiceUnavailable"}, "fetch_failed"),
    "gone.jpg": ({"status": 404, "code": "NoSuchKey", "methods": ("HEAD", "GET")}, "not_found"),
}
CLEARED = "denied.jpg"  # the fault that clears before the --retry-errors job
# GET requests each key must see in the first run: K faults + 1 success, one try for a
# permanent error, ``attempts`` tries for a 5xx that never clears, none for a missing object
# (the size check's HEAD already gets the 404).
EXPECTED_GETS = {"t500.jpg": 3, "throttled.jpg": 3, "reset.jpg": 2, "lag.jpg": 2,
                 "denied.jpg": 1, "down.jpg": RETRY["attempts"], "gone.jpg": 0}


def make_bucket(endpoint: str, name: str) -> str:
    """Create a bucket on the endpoint (if needed); return ``s3://name``."""
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    if not fs.exists(name):
        fs.mkdir(name)
    return f"s3://{name}"


def hostile_scenario(
    endpoint: str, bucket: str, workdir: Path, crash_on_batch: int | None = 3
) -> tuple[Outcome, pd.DataFrame, dict[str, str | None]]:
    """Every hostile file through S3 from a manifest with duplicate URIs and a deleted object;
    the score actor also kills its own process once, mid-batch, on model call ``crash_on_batch``
    (None: no crash), and Ray Data restarts it and redoes the batch.

    Returns:
        The outcome (``detail["crashed_pid"]``: the pid that died, None if none did, and the
        run's summary), the committed rows, and URI -> expected error code (None: scored).
    """
    options = s3_options(endpoint)
    codes = make_hostile_corpus(workdir / "hostile")
    make_sample_images(workdir / "doomed", 1)[0].rename(workdir / "hostile" / DELETED)
    upload_folder(workdir / "hostile", f"{bucket}/hostile", options)
    expected = {f"{bucket}/hostile/{name}": code for name, code in codes.items()}
    expected[f"{bucket}/hostile/{DELETED}"] = "not_found"
    twice = [f"{bucket}/hostile/ok.jpg", f"{bucket}/hostile/{UNICODE_NAME}"]
    listed = [*expected, *twice]  # duplicate URIs: one image id each, scored once
    manifest_uri = f"{bucket}/manifests/hostile.csv"
    sink = io.BytesIO()
    pacsv.write_csv(pa.table({"uri": listed}), sink)
    iqa_io.write_bytes_atomic(manifest_uri, sink.getvalue(), options)
    iqa_io.delete(f"{bucket}/hostile/{DELETED}", options)  # listed, then gone before the read
    marker = workdir / "actor-crashed"
    fake = {} if crash_on_batch is None else {
        "crash_process_once_marker": str(marker), "crash_on_batch": crash_on_batch}
    cfg = config(
        "", f"{bucket}/out",
        input={"uri": None, "manifest": manifest_uri, "storage_options": options},
        output={"uri": f"{bucket}/out", "storage_options": options, "rows_per_file": 8},
        model={"backend": "fake", "options": fake}, stages=LEAN_STAGES, run_id="hostile",
    )
    result = run(cfg)
    df = read_scores(result.uri, options)
    hazards = len(expected) - 2  # the two plain valid files are controls
    crash = "" if crash_on_batch is None else "; score actor os._exit mid-batch once"
    outcome = Outcome(
        "hostile inputs" + (" + score actor killed" if crash else ""),
        f"{len(listed)} manifest URIs ({len(expected)} distinct)",
        f"{hazards} hostile files incl. a deleted object, 2 duplicate URIs{crash}",
        tally(df, list(expected)),
        {"crashed_pid": int(marker.read_text()) if marker.exists() else None,
         "summary": result.summary},
    )
    return outcome, df, expected


@dataclass
class StorageRun:
    """The two jobs of the storage-fault scenario and what the proxy counted."""

    outcome: Outcome
    failing: JobResult  # every fault active: exits 3
    retried: JobResult  # --retry-errors, one fault cleared, infra errors tolerated: exits 0
    gets_first: dict[str, int]  # GETs per key during the first job
    gets_retry: dict[str, int]  # GETs per key during the retry job
    first: pd.DataFrame  # rows after the first job
    final: pd.DataFrame  # rows after the retry job (all attempts)


def storage_fault_scenario(endpoint: str, bucket: str, workdir: Path, address: str) -> StorageRun:
    """Transient and permanent storage faults through the proxy, then ``--retry-errors`` once
    the 403 has cleared (the 503 on ``down.jpg`` never does) with ``fail_on_infra_errors=false``.
    """
    uris = _upload_storage_corpus(endpoint, bucket, workdir)
    keys = [*STORAGE_FAULTS, "text.jpg", "plain1.jpg"]
    with S3FaultProxy(endpoint, max_requests=5_000, max_seconds=600) as proxy:
        rules = {key: proxy.add(FaultRule(key=_key_pattern(key), **rule))
                 for key, (rule, _) in STORAGE_FAULTS.items()}
        cfg = _storage_config(bucket, workdir, s3_options(proxy.endpoint, READ_TIMEOUT_S))
        path = write_job_config(cfg, workdir / "storage.yaml")
        # --no-report: the HTML report reads thumbnails, GETs this scenario does not count.
        failing = score_job(path, "storage", address, "--no-report")
        gets_first = _gets(proxy, keys)
        first = read_scores(str(workdir / "out" / "runs" / "storage"))
        proxy.remove(rules[CLEARED])  # the permission is fixed; the outage goes on
        retried = score_job(path, "storage", address, "--retry-errors", "--no-report",
                            "--set", "fail_on_infra_errors=false")
        gets_retry = {k: n - gets_first[k] for k, n in _gets(proxy, keys).items()}
    final = read_scores(str(workdir / "out" / "runs" / "storage"))
    injected = sum(proxy.faults.values())
    outcome = Outcome(
        "storage faults, then --retry-errors", f"{len(uris)} objects",
        f"{injected} injected: 500, SlowDown, reset, slow read, 403, 503 for ever, 404",
        tally(final, uris), {"proxy_requests": proxy.total, "proxy_capped": proxy.capped},
    )
    return StorageRun(outcome, failing, retried, gets_first, gets_retry, first, final)


def _key_pattern(key: str) -> str:
    """A regex matching exactly the object named ``key`` under any prefix."""
    return rf"(^|/){re.escape(key)}$"


def _gets(proxy: S3FaultProxy, keys: list[str]) -> dict[str, int]:
    return {k: proxy.requests(_key_pattern(k)) for k in keys}


def _upload_storage_corpus(endpoint: str, bucket: str, workdir: Path) -> list[str]:
    """Valid images under the fault keys, two controls and a non-image (a decode error)."""
    folder = workdir / "storage"
    samples = make_sample_images(workdir / "samples", len(STORAGE_FAULTS) + 2)
    names = [*STORAGE_FAULTS, "plain1.jpg", "plain2.jpg"]
    folder.mkdir(parents=True, exist_ok=True)
    for name, sample in zip(names, samples, strict=True):
        shutil.copy(sample, folder / name)
    (folder / "text.jpg").write_text("not an image\n" * 10)
    upload_folder(folder, f"{bucket}/storage", s3_options(endpoint))
    return [f"{bucket}/storage/{name}" for name in [*names, "text.jpg"]]


def _storage_config(bucket: str, workdir: Path, options: dict[str, Any]) -> RunConfig:
    return config(
        f"{bucket}/storage", str(workdir / "out"),
        input={"uri": f"{bucket}/storage", "storage_options": options},
        retry=RETRY, stages=LEAN_STAGES,
    )


def current_codes(df: pd.DataFrame) -> dict[str, set[Any]]:
    """File name -> the set of current error codes over its methods (None = scored)."""
    now = latest(df)
    names = now["uri"].str.rsplit("/", n=1).str[-1]
    return {name: {None if pd.isna(c) else c for c in group} for name, group in
            now["error_code"].groupby(names)}
