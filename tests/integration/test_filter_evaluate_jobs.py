"""jobs/filter.py and jobs/evaluate.py, each run once as a subprocess, over a run written into a
moto S3 bucket: dry run, keep/reject lists, server-side copies that a rerun does not repeat, and
the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import s3fs
import yaml

from iqa_ray import io as iqa_io
from iqa_ray.analysis.filter import copy_kept
from iqa_ray.analysis.filter_job import FilterJobConfig, run_filter
from iqa_ray.settings import load_config
from tests.conftest import REPO
from tests.helpers import write_score_run

# (folder, score q, score t or an error code) per image; q ranks, t must be >= 2.
IMAGES = {
    "p1/a.jpg": (0.9, 3.0), "p1/b.jpg": (0.8, 1.0), "p1/c.jpg": (0.7, 2.5), "p1/d.jpg": (0.1, 2.0),
    "p2/e.jpg": (0.6, 2.0), "p2/f.jpg": (0.95, "decode_failed"),
}  # fmt: skip


def run_job(script: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / script), "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _no_download(*args: object, **kwargs: object) -> bytes:
    raise AssertionError("a same-bucket copy must not pass the bytes through this process")


def test_filter_and_evaluate_jobs_on_a_bucket(
    tmp_path: Path, s3_bucket: tuple[str, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, options = s3_bucket
    fs = s3fs.S3FileSystem(**options)
    rows, labels = [], []
    for i, (rel, (q, t)) in enumerate(sorted(IMAGES.items())):
        uri = f"{bucket}/corpus/{rel}"
        fs.pipe(uri.removeprefix("s3://"), b"\xff" * (100 + i))
        rows.append({"uri": uri, "method": "q", "score": q})
        err = t if isinstance(t, str) else None
        rows.append({"uri": uri, "method": "t", "score": None if err else t, "error_code": err})
        labels.append({"img_path": rel, "gt_score": q * 4 + 1})
    write_score_run(f"{bucket}/out", "r1", rows, options)
    fs.pipe(f"{bucket.removeprefix('s3://')}/labels.json", json.dumps(labels).encode())
    scores = {"output": f"{bucket}/out", "runs": ["r1"], "storage_options": options}
    rule = {
        "conditions": [{"method": "t", "min": 2.0}],
        "top_k": 2,
        "rank_method": "q",
        "group_by": "folder",
    }
    filter_cfg = tmp_path / "filter.yaml"
    filter_cfg.write_text(
        yaml.safe_dump(
            {"scores": scores, "name": "best", "rule": rule, "copy_to": f"{bucket}/kept"}
        )
    )

    job = load_config(FilterJobConfig, filter_cfg, [])
    dry = run_filter(job, dry_run=True)  # in-process: the subprocess runs below cost seconds each
    assert dry.per_group.values.tolist() == [["p1", 2, 2, 4], ["p2", 1, 1, 2]]
    assert not fs.exists(f"{bucket}/out/filters") and not fs.exists(f"{bucket}/kept")

    first = json.loads(run_job("filter.py", filter_cfg).stdout.split("\n", 3)[3])
    assert first["copy"]["copied"] == 3 and first["copy"]["skipped"] == 0
    copied = sorted(p.split("/kept/")[1] for p in fs.find(f"{bucket}/kept"))
    assert copied == ["p1/a.jpg", "p1/c.jpg", "p2/e.jpg"]
    assert fs.cat(f"{bucket}/kept/p2/e.jpg") == fs.cat(f"{bucket}/corpus/p2/e.jpg")
    page = fs.cat(f"{bucket}/out/filters/best/report.html").decode()
    assert "<h1>Filter <code>best</code></h1>" in page and first["report"].endswith("report.html")
    with fs.open(f"{bucket}/out/filters/best/reject.parquet", "rb") as handle:
        reject = pd.read_parquet(handle)
    reasons = dict(zip(reject["uri"].str.split("/corpus/").str[1], reject["reason"], strict=True))
    assert reasons == {"p1/b.jpg": "below threshold t < 2", "p1/d.jpg": "not in top-2 of group p1",
                       "p2/f.jpg": "error:decode_failed in t"}  # fmt: skip

    again = run_filter(job).summary["copy"]
    assert again["copied"] == 0 and again["skipped"] == 3  # a rerun copies nothing new
    fs.rm(f"{bucket}/kept/p1/a.jpg")
    monkeypatch.setattr(iqa_io, "read_bytes", _no_download)  # bucket to bucket: server-side only
    healed = copy_kept(dry.result.keep, f"{bucket}/kept", f"{bucket}/corpus", options)
    assert (healed.copied, healed.skipped, healed.failed) == (1, 2, 0)

    eval_cfg = tmp_path / "evaluate.yaml"
    labels_cfg = {"uri": f"{bucket}/labels.json"}
    eval_cfg.write_text(yaml.safe_dump({"scores": scores, "labels": labels_cfg, "n_boot": 50}))
    out = run_job("evaluate.py", eval_cfg).stdout
    assert "| q | 6 | 0 | 1.000 [" in out  # MOS is an increasing function of q
    folder = f"{bucket}/out/evaluations/default"
    assert {p.rsplit("/", 1)[1] for p in fs.find(folder)} == {
        "report.md",
        "report.html",
        "metrics.parquet",
        "summary.json",
        "scatter_q.png",
        "scatter_t.png",
        "histograms.png",
    }
    assert fs.cat(f"{folder}/scatter_q.png")[:8] == b"\x89PNG\r\n\x1a\n"
