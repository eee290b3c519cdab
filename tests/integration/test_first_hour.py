"""What a new user sees: live progress before the first commit, an explicit status per row that
run.json counts the same way, a failed run marked failed, and the Python API and the CLI giving
the job's rows bit for bit."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import iqa_ray
from iqa_ray.api.score import read_run
from iqa_ray.scoring.pipeline import run
from tests.conftest import REPO
from tests.helpers import config, make_corpus, read_scores

pytestmark = pytest.mark.usefixtures("ray_local")
METHODS = ["qalign_levels", "qbench_binary"]
_LINE = re.compile(r"progress: (\d+)/(\d+) images .*committed (\d+)")


def test_progress_lines_appear_before_the_first_commit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_corpus(tmp_path / "images", 10)
    monkeypatch.setenv("IQA_RAY_PROGRESS_S", "0.3")
    # A slow model and one score file for the whole run: the only commit comes at the end.
    cfg = config(str(tmp_path / "images"), str(tmp_path / "out"),
                 output={"rows_per_file": 1000},
                 model={"backend": "fake", "batch_size": 2, "options": {"delay_s": 0.4}},
                 stages={"score": {"batch_size": 2, "max_actors": 1, "num_cpus": 1}})
    run(cfg)
    lines = [m.groups() for m in map(_LINE.search, capsys.readouterr().out.splitlines()) if m]
    assert lines, "no progress line on stdout"
    before_commit = [(int(d), int(t)) for d, t, c in lines if int(c) == 0 and 0 < int(d) < int(t)]
    assert before_commit, f"no line with images done before the first commit: {lines}"
    assert all(t == 13 for _, t in before_commit)
    done, total, committed = lines[-1]
    assert done == total == committed == "13"


def test_status_column_and_run_json_count_rows_the_same_way(tmp_path: Path) -> None:
    make_corpus(tmp_path / "images", 5)
    result = run(config(str(tmp_path / "images"), str(tmp_path / "out")))
    df = read_scores(result.uri)
    assert set(df["status"]) == {"ok", "error"}
    assert ((df["status"] == "ok") == df["error_code"].isna()).all()
    record = json.loads((Path(result.uri) / "run.json").read_text())
    assert record["summary"]["rows_by_status"] == df["status"].value_counts().to_dict()


def test_a_run_that_fails_after_starting_is_marked_failed(tmp_path: Path) -> None:
    make_corpus(tmp_path / "images", 6)
    cfg = config(str(tmp_path / "images"), str(tmp_path / "out"), run_id="doomed",
                 model={"backend": "fake", "options": {"fail_after_batches": 0}})
    with pytest.raises(Exception, match="injected failure"):
        run(cfg)
    run_dir = tmp_path / "out" / "runs" / "doomed"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "failed"
    assert "injected failure" in record["error"] and record["finished_at"]
    assert not (run_dir / "_SUCCESS").exists()


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Array cells as lists, so frames compare with ``equals`` (NaN equal to NaN)."""
    return frame.map(lambda v: v.tolist() if isinstance(v, np.ndarray) else v)


def test_api_and_cli_agree_with_the_job_bit_for_bit(tmp_path: Path, tiny_model_dir: Path) -> None:
    make_corpus(tmp_path / "images", 3)
    # One request per forward pass, so padding never mixes images. The stage batch sizes differ
    # (the CLI starts its own Ray with iqa_ray.api.score.LOCAL_STAGES): a row's maths must not
    # depend on the rows it was batched with.
    small = {"max_actors": 1, "num_cpus": 0.25}
    settings: dict[str, Any] = {"model": {"batch_size": 1},
                                "stages": {"fetch": small, "decode": small,
                                           "score": {**small, "batch_size": 2, "num_cpus": 0.5}}}
    job_cfg = {**settings, "input": {"uri": str(tmp_path / "images")},
               "output": {"uri": str(tmp_path / "job")},
               "model": {"id": str(tiny_model_dir), "batch_size": 1}, "methods": METHODS}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job_cfg))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    job = subprocess.run([sys.executable, "jobs/score.py", "--config", str(path), "--run-id",
                          "job", "--no-report"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    cli = subprocess.run([sys.executable, "-m", "iqa_ray.cli", "score", str(tmp_path / "images"),
                          "--model", str(tiny_model_dir), "--method", METHODS[0], "--method",
                          METHODS[1], "--output", str(tmp_path / "cli"), "--run-id", "cli",
                          "--set", "model.batch_size=1", "--csv", str(tmp_path / "cli.csv")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert "report: " in cli.stdout and "rows ok" in cli.stdout
    api = iqa_ray.score(tmp_path / "images", method=METHODS, model=str(tiny_model_dir),
                        config=settings)
    expected = _plain(read_run(str(tmp_path / "job" / "runs" / "job")))
    assert len(expected) == 6 * 2 and expected["score"].notna().sum() == 3 * 2
    assert expected["error_message"].str.contains(" at 0x").sum() == 0  # messages are data
    assert _plain(api).equals(expected)
    assert _plain(read_run(str(tmp_path / "cli" / "runs" / "cli"))).equals(expected)
    assert len(pd.read_csv(tmp_path / "cli.csv")) == len(expected)
    # A list of files goes through a manifest and scores the same rows.
    files = sorted((tmp_path / "images").glob("*.jpg"))[:3]
    some = iqa_ray.score([str(f) for f in files], method=METHODS, model=str(tiny_model_dir),
                         config=settings)
    chosen = expected[expected["uri"].isin([f.as_uri() for f in files])]
    assert len(chosen) == 3 * 2
    assert _plain(some).equals(chosen.reset_index(drop=True))
