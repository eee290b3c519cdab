"""Reliability scenarios on the process side: the driver is killed, a node leaves the cluster.
Local folders and the fake backend: the model and the bucket are not the point. (The score actor
that kills itself mid-batch runs with the hostile inputs, in storage_faults.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from iqa_ray import io as iqa_io
from iqa_ray.scoring.config import RunConfig
from iqa_ray.scoring.pipeline import run
from tests.faults.common import REPO, Outcome, job_command, run_bounded, tally, write_job_config
from tests.helpers import config, make_corpus, read_scores

HERE = Path(__file__).resolve().parent


def corpus_uris(folder: Path, n_good: int) -> list[str]:
    """``n_good`` valid images plus three bad files; their URIs as the listing gives them."""
    expected = make_corpus(folder, n_good)
    fs = iqa_io.filesystem(str(folder))[0]
    return [iqa_io.to_uri(fs, str(folder / name)) for name in expected]


def driver_kill_scenario(workdir: Path, address: str, timeout: float = 240) -> Outcome:
    """SIGKILL the driver (jobs/score.py) after its first committed file; rerun the same run id.

    The driver attaches to the caller's cluster (``address``); its job's actors die with it.
    """
    uris = corpus_uris(workdir / "images", 13)
    out = workdir / "out"
    slow = config(str(workdir / "images"), str(out),
                  model={"backend": "fake", "options": {"delay_s": 0.5}},
                  output={"uri": str(out), "rows_per_file": 4})
    path = write_job_config(slow, workdir / "driver.yaml")
    scores = out / "runs" / "driver-kill" / "scores"
    proc = subprocess.Popen(job_command(path, "driver-kill", address), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        _wait_for(lambda: any(scores.glob("*.parquet")) or proc.poll() is not None, timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the group: this driver and its children only
        proc.wait(timeout=30)
    before = read_scores(str(out / "runs" / "driver-kill"))
    record = json.loads((out / "runs" / "driver-kill" / "run.json").read_text())
    # The rerun: same run id, same result-affecting config (the fake's delay is not part of it).
    rerun = config(str(workdir / "images"), str(out), run_id="driver-kill",
                   output={"uri": str(out), "rows_per_file": 4})
    result = run(rerun)
    df = read_scores(result.uri)
    detail = {"killed_rc": proc.returncode, "status_at_kill": record["status"],
              "images_at_kill": int(before["image_id"].nunique()) if len(before) else 0,
              "before": before, "df": df, "summary": result.summary}
    return Outcome("driver SIGKILLed mid-run, rerun resumes", f"{len(uris)} images",
                   "SIGKILL to the driver after its first committed file", tally(df, uris), detail)


def node_loss_config(workdir: Path) -> tuple[RunConfig, list[str]]:
    """The node-loss run: 16 images, one score actor on the (logical) GPU node, a slow model so
    that the actor is mid-run when its node goes; returns (config, input URIs)."""
    uris = corpus_uris(workdir / "images", 13)
    stages = {"fetch": {"batch_size": 4, "max_actors": 1, "num_cpus": 0.5},
              "decode": {"batch_size": 4, "max_actors": 1, "num_cpus": 0.5},
              "score": {"batch_size": 4, "max_actors": 1, "num_cpus": 0, "num_gpus": 1}}
    cfg = config(str(workdir / "images"), str(workdir / "out"), run_id="node-loss", stages=stages,
                 model={"backend": "fake", "batch_size": 4, "options": {"delay_s": 1.0}},
                 output={"uri": str(workdir / "out"), "rows_per_file": 4})
    return cfg, uris


def node_loss_outcome(report: dict[str, Any], uris: list[str]) -> Outcome:
    """The README row of a node-loss report (from ``node_loss_run.node_loss``)."""
    df = read_scores(report["uri"])
    how = "completed" if report["completed_first_try"] else "rerun resumed"
    return Outcome(f"worker node removed mid-run ({how})", f"{len(uris)} images",
                   "remove the node holding the score actor", tally(df, uris), {**report, "df": df})


def node_loss_scenario(workdir: Path, timeout: float = 420) -> Outcome:
    """A simulated cluster of its own loses the node holding the score actor mid-run."""
    cfg, uris = node_loss_config(workdir)
    cfg_path = workdir / "node_loss.json"
    cfg_path.write_text(json.dumps(cfg.model_dump(mode="json")))
    temp = tempfile.mkdtemp(prefix="iqn_", dir="/tmp")  # short: Ray's socket paths are limited
    try:
        rc, out, err = run_bounded(
            [sys.executable, str(HERE / "node_loss_run.py"), str(cfg_path), temp], timeout)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if rc != 0 or line is None:
        raise RuntimeError(f"node-loss run failed ({rc}): {err[-4000:]}")
    return node_loss_outcome(json.loads(line.removeprefix("RESULT ")), uris)


def _wait_for(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(0.2)
